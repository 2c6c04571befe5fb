"""The manifests applied beside the chart (helm-values/platform/) are valid Kubernetes 1.30 objects
that grant least privilege, isolate the namespaces and match the library's configuration."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from mlops.settings import Settings
from mlops.training.profiles import PROFILES
from tests.unit.deploy.conftest import FIXTURES, PLATFORM


def _documents() -> list[tuple[Path, dict]]:
    return [(p, d) for p in sorted(PLATFORM.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]


DOCS = _documents()


def _of(kind: str) -> list[dict]:
    return [d for _, d in DOCS if d["kind"] == kind]


def _rules(role: str) -> dict[str, set[str]]:
    (doc,) = [d for d in _of("Role") if d["metadata"]["name"] == role]
    rules: dict[str, set[str]] = {}
    for rule in doc["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                rules.setdefault(f"{group}/{resource}".lstrip("/"), set()).update(rule["verbs"])
    return rules


@pytest.mark.parametrize(
    "doc", [d for _, d in DOCS], ids=[f"{p.name}:{d['kind']}/{d['metadata']['name']}" for p, d in DOCS]
)
def test_manifest_validates_against_kubernetes_1_30_in_strict_mode(doc):
    kubernetes_validate.validate(doc, "1.30.0", strict=True)


def test_broken_manifest_fixture_is_rejected_in_strict_mode():
    (doc,) = yaml.safe_load_all((FIXTURES / "manifest-broken.yaml").read_text())
    with pytest.raises(kubernetes_validate.ValidationError, match="verb"):
        kubernetes_validate.validate(doc, "1.30.0", strict=True)


def test_nothing_is_granted_cluster_wide():
    kinds = {d["kind"] for _, d in DOCS}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding"}
    for role in _of("Role"):
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], role["metadata"]["name"]
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"])
            assert not {"secrets", "roles", "rolebindings", "pods/exec"} & set(rule["resources"])


def test_worker_may_run_and_follow_training_pods_in_the_training_namespace_only():
    rules = _rules("mlops-airflow-training")
    assert rules == {
        "pods": {"create", "get", "list", "watch", "delete", "patch"},
        "pods/log": {"get"},
        "events": {"get", "list", "watch"},
    }
    (role,) = [r for r in _of("Role") if r["metadata"]["name"] == "mlops-airflow-training"]
    assert role["metadata"]["namespace"] == Settings().training_namespace


def test_worker_may_deploy_and_switch_model_servers_in_the_serving_namespace_without_deleting():
    rules = _rules("mlops-airflow-serving")
    assert {"get", "create", "patch"} <= rules["apps/deployments"]
    assert {"get", "create", "patch"} <= rules["services"]
    assert rules["pods"] == {"get", "list"}
    # The promotion lease (mlops.promotion.lease) is a coordination.k8s.io/v1 Lease per model.
    assert rules["coordination.k8s.io/leases"] == {"get", "create", "update", "patch"}
    assert not any("delete" in verbs or "deletecollection" in verbs for verbs in rules.values())
    (role,) = [r for r in _of("Role") if r["metadata"]["name"] == "mlops-airflow-serving"]
    assert role["metadata"]["namespace"] == Settings().serving_namespace


def test_namespaces_match_the_settings_and_enforce_restricted_pod_security():
    names = {d["metadata"]["name"]: d for d in _of("Namespace")}
    assert set(names) == {Settings().training_namespace, Settings().serving_namespace}
    for ns in names.values():
        assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_every_compute_profile_priority_class_exists():
    classes = {d["metadata"]["name"]: d for d in _of("PriorityClass")}
    assert {p.priority_class for p in PROFILES.values()} <= set(classes)
    assert classes["mlops-training-preemptible"]["value"] < classes["mlops-training"]["value"]
    assert not any(c.get("globalDefault") for c in classes.values())


def test_training_service_account_exists_without_an_api_token():
    (account,) = [
        a for a in _of("ServiceAccount") if a["metadata"]["name"] == Settings().training_service_account
    ]
    assert account["metadata"]["namespace"] == Settings().training_namespace
    assert account["automountServiceAccountToken"] is False


def test_training_namespace_has_a_gpu_quota():
    quotas = [q for q in _of("ResourceQuota") if q["metadata"]["namespace"] == Settings().training_namespace]
    assert any("requests.nvidia.com/gpu" in q["spec"]["hard"] for q in quotas)


def _policies(namespace: str) -> dict[str, dict]:
    return {
        p["metadata"]["name"]: p["spec"]
        for p in _of("NetworkPolicy")
        if p["metadata"]["namespace"] == namespace
    }


@pytest.mark.parametrize("namespace", [Settings().training_namespace, Settings().serving_namespace])
def test_each_namespace_denies_by_default_and_allows_dns(namespace):
    policies = _policies(namespace)
    deny = policies["default-deny-all"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny
    dns = policies["allow-dns-egress"]["egress"][0]
    assert {(p["protocol"], p["port"]) for p in dns["ports"]} == {("UDP", 53), ("TCP", 53)}


def test_serving_egress_reaches_only_postgres_and_redis_and_the_model_store():
    egress_ports: dict[str, set[int]] = {}
    for name, spec in _policies(Settings().serving_namespace).items():
        for rule in spec.get("egress", []):
            egress_ports.setdefault(name, set()).update(p["port"] for p in rule.get("ports", []))
    assert egress_ports.pop("allow-dns-egress") == {53}
    assert egress_ports.pop("allow-postgres-redis-egress") == {5432, 6379}
    # The model server alone loads its artifact from S3 (HTTPS) at start.
    assert egress_ports.pop("allow-model-server-artifact-egress") == {443}
    assert egress_ports == {}
    artifact = _policies(Settings().serving_namespace)["allow-model-server-artifact-egress"]
    assert artifact["podSelector"] == {"matchLabels": {"app": "model-server"}}
