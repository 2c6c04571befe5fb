"""kubesim's REST semantics: discovery, CRUD for every kind, server-set metadata, errors and conflicts."""

from __future__ import annotations

import base64
import json
import urllib.request

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

from tests.harness.kubesim import KubeSim

SAMPLES: dict[tuple[str, str], dict] = {
    ("v1", "ConfigMap"): {"data": {"a": "1"}},
    ("v1", "Secret"): {"stringData": {"a": "1"}},
    ("v1", "ServiceAccount"): {},
    ("v1", "Service"): {"spec": {"selector": {"app": "x"}, "ports": [{"port": 80}]}},
    ("v1", "ResourceQuota"): {"spec": {"hard": {"pods": "10"}}},
    ("v1", "Event"): {"involvedObject": {"kind": "Pod", "name": "x"}, "reason": "Test", "message": "m"},
    ("v1", "Pod"): {"spec": {"containers": [{"name": "c", "image": "unknown:1"}]}},
    ("apps/v1", "Deployment"): {
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "x"}},
            "template": {
                "metadata": {"labels": {"app": "x"}},
                "spec": {"containers": [{"name": "c", "image": "i"}]},
            },
        }
    },
    ("apps/v1", "ReplicaSet"): {
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "y"}},
            "template": {
                "metadata": {"labels": {"app": "y"}},
                "spec": {"containers": [{"name": "c", "image": "i"}]},
            },
        }
    },
    ("autoscaling/v2", "HorizontalPodAutoscaler"): {
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "x"},
            "minReplicas": 1,
            "maxReplicas": 3,
        }
    },
    ("policy/v1", "PodDisruptionBudget"): {
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "x"}}}
    },
    ("networking.k8s.io/v1", "NetworkPolicy"): {"spec": {"podSelector": {}, "policyTypes": ["Ingress"]}},
    ("networking.k8s.io/v1", "Ingress"): {"spec": {"rules": [{"host": "x.example.com"}]}},
    ("rbac.authorization.k8s.io/v1", "Role"): {
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]
    },
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): {
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
        "subjects": [{"kind": "ServiceAccount", "name": "default"}],
    },
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): {"rules": []},
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): {
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "r"},
        "subjects": [],
    },
    ("scheduling.k8s.io/v1", "PriorityClass"): {"value": 1000},
    ("coordination.k8s.io/v1", "Lease"): {"spec": {"holderIdentity": "x", "leaseDurationSeconds": 10}},
    ("v1", "Node"): {},
    ("v1", "Namespace"): {},
}
CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding", "PriorityClass", "Node", "Namespace"}


def status_of(exc: ApiException) -> dict:
    return json.loads(exc.body)


def http_get(sim, path: str) -> dict:
    with urllib.request.urlopen(sim.url + path, timeout=5) as resp:
        return json.loads(resp.read())


@pytest.fixture(scope="module")
def dynamic(api_client) -> DynamicClient:
    return DynamicClient(api_client)


def test_discovery_documents_describe_every_served_resource(sim):
    assert http_get(sim, "/api")["versions"] == ["v1"]
    assert http_get(sim, "/version")["major"] == "1"
    groups = {g["name"]: g["preferredVersion"]["version"] for g in http_get(sim, "/apis")["groups"]}
    assert groups["apps"] == "v1" and groups["autoscaling"] == "v2" and groups["policy"] == "v1"
    core = {r["name"]: r for r in http_get(sim, "/api/v1")["resources"]}
    assert core["pods"]["shortNames"] == ["po"] and core["pods"]["namespaced"] is True
    assert core["nodes"]["namespaced"] is False
    assert {"pods/log", "pods/status", "services/proxy"} <= set(core)
    assert "watch" in core["configmaps"]["verbs"]
    apps = {r["name"]: r for r in http_get(sim, "/apis/apps/v1")["resources"]}
    assert apps["deployments/scale"]["kind"] == "Scale"


@pytest.mark.parametrize(("api_version", "kind"), list(SAMPLES), ids=[k for _, k in SAMPLES])
def test_crud_round_trip_for_every_kind(dynamic, ns, api_version, kind):
    resource = dynamic.resources.get(api_version=api_version, kind=kind)
    scoped = kind not in CLUSTER_SCOPED
    name = f"{kind.lower()}-{ns}"
    body = {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"name": name},
        **SAMPLES[(api_version, kind)],
    }
    where = {"namespace": ns} if scoped else {}

    created = resource.create(body=body, **where)
    assert created.kind == kind and created.apiVersion == api_version
    assert created.metadata.uid and created.metadata.resourceVersion.isdigit()
    assert (created.metadata.namespace == ns) if scoped else (created.metadata.namespace is None)

    fetched = resource.get(name=name, **where)
    assert fetched.metadata.uid == created.metadata.uid
    listed = resource.get(**where)
    assert listed.kind == f"{kind}List" and name in [i.metadata.name for i in listed.items]
    assert listed.metadata.resourceVersion.isdigit()
    if scoped:  # the all-namespaces list path
        assert name in [i.metadata.name for i in resource.get().items]

    replacement = fetched.to_dict()
    replacement["metadata"]["labels"] = {"replaced": "yes"}
    replaced = resource.replace(body=replacement, **where)
    assert replaced.metadata.labels["replaced"] == "yes"
    assert int(replaced.metadata.resourceVersion) > int(created.metadata.resourceVersion)

    resource.delete(name=name, grace_period_seconds=0, **where)
    if kind == "Namespace":
        return  # namespaces terminate asynchronously (tested separately)
    with pytest.raises(ApiException) as err:
        resource.get(name=name, **where)
    assert err.value.status == 404


def test_create_sets_server_metadata_and_namespace_from_url(core, ns):
    cm = core.create_namespaced_config_map(ns, {"metadata": {"name": "cfg"}, "data": {"k": "v"}})
    assert cm.metadata.namespace == ns
    assert cm.metadata.creation_timestamp is not None
    assert len(cm.metadata.uid) == 36
    svc = core.create_namespaced_service(ns, {"metadata": {"name": "svc"}, "spec": {"ports": [{"port": 80}]}})
    assert svc.spec.ports[0].target_port == 80  # targetPort defaults to port
    assert svc.spec.cluster_ip and svc.spec.type == "ClusterIP"


def test_generate_name_gets_a_five_character_suffix(core, ns):
    cm = core.create_namespaced_config_map(ns, {"metadata": {"generateName": "job-"}})
    assert cm.metadata.name.startswith("job-") and len(cm.metadata.name) == len("job-") + 5


def test_resource_versions_are_global_and_increasing(core, ns):
    a = core.create_namespaced_config_map(ns, {"metadata": {"name": "a"}})
    b = core.create_namespaced_secret(ns, {"metadata": {"name": "b"}})
    c = core.patch_namespaced_config_map("a", ns, {"data": {"x": "1"}})
    assert (
        int(a.metadata.resource_version) < int(b.metadata.resource_version) < int(c.metadata.resource_version)
    )


def test_duplicate_create_is_409_already_exists(core, ns):
    core.create_namespaced_config_map(ns, {"metadata": {"name": "dup"}})
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map(ns, {"metadata": {"name": "dup"}})
    assert err.value.status == 409
    assert status_of(err.value)["reason"] == "AlreadyExists"


def test_missing_object_is_404_status_with_details(apps, ns):
    with pytest.raises(ApiException) as err:
        apps.read_namespaced_deployment("nope", ns)
    body = status_of(err.value)
    assert (err.value.status, body["kind"], body["reason"]) == (404, "Status", "NotFound")
    assert body["details"] == {"name": "nope", "group": "apps", "kind": "deployments"}
    assert body["message"] == 'deployments.apps "nope" not found'


def test_body_without_name_is_422_invalid(core, ns):
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map(ns, {"metadata": {}})
    assert err.value.status == 422 and status_of(err.value)["reason"] == "Invalid"


def test_body_namespace_must_match_the_url(core, ns):
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map(ns, {"metadata": {"name": "x", "namespace": "default"}})
    assert err.value.status == 400


def test_creating_in_a_missing_namespace_is_404(core):
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map("no-such-ns", {"metadata": {"name": "x"}})
    assert err.value.status == 404


def test_generation_bumps_only_when_spec_changes(apps, ns, sim):
    body = {"metadata": {"name": "d"}, **SAMPLES[("apps/v1", "Deployment")]}
    d = apps.create_namespaced_deployment(ns, body)
    assert d.metadata.generation == 1
    d = apps.patch_namespaced_deployment("d", ns, {"metadata": {"labels": {"team": "ml"}}})
    assert d.metadata.generation == 1
    d = apps.patch_namespaced_deployment_status("d", ns, {"status": {"replicas": 7}})
    assert d.metadata.generation == 1 and d.status.replicas == 7
    d = apps.patch_namespaced_deployment("d", ns, {"spec": {"replicas": 0, "minReadySeconds": 5}})
    assert d.metadata.generation == 2


def test_status_subresource_and_main_resource_write_only_their_part(apps, ns):
    apps.create_namespaced_deployment(ns, {"metadata": {"name": "d"}, **SAMPLES[("apps/v1", "Deployment")]})
    d = apps.patch_namespaced_deployment_status("d", ns, {"spec": {"replicas": 9}, "status": {"replicas": 4}})
    assert d.spec.replicas == 0 and d.status.replicas == 4
    d = apps.patch_namespaced_deployment("d", ns, {"status": {"replicas": 1}})
    assert d.status.replicas == 4


def test_stale_resource_version_on_put_is_409_conflict(core, ns):
    cm = core.create_namespaced_config_map(ns, {"metadata": {"name": "c"}, "data": {"v": "1"}})
    core.patch_namespaced_config_map("c", ns, {"data": {"v": "2"}})
    cm.data = {"v": "3"}
    with pytest.raises(ApiException) as err:
        core.replace_namespaced_config_map("c", ns, cm)
    assert err.value.status == 409 and status_of(err.value)["reason"] == "Conflict"
    cm.metadata.resource_version = None  # an unconditional update is allowed
    assert core.replace_namespaced_config_map("c", ns, cm).data == {"v": "3"}


def test_stale_resource_version_on_patch_is_409_conflict(core, ns):
    cm = core.create_namespaced_config_map(ns, {"metadata": {"name": "c"}, "data": {"v": "1"}})
    core.patch_namespaced_config_map("c", ns, {"data": {"v": "2"}})
    stale = {"metadata": {"resourceVersion": cm.metadata.resource_version}, "data": {"v": "3"}}
    with pytest.raises(ApiException) as err:
        core.patch_namespaced_config_map("c", ns, stale)
    assert err.value.status == 409
    fresh = core.read_namespaced_config_map("c", ns).metadata.resource_version
    patched = core.patch_namespaced_config_map(
        "c", ns, {"metadata": {"resourceVersion": fresh}, "data": {"v": "3"}}
    )
    assert patched.data == {"v": "3"}


def test_no_op_update_keeps_the_resource_version(core, ns):
    cm = core.create_namespaced_config_map(ns, {"metadata": {"name": "c"}, "data": {"v": "1"}})
    same = core.patch_namespaced_config_map("c", ns, {"data": {"v": "1"}})
    assert same.metadata.resource_version == cm.metadata.resource_version


def test_secret_string_data_is_stored_base64_encoded(core, ns):
    core.create_namespaced_secret(ns, {"metadata": {"name": "s"}, "stringData": {"password": "hunter2"}})
    secret = core.read_namespaced_secret("s", ns)
    assert base64.b64decode(secret.data["password"]) == b"hunter2" and secret.string_data is None
    assert secret.type == "Opaque"


def test_delete_collection_deletes_only_selected_objects(core, ns):
    for name, tier in (("a", "web"), ("b", "web"), ("c", "db")):
        core.create_namespaced_config_map(ns, {"metadata": {"name": name, "labels": {"tier": tier}}})
    core.delete_collection_namespaced_config_map(ns, label_selector="tier=web")
    assert [c.metadata.name for c in core.list_namespaced_config_map(ns).items] == ["c"]


def test_deleting_a_namespace_removes_it_and_its_contents(core, sim, eventually):
    core.create_namespace({"metadata": {"name": "doomed"}})
    core.create_namespaced_config_map("doomed", {"metadata": {"name": "c"}})
    answer = json.loads(core.delete_namespace("doomed", _preload_content=False).data)
    assert answer["kind"] == "Namespace" and answer["status"]["phase"] == "Terminating"
    eventually(lambda: sim.get("Namespace", None, "doomed") is None)
    assert sim.list("ConfigMap", "doomed") == []


def test_new_namespaces_get_a_default_service_account(core, ns):
    assert [sa.metadata.name for sa in core.list_namespaced_service_account(ns).items] == ["default"]


def test_scale_subresource_reads_and_writes_replicas(apps, ns):
    apps.create_namespaced_deployment(ns, {"metadata": {"name": "d"}, **SAMPLES[("apps/v1", "Deployment")]})
    scale = apps.read_namespaced_deployment_scale("d", ns)
    assert (scale.kind, scale.spec.replicas, scale.status.selector) == ("Scale", 0, "app=x")
    assert apps.patch_namespaced_deployment_scale("d", ns, {"spec": {"replicas": 2}}).spec.replicas == 2
    body = client.V1Scale(metadata=client.V1ObjectMeta(name="d"), spec=client.V1ScaleSpec(replicas=3))
    assert apps.replace_namespaced_deployment_scale("d", ns, body).spec.replicas == 3
    deployment = apps.read_namespaced_deployment("d", ns)
    assert (deployment.spec.replicas, deployment.metadata.generation) == (3, 3)


def test_added_nodes_are_listed_by_the_official_client_with_their_gpus(tmp_path):
    # A private cluster: once a node exists, the shared one would schedule only onto nodes.
    private = KubeSim().start()
    try:
        private.add_node("gpu-1", labels={"pool": "gpu"}, allocatable={"nvidia.com/gpu": "8", "cpu": "8"})
        api = config.new_client_from_config(config_file=private.write_kubeconfig(tmp_path / "kubeconfig"))
        nodes = {n.metadata.name: n for n in client.CoreV1Api(api).list_node().items}
        assert nodes["gpu-1"].status.allocatable["nvidia.com/gpu"] == "8"
        assert nodes["gpu-1"].status.node_info.boot_id == "kubesim-gpu-1"
    finally:
        private.stop()
