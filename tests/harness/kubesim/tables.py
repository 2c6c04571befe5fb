"""Server-side printing: the ``meta.k8s.io/v1`` Table that ``kubectl get`` asks for."""

from __future__ import annotations

from datetime import UTC, datetime

from .resources import Resource


def age(timestamp: str | None) -> str:
    """kubectl's short age format (``42s``, ``5m``, ``3h``, ``2d``)."""
    if not timestamp:
        return "<unknown>"
    created = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    seconds = int((datetime.now(UTC) - created).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def pod_status_text(pod: dict) -> str:
    """The STATUS column of ``kubectl get pods``."""
    if pod["metadata"].get("deletionTimestamp"):
        return "Terminating"
    status = pod.get("status") or {}
    if status.get("reason"):
        return status["reason"]
    for cs in status.get("containerStatuses") or []:
        state = cs.get("state") or {}
        for key in ("waiting", "terminated"):
            if state.get(key, {}).get("reason"):
                return state[key]["reason"]
    return status.get("phase", "Unknown")


def _cells(res: Resource, obj: dict) -> list[tuple[str, object]]:
    meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
    name, created = meta["name"], age(meta.get("creationTimestamp"))
    if res.kind == "Pod":
        statuses = status.get("containerStatuses") or []
        ready = sum(1 for c in statuses if c.get("ready"))
        restarts = sum(c.get("restartCount", 0) for c in statuses)
        total = len(spec.get("containers") or [])
        return [
            ("Name", name),
            ("Ready", f"{ready}/{total}"),
            ("Status", pod_status_text(obj)),
            ("Restarts", restarts),
            ("Age", created),
        ]
    if res.kind == "Deployment":
        ready = f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 1)}"
        return [
            ("Name", name),
            ("Ready", ready),
            ("Up-to-date", status.get("updatedReplicas", 0)),
            ("Available", status.get("availableReplicas", 0)),
            ("Age", created),
        ]
    if res.kind == "ReplicaSet":
        return [
            ("Name", name),
            ("Desired", spec.get("replicas", 0)),
            ("Current", status.get("replicas", 0)),
            ("Ready", status.get("readyReplicas", 0)),
            ("Age", created),
        ]
    if res.kind == "Service":
        ports = ",".join(f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in spec.get("ports") or [])
        return [
            ("Name", name),
            ("Type", spec.get("type", "ClusterIP")),
            ("Cluster-IP", spec.get("clusterIP", "")),
            ("Ports", ports or "<none>"),
            ("Age", created),
        ]
    if res.kind in ("Namespace", "Node"):
        text = status.get("phase", "Active") if res.kind == "Namespace" else "Ready"
        return [("Name", name), ("Status", text), ("Age", created)]
    if res.kind == "Event":
        involved = obj.get("involvedObject") or {}
        return [
            ("Last Seen", age(obj.get("lastTimestamp"))),
            ("Type", obj.get("type", "")),
            ("Reason", obj.get("reason", "")),
            ("Object", f"{str(involved.get('kind', '')).lower()}/{involved.get('name', '')}"),
            ("Message", obj.get("message", "")),
        ]
    return [("Name", name), ("Age", created)]


def to_table(
    res: Resource, items: list[dict], resource_version: str, include_object: str = "PartialObjectMetadata"
) -> dict:
    """A Table of ``items``; rows carry the object (or its metadata) for kubectl's namespace/label columns."""
    sample = _cells(res, items[0]) if items else _cells(res, {"metadata": {"name": ""}})
    columns = [
        {
            "name": col,
            "type": "integer" if isinstance(val, int) else "string",
            "format": "name" if col == "Name" else "",
            "description": "",
            "priority": 0,
        }
        for col, val in sample
    ]
    rows = []
    for obj in items:
        if include_object == "Object":
            row_obj = obj
        elif include_object == "None":
            row_obj = None
        else:
            row_obj = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj["metadata"],
            }
        rows.append({"cells": [val for _, val in _cells(res, obj)], "object": row_obj})
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": columns,
        "rows": rows,
    }
