"""PATCH flavours (merge, JSON, strategic, apply) and label/field selectors, as Kubernetes documents them."""

from __future__ import annotations

import json

import pytest
from kubernetes.client.exceptions import ApiException

from tests.harness.kubesim import ScriptedContainer

MERGE = "application/merge-patch+json"
APPLY = "application/apply-patch+yaml"


def deployment(name: str = "d") -> dict:
    container = {
        "name": "app",
        "image": "app:1",
        "args": ["--a", "--b"],
        "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
        "ports": [{"containerPort": 8080, "name": "http"}],
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
    }
    sidecar = {"name": "sidecar", "image": "side:1"}
    return {
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [container, sidecar]}},
        },
    }


def containers(d) -> dict:
    return {c.name: c for c in d.spec.template.spec.containers}


@pytest.fixture
def deploy(apps, ns):
    return apps.create_namespaced_deployment(ns, deployment())


def template_patch(*containers: dict) -> dict:
    return {"spec": {"template": {"spec": {"containers": list(containers)}}}}


# -- strategic merge patch -------------------------------------------------------------------
def test_strategic_merge_merges_containers_and_env_by_name(apps, ns, deploy):
    patched = apps.patch_namespaced_deployment(
        "d",
        ns,
        template_patch({"name": "app", "env": [{"name": "B", "value": "two"}, {"name": "C", "value": "3"}]}),
    )
    by_name = containers(patched)
    assert set(by_name) == {"app", "sidecar"}
    assert [(e.name, e.value) for e in by_name["app"].env] == [("A", "1"), ("B", "two"), ("C", "3")]
    assert by_name["app"].image == "app:1"


def test_strategic_merge_delete_directive_removes_list_items(apps, ns, deploy):
    patched = apps.patch_namespaced_deployment(
        "d",
        ns,
        template_patch(
            {"name": "sidecar", "$patch": "delete"},
            {"name": "app", "env": [{"name": "A", "$patch": "delete"}]},
        ),
    )
    assert list(containers(patched)) == ["app"]
    assert [e.name for e in containers(patched)["app"].env] == ["B"]


def test_strategic_merge_replace_directive_replaces_the_whole_list(apps, ns, deploy):
    patched = apps.patch_namespaced_deployment(
        "d", ns, template_patch({"name": "app", "env": [{"$patch": "replace"}, {"name": "Z", "value": "26"}]})
    )
    assert [e.name for e in containers(patched)["app"].env] == ["Z"]


def test_strategic_merge_replaces_primitive_lists_and_merges_ports_and_mounts_by_key(apps, ns, deploy):
    patch = {
        "name": "app",
        "args": ["--only"],
        "ports": [{"containerPort": 8080, "protocol": "TCP", "name": "web"}, {"containerPort": 9090}],
        "volumeMounts": [{"mountPath": "/data", "readOnly": True}],
    }
    app = containers(apps.patch_namespaced_deployment("d", ns, template_patch(patch)))["app"]
    assert app.args == ["--only"]
    assert [(p.container_port, p.name) for p in app.ports] == [(8080, "web"), (9090, None)]
    assert [(m.name, m.mount_path, m.read_only) for m in app.volume_mounts] == [("data", "/data", True)]


def test_strategic_merge_null_deletes_a_key(apps, ns, deploy):
    apps.patch_namespaced_deployment("d", ns, {"metadata": {"labels": {"extra": "x"}}})
    patched = apps.patch_namespaced_deployment("d", ns, {"metadata": {"labels": {"extra": None}}})
    assert patched.metadata.labels == {"app": "d"}


def test_strategic_merge_merges_service_ports_by_port_and_conditions_by_type(core, ns):
    core.create_namespaced_service(
        ns,
        {
            "metadata": {"name": "s"},
            "spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443, "name": "https"}]},
        },
    )
    svc = core.patch_namespaced_service("s", ns, {"spec": {"ports": [{"port": 443, "targetPort": 8443}]}})
    assert [(p.port, p.name, p.target_port) for p in svc.spec.ports] == [
        (80, "http", 80),
        (443, "https", 8443),
    ]
    meta = {"reason": "R", "message": "m", "lastTransitionTime": "2025-01-01T00:00:00Z"}
    conditions = [{"type": "A", "status": "True", **meta}, {"type": "B", "status": "False", **meta}]
    core.patch_namespaced_service_status("s", ns, {"status": {"conditions": conditions}})
    svc = core.patch_namespaced_service_status(
        "s", ns, {"status": {"conditions": [{"type": "B", "status": "True"}]}}
    )
    assert [(c.type, c.status) for c in svc.status.conditions] == [("A", "True"), ("B", "True")]


# -- JSON merge patch, JSON patch, apply ---------------------------------------------------------
def test_json_merge_patch_replaces_lists_and_null_deletes(apps, ns, deploy):
    patched = apps.patch_namespaced_deployment(
        "d",
        ns,
        {"metadata": {"labels": {"app": None, "x": "y"}}, **template_patch({"name": "only", "image": "o:1"})},
        _content_type=MERGE,
    )
    assert patched.metadata.labels == {"x": "y"}
    assert list(containers(patched)) == ["only"]


def test_json_patch_applies_operations_and_a_failed_test_is_422(core, ns):
    core.create_namespaced_config_map(ns, {"metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}})
    ops = [
        {"op": "test", "path": "/data/a", "value": "1"},
        {"op": "replace", "path": "/data/a", "value": "10"},
        {"op": "remove", "path": "/data/b"},
        {"op": "add", "path": "/metadata/labels", "value": {"k": "v"}},
    ]
    patched = core.patch_namespaced_config_map("c", ns, ops)
    assert patched.data == {"a": "10"} and patched.metadata.labels == {"k": "v"}
    with pytest.raises(ApiException) as err:
        core.patch_namespaced_config_map("c", ns, [{"op": "test", "path": "/data/a", "value": "nope"}])
    assert err.value.status == 422


def test_apply_patch_creates_when_missing_then_merges(core, ns):
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}, "data": {"a": "1"}}
    created = core.patch_namespaced_config_map("applied", ns, body, field_manager="test", _content_type=APPLY)
    assert created.data == {"a": "1"}
    body["data"] = {"b": "2"}
    merged = core.patch_namespaced_config_map("applied", ns, body, field_manager="test", _content_type=APPLY)
    assert merged.data == {"a": "1", "b": "2"}


def test_unknown_patch_content_type_is_415(core, ns):
    core.create_namespaced_config_map(ns, {"metadata": {"name": "c"}})
    with pytest.raises(ApiException) as err:
        core.patch_namespaced_config_map("c", ns, {"data": {}}, _content_type="application/json")
    assert err.value.status == 415


def test_kubectl_patch_supports_strategic_merge_and_json_types(kubectl, apps, ns, deploy):
    kubectl("patch", "deployment", "d", "-p", json.dumps(template_patch({"name": "app", "image": "app:2"})))
    kubectl("patch", "deployment", "d", "--type", "merge", "-p", '{"metadata":{"labels":{"m":"1"}}}')
    kubectl(
        "patch",
        "deployment",
        "d",
        "--type",
        "json",
        "-p",
        '[{"op":"replace","path":"/spec/replicas","value":0}]',
    )
    d = apps.read_namespaced_deployment("d", ns)
    assert containers(d)["app"].image == "app:2" and "sidecar" in containers(d)
    assert d.metadata.labels["m"] == "1" and d.metadata.generation == 2


# -- label selectors -----------------------------------------------------------------------------
@pytest.fixture
def labelled(core, ns):
    for name, labels in {
        "web-prod": {"app": "web", "env": "prod"},
        "web-dev": {"app": "web", "env": "dev"},
        "db-prod": {"app": "db", "env": "prod", "critical": "true"},
        "bare": {},
    }.items():
        core.create_namespaced_config_map(ns, {"metadata": {"name": name, "labels": labels}})
    return ns


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("app=web", ["web-dev", "web-prod"]),
        ("app==web", ["web-dev", "web-prod"]),
        ("env!=prod", ["bare", "web-dev"]),  # != also matches objects without the label
        ("env in (prod, dev),app=web", ["web-dev", "web-prod"]),
        ("env notin (prod)", ["bare", "web-dev"]),
        ("critical", ["db-prod"]),
        ("!critical", ["bare", "web-dev", "web-prod"]),
        ("app=web,env=prod", ["web-prod"]),
        ("app in (web,db),!critical,env!=dev", ["web-prod"]),
    ],
)
def test_label_selector_operators(core, labelled, selector, expected):
    items = core.list_namespaced_config_map(labelled, label_selector=selector).items
    assert sorted(i.metadata.name for i in items) == expected


def test_invalid_label_selector_is_400(core, ns):
    with pytest.raises(ApiException) as err:
        core.list_namespaced_config_map(ns, label_selector="app in web")
    assert err.value.status == 400


# -- field selectors -----------------------------------------------------------------------------
def test_field_selectors_on_metadata_and_generic_paths(core, labelled):
    by_name = core.list_namespaced_config_map(labelled, field_selector="metadata.name=web-dev").items
    assert [i.metadata.name for i in by_name] == ["web-dev"]
    not_name = core.list_namespaced_config_map(labelled, field_selector="metadata.name!=web-dev").items
    assert "web-dev" not in [i.metadata.name for i in not_name]
    across = core.list_config_map_for_all_namespaces(field_selector=f"metadata.namespace=={labelled}").items
    assert len(across) == 4


def test_field_selectors_on_events_involved_object(core, ns, eventually):
    pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "x:1"}]}}
    uid = core.create_namespaced_pod(ns, pod).metadata.uid
    core.create_namespaced_event(
        ns, {"metadata": {"name": "other.1"}, "involvedObject": {"kind": "Node", "name": "n"}, "reason": "R"}
    )
    eventually(lambda: core.list_namespaced_event(ns, field_selector="involvedObject.name=p").items)
    for selector in ("involvedObject.name=p", "involvedObject.kind=Pod", f"involvedObject.uid={uid}"):
        events = core.list_namespaced_event(ns, field_selector=selector).items
        assert events and all(e.involved_object.name == "p" for e in events)


def test_field_selectors_on_pod_phase_and_node_name(core, ns, sim, eventually, pod_manifest):
    sim.register_image("done:1", ScriptedContainer(run_seconds=0.05))
    core.create_namespaced_pod(ns, pod_manifest("quick", image="done:1"))
    core.create_namespaced_pod(ns, pod_manifest("stuck", image="never-pulled:1"))
    eventually(lambda: core.list_namespaced_pod(ns, field_selector="status.phase=Succeeded").items)
    pending = core.list_namespaced_pod(ns, field_selector="status.phase!=Succeeded").items
    assert [p.metadata.name for p in pending] == ["stuck"]
    on_node = core.list_namespaced_pod(ns, field_selector="spec.nodeName=kubesim-node").items
    assert {p.metadata.name for p in on_node} == {"quick", "stuck"}
