"""ResourceQuota admission for pods, as kube-apiserver's ResourceQuota plugin does it.

Followed: staging/src/k8s.io/apiserver/pkg/admission/plugin/resourcequota/controller.go (``checkRequest``:
a create whose usage would pass any ``hard`` limit is refused with 403 Forbidden,
``exceeded quota: NAME, requested: ..., used: ..., limited: ...``; a tracked cpu/memory resource the pod
does not set is ``failed quota: NAME: must specify ...``) and pkg/quota/v1/evaluator/core/pods.go (what a
pod uses: ``pods``, ``requests.*``/``limits.*``, bare ``cpu``/``memory`` meaning requests, extended
resources only as ``requests.<name>``; pods in a terminal phase use nothing). The refused pod is never
stored: no Pending pod exists afterwards. The kubernetes.io page "Resource Quotas" describes the same.
"""

from __future__ import annotations

from decimal import Decimal

from kubernetes.utils import parse_quantity

from .errors import ApiError
from .resources import resource_for
from .store import Store

PODS, QUOTAS = resource_for("Pod"), resource_for("ResourceQuota")
TERMINAL = ("Succeeded", "Failed")
_MUST_SPECIFY = ("requests.cpu", "requests.memory", "limits.cpu", "limits.memory", "cpu", "memory")
_BINARY = (("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10))


def _container_amounts(container: dict, kind: str) -> dict[str, Decimal]:
    res = container.get("resources") or {}
    limits = res.get("limits") or {}
    # The API server defaults a missing request to the limit (pkg/apis/core/v1/defaults.go).
    values = {**limits, **(res.get("requests") or {})} if kind == "requests" else limits
    return {name: parse_quantity(value) for name, value in values.items()}


def _pod_amounts(spec: dict, kind: str) -> dict[str, Decimal]:
    """Sum over containers, at least the largest init container (the pod's effective request/limit)."""
    total: dict[str, Decimal] = {}
    for container in spec.get("containers") or []:
        for name, value in _container_amounts(container, kind).items():
            total[name] = total.get(name, Decimal(0)) + value
    for container in spec.get("initContainers") or []:
        for name, value in _container_amounts(container, kind).items():
            total[name] = max(total.get(name, Decimal(0)), value)
    return total


def pod_usage(pod: dict) -> dict[str, Decimal]:
    """What one pod counts against a quota (nothing once it is Succeeded or Failed)."""
    if (pod.get("status") or {}).get("phase") in TERMINAL:
        return {}
    usage = {"pods": Decimal(1), "count/pods": Decimal(1)}
    for name, value in _pod_amounts(pod["spec"], "requests").items():
        usage[f"requests.{name}"] = value
        if name in ("cpu", "memory", "ephemeral-storage"):
            usage[name] = value
    for name, value in _pod_amounts(pod["spec"], "limits").items():
        if name in ("cpu", "memory", "ephemeral-storage"):
            usage[f"limits.{name}"] = value
    return usage


def format_quantity(name: str, value: Decimal) -> str:
    """Render like resource.Quantity's canonical String(): ``500m``, ``8``, ``240Gi``."""
    if value != value.to_integral_value():
        return f"{int(value * 1000)}m"
    number = int(value)
    if ("memory" in name or "storage" in name) and number:
        for suffix, size in _BINARY:
            if number % size == 0:
                return f"{number // size}{suffix}"
    return str(number)


def _pretty(name_values: dict[str, Decimal]) -> str:
    return ",".join(f"{k}={format_quantity(k, v)}" for k, v in sorted(name_values.items()))


def namespace_usage(store: Store, namespace: str) -> dict[str, Decimal]:
    """Usage of every non-terminal pod of the namespace."""
    used: dict[str, Decimal] = {}
    for pod in store.list(PODS, namespace)[0]:
        for name, value in pod_usage(pod).items():
            used[name] = used.get(name, Decimal(0)) + value
    return used


def admit_pod(store: Store, pod: dict) -> None:
    """Raise the 403 the API answers when ``pod`` does not fit a quota of its namespace."""
    namespace = pod["metadata"]["namespace"]
    quotas = store.list(QUOTAS, namespace)[0]
    if not quotas:
        return
    name = pod["metadata"].get("name") or pod["metadata"].get("generateName") or ""
    requested = pod_usage(pod)
    used = namespace_usage(store, namespace)
    for quota in sorted(quotas, key=lambda q: q["metadata"]["name"]):
        quota_name = quota["metadata"]["name"]
        hard = {k: parse_quantity(v) for k, v in ((quota.get("spec") or {}).get("hard") or {}).items()}
        missing = sorted(k for k in hard if k in _MUST_SPECIFY and k not in requested)
        if missing:
            raise _forbidden(name, f"failed quota: {quota_name}: must specify {','.join(missing)}")
        exceeded = sorted(
            k for k in hard if k in requested and used.get(k, Decimal(0)) + requested[k] > hard[k]
        )
        if exceeded:
            message = (
                f"exceeded quota: {quota_name}, "
                f"requested: {_pretty({k: requested[k] for k in exceeded})}, "
                f"used: {_pretty({k: used.get(k, Decimal(0)) for k in exceeded})}, "
                f"limited: {_pretty({k: hard[k] for k in exceeded})}"
            )
            raise _forbidden(name, message)


def refresh_status(store: Store, namespace: str) -> None:
    """Write ``status.hard``/``status.used`` of the namespace's quotas, as the quota controller does."""
    used = namespace_usage(store, namespace)
    for quota in store.list(QUOTAS, namespace)[0]:
        hard = (quota.get("spec") or {}).get("hard") or {}
        status = {
            "hard": dict(hard),
            "used": {k: format_quantity(k, used.get(k, Decimal(0))) for k in hard},
        }

        def apply(obj: dict, status: dict = status) -> dict:
            obj["status"] = status
            return obj

        store.mutate(QUOTAS, namespace, quota["metadata"]["name"], apply, mode="status")


def _forbidden(name: str, cause: str) -> ApiError:
    # admission.NewForbidden: `pods "NAME" is forbidden: CAUSE`, reason Forbidden, code 403.
    return ApiError(403, f'pods "{name}" is forbidden: {cause}', "Forbidden", {"name": name, "kind": "pods"})
