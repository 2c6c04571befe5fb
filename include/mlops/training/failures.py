"""Classify why a pod failed: infrastructure (worth a retry) or application (not).

GPU time is expensive, so a training pod is retried only when the platform, not
the code, failed it: eviction, preemption or deletion, a lost node, or an image
pull that may succeed next time. A non-zero exit of the container is the
code's own verdict and is not retried unless the caller asks for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

INFRASTRUCTURE = "infrastructure"
APPLICATION = "application"

# status.reason values the kubelet or scheduler set when the node, not the workload, failed the pod.
_INFRA_POD_REASONS = frozenset(
    {
        "Evicted",
        "NodeLost",
        "Preempting",
        "Preempted",
        "Shutdown",
        "Terminated",
        "NodeShutdown",
        "UnexpectedAdmissionError",
        "OutOfnvidia.com/gpu",
    }
)
# Container waiting reasons that a later attempt can clear.
_TRANSIENT_WAITING = frozenset({"ErrImagePull", "ImagePullBackOff", "ContainerCreating", "PodInitializing"})
# Container waiting reasons that are configuration mistakes: retrying burns time for nothing.
_CONFIG_WAITING = frozenset({"CreateContainerConfigError", "InvalidImageName", "CreateContainerError"})


@dataclass(frozen=True)
class PodFailure:
    """The verdict: ``kind`` is INFRASTRUCTURE or APPLICATION; ``reason`` is for humans."""

    kind: str
    reason: str
    exit_code: int | None = None

    @property
    def retryable(self) -> bool:
        return self.kind == INFRASTRUCTURE


def _get(obj: Any, *path: str) -> Any:
    """Read a nested attribute or key from a kubernetes model or a plain dict."""
    for name in path:
        if obj is None:
            return None
        obj = obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)
    return obj


def classify_pod_failure(remote_pod: Any, container_name: str = "base") -> PodFailure:
    """Classify a failed pod from its last observed state (a V1Pod, a dict, or None if it is gone)."""
    if remote_pod is None:
        return PodFailure(INFRASTRUCTURE, "pod disappeared while running (deleted or preempted)")
    if _get(remote_pod, "metadata", "deletion_timestamp") or _get(
        remote_pod, "metadata", "deletionTimestamp"
    ):
        return PodFailure(INFRASTRUCTURE, "pod was deleted while running")
    reason = _get(remote_pod, "status", "reason")
    if reason in _INFRA_POD_REASONS:
        message = _get(remote_pod, "status", "message") or ""
        return PodFailure(INFRASTRUCTURE, f"pod {reason}: {message}".strip().rstrip(":"))
    if reason == "DeadlineExceeded":
        return PodFailure(APPLICATION, "pod exceeded its activeDeadlineSeconds")

    statuses = (
        _get(remote_pod, "status", "container_statuses")
        or _get(remote_pod, "status", "containerStatuses")
        or []
    )
    status = next((s for s in statuses if _get(s, "name") == container_name), None)
    terminated = _get(status, "state", "terminated")
    if terminated is not None:
        exit_code = _get(terminated, "exit_code")
        if exit_code is None:
            exit_code = _get(terminated, "exitCode")
        term_reason = _get(terminated, "reason") or "Error"
        if exit_code == 0:
            return PodFailure(INFRASTRUCTURE, "container exited 0 but the pod did not succeed")
        return PodFailure(APPLICATION, f"container exited with code {exit_code} ({term_reason})", exit_code)
    waiting_reason = _get(status, "state", "waiting", "reason")
    if waiting_reason in _CONFIG_WAITING:
        return PodFailure(APPLICATION, f"container cannot start: {waiting_reason}")
    if waiting_reason in _TRANSIENT_WAITING:
        return PodFailure(INFRASTRUCTURE, f"container never started: {waiting_reason}")
    return PodFailure(
        INFRASTRUCTURE,
        f"pod failed without a container verdict (phase {_get(remote_pod, 'status', 'phase')})",
    )
