"""Real kubectl against kubesim: apply, get (tables, json, selectors), logs, wait, delete."""

from __future__ import annotations

import json

from tests.harness.kubesim import ScriptedContainer

MANIFESTS = """
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, labels: {app: demo}}
data: {mode: fast}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: demo, labels: {app: demo}}
spec:
  replicas: 1
  selector: {matchLabels: {app: demo}}
  template:
    metadata: {labels: {app: demo}}
    spec:
      containers: [{name: app, image: "demo:1", env: [{name: MODE, value: fast}]}]
"""


def test_kubectl_apply_creates_then_configures_with_client_side_apply(kubectl, apps, core, ns, sim):
    sim.register_image("demo:1", ScriptedContainer(run_seconds=3600))
    created = kubectl("apply", "-f", "-", input=MANIFESTS)
    assert "configmap/settings created" in created.stdout and "deployment.apps/demo created" in created.stdout
    again = kubectl("apply", "-f", "-", input=MANIFESTS)
    assert "configmap/settings unchanged" in again.stdout and "deployment.apps/demo unchanged" in again.stdout
    changed = kubectl(
        "apply",
        "-f",
        "-",
        input=MANIFESTS.replace("mode: fast", "mode: slow").replace("replicas: 1", "replicas: 2"),
    )
    assert (
        "configmap/settings configured" in changed.stdout
        and "deployment.apps/demo configured" in changed.stdout
    )
    assert core.read_namespaced_config_map("settings", ns).data == {"mode": "slow"}
    deployment = apps.read_namespaced_deployment("demo", ns)
    assert deployment.spec.replicas == 2 and deployment.metadata.generation == 2
    assert "kubectl.kubernetes.io/last-applied-configuration" in deployment.metadata.annotations
    kubectl("rollout", "status", "deployment/demo", "--timeout=20s")


def test_kubectl_server_side_apply(kubectl, core, ns):
    manifest = json.dumps(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"a": "1"}}
    )
    assert "serverside-applied" in kubectl("apply", "--server-side", "-f", "-", input=manifest).stdout
    assert core.read_namespaced_config_map("ssa", ns).data == {"a": "1"}


def test_kubectl_get_prints_tables_json_and_honours_selectors(kubectl, ns, sim, eventually, core):
    sim.register_image("job:1", ScriptedContainer(logs=["done"], run_seconds=0.05))
    for name, tier in (("a", "web"), ("b", "db")):
        pod = {
            "metadata": {"name": name, "labels": {"tier": tier}},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "job:1"}]},
        }
        core.create_namespaced_pod(ns, pod)
    eventually(lambda: len(core.list_namespaced_pod(ns, field_selector="status.phase=Succeeded").items) == 2)
    table = kubectl("get", "pods").stdout.splitlines()
    assert table[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert table[1].split()[:4] == ["a", "0/1", "Completed", "0"]
    assert kubectl("get", "pods", "-l", "tier!=web", "-o", "name").stdout.split() == ["pod/b"]
    as_json = json.loads(kubectl("get", "pod", "a", "-o", "json").stdout)
    assert as_json["kind"] == "Pod" and as_json["status"]["phase"] == "Succeeded"
    jsonpath = kubectl(
        "get", "pods", "-o", "jsonpath={.items[*].status.containerStatuses[0].state.terminated.exitCode}"
    )
    assert jsonpath.stdout == "0 0"
    wide = kubectl("get", "pods", "-A", "--field-selector", "metadata.name=b").stdout
    assert ns in wide and " b " in wide
    assert "Successfully assigned" in kubectl("get", "events").stdout


def test_kubectl_logs_and_wait_and_delete(kubectl, ns, sim, core):
    sim.register_image(
        "talker:1", ScriptedContainer(logs=["starting", "working", "finished"], run_seconds=0.6)
    )
    kubectl("run", "talker", "--image=talker:1", "--restart=Never")
    kubectl("wait", "--for=condition=Ready", "pod/talker", "--timeout=20s")
    assert kubectl("logs", "-f", "talker").stdout == "starting\nworking\nfinished\n"
    assert kubectl("logs", "talker", "--tail=1").stdout == "finished\n"
    assert kubectl("get", "pod", "talker", "-o", "jsonpath={.status.phase}").stdout == "Succeeded"
    assert 'pod "talker" deleted' in kubectl("delete", "pod", "talker", "--wait=true").stdout
    assert not core.list_namespaced_pod(ns).items


def test_kubectl_set_image_and_rollout_undo_reuse_the_old_replicaset(kubectl, apps, ns, sim):
    for tag in ("1", "2"):
        sim.register_image(f"demo:{tag}", ScriptedContainer(run_seconds=3600))
    kubectl("apply", "-f", "-", input=MANIFESTS)
    kubectl("rollout", "status", "deployment/demo", "--timeout=20s")
    kubectl("set", "image", "deployment/demo", "app=demo:2")
    kubectl("rollout", "status", "deployment/demo", "--timeout=20s")
    kubectl("rollout", "undo", "deployment/demo")
    kubectl("rollout", "status", "deployment/demo", "--timeout=20s")
    replica_sets = apps.list_namespaced_replica_set(ns).items
    assert len(replica_sets) == 2  # the first ReplicaSet came back rather than a third one
    active = next(rs for rs in replica_sets if rs.spec.replicas == 1)
    assert active.spec.template.spec.containers[0].image == "demo:1"
    assert active.metadata.annotations["deployment.kubernetes.io/revision"] == "3"


def test_kubectl_protobuf_bodies_get_a_clear_415(kubectl):
    # `kubectl create configmap|deployment|...` send protobuf, which kubesim does not decode.
    result = kubectl("create", "configmap", "c", "--from-literal=a=1", check=False)
    assert result.returncode != 0 and "kubectl apply -f" in result.stderr
