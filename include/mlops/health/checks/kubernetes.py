"""Kubernetes checks through the official client and the ``kubernetes_default`` connection.

After the seed's kubectl scripts: Deployments available vs desired; pods stuck in
CrashLoopBackOff/ImagePullBackOff or Pending too long; HPAs pinned at their maximum;
GPU nodes Ready and allocatable GPUs.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from mlops.health.config import CheckSpec
from mlops.health.context import CheckContext
from mlops.health.results import CheckResult

_NAMESPACED = {
    "namespace": {"type": "string", "minLength": 1},
    "label_selector": {"type": "string"},
}
# Imported before the sweep's clocks start: a cold import must not eat a check's timeout.
PRELOAD = ("kubernetes.client", "kubernetes.utils", "airflow.providers.cncf.kubernetes.hooks.kubernetes")

SCHEMAS: dict[str, dict[str, Any]] = {
    "kubernetes_deployments": {"required": ["namespace"], "properties": dict(_NAMESPACED)},
    "kubernetes_pods": {
        "required": ["namespace"],
        "properties": {
            **_NAMESPACED,
            "pending_max_seconds": {"type": "number", "minimum": 0},
            "crash_window_seconds": {"type": "number", "minimum": 0},
            "bad_reasons": {"type": "array", "items": {"type": "string"}},
        },
    },
    "kubernetes_hpas": {"required": ["namespace"], "properties": dict(_NAMESPACED)},
    "kubernetes_gpu_nodes": {
        "properties": {
            "label_selector": {"type": "string"},
            "resource": {"type": "string"},
            "min_ready_nodes": {"type": "integer", "minimum": 0},
            "min_allocatable": {"type": "integer", "minimum": 0},
        },
    },
}
BAD_WAITING_REASONS = (
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "CreateContainerConfigError",
    "InvalidImageName",
)


def _api_client(ctx: CheckContext) -> Any:
    from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

    return KubernetesHook(conn_id=ctx.settings.kubernetes_conn_id).get_conn()


def _list(spec: CheckSpec, ctx: CheckContext, api: str, method: str, *namespace: str) -> list[Any]:
    """``client.<api>(...).<method>(*namespace)`` items, with the check's label selector and timeout."""
    from kubernetes import client

    lister = getattr(getattr(client, api)(_api_client(ctx)), method)
    return lister(
        *namespace,
        label_selector=spec.params.get("label_selector") or "",
        _request_timeout=spec.timeout_seconds,
    ).items


def deployments(spec: CheckSpec, ctx: CheckContext) -> list[CheckResult]:
    """One result per Deployment: available replicas must reach the desired count."""
    ns = spec.params["namespace"]
    items = _list(spec, ctx, "AppsV1Api", "list_namespaced_deployment", ns)
    results = []
    for d in items:
        desired = d.spec.replicas if d.spec.replicas is not None else 1
        available = (d.status.available_replicas or 0) if d.status else 0
        stale = bool(d.status and (d.status.observed_generation or 0) < (d.metadata.generation or 0))
        ok = available >= desired
        summary = f"deployment {ns}/{d.metadata.name}: {available}/{desired} available"
        if stale:
            summary += " (rollout not yet observed)"
        results.append(
            CheckResult(
                spec.name,
                f"{ns}/deployment/{d.metadata.name}",
                ok,
                summary,
                details={"available": available, "desired": desired},
            )
        )
    return results


def _owner(pod: Any) -> str:
    refs = pod.metadata.owner_references or []
    if not refs:
        return f"pod/{pod.metadata.name}"
    ref = refs[0]
    if ref.kind == "ReplicaSet":
        # Report the Deployment, not the ReplicaSet or pod: churning names would open new incidents.
        template_hash = (pod.metadata.labels or {}).get("pod-template-hash")
        if template_hash and ref.name.endswith(f"-{template_hash}"):
            return f"deployment/{ref.name[: -len(template_hash) - 1]}"
    return f"{ref.kind.lower()}/{ref.name}"


def pods(spec: CheckSpec, ctx: CheckContext) -> list[CheckResult]:
    """One result per workload owning unhealthy pods.

    Unhealthy: waiting in a back-off reason (CrashLoopBackOff, ImagePullBackOff...), a
    crash within ``crash_window_seconds`` (a crash-looping container runs briefly between
    back-offs), or Pending longer than ``pending_max_seconds``.
    """
    ns = spec.params["namespace"]
    pending_max = spec.params.get("pending_max_seconds", 600)
    crash_window = spec.params.get("crash_window_seconds", 600)
    bad = set(spec.params.get("bad_reasons", BAD_WAITING_REASONS))
    items = _list(spec, ctx, "CoreV1Api", "list_namespaced_pod", ns)
    now = dt.datetime.now(dt.UTC)
    problems: dict[str, list[str]] = {}
    for pod in items:
        owner = f"{ns}/{_owner(pod)}"
        problems.setdefault(owner, [])
        status = pod.status
        statuses = (
            [*(status.init_container_statuses or []), *(status.container_statuses or [])] if status else []
        )
        for cs in statuses:
            waiting = cs.state.waiting if cs.state else None
            last = cs.last_state.terminated if cs.last_state else None
            if waiting is not None and waiting.reason in bad:
                problems[owner].append(
                    f"pod {pod.metadata.name} container {cs.name}: {waiting.reason} "
                    f"(restarts {cs.restart_count})"
                )
            elif (  # between back-offs a crash-looping container runs briefly: its last crash still counts
                last is not None
                and last.exit_code
                and last.finished_at is not None
                and (now - last.finished_at).total_seconds() < crash_window
            ):
                problems[owner].append(
                    f"pod {pod.metadata.name} container {cs.name}: crashed {cs.restart_count} times, "
                    f"last exit {last.exit_code} ({last.reason or 'Error'}) at {last.finished_at.isoformat()}"
                )
        created = pod.metadata.creation_timestamp
        if status and status.phase == "Pending" and created is not None:
            age = (now - created).total_seconds()
            if age > pending_max:
                problems[owner].append(
                    f"pod {pod.metadata.name} Pending for {age:.0f}s (max {pending_max:g}s)"
                )
    return [
        CheckResult(
            spec.name,
            owner,
            not found,
            f"{owner}: " + ("; ".join(found) if found else "pods healthy"),
            details={"problems": found},
        )
        for owner, found in sorted(problems.items())
    ]


def hpas(spec: CheckSpec, ctx: CheckContext) -> list[CheckResult]:
    """One result per HorizontalPodAutoscaler: failing while pinned at ``maxReplicas``."""
    ns = spec.params["namespace"]
    items = _list(spec, ctx, "AutoscalingV2Api", "list_namespaced_horizontal_pod_autoscaler", ns)
    results = []
    for h in items:
        current = (h.status.current_replicas or 0) if h.status else 0
        maximum = h.spec.max_replicas
        minimum = h.spec.min_replicas if h.spec.min_replicas is not None else 1
        fixed = minimum >= maximum  # a fixed-size HPA is always "at its maximum": nothing to scale into
        ok = fixed or current < maximum
        note = " (fixed size: min == max)" if fixed else "" if ok else " (at maximum)"
        results.append(
            CheckResult(
                spec.name,
                f"{ns}/hpa/{h.metadata.name}",
                ok,
                f"hpa {ns}/{h.metadata.name}: {current}/{maximum} replicas{note}",
                details={"current": current, "min": minimum, "max": maximum},
            )
        )
    return results


def _quantity(value: Any) -> int:
    from kubernetes.utils import parse_quantity

    return int(parse_quantity(value)) if value is not None else 0


def gpu_nodes(spec: CheckSpec, ctx: CheckContext) -> list[CheckResult]:
    """One result for the GPU pool: Ready GPU nodes and allocatable GPUs against minimums."""
    p = spec.params
    resource = p.get("resource", "nvidia.com/gpu")
    nodes = _list(spec, ctx, "CoreV1Api", "list_node")
    ready_nodes, allocatable, not_ready, no_gpus = 0, 0, [], []
    for node in nodes:
        gpus = _quantity((node.status.allocatable or {}).get(resource)) if node.status else 0
        capacity = _quantity((node.status.capacity or {}).get(resource)) if node.status else 0
        if gpus == 0 and capacity == 0 and not p.get("label_selector"):
            continue  # not a GPU node
        ready = any(c.type == "Ready" and c.status == "True" for c in (node.status.conditions or []))
        unschedulable = bool(node.spec and node.spec.unschedulable)
        if ready and not unschedulable:
            ready_nodes += 1
            allocatable += gpus
            if gpus == 0:  # a Ready GPU node offering none: its device plugin is gone or unhealthy
                no_gpus.append(node.metadata.name)
        else:
            not_ready.append(node.metadata.name)
    min_nodes, min_gpus = p.get("min_ready_nodes", 1), p.get("min_allocatable", 1)
    problems = []
    if ready_nodes < min_nodes:
        problems.append(f"{ready_nodes} Ready GPU nodes, expected at least {min_nodes}")
    if allocatable < min_gpus:
        problems.append(f"{allocatable} allocatable {resource}, expected at least {min_gpus}")
    ok = not problems
    if not_ready:  # reported, but the pool only fails below its minimums
        problems.append(f"not schedulable: {', '.join(sorted(not_ready))}")
    if no_gpus:
        problems.append(f"Ready but 0 allocatable {resource} (device plugin?): {', '.join(sorted(no_gpus))}")
    summary = "GPU pool: " + "; ".join(problems or [f"{ready_nodes} nodes, {allocatable} {resource}"])
    details: dict[str, Any] = {
        "ready_nodes": ready_nodes,
        "allocatable": allocatable,
        "not_ready": sorted(not_ready),
    }
    if no_gpus:
        details["no_allocatable"] = sorted(no_gpus)
    return [CheckResult(spec.name, "gpu-pool", ok, summary, details=details)]


RUNNERS = {
    "kubernetes_deployments": deployments,
    "kubernetes_pods": pods,
    "kubernetes_hpas": hpas,
    "kubernetes_gpu_nodes": gpu_nodes,
}
