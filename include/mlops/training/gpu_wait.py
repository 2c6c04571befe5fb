"""Waiting for GPUs: a run that does not fit the namespace's GPU quota waits, deferred, instead of failing.

Why a deferral and not Kueue or an Airflow pool:
- Kueue is the right tool on a cluster that runs it, but it is a cluster component this
  project does not ship, and the provider's Kueue operators start Jobs, not the pod the
  training task watches, logs and classifies.
- An Airflow pool counts slots per task, fixed when the DAG is parsed (``pool_slots``),
  while a run's GPU count is a run parameter (1-8); and a pool knows nothing of the GPUs
  that other tenants of the namespace hold. The namespace's ResourceQuota is the real
  budget (it is what refuses the pod with 403 "exceeded quota").

So before creating its pod, the task compares its GPU request with what the quotas that
apply to it leave free, counted the way the quota admission counts: the GPU requests of
the namespace's non-terminal pods (Kubernetes ``pkg/quota/v1/evaluator/core/pods.go``:
a pod in phase Succeeded or Failed is not charged). If it does not fit, or if pod creation
is refused with 403 "exceeded quota" anyway (another run got there first), the task
defers with a timer: it shows as *deferred* in the UI, holds no worker slot, spends no
retry and pages no one, and its log says what it waits for. When the run's
``gpu_wait_minutes`` are spent, it fails with a message naming the quota.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from mlops.training.profiles import GPU_RESOURCE

_QUOTA_KEY = f"requests.{GPU_RESOURCE}"
_QUANTITY = re.compile(r"^(\d+)$")


@dataclass(frozen=True)
class QuotaShortfall:
    """A quota that cannot fit the request: its name, hard limit, what is used, and by whom."""

    quota: str
    hard: int
    used: int
    holders: tuple[str, ...]

    @property
    def free(self) -> int:
        return max(self.hard - self.used, 0)


def _get(obj: Any, *path: str) -> Any:
    for name in path:
        if obj is None:
            return None
        obj = obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)
    return obj


def _gpus(pod: Any) -> int:
    total = 0
    for container in _get(pod, "spec", "containers") or []:
        requests = _get(container, "resources", "requests") or {}
        value = str(requests.get(GPU_RESOURCE, "0"))
        total += int(value) if _QUANTITY.match(value) else 0
    return total


def _scope_matches(quota: Any, priority_class: str | None) -> bool:
    """Only the PriorityClass scope selector is understood; a quota with other scopes is skipped."""
    scopes = _get(quota, "spec", "scopes") or []
    expressions = _get(quota, "spec", "scope_selector", "match_expressions") or []
    if scopes:
        return False
    for expr in expressions:
        if _get(expr, "scope_name") != "PriorityClass":
            return False
        values = set(_get(expr, "values") or [])
        operator = _get(expr, "operator")
        if operator == "In" and priority_class not in values:
            return False
        if operator == "NotIn" and priority_class in values:
            return False
        if operator == "Exists" and not priority_class:
            return False
        if operator == "DoesNotExist" and priority_class:
            return False
    return True


def quota_shortfall(
    core_v1: Any, namespace: str, gpus: int, priority_class: str | None
) -> QuotaShortfall | None:
    """The first GPU quota in ``namespace`` that applies to a pod of ``priority_class`` and has fewer
    than ``gpus`` GPUs free, or ``None`` when the pod fits (or no quota limits GPUs)."""
    if gpus <= 0:
        return None
    quotas = [
        q
        for q in core_v1.list_namespaced_resource_quota(namespace).items
        if _QUOTA_KEY in (_get(q, "spec", "hard") or {}) and _scope_matches(q, priority_class)
    ]
    if not quotas:
        return None
    pods = [
        p
        for p in core_v1.list_namespaced_pod(namespace).items
        if _get(p, "status", "phase") not in ("Succeeded", "Failed")
    ]
    for quota in quotas:
        hard_text = str(quota.spec.hard[_QUOTA_KEY])
        hard = int(hard_text) if _QUANTITY.match(hard_text) else 0
        charged = [
            p for p in pods if _gpus(p) and _scope_matches(quota, _get(p, "spec", "priority_class_name"))
        ]
        used = sum(_gpus(p) for p in charged)
        if hard - used < gpus:
            holders = tuple(f"{p.metadata.name} ({_gpus(p)})" for p in charged)
            return QuotaShortfall(quota.metadata.name, hard, used, holders)
    return None


def is_quota_refusal(error: BaseException | None) -> bool:
    """Whether ``error`` (or one it was raised from) is the API's 403 "exceeded quota" at pod create."""
    seen = 0
    while error is not None and seen < 6:
        if getattr(error, "status", None) == 403 and "exceeded quota" in str(
            getattr(error, "body", "") or error
        ):
            return True
        error, seen = error.__cause__ or error.__context__, seen + 1
    return False
