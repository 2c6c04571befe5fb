"""Kubernetes config export against the simulated API (real HTTP, official client), re-applied cleanly."""

from __future__ import annotations

import json
import subprocess
from datetime import date

import yaml

from mlops.backups.kube_export import api_client_from_connection, export_kubernetes
from mlops.backups.s3 import s3_client
from mlops.settings import get_settings

DAY, NEXT_DAY = date(2026, 3, 1), date(2026, 3, 2)
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
SERVER_FIELDS = ("uid", "resourceVersion", "generation", "creationTimestamp", "managedFields", "selfLink")


def _objects(ns: str) -> list[dict]:
    labels = {"app": "model-server", "team": "ml"}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "model-server", "namespace": ns}},
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": "serving-config", "namespace": ns, "annotations": {LAST_APPLIED: "{}"}},
         "data": {"MODEL_NAME": "churn", "BATCH": "32"}},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "model-server", "namespace": ns, "labels": labels},
         "spec": {"selector": {"app": "model-server"},
                  "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}},
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": "model-server-blue", "namespace": ns, "labels": labels},
         "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "model-server", "color": "blue"}},
                  "template": {"metadata": {"labels": {"app": "model-server", "color": "blue"}},
                               "spec": {"serviceAccountName": "model-server",
                                        "containers": [{"name": "server", "image": "model-server:1",
                                                        "ports": [{"containerPort": 8080}]}]}}}},
        {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
         "metadata": {"name": "model-server", "namespace": ns},
         "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                     "name": "model-server-blue"},
                  "minReplicas": 2, "maxReplicas": 6,
                  "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                                                                "target": {"type": "Utilization",
                                                                           "averageUtilization": 70}}}]}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
         "metadata": {"name": "model-server", "namespace": ns},
         "spec": {"rules": [{"host": "models.example.com", "http": {"paths": [
             {"path": "/", "pathType": "Prefix",
              "backend": {"service": {"name": "model-server", "port": {"number": 80}}}}]}}]}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
         "metadata": {"name": "serving-ingress", "namespace": ns},
         "spec": {"podSelector": {"matchLabels": {"app": "model-server"}}, "policyTypes": ["Ingress"],
                  "ingress": [{"ports": [{"port": 8080, "protocol": "TCP"}]}]}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": "reader", "namespace": ns},
         "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": "reader", "namespace": ns},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
         "subjects": [{"kind": "ServiceAccount", "name": "model-server", "namespace": ns}]},
        # The kinds and names the export used to miss or choke on (issue 14, item 9).
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": "airflow:pod-launcher", "namespace": ns},
         "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "get", "delete"]}]},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "model-server-headless", "namespace": ns},
         "spec": {"clusterIP": "None", "selector": {"app": "model-server"},
                  "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}},
        {"apiVersion": "apps/v1", "kind": "StatefulSet",
         "metadata": {"name": "feature-cache", "namespace": ns},
         "spec": {"serviceName": "model-server-headless", "replicas": 1,
                  "selector": {"matchLabels": {"app": "feature-cache"}},
                  "template": {"metadata": {"labels": {"app": "feature-cache"}},
                               "spec": {"containers": [{"name": "cache", "image": "redis:7"}]}}}},
        {"apiVersion": "batch/v1", "kind": "CronJob",
         "metadata": {"name": "drift-report", "namespace": ns},
         "spec": {"schedule": "0 6 * * *",
                  "jobTemplate": {"spec": {"template": {"spec": {
                      "restartPolicy": "Never", "containers": [{"name": "report", "image": "report:1"}]}}}}}},
        {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
         "metadata": {"name": "model-server", "namespace": ns},
         "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "model-server"}}}},
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
         "metadata": {"name": "feature-cache-data", "namespace": ns},
         "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}},
    ]  # fmt: skip


SECRET = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
          "metadata": {"name": "registry-token"}, "stringData": {"token": "s3cr3t-value"}}  # fmt: skip


def _admin(kube):
    """The test's own set-up client: the cluster admin (the code under test runs as the worker)."""

    return kube.admin_api_client()


def _create_all(kube, ns: str) -> None:
    from kubernetes import utils

    api_client = _admin(kube)

    utils.create_from_yaml(api_client, yaml_objects=_objects(ns), namespace=ns)
    import kubernetes.client as k8s

    k8s.CoreV1Api(api_client).create_namespaced_secret(ns, dict(SECRET, metadata={**SECRET["metadata"]}))
    # A controller-made object: recreated by its owner, so it is not exported.
    owned = {"apiVersion": "v1", "kind": "ConfigMap",
             "metadata": {"name": "made-by-operator", "namespace": ns,
                          "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "uid": "1234",
                                               "name": "model-server-blue", "controller": True}]},
             "data": {"x": "1"}}  # fmt: skip
    k8s.CoreV1Api(api_client).create_namespaced_config_map(ns, owned)


def _download(s3, bucket: str, day: date, backup_id: str) -> dict[str, str]:
    prefix = f"kubernetes/{day.isoformat()}/{backup_id}/"
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]
    return {k[len(prefix) :]: s3.get_object(Bucket=bucket, Key=k)["Body"].read().decode() for k in keys}


def test_export_is_clean_yaml_that_reapplies_to_the_same_objects(
    kube_conn, kube, s3_conn, s3_bucket, tmp_path
):
    ns = kube_conn
    settings = get_settings()
    api_client = api_client_from_connection(settings.kubernetes_conn_id)
    s3 = s3_client(settings)
    _create_all(kube, ns)

    manifest = export_kubernetes(api_client, s3, bucket=s3_bucket, logical_date=DAY, namespaces=[ns])

    files = _download(s3, s3_bucket, DAY, manifest["backup_id"])
    yaml_files = {k: v for k, v in files.items() if k.endswith(".yaml")}
    # Plus the platform's own Roles and RoleBindings that the worker identity's fixture bound here.
    ours = {(o["kind"], o["metadata"]["name"]) for o in _objects(ns)}
    bound = [(k, o["metadata"]["name"]) for k in ("Role", "RoleBinding") for o in kube.list(k, ns)]
    assert sorted(yaml_files) == sorted(
        f"{ns}/{kind}/{name}.yaml" for kind, name in ours | {b for b in bound if b not in ours}
    )
    for text in yaml_files.values():
        obj = yaml.safe_load(text)
        assert "status" not in obj
        assert not set(SERVER_FIELDS) & set(obj["metadata"]), obj["metadata"]
        assert LAST_APPLIED not in obj["metadata"].get("annotations", {})
        assert "ownerReferences" not in obj["metadata"]
    service = yaml.safe_load(yaml_files[f"{ns}/Service/model-server.yaml"])
    assert "clusterIP" not in service["spec"] and "clusterIPs" not in service["spec"]
    headless = yaml.safe_load(yaml_files[f"{ns}/Service/model-server-headless.yaml"])
    assert headless["spec"]["clusterIP"] == "None"  # without it, it would come back as a normal Service
    # Secrets: by name only, nowhere a value; and their data was never even sent to the export.
    assert json.loads(files["manifest.json"])["secrets_by_name_only"] == {ns: [{"name": "registry-token"}]}
    assert not any("s3cr3t" in text or "Secret/" in key for key, text in files.items())
    secret_lists = kube.requests_matching("GET", rf"/api/v1/namespaces/{ns}/secrets$")
    assert secret_lists and all("as=PartialObjectMetadataList" in r.accept for r in secret_lists)
    assert f"{ns}/ConfigMap/made-by-operator" in manifest["skipped_cluster_made"]

    # Wipe the namespace's exported objects, then re-apply the files as they are.
    for obj in _objects(ns):
        kube.delete(obj["kind"], ns, obj["metadata"]["name"])
    assert kube.list("Deployment", ns) == [] and kube.list("Service", ns) == []
    restore_dir = tmp_path / "restore"
    for rel, text in yaml_files.items():
        path = restore_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    _kubectl_apply(restore_dir, kube.kubeconfig)

    second = export_kubernetes(api_client, s3, bucket=s3_bucket, logical_date=NEXT_DAY, namespaces=[ns])
    again = _download(s3, s3_bucket, NEXT_DAY, second["backup_id"])
    reexported = {k: yaml.safe_load(v) for k, v in again.items() if k.endswith(".yaml")}
    assert reexported == {k: yaml.safe_load(v) for k, v in yaml_files.items()}


def _kubectl_apply(directory, kubeconfig: str) -> None:
    """The README's restore step: ``kubectl apply -R -f`` the downloaded export."""
    result = subprocess.run(
        ["kubectl", "--kubeconfig", kubeconfig, "apply", "--validate=false", "-R", "-f", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_a_rerun_of_the_same_date_writes_a_new_export_and_keeps_the_first(
    kube_conn, kube, s3_conn, s3_bucket
):
    ns = kube_conn
    settings = get_settings()
    api_client = api_client_from_connection(settings.kubernetes_conn_id)
    s3 = s3_client(settings)
    _create_all(kube, ns)
    first = export_kubernetes(api_client, s3, bucket=s3_bucket, logical_date=DAY, namespaces=[ns])
    kube.delete("Ingress", ns, "model-server")

    second = export_kubernetes(api_client, s3, bucket=s3_bucket, logical_date=DAY, namespaces=[ns])

    assert first["backup_id"] != second["backup_id"]
    assert f"{ns}/Ingress/model-server.yaml" in _download(s3, s3_bucket, DAY, first["backup_id"])
    assert f"{ns}/Ingress/model-server.yaml" not in _download(s3, s3_bucket, DAY, second["backup_id"])


def test_configured_custom_resources_are_exported(kube_conn, kube, s3_conn, s3_bucket, monkeypatch):
    from tests.harness.kubesim.resources import Resource, register_resource

    register_resource(Resource("serving.example.com", "v1", "modelendpoints", "ModelEndpoint"))
    ns = kube_conn
    endpoint = {"apiVersion": "serving.example.com/v1", "kind": "ModelEndpoint",
                "metadata": {"name": "churn", "namespace": ns},
                "spec": {"model": "churn", "version": "v7"}}  # fmt: skip
    kube.create(endpoint)
    # As 34-rbac-backups.yaml says: a configured custom resource needs a `list` rule of its own.
    from tests.harness.platform_rbac import WORKER

    kube.create({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                 "metadata": {"name": "backups-modelendpoints", "namespace": ns},
                 "rules": [{"apiGroups": ["serving.example.com"], "resources": ["modelendpoints"],
                            "verbs": ["list"]}]})  # fmt: skip
    kube.create({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                 "metadata": {"name": "backups-modelendpoints", "namespace": ns},
                 "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                             "name": "backups-modelendpoints"},
                 "subjects": [{"kind": "ServiceAccount", "name": WORKER[1],
                               "namespace": WORKER[0]}]})  # fmt: skip
    settings = get_settings()
    manifest = export_kubernetes(
        api_client_from_connection(settings.kubernetes_conn_id),
        s3_client(settings),
        bucket=s3_bucket,
        logical_date=DAY,
        namespaces=[ns],
        custom_resources="serving.example.com/v1/modelendpoints",
    )
    files = _download(s3_client(settings), s3_bucket, DAY, manifest["backup_id"])
    exported = yaml.safe_load(files[f"{ns}/ModelEndpoint/churn.yaml"])
    assert exported["apiVersion"] == "serving.example.com/v1" and exported["spec"]["version"] == "v7"


def test_a_missing_permission_fails_naming_the_verb_and_resource(kube_conn, kube, s3_conn, s3_bucket):
    import pytest

    from mlops.backups.kube_export import ExportForbidden

    ns = kube_conn
    message = (
        'statefulsets.apps is forbidden: User "system:serviceaccount:airflow:backups" '
        f'cannot list resource "statefulsets" in API group "apps" in the namespace "{ns}"'
    )
    forbidden = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden",
                 "code": 403, "message": message}  # fmt: skip
    kube.faults.add("GET", rf"/namespaces/{ns}/statefulsets$", status=403, times=None, body=forbidden)
    settings = get_settings()
    try:
        with pytest.raises(ExportForbidden, match=r"refused to list statefulsets \(apps/v1\) .*verb 'list'"):
            export_kubernetes(
                api_client_from_connection(settings.kubernetes_conn_id),
                s3_client(settings),
                bucket=s3_bucket,
                logical_date=DAY,
                namespaces=[ns],
            )
    finally:
        kube.faults.clear()
    assert s3_client(settings).list_objects_v2(Bucket=s3_bucket).get("KeyCount") == 0
