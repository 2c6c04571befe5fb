"""Kubernetes checks through the official client and ``kubernetes_default``, against the
simulated Kubernetes API (tests/harness/kubesim): real Deployments, pods that crash or
cannot pull, HPAs and GPU nodes."""

from __future__ import annotations

import uuid

import pytest

from mlops.health.config import CheckSpec
from mlops.health.runner import run_checks
from tests.harness.kubesim import ScriptedContainer


def deployment(name: str, image: str, replicas: int = 2) -> dict:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "server", "image": image}]},
            },
        },
    }


def results(spec: CheckSpec, settings) -> dict:
    return {r.target: r for r in run_checks([spec], settings).results}


@pytest.fixture
def images(kube):
    """Unique image names per test: a long-running server, one that crashes, one that cannot be pulled."""
    tag = uuid.uuid4().hex[:6]
    names = {
        "good": f"registry.test/server-{tag}:1",
        "crash": f"registry.test/crash-{tag}:1",
        "unpullable": f"registry.test/missing-{tag}:1",
    }
    kube.register_image(names["good"], ScriptedContainer(run_seconds=3600))
    kube.register_image(names["crash"], ScriptedContainer(exit_code=1, run_seconds=0.05))
    kube.register_image(names["unpullable"], ScriptedContainer(pull_error="ErrImagePull"))
    return names


def test_deployments_are_compared_available_against_desired(kube, kube_conn, images, settings):
    ns = kube_conn
    kube.create(
        {**deployment("model-good", images["good"]), "metadata": {"name": "model-good", "namespace": ns}}
    )
    kube.create(
        {**deployment("model-bad", images["unpullable"]), "metadata": {"name": "model-bad", "namespace": ns}}
    )
    kube.wait_for(
        "Deployment", ns, "model-good", lambda d: (d.get("status") or {}).get("availableReplicas") == 2
    )
    found = results(CheckSpec("deploys", "kubernetes_deployments", 5, params={"namespace": ns}), settings)
    assert found[f"{ns}/deployment/model-good"].ok, found
    bad = found[f"{ns}/deployment/model-bad"]
    assert not bad.ok and bad.summary == f"deployment {ns}/model-bad: 0/2 available"


def test_crashing_and_unpullable_pods_are_reported_per_deployment(kube, kube_conn, images, settings):
    ns = kube_conn
    for name, image in (
        ("crashy", images["crash"]),
        ("pullfail", images["unpullable"]),
        ("fine", images["good"]),
    ):
        kube.create({**deployment(name, image, replicas=1), "metadata": {"name": name, "namespace": ns}})

    def pod_reason(label: str, reason: str):
        def holds(_: dict) -> bool:
            pods = kube.list("Pod", ns, label_selector=f"app={label}")
            return any(
                (cs.get("state") or {}).get("waiting", {}).get("reason") == reason
                for p in pods
                for cs in (p.get("status") or {}).get("containerStatuses") or []
            )

        return holds

    kube.wait_for("Deployment", ns, "crashy", pod_reason("crashy", "CrashLoopBackOff"), timeout=20)
    kube.wait_for("Deployment", ns, "pullfail", pod_reason("pullfail", "ImagePullBackOff"), timeout=20)
    found = results(CheckSpec("pods", "kubernetes_pods", 5, params={"namespace": ns}), settings)
    crashy = found[f"{ns}/deployment/crashy"]
    assert not crashy.ok
    # Caught in back-off, or just restarted between back-offs with its crash still recent.
    assert "CrashLoopBackOff" in crashy.summary or "last exit 1" in crashy.summary, crashy.summary
    assert "ImagePullBackOff" in found[f"{ns}/deployment/pullfail"].summary
    assert found[f"{ns}/deployment/fine"].ok


def test_a_pod_pending_too_long_is_reported(kube, kube_conn, settings):
    ns = kube_conn
    image = f"registry.test/slow-start-{uuid.uuid4().hex[:6]}:1"
    kube.register_image(image, ScriptedContainer(start_delay=60))
    kube.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "slowpoke", "namespace": ns},
            "spec": {"containers": [{"name": "main", "image": image}]},
        }
    )
    kube.wait_for("Pod", ns, "slowpoke", lambda p: (p.get("status") or {}).get("phase") == "Pending")
    import time

    time.sleep(1.2)
    found = results(
        CheckSpec("pods", "kubernetes_pods", 5, params={"namespace": ns, "pending_max_seconds": 1}), settings
    )
    (result,) = found.values()
    assert result.target == f"{ns}/pod/slowpoke" and not result.ok and "Pending for" in result.summary


def test_an_hpa_at_its_maximum_replicas_is_reported(kube, kube_conn, settings):
    from kubernetes import client

    ns = kube_conn
    api = client.AutoscalingV2Api(kube.admin_api_client())
    for name, current in (("pinned", 5), ("roomy", 2)):
        kube.create(
            {
                "apiVersion": "autoscaling/v2",
                "kind": "HorizontalPodAutoscaler",
                "metadata": {"name": name, "namespace": ns},
                "spec": {
                    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                    "minReplicas": 1,
                    "maxReplicas": 5,
                },
            }
        )
        # What the HPA controller does: write the observed replicas through the status subresource.
        api.patch_namespaced_horizontal_pod_autoscaler_status(
            name, ns, {"status": {"currentReplicas": current, "desiredReplicas": current}}
        )
    found = results(CheckSpec("hpa", "kubernetes_hpas", 5, params={"namespace": ns}), settings)
    assert (
        not found[f"{ns}/hpa/pinned"].ok and "5/5 replicas (at maximum)" in found[f"{ns}/hpa/pinned"].summary
    )
    assert found[f"{ns}/hpa/roomy"].ok


@pytest.fixture
def gpu_pool(kube):
    """Two GPU nodes labelled for this test only; removed afterwards (nodes are cluster-wide)."""
    label = f"pool-{uuid.uuid4().hex[:6]}"
    names = [f"gpu-{label}-{i}" for i in range(2)]
    for name in names:
        # A complete Node as a kubelet registers it (the official client requires every nodeInfo field).
        kube.create(
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": name,
                    "labels": {"mlops.test/pool": label, "kubernetes.io/hostname": name},
                },
                "spec": {},
                "status": {
                    "allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110", "nvidia.com/gpu": "4"},
                    "capacity": {"cpu": "8", "memory": "32Gi", "pods": "110", "nvidia.com/gpu": "4"},
                    "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
                    "nodeInfo": {
                        "architecture": "amd64",
                        "bootID": "b",
                        "containerRuntimeVersion": "containerd://1.7",
                        "kernelVersion": "6.1",
                        "kubeProxyVersion": "v1.32.0",
                        "kubeletVersion": "v1.32.0",
                        "machineID": "m",
                        "operatingSystem": "linux",
                        "osImage": "Debian 12",
                        "systemUUID": "u",
                    },
                },
            }
        )
    yield label
    for name in names:
        kube.delete("Node", None, name)


def test_gpu_nodes_and_allocatable_gpus_meet_the_minimums(gpu_pool, kube_conn, settings):
    selector = f"mlops.test/pool={gpu_pool}"
    enough = CheckSpec(
        "gpu",
        "kubernetes_gpu_nodes",
        5,
        params={"label_selector": selector, "min_ready_nodes": 2, "min_allocatable": 8},
    )
    too_few = CheckSpec(
        "gpu",
        "kubernetes_gpu_nodes",
        5,
        params={"label_selector": selector, "min_ready_nodes": 3, "min_allocatable": 16},
    )
    (ok,) = run_checks([enough], settings).results
    (short,) = run_checks([too_few], settings).results
    assert ok.ok and ok.details == {"ready_nodes": 2, "allocatable": 8, "not_ready": []}
    assert not short.ok
    assert short.summary == (
        "GPU pool: 2 Ready GPU nodes, expected at least 3; 8 allocatable nvidia.com/gpu, expected at least 16"
    )


def test_an_api_error_fails_the_check_and_keeps_its_targets(kube, kube_conn, settings):
    ns = kube_conn
    kube.faults.add("GET", f"/apis/apps/v1/namespaces/{ns}/deployments", 503, times=1)
    (result,) = run_checks(
        [CheckSpec("deploys", "kubernetes_deployments", 5, params={"namespace": ns})], settings
    ).results
    assert not result.ok and result.errored and result.target == ns and "503" in result.summary


# -- checks that could not work (issue 15, bug 7) ---------------------------------------------------------
def test_a_fixed_size_hpa_at_its_only_size_is_healthy(kube, kube_conn, settings):
    """Before: an HPA with minReplicas == maxReplicas is always at its maximum: it failed for ever."""
    from kubernetes import client

    ns = kube_conn
    api = client.AutoscalingV2Api(kube.admin_api_client())
    kube.create(
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "fixed", "namespace": ns},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "fixed"},
                "minReplicas": 3,
                "maxReplicas": 3,
            },
        }
    )
    api.patch_namespaced_horizontal_pod_autoscaler_status(
        "fixed", ns, {"status": {"currentReplicas": 3, "desiredReplicas": 3}}
    )
    found = results(CheckSpec("hpa", "kubernetes_hpas", 5, params={"namespace": ns}), settings)
    assert found[f"{ns}/hpa/fixed"].ok and "fixed size" in found[f"{ns}/hpa/fixed"].summary


def test_a_gpu_node_whose_device_plugin_died_is_counted_with_zero_gpus(gpu_pool, kube, kube_conn, settings):
    """Before: a Ready node with 0 allocatable GPUs was dropped from the count without a word."""
    from kubernetes import client

    api = client.CoreV1Api(kube.admin_api_client())
    sick = f"gpu-{gpu_pool}-0"
    # What the kubelet reports once the device plugin is gone: no allocatable GPUs left.
    api.patch_node_status(sick, {"status": {"allocatable": {"nvidia.com/gpu": "0"}}})
    spec = CheckSpec(
        "gpu",
        "kubernetes_gpu_nodes",
        5,
        params={"label_selector": f"mlops.test/pool={gpu_pool}", "min_ready_nodes": 2, "min_allocatable": 8},
    )
    (result,) = run_checks([spec], settings).results
    assert not result.ok
    assert result.details["no_allocatable"] == [sick] and result.details["allocatable"] == 4
    assert f"Ready but 0 allocatable nvidia.com/gpu (device plugin?): {sick}" in result.summary


def test_a_missing_permission_is_told_once_and_is_not_the_service_failing(kube, kube_conn, settings):
    """Before: without the nodes ClusterRole, gpu-nodes errored (and alerted) every five minutes."""
    from mlops.health.state import AlertState, apply_report

    forbidden = {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": 'nodes is forbidden: User "system:serviceaccount:airflow:airflow-worker" cannot list '
        'resource "nodes" in API group "" at the cluster scope',
        "reason": "Forbidden",
        "code": 403,
    }
    kube.faults.add("GET", "^/api/v1/nodes$", 403, times=None, body=forbidden)
    spec = CheckSpec("gpu-nodes", "kubernetes_gpu_nodes", 5, failures_before_alert=1, params={})
    state = AlertState()
    for n in range(3):
        report = run_checks([spec], settings)
        apply_report(state, report, [spec], f"run-{n}")
    (result,) = report.results
    assert result.ok and result.errored and "permission missing (403 Forbidden)" in result.summary
    assert "cannot list resource" in result.summary
    assert state.alerts == {}  # not an alert: the GPU pool is not known to be failing
    assert list(state.notices) == ["gpu-nodes"] and state.notices["gpu-nodes"]["told"] is False
