"""Deployment/ReplicaSet controllers, readiness probes, Service proxying and the eviction API."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request

import pytest
from kubernetes.client.exceptions import ApiException

from tests.harness.kubesim import LocalProcess, ScriptedContainer

# A tiny HTTP server: /ready answers 503 for READY_AFTER seconds; everything else echoes pod and path.
SERVER = r"""
import http.server, os, time
started = time.time()
class Handler(http.server.BaseHTTPRequestHandler):
    def reply(self, code, body):
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        if self.path == "/ready" and time.time() - started < float(os.environ.get("READY_AFTER", "0")):
            return self.reply(503, b"warming up")
        self.reply(200, f"{os.environ['HOSTNAME']} {self.path}".encode())
    def do_POST(self):
        self.reply(201, self.rfile.read(int(self.headers["Content-Length"])))
    def log_message(self, *args):
        pass
print("serving on", os.environ["PORT"], flush=True)
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""


def deployment(name: str, image: str, replicas: int = 2, **spec) -> dict:
    container = {"name": "app", "image": image}
    container.update(spec.pop("container", {}))
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [container]}},
            **spec,
        },
    }


def conditions(d) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in d.status.conditions or []}


@pytest.fixture
def server_image(sim) -> str:
    sim.register_image("echo:1", LocalProcess(argv=[sys.executable, "-c", SERVER]))
    return "echo:1"


@pytest.fixture
def service_image(sim) -> str:
    sim.register_image("svc:1", ScriptedContainer(logs=["up"], run_seconds=3600))
    sim.register_image("svc:2", ScriptedContainer(logs=["up v2"], run_seconds=3600))
    return "svc:1"


def test_rollout_completes_with_observed_generation_and_conditions(apps, core, ns, kubectl, service_image):
    apps.create_namespaced_deployment(ns, deployment("web", service_image))
    result = kubectl("rollout", "status", "deployment/web", "--timeout=20s")
    assert 'deployment "web" successfully rolled out' in result.stdout
    d = apps.read_namespaced_deployment("web", ns)
    assert d.status.observed_generation == d.metadata.generation == 1
    assert (
        d.status.replicas,
        d.status.updated_replicas,
        d.status.ready_replicas,
        d.status.available_replicas,
    ) == (2,) * 4
    assert d.status.unavailable_replicas is None  # zero counters are omitted, as by the real API
    assert conditions(d) == {
        "Available": ("True", "MinimumReplicasAvailable"),
        "Progressing": ("True", "NewReplicaSetAvailable"),
    }
    (rs,) = apps.list_namespaced_replica_set(ns).items
    pod_hash = rs.metadata.labels["pod-template-hash"]
    assert rs.metadata.owner_references[0].kind == "Deployment" and rs.metadata.name == f"web-{pod_hash}"
    assert rs.metadata.annotations["deployment.kubernetes.io/revision"] == "1"
    pods = core.list_namespaced_pod(ns, label_selector=f"app=web,pod-template-hash={pod_hash}").items
    assert len(pods) == 2 and all(p.metadata.owner_references[0].name == rs.metadata.name for p in pods)
    events = core.list_namespaced_event(
        ns, field_selector="involvedObject.name=web,involvedObject.kind=Deployment"
    )
    assert [e.reason for e in events.items] == ["ScalingReplicaSet"]


def test_status_is_stale_after_a_spec_change_until_the_controller_observes_it(
    apps, ns, sim, kubectl, service_image
):
    apps.create_namespaced_deployment(ns, deployment("web", service_image))
    kubectl("rollout", "status", "deployment/web", "--timeout=20s")
    sim.pause_controllers()
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "svc:2"}]}}}}
    d = apps.patch_namespaced_deployment("web", ns, patch)
    assert (d.metadata.generation, d.status.observed_generation) == (2, 1)
    assert conditions(d)["Progressing"] == ("True", "NewReplicaSetAvailable")  # stale, as in a real cluster
    sim.resume_controllers()
    kubectl("rollout", "status", "deployment/web", "--timeout=20s")
    d = apps.read_namespaced_deployment("web", ns)
    assert d.status.observed_generation == 2
    assert d.metadata.annotations["deployment.kubernetes.io/revision"] == "2"
    replica_sets = {
        rs.spec.template.spec.containers[0].image: rs for rs in apps.list_namespaced_replica_set(ns).items
    }
    assert replica_sets["svc:1"].spec.replicas == 0 and replica_sets["svc:2"].spec.replicas == 2


def test_progress_deadline_exceeded_fails_rollout_status(apps, ns, kubectl):
    apps.create_namespaced_deployment(ns, deployment("broken", "not-pullable:1", progressDeadlineSeconds=1))
    result = kubectl("rollout", "status", "deployment/broken", "--timeout=20s", check=False)
    assert result.returncode != 0
    assert 'deployment "broken" exceeded its progress deadline' in result.stderr
    d = apps.read_namespaced_deployment("broken", ns)
    assert conditions(d) == {
        "Available": ("False", "MinimumReplicasUnavailable"),
        "Progressing": ("False", "ProgressDeadlineExceeded"),
    }


def test_scaling_to_zero_deletes_the_pods(apps, core, ns, kubectl, eventually, service_image):
    apps.create_namespaced_deployment(ns, deployment("web", service_image, replicas=3))
    kubectl("rollout", "status", "deployment/web", "--timeout=20s")
    kubectl("scale", "deployment/web", "--replicas=0")
    eventually(lambda: not core.list_namespaced_pod(ns).items)
    kubectl("rollout", "status", "deployment/web", "--timeout=20s")
    d = apps.read_namespaced_deployment("web", ns)
    assert d.status.replicas is None and d.status.observed_generation == 2


def test_a_failed_pod_is_replaced_by_the_replicaset(apps, core, ns, sim, kubectl, eventually, service_image):
    apps.create_namespaced_deployment(ns, deployment("web", service_image, replicas=1))
    kubectl("rollout", "status", "deployment/web", "--timeout=20s")
    (victim,) = core.list_namespaced_pod(ns).items
    sim.evict_pod(ns, victim.metadata.name)
    eventually(lambda: len(core.list_namespaced_pod(ns, field_selector="status.phase=Running").items) == 1)
    (replacement,) = core.list_namespaced_pod(ns, field_selector="status.phase=Running").items
    assert replacement.metadata.name != victim.metadata.name


def test_deleting_a_deployment_garbage_collects_replicasets_and_pods(
    apps, core, ns, kubectl, eventually, service_image
):
    apps.create_namespaced_deployment(ns, deployment("web", service_image))
    kubectl("rollout", "status", "deployment/web", "--timeout=20s")
    apps.delete_namespaced_deployment("web", ns)
    eventually(
        lambda: not apps.list_namespaced_replica_set(ns).items and not core.list_namespaced_pod(ns).items
    )


def test_service_proxy_reaches_a_ready_local_process(apps, core, ns, sim, kubectl, eventually, server_image):
    probe = {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 1}
    container = {
        "ports": [{"containerPort": 8080, "name": "http"}],
        "readinessProbe": probe,
        "env": [{"name": "READY_AFTER", "value": "0.6"}],
    }
    apps.create_namespaced_deployment(ns, deployment("echo", server_image, replicas=1, container=container))
    core.create_namespaced_service(
        ns,
        {
            "metadata": {"name": "echo"},
            "spec": {"selector": {"app": "echo"}, "ports": [{"port": 80, "targetPort": "http"}]},
        },
    )

    def serving() -> bool:
        pods = core.list_namespaced_pod(ns, field_selector="status.phase=Running").items
        return bool(pods) and any("serving on" in line for line in sim.logs(ns, pods[0].metadata.name))

    eventually(serving)
    (pod,) = core.list_namespaced_pod(ns).items
    ready = {c.type: c for c in pod.status.conditions}["Ready"]
    assert (pod.status.phase, ready.status, ready.reason) == ("Running", "False", "ContainersNotReady")
    with pytest.raises(ApiException) as err:
        core.connect_get_namespaced_service_proxy_with_path("echo", ns, "hello")
    assert err.value.status == 503 and json.loads(err.value.body)["reason"] == "ServiceUnavailable"

    kubectl("rollout", "status", "deployment/echo", "--timeout=20s")
    answer = core.connect_get_namespaced_service_proxy_with_path("echo", ns, "hello", _preload_content=False)
    assert answer.status == 200 and answer.data.decode() == f"{pod.metadata.name} /hello"
    base = f"{sim.url}/api/v1/namespaces/{ns}/services"
    with urllib.request.urlopen(f"{base}/echo:80/proxy/search?q=1", timeout=5) as resp:
        assert resp.read().decode() == f"{pod.metadata.name} /search?q=1"
    request = urllib.request.Request(f"{base}/http:echo:80/proxy/submit", data=b"payload", method="POST")
    with urllib.request.urlopen(request, timeout=5) as resp:
        assert (resp.status, resp.read()) == (201, b"payload")
    # The cluster network: the Service's DNS name as a pod reaches it, with no token (no RBAC).
    network = sim.service_url_template.format(namespace=ns, service="echo", port=80)
    request = urllib.request.Request(f"{network}/hello", headers={"Authorization": "Bearer not-a-token"})
    with urllib.request.urlopen(request, timeout=5) as resp:
        assert resp.read().decode() == f"{pod.metadata.name} /hello"
    kubectl("scale", "deployment/echo", "--replicas=0")
    eventually(lambda: not core.list_namespaced_pod(ns).items)
    with pytest.raises(ApiException) as err:
        core.connect_get_namespaced_service_proxy_with_path("echo", ns, "hello")
    assert err.value.status == 503
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{network}/hello", timeout=5)
    assert refused.value.code == 503 and "no endpoints" in refused.value.read().decode()


def test_eviction_api_honours_pod_disruption_budgets(apps, core, ns, kubectl, eventually, service_image):
    apps.create_namespaced_deployment(ns, deployment("web", service_image, replicas=2))
    kubectl("rollout", "status", "deployment/web", "--timeout=20s")
    pdb = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "web"},
        "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}},
    }
    kubectl("apply", "-f", "-", input=json.dumps(pdb))
    name = core.list_namespaced_pod(ns).items[0].metadata.name
    eviction = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": ns}}
    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod_eviction(name, ns, eviction)
    assert err.value.status == 429 and "disruption budget" in json.loads(err.value.body)["message"]
    kubectl("patch", "pdb", "web", "--type", "merge", "-p", '{"spec":{"minAvailable":1}}')
    core.create_namespaced_pod_eviction(name, ns, eviction)
    eventually(lambda: name not in [p.metadata.name for p in core.list_namespaced_pod(ns).items])
