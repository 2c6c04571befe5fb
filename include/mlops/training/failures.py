"""Why a training pod failed, and whether a retry can fix it.

GPU time is expensive, so a retry is spent only where the next attempt can succeed. The rules
are read in order, like a Kubernetes Job's ``podFailurePolicy`` (DisruptionTarget first, then
the container's exit code) or Argo's ``retryStrategy.expression``:

1. No usable cluster (kube config missing or invalid, API server unreachable, HTTP 401/403):
   configuration, not retried. A 403 "exceeded quota" is capacity: retried.
2. The pod is gone, being deleted, or carries ``DisruptionTarget`` (preemption, API eviction,
   node-pressure eviction, node lifecycle), or the node lost it (ContainerStatusUnknown, exit
   137): disruption, retried from the newest checkpoint.
3. ``DeadlineExceeded``: the run's own time budget; not retried.
4. A container that cannot start: a missing Secret or key (CreateContainerConfigError), an
   image or tag that does not exist, an invalid image name: configuration, not retried. A
   registry outage or a pod no node could take in time: retried.
5. ``OOMKilled``: not retried (the same batch on the same profile dies again).
6. The trainer's exit code (:mod:`mlops.trainer.exit_codes`): transient storage and SIGTERM
   are retried; configuration and data are not; anything else is the training code's verdict,
   retried only when the run asks for it.

The failure message names what a user needs: the pod's phase and reason, the container's
exit code and message, and what to change. It never holds the whole pod object.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from mlops.trainer import exit_codes

CONFIGURATION = "configuration"
DATA = "data"
TRAINING_CODE = "training code"
OUT_OF_MEMORY = "out of memory"
DEADLINE = "deadline exceeded"
DISRUPTION = "disruption"
CAPACITY = "capacity"
TRANSIENT = "transient"

RETRYABLE = frozenset({DISRUPTION, CAPACITY, TRANSIENT})

# status.reason values the kubelet or node lifecycle set when the node, not the workload, ended the pod.
_NODE_REASONS = frozenset(
    {
        "Evicted",
        "NodeLost",
        "Preempting",
        "Preempted",
        "Shutdown",
        "Terminated",
        "NodeShutdown",
        "NodeAffinity",
    }
)
# Image pull answers that no retry will change (containerd's NotFound, a registry's "manifest unknown").
_IMAGE_MISSING = ("not found", "manifest unknown", "name unknown", "repository does not exist")
# What the provider says when the pod outlived a start-up wait.
_SCHEDULE_TIMEOUT = "took too long to be scheduled"
_START_TIMEOUT = "took too long to start"
_MESSAGE_LIMIT = 600


@dataclass(frozen=True)
class PodFailure:
    """The verdict: ``kind`` (one of the module's constants), ``message`` for humans, the exit code."""

    kind: str
    message: str
    exit_code: int | None = None

    @property
    def retryable(self) -> bool:
        """Whether the next attempt can succeed without anyone changing anything."""
        return self.kind in RETRYABLE


def _get(obj: Any, *path: str) -> Any:
    """Read a nested attribute or key from a kubernetes model or a plain dict (camelCase or snake_case)."""
    for name in path:
        if obj is None:
            return None
        if isinstance(obj, dict):
            camel = name.split("_")[0] + "".join(p.title() for p in name.split("_")[1:])
            obj = obj.get(name, obj.get(camel))
        else:
            obj = getattr(obj, name, None)
    return obj


def _short(text: Any) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= _MESSAGE_LIMIT else text[: _MESSAGE_LIMIT - 3] + "..."


def describe_pod(pod: Any, container_name: str = "base") -> str:
    """One line naming the pod's phase and reason and the container's state, exit code and message."""
    parts = [f"pod {_get(pod, 'metadata', 'name')}: phase {_get(pod, 'status', 'phase')}"]
    if reason := _get(pod, "status", "reason"):
        parts.append(f"reason {reason}")
    if message := _get(pod, "status", "message"):
        parts.append(f"message {_short(message)!r}")
    for condition in _get(pod, "status", "conditions") or []:
        if _get(condition, "type") == "DisruptionTarget" and _get(condition, "status") == "True":
            parts.append(
                f"DisruptionTarget {_get(condition, 'reason')}: {_short(_get(condition, 'message'))}"
            )
    status = _container_status(pod, container_name)
    if terminated := _get(status, "state", "terminated"):
        parts.append(
            f"container {container_name}: {_get(terminated, 'reason')}, "
            f"exit code {_get(terminated, 'exit_code')}"
        )
        if message := _get(terminated, "message"):
            parts.append(f"message {_short(message)!r}")
    elif waiting := _get(status, "state", "waiting"):
        parts.append(f"container {container_name}: waiting, {_get(waiting, 'reason')}")
        if message := _get(waiting, "message"):
            parts.append(f"message {_short(message)!r}")
    return ", ".join(parts)


def _chain(error: BaseException | None) -> list[BaseException]:
    """The error and those it was raised from or during (the provider's cleanup replaces the first)."""
    seen: list[BaseException] = []
    while error is not None and error not in seen:
        seen.append(error)
        error = error.__cause__ or error.__context__
    return seen


def _container_status(pod: Any, container_name: str) -> Any:
    statuses = _get(pod, "status", "container_statuses") or []
    return next((s for s in statuses if _get(s, "name") == container_name), None)


def _memory_limit(pod: Any, container_name: str) -> str | None:
    for container in _get(pod, "spec", "containers") or []:
        if _get(container, "name") == container_name:
            return (_get(container, "resources", "limits") or {}).get("memory")
    return None


def _api_message(error: Any) -> str:
    """The ``message`` of the API's Status body (the raw body, or the HTTP reason, otherwise)."""
    body = getattr(error, "body", None) or ""
    try:
        message = json.loads(body).get("message")
    except (ValueError, AttributeError):
        message = None
    return _short(message or body or error.reason)


def classify_api_error(error: BaseException) -> PodFailure | None:
    """Failures of the Kubernetes API itself (no pod verdict); ``None`` if ``error`` is not one."""
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config.config_exception import ConfigException
    from urllib3.exceptions import HTTPError as Urllib3Error

    if isinstance(error, ConfigException):
        return PodFailure(
            CONFIGURATION,
            f"no usable Kubernetes configuration ({_short(error)}): set the kubernetes_default connection "
            "(kube_config_path, or in_cluster on Kubernetes) or MLOPS_KUBERNETES_CONN_ID to a cluster "
            "this worker can reach",
        )
    if isinstance(error, (Urllib3Error, ConnectionError)):
        host = getattr(getattr(error, "pool", None), "host", None)
        where = f"{error.pool.scheme}://{host}:{error.pool.port}" if host else "the configured server"
        return PodFailure(
            CONFIGURATION,
            f"the Kubernetes API server at {where} is unreachable ({type(error).__name__}): check "
            "the server address in the kubernetes_default connection and the network path from the worker",
        )
    if isinstance(error, ApiException):
        body = _api_message(error)
        if error.status == 403 and "exceeded quota" in body:
            return PodFailure(CAPACITY, f"the namespace's ResourceQuota refused the pod (HTTP 403): {body}")
        if error.status == 401:
            return PodFailure(
                CONFIGURATION,
                f"the Kubernetes API server answered HTTP 401: the credentials were refused ({body}); renew "
                "the token or certificate of the kubernetes_default connection",
            )
        if error.status == 403:
            return PodFailure(
                CONFIGURATION,
                f"the Kubernetes API server answered HTTP 403: this identity is not allowed to run training "
                f"pods ({body}); grant it the mlops-training Role (helm-values/) in the training namespace",
            )
        if error.status == 404 and "namespaces" in body:
            return PodFailure(
                CONFIGURATION,
                f"the training namespace does not exist (HTTP 404: {body}); create it or set "
                "MLOPS_TRAINING_NAMESPACE",
            )
        if error.status in (400, 422):
            return PodFailure(
                CONFIGURATION, f"the Kubernetes API refused the pod (HTTP {error.status}): {body}"
            )
        if error.status in (404, 409, 410):
            return None  # a pod-level outcome (e.g. the pod is gone): judged from the pod
        return PodFailure(TRANSIENT, f"the Kubernetes API server answered HTTP {error.status}: {body}")
    return None


def classify_pod_failure(
    pod: Any, container_name: str = "base", error: BaseException | None = None, pod_gone: bool = False
) -> PodFailure:
    """Classify a failed run from the freshly read pod (``None`` if it is gone) and the error raised.

    ``pod`` may be a ``V1Pod`` or the same object as a dict.
    """
    if pod is None:
        for cause in _chain(error):
            if (api := classify_api_error(cause)) is not None:
                return api
        if pod_gone:
            return PodFailure(
                DISRUPTION, "the pod was deleted while it ran (preempted, evicted or removed): retried"
            )
        return PodFailure(DISRUPTION, "the pod disappeared before its outcome could be read: retried")

    summary = describe_pod(pod, container_name)
    status = _container_status(pod, container_name)
    terminated = _get(status, "state", "terminated")
    waiting = _get(status, "state", "waiting")
    exit_code = _get(terminated, "exit_code")
    term_reason = _get(terminated, "reason")

    disruption = next(
        (
            c
            for c in _get(pod, "status", "conditions") or []
            if _get(c, "type") == "DisruptionTarget" and _get(c, "status") == "True"
        ),
        None,
    )
    if disruption is not None:
        return PodFailure(DISRUPTION, f"{summary}; the platform ended the pod: retried", exit_code)
    if _get(pod, "status", "reason") in _NODE_REASONS:
        return PodFailure(DISRUPTION, f"{summary}; the node ended the pod: retried", exit_code)
    if term_reason == "ContainerStatusUnknown":
        return PodFailure(DISRUPTION, f"{summary}; the node lost the container (reboot): retried", exit_code)
    if _get(pod, "status", "reason") == "DeadlineExceeded":
        return PodFailure(
            DEADLINE,
            f"{summary}; the run used its whole time budget (timeout_minutes): not retried; raise "
            "timeout_minutes or shorten the run",
            exit_code,
        )
    if _get(pod, "metadata", "deletion_timestamp") and terminated is None:
        return PodFailure(DISRUPTION, f"{summary}; the pod was deleted while it ran: retried")

    if waiting is not None or (terminated is None and _get(pod, "status", "phase") == "Pending"):
        return _start_failure(pod, summary, container_name, _get(waiting, "reason"), error)

    if term_reason == "OOMKilled":
        limit = _memory_limit(pod, container_name)
        at = f" of {limit}" if limit else ""
        return PodFailure(
            OUT_OF_MEMORY,
            f"{summary}; the container ran out of memory at its limit{at}: not retried; choose a larger "
            "compute_profile (more memory) or a smaller batch_size",
            exit_code,
        )
    if exit_code is None:
        for cause in _chain(error):
            if (api := classify_api_error(cause)) is not None:
                return api
        return PodFailure(TRANSIENT, f"{summary}; no container verdict: retried")
    if exit_code == 0:
        return PodFailure(TRANSIENT, f"{summary}; the container succeeded but the pod did not: retried", 0)
    return _exit_code_failure(summary, exit_code)


def _exit_code_failure(summary: str, code: int) -> PodFailure:
    name = exit_codes.NAMES.get(code, "training code")
    if code == exit_codes.TRANSIENT_STORAGE:
        return PodFailure(TRANSIENT, f"{summary}; trainer exit code {code} ({name}): retried", code)
    if code == exit_codes.SIGTERM:
        return PodFailure(DISRUPTION, f"{summary}; trainer exit code {code} ({name}): retried", code)
    if code == exit_codes.CONFIGURATION:
        return PodFailure(
            CONFIGURATION,
            f"{summary}; trainer exit code {code} ({name}): not retried; fix the parameter",
            code,
        )
    if code == exit_codes.DATA:
        return PodFailure(
            DATA, f"{summary}; trainer exit code {code} ({name}): not retried; fix the data", code
        )
    return PodFailure(TRAINING_CODE, f"{summary}; trainer exit code {code} (training code)", code)


def _start_failure(
    pod: Any, summary: str, container_name: str, reason: str | None, error: BaseException | None
) -> PodFailure:
    status = _container_status(pod, container_name)
    message = _get(status, "state", "waiting", "message") or ""
    image = _get(status, "image")
    if not image:
        containers = _get(pod, "spec", "containers") or []
        image = next((_get(c, "image") for c in containers if _get(c, "name") == container_name), None)
    if reason == "CreateContainerConfigError":
        return PodFailure(
            CONFIGURATION,
            f"{summary}; the container cannot start: CreateContainerConfigError: {_short(message)}; not "
            "retried; create the Secret (or key) it names in the pod's namespace, or fix the reference",
        )
    if reason in ("InvalidImageName", "ErrImageNeverPull"):
        return PodFailure(
            CONFIGURATION, f'{summary}; image "{image}" cannot be used ({reason}): not retried; fix the image'
        )
    if reason in ("ErrImagePull", "ImagePullBackOff"):
        if any(marker in message.lower() for marker in _IMAGE_MISSING):
            return PodFailure(
                CONFIGURATION,
                f'{summary}; image "{image}" does not exist ({reason}, not found): not retried; check the '
                "image name and tag",
            )
        return PodFailure(TRANSIENT, f'{summary}; image "{image}" could not be pulled now: retried')
    text = " ".join(str(e) for e in _chain(error))
    if _SCHEDULE_TIMEOUT in text or _get(pod, "spec", "node_name") is None:
        scheduled = next(
            (c for c in _get(pod, "status", "conditions") or [] if _get(c, "type") == "PodScheduled"), None
        )
        why = _get(scheduled, "message") or "no node fits"
        limit = re.search(r"More than (\d+)s", text)
        within = f" within {limit.group(1)} s" if limit else ""
        return PodFailure(CAPACITY, f"{summary}; the pod was not scheduled{within}: {_short(why)}: retried")
    if _START_TIMEOUT in text:
        return PodFailure(TRANSIENT, f"{summary}; the container did not start in time: retried")
    return PodFailure(TRANSIENT, f"{summary}; the pod did not start: retried")
