"""Export the platform namespaces' configuration as clean, re-appliable YAML.

Exported kinds: Deployments, Services, ConfigMaps, HorizontalPodAutoscalers,
Ingresses, NetworkPolicies, ServiceAccounts, Roles and RoleBindings. Secrets
are recorded by name and type only, in the export's ``manifest.json``: their
values never leave the cluster (restore them from the secret store).

"Clean" means what the API server fills in is stripped, so that
``kubectl apply -R -f <export>/`` (or the official client's create) recreates
the objects on an empty namespace or another cluster:

- ``status``; ``metadata.uid/resourceVersion/generation/creationTimestamp/
  managedFields/selfLink/deletionTimestamp/deletionGracePeriodSeconds/ownerReferences``;
- the ``kubectl.kubernetes.io/last-applied-configuration`` and
  ``deployment.kubernetes.io/revision`` annotations;
- Services: ``clusterIP``/``clusterIPs`` (allocated per cluster) and the
  single-stack IP family defaults;
- Deployments: the template's ``creationTimestamp: null``;
- ServiceAccounts: the legacy auto-generated token ``secrets`` list.

Objects that the cluster makes by itself are not exported: anything owned by a
controller (``ownerReferences[].controller``), the ``default`` ServiceAccount
and the ``kube-root-ca.crt`` ConfigMap.

Each object goes to ``kubernetes/<date>/<namespace>/<Kind>/<name>.yaml``; a
rerun for the same date rewrites the same keys and removes files of objects
that no longer exist.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from mlops.backups import layout
from mlops.backups.s3 import Encryption, delete_keys, ensure_bucket, list_keys, put_json

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportedKind:
    kind: str
    api_version: str
    api_class: str
    list_method: str


EXPORTED_KINDS: list[ExportedKind] = [
    ExportedKind("ServiceAccount", "v1", "CoreV1Api", "list_namespaced_service_account"),
    ExportedKind("ConfigMap", "v1", "CoreV1Api", "list_namespaced_config_map"),
    ExportedKind("Service", "v1", "CoreV1Api", "list_namespaced_service"),
    ExportedKind("Deployment", "apps/v1", "AppsV1Api", "list_namespaced_deployment"),
    ExportedKind(
        "HorizontalPodAutoscaler",
        "autoscaling/v2",
        "AutoscalingV2Api",
        "list_namespaced_horizontal_pod_autoscaler",
    ),
    ExportedKind("Ingress", "networking.k8s.io/v1", "NetworkingV1Api", "list_namespaced_ingress"),
    ExportedKind(
        "NetworkPolicy", "networking.k8s.io/v1", "NetworkingV1Api", "list_namespaced_network_policy"
    ),
    ExportedKind("Role", "rbac.authorization.k8s.io/v1", "RbacAuthorizationV1Api", "list_namespaced_role"),
    ExportedKind(
        "RoleBinding",
        "rbac.authorization.k8s.io/v1",
        "RbacAuthorizationV1Api",
        "list_namespaced_role_binding",
    ),
]

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
    if kind == "Service":
        spec.pop("clusterIP", None)
        spec.pop("clusterIPs", None)
        if spec.get("ipFamilyPolicy") in (None, "SingleStack"):
            spec.pop("ipFamilyPolicy", None)
            spec.pop("ipFamilies", None)
    if kind == "Deployment":
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


def _list(api_client: Any, kind: ExportedKind, namespace: str) -> list[dict[str, Any]]:
    import kubernetes.client as k8s

    api = getattr(k8s, kind.api_class)(api_client)
    # Raw JSON, not the client's models: the models drop unknown fields and add nulls.
    resp = getattr(api, kind.list_method)(namespace, _preload_content=False)
    return json.loads(resp.data).get("items", [])


def collect(api_client: Any, namespaces: list[str]) -> KubeExport:
    """Read and clean every exported kind of ``namespaces`` (official client, raw JSON)."""
    import kubernetes.client as k8s

    export = KubeExport()
    for ns in namespaces:
        for kind in EXPORTED_KINDS:
            for item in _list(api_client, kind, ns):
                name = item["metadata"]["name"]
                if is_cluster_made(kind.kind, item):
                    export.skipped.append(f"{ns}/{kind.kind}/{name}")
                    continue
                export.objects[(ns, kind.kind, name)] = clean_object(kind.kind, kind.api_version, item)
        raw = k8s.CoreV1Api(api_client).list_namespaced_secret(ns, _preload_content=False)
        export.secrets[ns] = sorted(
            (
                {"name": s["metadata"]["name"], "type": s.get("type", "Opaque")}
                for s in json.loads(raw.data)["items"]
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
) -> dict[str, Any]:
    """Export ``namespaces`` to ``kubernetes/<date>/`` in ``bucket``; returns the export manifest."""
    encryption = encryption or Encryption()
    ensure_bucket(s3, bucket)
    export = collect(api_client, namespaces)
    counts: dict[str, dict[str, int]] = {}
    for ns, kind, _ in export.objects:
        counts.setdefault(ns, {}).setdefault(kind, 0)
        counts[ns][kind] += 1
    manifest = {
        "format_version": 1,
        "kind": "kubernetes",
        "logical_date": logical_date.isoformat(),
        "exported_at": datetime.now(UTC).isoformat(),
        "namespaces": namespaces,
        "objects": counts,
        "secrets_by_name_only": export.secrets,
        "skipped_cluster_made": export.skipped,
        "keys": sorted(layout.kubernetes_object_key(logical_date, *k) for k in export.objects),
    }
    if dry_run:
        log.info("Dry run: would export %d objects of %s", len(export.objects), namespaces)
        return manifest
    prefix = layout.kubernetes_prefix(logical_date)
    before = {o["Key"] for o in list_keys(s3, bucket, prefix)}
    for (ns, kind, name), obj in export.objects.items():
        s3.put_object(
            Bucket=bucket,
            Key=layout.kubernetes_object_key(logical_date, ns, kind, name),
            Body=to_yaml(obj).encode(),
            ContentType="application/yaml",
            **encryption.extra_args(),
        )
    manifest_key = layout.kubernetes_manifest_key(logical_date)
    put_json(s3, bucket, manifest_key, json.dumps(manifest, indent=2).encode(), encryption)
    gone = sorted(before - set(manifest["keys"]) - {manifest_key})
    if gone:
        log.info(
            "Removing %d files of objects deleted since the last export of %s: %s",
            len(gone),
            logical_date,
            gone,
        )
        delete_keys(s3, bucket, gone)
    log.info(
        "Exported %d objects (%s) and %d Secret names to s3://%s/%s",
        len(export.objects),
        counts,
        sum(len(v) for v in export.secrets.values()),
        bucket,
        prefix,
    )
    return manifest


def api_client_from_connection(conn_id: str) -> Any:
    """The official client's ApiClient for the Airflow Kubernetes connection ``conn_id``."""
    from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

    return KubernetesHook(conn_id=conn_id).get_conn()
