"""kubesim enforces RBAC like kube-apiserver's RBAC authorizer (tests/harness/kubesim/rbac.py)."""

from __future__ import annotations

import json
import subprocess

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from tests.harness.kubesim import KubeSim
from tests.harness.platform_rbac import WORKER_USER, apply_shipped_rbac

ROLE_API = "rbac.authorization.k8s.io"


@pytest.fixture
def worker_config(sim: KubeSim, tmp_path) -> str:
    return sim.service_account_kubeconfig(tmp_path / "worker", "airflow", "airflow-worker")


@pytest.fixture
def worker(worker_config: str) -> client.CoreV1Api:
    return client.CoreV1Api(config.new_client_from_config(config_file=worker_config))


def _message(err: pytest.ExceptionInfo) -> str:
    return json.loads(err.value.body)["message"]


def _role(sim: KubeSim, ns: str, name: str, rules: list[dict]) -> None:
    sim.create({"kind": "Role", "metadata": {"name": name, "namespace": ns}, "rules": rules})


def _bind(sim: KubeSim, ns: str, role: str, kind: str = "Role", sa_ns: str | None = "airflow") -> None:
    subject = {"kind": "ServiceAccount", "name": "airflow-worker"}
    if sa_ns:
        subject["namespace"] = sa_ns
    sim.create(
        {
            "kind": "RoleBinding",
            "metadata": {"name": f"{role}-binding", "namespace": ns},
            "roleRef": {"apiGroup": ROLE_API, "kind": kind, "name": role},
            "subjects": [subject],
        }
    )


def test_a_service_account_without_a_binding_gets_the_api_servers_403(sim, ns, worker):
    with pytest.raises(ApiException) as err:
        worker.list_namespaced_secret(ns)
    assert err.value.status == 403
    body = json.loads(err.value.body)
    assert body["reason"] == "Forbidden" and body["code"] == 403
    assert body["details"] == {"kind": "secrets"}
    assert body["message"] == (
        f'secrets is forbidden: User "{WORKER_USER}" cannot list resource "secrets" in API group "" '
        f'in the namespace "{ns}"'
    )


def test_a_verb_missing_from_the_role_is_refused_and_the_granted_ones_pass(sim, ns, worker):
    _role(sim, ns, "pod-reader", [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}])
    _bind(sim, ns, "pod-reader")
    sim.create(
        {
            "kind": "Pod",
            "metadata": {"name": "p", "namespace": ns},
            "spec": {"containers": [{"name": "c", "image": "x:1"}]},
        }
    )
    assert [p.metadata.name for p in worker.list_namespaced_pod(ns).items] == ["p"]
    assert worker.read_namespaced_pod("p", ns).metadata.name == "p"
    with pytest.raises(ApiException) as err:
        worker.delete_namespaced_pod("p", ns)
    assert err.value.status == 403
    assert f'pods "p" is forbidden: User "{WORKER_USER}" cannot delete resource "pods"' in _message(err)
    assert sim.get("Pod", ns, "p") is not None, "a refused delete must not delete"
    # pods/log is a resource of its own; `pods` does not grant it.
    with pytest.raises(ApiException) as err:
        worker.read_namespaced_pod_log("p", ns)
    assert 'cannot get resource "pods/log" in API group ""' in _message(err)
    # watch is its own verb too.
    with pytest.raises(ApiException) as err:
        worker.list_namespaced_pod(ns, watch=True, timeout_seconds=1)
    assert "cannot watch resource" in _message(err)


def test_a_role_binding_grants_only_in_its_own_namespace(sim, ns, worker):
    other = f"{ns}-other"
    sim.create_namespace(other)
    _role(sim, ns, "cm-reader", [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}])
    _bind(sim, ns, "cm-reader")
    worker.list_namespaced_config_map(ns)
    with pytest.raises(ApiException) as err:
        worker.list_namespaced_config_map(other)
    assert f'in the namespace "{other}"' in _message(err)
    with pytest.raises(ApiException) as err:
        worker.list_config_map_for_all_namespaces()
    assert 'cannot list resource "configmaps" in API group "" at the cluster scope' in _message(err)


def test_a_role_binding_to_a_cluster_role_and_a_cluster_role_binding(sim, ns, worker):
    name = f"node-reader-{ns}"
    sim.create(
        {
            "kind": "ClusterRole",
            "metadata": {"name": name},
            "rules": [
                {"apiGroups": [""], "resources": ["nodes"], "verbs": ["list"]},
                {"apiGroups": [""], "resources": ["services"], "verbs": ["get"], "resourceNames": ["web"]},
            ],
        }
    )
    with pytest.raises(ApiException):
        worker.list_node()
    _bind(sim, ns, name, kind="ClusterRole")
    with pytest.raises(ApiException) as err:
        worker.read_namespaced_service("web", ns)
    assert err.value.status == 404, "granted by name through the RoleBinding (and then not found)"
    with pytest.raises(ApiException) as err:
        worker.read_namespaced_service("db", ns)
    assert err.value.status == 403, "resourceNames limits the grant"
    with pytest.raises(ApiException):
        worker.list_node()  # a RoleBinding never grants cluster-scoped resources
    sim.create(
        {
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": ROLE_API, "kind": "ClusterRole", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": "airflow-worker", "namespace": "airflow"}],
        }
    )
    try:
        worker.list_node()
    finally:
        sim.delete("ClusterRoleBinding", None, name)
        sim.delete("ClusterRole", None, name)


def test_a_service_account_subject_without_namespace_means_the_bindings_namespace(sim, ns, worker):
    _role(sim, ns, "cm-lister", [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}])
    _bind(sim, ns, "cm-lister", sa_ns=None)  # names the SA airflow-worker of namespace `ns`, not `airflow`
    with pytest.raises(ApiException) as err:
        worker.list_namespaced_config_map(ns)
    assert err.value.status == 403


def test_a_binding_to_a_missing_role_says_so_in_the_reason(sim, ns, worker):
    _bind(sim, ns, "nowhere")
    with pytest.raises(ApiException) as err:
        worker.list_namespaced_pod(ns)
    assert 'RBAC: role.rbac.authorization.k8s.io "nowhere" not found' in _message(err)


def test_an_unknown_token_is_unauthorized_and_the_default_token_is_admin(sim, ns, tmp_path, kubeconfig):
    stranger = sim.write_kubeconfig(tmp_path / "stranger", token="not-a-token")
    with pytest.raises(ApiException) as err:
        client.CoreV1Api(config.new_client_from_config(config_file=stranger)).list_namespaced_pod(ns)
    assert err.value.status == 401
    admin = client.CoreV1Api(config.new_client_from_config(config_file=kubeconfig))
    admin.list_namespaced_secret(ns)


def test_kubectl_as_the_worker_sees_discovery_and_the_403(sim, ns, kubeconfig):
    # kubectl sends no bearer token over plain HTTP: it impersonates, as `kubectl --as` does on a cluster.
    result = subprocess.run(
        ["kubectl", "--kubeconfig", kubeconfig, "--as", WORKER_USER, "-n", ns, "get", "secrets"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert f'User "{WORKER_USER}" cannot list resource "secrets"' in result.stderr


def test_each_request_records_who_asked_what_and_which_binding_allowed_it(sim, ns, worker):
    apply_shipped_rbac(sim, {"ml-training": ns})
    worker.list_namespaced_pod(ns)
    record = sim.requests_matching("GET", rf"/namespaces/{ns}/pods$")[-1]
    assert (record.user, record.verb, record.resource, record.namespace) == (WORKER_USER, "list", "pods", ns)
    assert record.allowed_by == f"RoleBinding/{ns}/mlops-airflow-training -> Role/mlops-airflow-training"
