"""Export the platform namespaces' configuration as clean, re-appliable YAML.

Exported kinds: Deployments, StatefulSets, CronJobs, Services, ConfigMaps,
PersistentVolumeClaims, HorizontalPodAutoscalers, PodDisruptionBudgets, Ingresses,
NetworkPolicies, ServiceAccounts, Roles and RoleBindings, plus the custom resources
named in the settings (``backup_kube_custom_resources``: ``group/version/plural``).
Secrets are listed as metadata only (the ``PartialObjectMetadataList`` form of a
list: the API server never sends their data) and recorded by name and type in the
export's ``manifest.json``; restore them from the secret store.

It needs only ``get``/``list`` on those resources (the read-only Role of
helm-values); a refusal fails the export naming the verb and resource
(:class:`ExportForbidden`).

"Clean" means what the API server fills in is stripped, so that
``kubectl apply -R -f <export>/`` (or the official client's create) recreates
the objects on an empty namespace or another cluster:

- ``status``; ``metadata.uid/resourceVersion/generation/creationTimestamp/
  managedFields/selfLink/deletionTimestamp/deletionGracePeriodSeconds/ownerReferences``;
- the ``kubectl.kubernetes.io/last-applied-configuration`` and
  ``deployment.kubernetes.io/revision`` annotations;
- Services: ``clusterIP``/``clusterIPs`` (allocated per cluster) and the
  single-stack IP family defaults; a headless Service keeps ``clusterIP: None``
  (without it, it would come back as a normal Service);
- Deployments: the template's ``creationTimestamp: null``;
- ServiceAccounts: the legacy auto-generated token ``secrets`` list.

Objects that the cluster makes by itself are not exported: anything owned by a
controller (``ownerReferences[].controller``), the ``default`` ServiceAccount
and the ``kube-root-ca.crt`` ConfigMap.

Each export has its own id: ``kubernetes/<date>/<export id>/<namespace>/<Kind>/<name>.yaml``
(names such as ``airflow:pod-launcher`` kept readable), every object written with
``If-None-Match: *``, and ``manifest.json`` last (the commit point).
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from mlops.backups import layout
from mlops.backups.s3 import Encryption, ensure_bucket, put_new

log = logging.getLogger(__name__)


class ExportForbidden(RuntimeError):
    """The API server refused a read the export needs (RBAC): the message names verb and resource."""


@dataclass(frozen=True)
class ExportedKind:
    """A namespaced resource, listed at ``/api(s)/<api_version>/namespaces/<ns>/<plural>``."""

    kind: str
    api_version: str
    plural: str

    def path(self, namespace: str) -> str:
        root = "/api" if "/" not in self.api_version else "/apis"
        return f"{root}/{self.api_version}/namespaces/{namespace}/{self.plural}"


EXPORTED_KINDS: list[ExportedKind] = [
    ExportedKind("ServiceAccount", "v1", "serviceaccounts"),
    ExportedKind("ConfigMap", "v1", "configmaps"),
    ExportedKind("Service", "v1", "services"),
    ExportedKind("PersistentVolumeClaim", "v1", "persistentvolumeclaims"),
    ExportedKind("Deployment", "apps/v1", "deployments"),
    ExportedKind("StatefulSet", "apps/v1", "statefulsets"),
    ExportedKind("CronJob", "batch/v1", "cronjobs"),
    ExportedKind("HorizontalPodAutoscaler", "autoscaling/v2", "horizontalpodautoscalers"),
    ExportedKind("PodDisruptionBudget", "policy/v1", "poddisruptionbudgets"),
    ExportedKind("Ingress", "networking.k8s.io/v1", "ingresses"),
    ExportedKind("NetworkPolicy", "networking.k8s.io/v1", "networkpolicies"),
    ExportedKind("Role", "rbac.authorization.k8s.io/v1", "roles"),
    ExportedKind("RoleBinding", "rbac.authorization.k8s.io/v1", "rolebindings"),
]
SECRETS = ExportedKind("Secret", "v1", "secrets")
# The list form that carries metadata only (what `kubectl get --output-watch-events` and
# client-go's metadata informers ask for): Kubernetes API concepts, "Receiving resources as
# PartialObjectMetadata", https://kubernetes.io/docs/reference/using-api/api-concepts/
METADATA_ONLY = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"


def custom_kinds(spec: str) -> list[ExportedKind]:
    """``group/version/plural[,...]`` (setting ``backup_kube_custom_resources``) as exported kinds.

    The kind is read from each list's items; ``plural`` names the directory until then.
    """
    out = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        parts = item.split("/")
        if len(parts) != 3 or not all(parts):
            raise ValueError(f"MLOPS_BACKUP_KUBE_CUSTOM_RESOURCES: {item!r} is not group/version/plural")
        out.append(ExportedKind("", f"{parts[0]}/{parts[1]}", parts[2]))
    return out


SERVER_METADATA = (
    "uid", "resourceVersion", "generation", "creationTimestamp", "managedFields", "selfLink",
    "deletionTimestamp", "deletionGracePeriodSeconds", "ownerReferences",
)  # fmt: skip
SERVER_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration", "deployment.kubernetes.io/revision")
CLUSTER_MADE = {("ServiceAccount", "default"), ("ConfigMap", "kube-root-ca.crt")}


def is_cluster_made(kind: str, obj: dict[str, Any]) -> bool:
    """True for objects a controller or the API server creates by itself (recreated on their own)."""
    meta = obj.get("metadata", {})
    if (kind, meta.get("name")) in CLUSTER_MADE:
        return True
    return any(ref.get("controller") for ref in meta.get("ownerReferences") or [])


def clean_object(kind: str, api_version: str, obj: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``obj`` without server-populated fields (see the module docstring), ready to apply."""
    out = copy.deepcopy(obj)
    out.pop("status", None)
    meta = out.get("metadata", {})
    for key in SERVER_METADATA:
        meta.pop(key, None)
    if meta.get("name"):
        meta.pop("generateName", None)
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k not in SERVER_ANNOTATIONS}
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)
    if not meta.get("labels"):
        meta.pop("labels", None)
    spec = out.get("spec") or {}
    if kind == "Service" and spec.get("clusterIP") != "None":
        spec.pop("clusterIP", None)
        spec.pop("clusterIPs", None)
        if spec.get("ipFamilyPolicy") in (None, "SingleStack"):
            spec.pop("ipFamilyPolicy", None)
            spec.pop("ipFamilies", None)
    if kind == "Service" and spec.get("clusterIP") == "None":
        spec.pop("clusterIPs", None)  # clusterIP: None stays: it is what makes the Service headless
    if kind in ("Deployment", "StatefulSet"):
        template_meta = (spec.get("template") or {}).get("metadata") or {}
        template_meta.pop("creationTimestamp", None)
    if kind == "ServiceAccount":
        out.pop("secrets", None)
    # Fixed key order: apiVersion, kind, metadata, then the rest as the server had it.
    head = {"apiVersion": api_version, "kind": kind, "metadata": meta}
    return head | {k: v for k, v in out.items() if k not in head}


@dataclass
class KubeExport:
    """Clean objects and Secret names of some namespaces."""

    objects: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)  # (ns, kind, name)
    secrets: dict[str, list[dict[str, str]]] = field(default_factory=dict)  # ns -> [{name, type}]
    skipped: list[str] = field(default_factory=list)


def _list(api_client: Any, kind: ExportedKind, namespace: str, accept: str = "application/json") -> dict:
    """One list call through the official client, as raw JSON (the models drop unknown fields)."""
    from kubernetes.client.exceptions import ApiException

    try:
        resp = api_client.call_api(
            kind.path(namespace),
            "GET",
            header_params={"Accept": accept},
            auth_settings=["BearerToken"],
            _preload_content=False,
            _return_http_data_only=True,
        )
    except ApiException as exc:
        if exc.status == 403:
            raise ExportForbidden(
                f"the Kubernetes API refused to list {kind.plural} ({kind.api_version}) in namespace "
                f"{namespace} (403): grant verb 'list' on resource '{kind.plural}' to the export's "
                f"service account (the read-only backup Role in helm-values). Server said: {exc.body}"
            ) from exc
        raise
    return json.loads(resp.data)


def collect(api_client: Any, namespaces: list[str], custom: list[ExportedKind] | None = None) -> KubeExport:
    """Read and clean every exported kind of ``namespaces`` (official client, raw JSON)."""
    export = KubeExport()
    for ns in namespaces:
        for kind in [*EXPORTED_KINDS, *(custom or [])]:
            for item in _list(api_client, kind, ns).get("items", []):
                name = item["metadata"]["name"]
                kind_name = kind.kind or item.get("kind") or kind.plural
                if is_cluster_made(kind_name, item):
                    export.skipped.append(f"{ns}/{kind_name}/{name}")
                    continue
                export.objects[(ns, kind_name, name)] = clean_object(kind_name, kind.api_version, item)
        # Metadata only: Secret values never reach this process.
        listed = _list(api_client, SECRETS, ns, accept=METADATA_ONLY)
        if listed.get("kind") != "PartialObjectMetadataList":
            raise RuntimeError(f"the API server ignored the metadata-only list of Secrets in {ns}")
        export.secrets[ns] = sorted(
            (
                {"name": s["metadata"]["name"]}  # the type is not metadata: not sent in this form
                for s in listed.get("items", [])
            ),
            key=lambda s: s["name"],
        )
    return export


def to_yaml(obj: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(obj, sort_keys=False, default_flow_style=False)


def export_kubernetes(
    api_client: Any,
    s3: Any,
    *,
    bucket: str,
    logical_date: date,
    namespaces: list[str],
    encryption: Encryption | None = None,
    dry_run: bool = False,
    custom_resources: str = "",
    backup_id: str | None = None,
) -> dict[str, Any]:
    """Export ``namespaces`` to ``kubernetes/<date>/<export id>/`` in ``bucket``; returns the manifest."""
    encryption = encryption or Encryption()
    ensure_bucket(s3, bucket)
    backup_id = backup_id or layout.new_backup_id()
    export = collect(api_client, namespaces, custom_kinds(custom_resources))
    counts: dict[str, dict[str, int]] = {}
    for ns, kind, _ in export.objects:
        counts.setdefault(ns, {}).setdefault(kind, 0)
        counts[ns][kind] += 1
    manifest = {
        "format_version": 2,
        "kind": "kubernetes",
        "backup_id": backup_id,
        "logical_date": logical_date.isoformat(),
        "exported_at": datetime.now(UTC).isoformat(),
        "namespaces": namespaces,
        "objects": counts,
        "secrets_by_name_only": export.secrets,
        "skipped_cluster_made": export.skipped,
        "keys": sorted(layout.kubernetes_object_key(logical_date, backup_id, *k) for k in export.objects),
    }
    if dry_run:
        log.info("Dry run: would export %d objects of %s", len(export.objects), namespaces)
        return manifest
    for (ns, kind, name), obj in export.objects.items():
        key = layout.kubernetes_object_key(logical_date, backup_id, ns, kind, name)
        put_new(s3, bucket, key, to_yaml(obj).encode(), encryption, content_type="application/yaml")
    manifest_key = layout.kubernetes_manifest_key(logical_date, backup_id)
    put_new(s3, bucket, manifest_key, json.dumps(manifest, indent=2).encode(), encryption)
    log.info(
        "Exported %d objects (%s) and %d Secret names to s3://%s/%s",
        len(export.objects),
        counts,
        sum(len(v) for v in export.secrets.values()),
        bucket,
        layout.kubernetes_prefix(logical_date, backup_id),
    )
    return manifest


def api_client_from_connection(conn_id: str) -> Any:
    """The official client's ApiClient for the Airflow Kubernetes connection ``conn_id``."""
    from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

    return KubernetesHook(conn_id=conn_id).get_conn()
