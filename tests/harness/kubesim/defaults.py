"""Create-time defaulting and validation, per kind (the subset of the real admission chain tests rely on)."""

from __future__ import annotations

import base64
import itertools

from .errors import invalid
from .resources import Resource
from .selectors import selector_from_spec

_cluster_ips = itertools.count(10)


def _image_pull_policy(image: str) -> str:
    last = image.rsplit("/", 1)[-1]
    if "@" in last:
        return "IfNotPresent"
    return "Always" if ":" not in last or last.endswith(":latest") else "IfNotPresent"


def default_pod_spec(spec: dict) -> dict:
    """Fill the defaults the API server adds to a pod spec."""
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("securityContext", {})
    if spec.get("serviceAccountName") or spec.get("serviceAccount"):
        spec.setdefault("serviceAccountName", spec.get("serviceAccount"))
    else:
        spec["serviceAccountName"] = "default"
    spec["serviceAccount"] = spec["serviceAccountName"]
    for container in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        container.setdefault("terminationMessagePolicy", "File")
        container.setdefault("terminationMessagePath", "/dev/termination-log")
        container.setdefault("imagePullPolicy", _image_pull_policy(container.get("image", "")))
        container.setdefault("resources", {})
        for port in container.get("ports") or []:
            port.setdefault("protocol", "TCP")
    return spec


def _validate_pod_spec(res: Resource, name: str, spec: dict | None, field: str) -> None:
    containers = (spec or {}).get("containers") or []
    if not containers:
        raise invalid(res, name, f"{field}.containers", "Required value")
    for n, container in enumerate(containers):
        if not container.get("name"):
            raise invalid(res, name, f"{field}.containers[{n}].name", "Required value")
        if not container.get("image"):
            raise invalid(res, name, f"{field}.containers[{n}].image", "Required value")


def qos_class(spec: dict) -> str:
    """The pod's QoS class from its containers' requests and limits."""
    containers = spec.get("containers") or []
    resources = [c.get("resources") or {} for c in containers]
    if not any(r.get("requests") or r.get("limits") for r in resources):
        return "BestEffort"
    for r in resources:
        limits, requests = r.get("limits") or {}, {**(r.get("limits") or {}), **(r.get("requests") or {})}
        if any(k not in limits or limits[k] != requests.get(k) for k in ("cpu", "memory")):
            return "Burstable"
    return "Guaranteed"


def prepare_for_create(res: Resource, obj: dict) -> dict:
    """Validate ``obj`` and fill the defaults Kubernetes would; returns the same dict."""
    meta = obj.setdefault("metadata", {})
    name = meta.get("name") or meta.get("generateName") or ""
    spec = obj.get("spec")
    if res.has_status and res.kind not in ("Namespace", "Node", "Service"):
        obj.pop("status", None)  # status is the controllers' to write, as with the real API
    if res.kind == "Pod":
        _validate_pod_spec(res, name, spec, "spec")
        default_pod_spec(spec)
        obj["status"] = {"phase": "Pending", "qosClass": qos_class(spec)}
    elif res.kind in ("Deployment", "ReplicaSet"):
        spec = obj.setdefault("spec", {})
        template = spec.get("template") or {}
        _validate_pod_spec(res, name, template.get("spec"), "spec.template.spec")
        if not spec.get("selector"):
            raise invalid(res, name, "spec.selector", "Required value")
        if not selector_from_spec(spec["selector"]).matches((template.get("metadata") or {}).get("labels")):
            raise invalid(
                res,
                name,
                "spec.template.metadata.labels",
                "Invalid value: `selector` does not match template `labels`",
            )
        spec.setdefault("replicas", 1)
        default_pod_spec(template["spec"])
        if res.kind == "Deployment":
            spec.setdefault("strategy", {"type": "RollingUpdate"})
            if spec["strategy"].get("type", "RollingUpdate") == "RollingUpdate":
                spec["strategy"].setdefault("rollingUpdate", {"maxUnavailable": "25%", "maxSurge": "25%"})
            spec.setdefault("revisionHistoryLimit", 10)
            spec.setdefault("progressDeadlineSeconds", 600)
    elif res.kind == "Service":
        spec = obj.setdefault("spec", {})
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        if spec.get("clusterIP") != "None":
            n = next(_cluster_ips)
            spec["clusterIP"] = f"10.96.{n // 250}.{n % 250 + 1}"
            spec["clusterIPs"] = [spec["clusterIP"]]
        for port in spec.get("ports") or []:
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", port.get("port"))
        obj.setdefault("status", {"loadBalancer": {}})
    elif res.kind == "Secret":
        encode_string_data(obj)
        obj.setdefault("type", "Opaque")
    elif res.kind == "Namespace":
        obj["status"] = {"phase": "Active"}
    return obj


def encode_string_data(secret: dict) -> dict:
    """Fold ``stringData`` into base64 ``data``, which is all the API ever returns."""
    string_data = secret.pop("stringData", None) or {}
    if string_data:
        data = secret.setdefault("data", {})
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()
    return secret
