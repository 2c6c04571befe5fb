"""The resource kinds the simulated API serves, and how their URLs and discovery documents look."""

from __future__ import annotations

from dataclasses import dataclass

ALL_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


@dataclass(frozen=True)
class Resource:
    """One REST resource (e.g. ``deployments`` in ``apps/v1``)."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    # False where the API server's strategy refuses a PUT without metadata.resourceVersion (422).
    unconditional_update: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> str:
        """Store key; unique across groups."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources


def _r(group: str, plural: str, kind: str, **kw) -> Resource:
    version = {"apps": "v1", "autoscaling": "v2"}.get(group, "v1")
    return Resource(group, version, plural, kind, **kw)


RESOURCES: list[Resource] = [
    _r("", "namespaces", "Namespace", namespaced=False, short_names=("ns",), subresources=("status",)),
    _r("", "nodes", "Node", namespaced=False, short_names=("no",), subresources=("status",)),
    _r(
        "",
        "pods",
        "Pod",
        short_names=("po",),
        subresources=("status", "log", "eviction", "proxy"),
        categories=("all",),
    ),
    _r("", "events", "Event", short_names=("ev",)),
    _r(
        "",
        "services",
        "Service",
        short_names=("svc",),
        subresources=("status", "proxy"),
        categories=("all",),
    ),
    _r("", "configmaps", "ConfigMap", short_names=("cm",)),
    _r("", "secrets", "Secret"),
    _r("", "serviceaccounts", "ServiceAccount", short_names=("sa",)),
    _r("", "resourcequotas", "ResourceQuota", short_names=("quota",), subresources=("status",)),
    _r(
        "apps",
        "deployments",
        "Deployment",
        short_names=("deploy",),
        subresources=("status", "scale"),
        categories=("all",),
    ),
    _r(
        "apps",
        "replicasets",
        "ReplicaSet",
        short_names=("rs",),
        subresources=("status", "scale"),
        categories=("all",),
    ),
    _r(
        "autoscaling",
        "horizontalpodautoscalers",
        "HorizontalPodAutoscaler",
        short_names=("hpa",),
        subresources=("status",),
        categories=("all",),
    ),
    _r(
        "policy",
        "poddisruptionbudgets",
        "PodDisruptionBudget",
        short_names=("pdb",),
        subresources=("status",),
    ),
    _r("networking.k8s.io", "networkpolicies", "NetworkPolicy", short_names=("netpol",)),
    _r("networking.k8s.io", "ingresses", "Ingress", short_names=("ing",), subresources=("status",)),
    _r("rbac.authorization.k8s.io", "roles", "Role"),
    _r("rbac.authorization.k8s.io", "rolebindings", "RoleBinding"),
    _r("rbac.authorization.k8s.io", "clusterroles", "ClusterRole", namespaced=False),
    _r("rbac.authorization.k8s.io", "clusterrolebindings", "ClusterRoleBinding", namespaced=False),
    # coordination.k8s.io/v1 Lease (https://kubernetes.io/docs/reference/kubernetes-api/cluster-resources/lease-v1/):
    # spec.holderIdentity, acquireTime, renewTime (MicroTime), leaseDurationSeconds, leaseTransitions; no
    # status subresource. Its registry strategy (kubernetes pkg/registry/coordination/lease/strategy.go)
    # answers AllowUnconditionalUpdate() false: a PUT must carry the resourceVersion it read.
    _r("coordination.k8s.io", "leases", "Lease", unconditional_update=False),
    _r("scheduling.k8s.io", "priorityclasses", "PriorityClass", namespaced=False, short_names=("pc",)),
]

_BY_NAME: dict[str, Resource] = {}
for _res in RESOURCES:
    for _alias in (_res.kind, _res.plural, _res.kind.lower(), _res.key, *_res.short_names):
        _BY_NAME.setdefault(_alias.lower(), _res)


def resource_for(kind: str) -> Resource:
    """Look a resource up by kind ("Pod"), plural ("pods"), short name ("po") or "plural.group"."""
    try:
        return _BY_NAME[kind.lower()]
    except KeyError:
        raise KeyError(f"kubesim does not serve kind {kind!r}") from None


def resource_at(group: str, version: str, plural: str) -> Resource | None:
    """The resource served at ``/api(s)/{group}/{version}/{plural}``, if any."""
    for res in RESOURCES:
        if res.group == group and res.version == version and res.plural == plural:
            return res
    return None


def group_versions() -> dict[str, str]:
    """Every served API group (``""`` is the core group) and its one version."""
    out: dict[str, str] = {}
    for res in RESOURCES:
        out.setdefault(res.group, res.version)
    return out


def _subresource_verbs(sub: str) -> list[str]:
    return {
        "status": ["get", "patch", "update"],
        "scale": ["get", "patch", "update"],
        "log": ["get"],
        "eviction": ["create"],
        "proxy": ["create", "delete", "get", "patch", "update"],
    }[sub]


def api_resource_list(group: str, version: str) -> dict:
    """The discovery document ``kubectl`` reads at ``/api/v1`` or ``/apis/{group}/{version}``."""
    entries = []
    for res in RESOURCES:
        if res.group != group or res.version != version:
            continue
        entry = {
            "name": res.plural,
            "singularName": res.kind.lower(),
            "namespaced": res.namespaced,
            "kind": res.kind,
            "verbs": ALL_VERBS,
        }
        if res.short_names:
            entry["shortNames"] = list(res.short_names)
        if res.categories:
            entry["categories"] = list(res.categories)
        entries.append(entry)
        for sub in res.subresources:
            kind = {"scale": "Scale", "eviction": "Eviction"}.get(sub, res.kind)
            sub_entry = {
                "name": f"{res.plural}/{sub}",
                "singularName": "",
                "namespaced": res.namespaced,
                "kind": kind,
                "verbs": _subresource_verbs(sub),
            }
            if sub == "scale":
                sub_entry.update(group="autoscaling", version="v1")
            elif sub == "eviction":
                sub_entry.update(group="policy", version="v1")
            entries.append(sub_entry)
    gv = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": entries}


def api_group_list() -> dict:
    """The ``/apis`` document: every named group with its one preferred version."""
    groups = []
    for group, version in group_versions().items():
        if not group:
            continue
        gv = {"groupVersion": f"{group}/{version}", "version": version}
        groups.append({"name": group, "versions": [gv], "preferredVersion": gv})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}
