"""Blue-green promotion against the simulated Kubernetes API, with real model-server processes."""

from __future__ import annotations

import pytest

from mlops.promotion import bluegreen, gates
from mlops.promotion.lease import lease_name
from tests.integration.promotion.conftest import BROKEN_IMAGE, MODEL


def non_get_requests(kube, namespace: str) -> list:
    return [r for r in kube.requests if r.method != "GET" and f"/namespaces/{namespace}/" in r.path]


def test_first_deployment_serves_blue_through_the_active_service(serving):
    serving.register("v1")
    out = serving.promote("v1")
    assert out["state"]["first_deployment"] and out["state"]["candidate_color"] == "blue"
    assert serving.selector_color() == "blue"
    status, body = serving.client(MODEL).request("GET", "/version")
    assert status == 200 and body["model_version"] == "v1"
    assert serving.registry.production(MODEL)["version"] == "v1"
    service = serving.kube.get("Service", serving.namespace, MODEL)
    assert service["metadata"]["annotations"][bluegreen.ACTIVE_VERSION] == "v1"
    lease = serving.kube.get("Lease", serving.namespace, lease_name(MODEL))
    assert lease["spec"].get("holderIdentity") is None  # released
    assert lease["spec"]["leaseTransitions"] == 0 and lease["spec"]["acquireTime"].endswith("Z")


def test_happy_path_blue_to_green_switches_traffic_then_scales_blue_to_zero_keeping_it(serving):
    serving.register("v1")
    serving.register("v2")
    serving.promote("v1")
    out = serving.promote("v2")
    assert out["switched"] == {
        "switched": True,
        "from_color": "blue",
        "to_color": "green",
        "switched_at": out["switched"]["switched_at"],
        "silence_id": out["switched"]["silence_id"],  # the model's checks are silenced for the switch
    }
    assert out["states"]["clean_up"] == "success" and out["states"]["approve_promotion"] == "skipped"
    assert serving.selector_color() == "green"
    assert serving.client(MODEL).request("GET", "/version")[1]["model_version"] == "v2"
    assert serving.replicas("blue") == 0  # scaled down, Deployment kept for an instant rollback
    assert serving.kube.get("Deployment", serving.namespace, "digits-blue") is not None
    pointer = serving.registry.production(MODEL)
    assert (pointer["version"], pointer["previous_version"]) == ("v2", "v1")
    annotations = serving.kube.get("Service", serving.namespace, MODEL)["metadata"]["annotations"]
    assert annotations[bluegreen.PREVIOUS_COLOR] == "blue" and annotations[bluegreen.PREVIOUS_VERSION] == "v1"


def test_broken_image_exceeding_the_progress_deadline_aborts_and_blue_is_untouched(serving):
    serving.register("v1")
    serving.register("v2")
    serving.promote("v1")
    blue_before = serving.kube.get("Deployment", serving.namespace, "digits-blue")
    with pytest.raises(bluegreen.RolloutFailed, match="progress deadline"):
        serving.promote("v2", image=BROKEN_IMAGE, deadline=2)
    assert serving.selector_color() == "blue"
    blue_after = serving.kube.get("Deployment", serving.namespace, "digits-blue")
    assert blue_after["metadata"]["resourceVersion"] == blue_before["metadata"]["resourceVersion"]
    assert serving.replicas("green") == 0  # the candidate is scaled down
    assert serving.registry.production(MODEL)["version"] == "v1"
    assert serving.client(MODEL).request("GET", "/version")[1]["model_version"] == "v1"


def test_failing_quality_gate_aborts_before_the_switch(serving):
    serving.register("v1")
    serving.register("v2", quality="bad")  # honest metrics: accuracy ~0.01
    serving.promote("v1")
    with pytest.raises(gates.GateFailed, match=r"quality: accuracy 0\.0\d+ < minimum 0\.85"):
        serving.promote("v2")
    assert serving.selector_color() == "blue" and serving.replicas("green") == 0
    assert serving.registry.production(MODEL)["version"] == "v1"


def test_failing_smoke_gate_aborts_a_candidate_whose_metrics_lie(serving):
    serving.register("v1")
    serving.register("v2", quality="bad", reported_accuracy=0.97)
    serving.promote("v1")
    with pytest.raises(
        gates.GateFailed, match=r"smoke: 64 held-out samples, served accuracy 0\.\d+ \(< 0\.750\)"
    ):
        serving.promote("v2")
    assert serving.selector_color() == "blue" and serving.replicas("green") == 0


def test_a_failure_after_the_switch_restores_the_previous_color(serving):
    serving.register("v1")
    serving.register("v2")
    serving.promote("v1")

    def break_green():  # the new color starts failing predictions right after the switch
        serving.kube.faults.add("POST", rf"/_network/{serving.namespace}/{MODEL}:80/predict", 500, times=None)

    with pytest.raises(gates.GateFailed, match="post-promotion analysis failed: smoke"):
        serving.promote("v2", post_check=break_green)
    assert serving.selector_color() == "blue"
    assert serving.replicas("green") == 0 and serving.replicas("blue") == 1
    assert serving.registry.production(MODEL)["version"] == "v1"
    annotations = serving.kube.get("Service", serving.namespace, MODEL)["metadata"]["annotations"]
    assert annotations[bluegreen.ACTIVE_VERSION] == "v1"


def test_a_stale_rollout_status_never_switches_traffic(serving):
    serving.register("v1")
    serving.register("v2")
    serving.promote("v1")
    holder = "mlops_promotion/stale"
    state = bluegreen.resolve_active_color(serving.cluster, MODEL, holder)
    deployed = bluegreen.deploy_candidate(serving.cluster, serving.spec("v1", "green"), holder)
    bluegreen.wait_for_rollout(serving.cluster, deployed["deployment"], "v1", deployed["generation"], 30, 0.1)
    serving.kube.pause_controllers()  # from here on, status lags every spec change
    deployed = bluegreen.deploy_candidate(serving.cluster, serving.spec("v2", "green"), holder)
    with pytest.raises(bluegreen.RolloutFailed, match="status is stale: observedGeneration 1 < generation 2"):
        bluegreen.wait_for_rollout(
            serving.cluster, deployed["deployment"], "v2", deployed["generation"], 1.5, 0.1
        )
    with pytest.raises(bluegreen.PromotionError, match="not a complete rollout of v2"):
        bluegreen.switch_traffic(serving.cluster, MODEL, "green", "blue", "v2", holder)
    assert serving.selector_color() == "blue"
    serving.kube.resume_controllers()
    assert "aborted before the switch" in bluegreen.clean_up(
        serving.cluster, MODEL, state["candidate_color"], "blue", holder, False, 30, 0.1
    )


def test_a_concurrent_promotion_of_the_same_model_is_refused(serving):
    serving.register("v1")
    serving.promote("v1")
    bluegreen.resolve_active_color(serving.cluster, MODEL, "mlops_promotion/first")
    with pytest.raises(bluegreen.ConcurrentPromotion, match="mlops_promotion/first"):
        bluegreen.resolve_active_color(serving.cluster, MODEL, "mlops_promotion/second")
    # The switch checks the lease again, against a fresh read.
    with pytest.raises(bluegreen.ConcurrentPromotion, match="held by 'mlops_promotion/first'"):
        bluegreen.switch_traffic(serving.cluster, MODEL, "green", "blue", "v1", "mlops_promotion/second")
    assert bluegreen.release_lease(serving.cluster, MODEL, "mlops_promotion/first")
    bluegreen.resolve_active_color(serving.cluster, MODEL, "mlops_promotion/second")


def test_injected_409_and_503_answers_are_retried_and_the_promotion_survives(serving):
    serving.register("v1")
    serving.register("v2")
    serving.promote("v1")
    ns = serving.namespace
    faults = [
        serving.kube.faults.add("PATCH", rf"/namespaces/{ns}/services/{MODEL}$", 409, times=2),
        serving.kube.faults.add("PATCH", rf"/namespaces/{ns}/services/{MODEL}-preview$", 503, times=2),
        serving.kube.faults.add("POST", rf"/namespaces/{ns}/deployments$", 503, times=2),
        serving.kube.faults.add("GET", rf"/namespaces/{ns}/deployments/{MODEL}-green$", 503, times=2),
        serving.kube.faults.add("PATCH", rf"/namespaces/{ns}/deployments/{MODEL}-blue$", 409, times=1),
    ]
    serving.promote("v2")
    assert serving.selector_color() == "green" and serving.replicas("blue") == 0
    assert [f.hits for f in faults] == [f.times for f in faults]  # every injected error was met, and survived


def test_a_403_names_the_missing_rbac_verb_and_resource(serving):
    serving.register("v1")
    serving.kube.faults.add("POST", rf"/namespaces/{serving.namespace}/services$", 403, times=1)
    with pytest.raises(bluegreen.RbacDenied, match=r"denied 'create' on 'services' \(apiGroup ''\)"):
        bluegreen.resolve_active_color(serving.cluster, MODEL, "mlops_promotion/x")
    serving.kube.faults.add("PATCH", rf"/deployments/{MODEL}-blue$", 403, times=1)
    serving.kube.create({"kind": "Deployment", **_tiny_deployment(serving.namespace)})
    bluegreen.acquire_lease(serving.cluster, MODEL, "mlops_promotion/x", 60)
    with pytest.raises(bluegreen.RbacDenied, match=r"'patch' on 'deployments' \(apiGroup 'apps'\)"):
        bluegreen.scale(serving.cluster, MODEL, "blue", 3, holder="mlops_promotion/x")
    serving.kube.faults.add("PUT", rf"/leases/{lease_name(MODEL)}$", 403, times=1)
    with pytest.raises(
        bluegreen.RbacDenied, match=r"'update' on 'leases' \(apiGroup 'coordination.k8s.io'\)"
    ):
        bluegreen.renew_lease(serving.cluster, MODEL, "mlops_promotion/x", 60)


def _tiny_deployment(namespace: str) -> dict:
    from tests.integration.promotion.conftest import IMAGE

    labels = {"app": "model-server", "model": MODEL, "color": "blue"}
    return {
        "metadata": {"name": f"{MODEL}-blue", "namespace": namespace},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "model-server", "image": IMAGE}]},
            },
        },
    }


def test_a_manual_rollback_switches_back_and_moves_the_registry_pointer_back(serving):
    serving.register("v1")
    serving.register("v2")
    serving.promote("v1")
    serving.promote("v2")
    assert serving.replicas("blue") == 0
    holder = "mlops_promotion/rollback"
    bluegreen.resolve_active_color(serving.cluster, MODEL, holder)
    result = bluegreen.rollback(serving.cluster, MODEL, holder, 60, 0.1)
    serving.registry.rollback(MODEL, holder)
    bluegreen.release_lease(serving.cluster, MODEL, holder)
    assert (result["from_color"], result["to_color"], result["switched"]) == ("green", "blue", True)
    assert serving.selector_color() == "blue" and serving.replicas("blue") == 1  # scaled back up first
    assert serving.client(MODEL).request("GET", "/version")[1]["model_version"] == "v1"
    assert serving.registry.production(MODEL)["version"] == "v1"


def test_a_dry_run_changes_nothing(serving):
    serving.register("v1")
    serving.register("v2")
    serving.promote("v1")
    before = len(non_get_requests(serving.kube, serving.namespace))
    holder = "mlops_promotion/dry"
    state = bluegreen.resolve_active_color(serving.cluster, MODEL, holder, dry_run=True)
    deployed = bluegreen.deploy_candidate(serving.cluster, serving.spec("v2", "green"), holder, dry_run=True)
    switched = bluegreen.switch_traffic(serving.cluster, MODEL, "green", "blue", "v2", holder, dry_run=True)
    scaled = bluegreen.scale_down(serving.cluster, MODEL, "blue", 30, dry_run=True, holder=holder)
    assert state["candidate_color"] == "green" and deployed["dry_run"] and switched["dry_run"]
    assert scaled["replicas"] == 0 and scaled["dry_run"]
    assert len(non_get_requests(serving.kube, serving.namespace)) == before
    assert (
        serving.selector_color() == "blue"
        and serving.kube.get("Deployment", serving.namespace, "digits-green") is None
    )


def test_rerunning_a_finished_promotion_changes_nothing(serving):
    serving.register("v1")
    serving.promote("v1")
    before = len(non_get_requests(serving.kube, serving.namespace))
    out = serving.promote("v1")
    assert out["state"]["already_active"] and out["states"]["deploy_candidate"] == "skipped"
    # The rerun takes the model's lease, finds v1 serving, and gives the lease back: nothing else is written.
    writes = non_get_requests(serving.kube, serving.namespace)[before:]
    assert writes and all("/leases" in r.path for r in writes), [(r.method, r.path) for r in writes]
    assert out["clean_up"].startswith("nothing was deployed; lease released"), out["clean_up"]


def test_a_switch_racing_another_writer_is_refused_by_the_resource_version_guard(serving):
    import threading

    serving.register("v1")
    serving.register("v2")
    serving.promote("v1")
    holder = "mlops_promotion/race"
    bluegreen.resolve_active_color(serving.cluster, MODEL, holder)
    deployed = bluegreen.deploy_candidate(serving.cluster, serving.spec("v2", "green"), holder)
    bluegreen.wait_for_rollout(serving.cluster, deployed["deployment"], "v2", deployed["generation"], 30, 0.1)
    # Between the switch's read of the Service and its patch, someone else edits the selector.
    serving.kube.faults.add(
        "GET", rf"/namespaces/{serving.namespace}/deployments/{MODEL}-green$", None, delay=1.5
    )

    def other_writer():
        serving.cluster.core.patch_namespaced_service(
            MODEL,
            serving.namespace,
            {
                "spec": {"selector": {"color": "green"}},
                "metadata": {"annotations": {bluegreen.ACTIVE_VERSION: "hand-edited"}},
            },
        )

    timer = threading.Timer(0.6, other_writer)
    timer.start()
    with pytest.raises(bluegreen.ConcurrentPromotion, match="selects 'green', expected 'blue'"):
        bluegreen.switch_traffic(serving.cluster, MODEL, "green", "blue", "v2", holder)
    timer.join()
    conflicts = [
        r
        for r in serving.kube.requests
        if r.method == "PATCH" and r.path.endswith(f"/services/{MODEL}") and r.status == 409
    ]
    assert conflicts, "the stale patch must have been refused with 409"
    annotations = serving.kube.get("Service", serving.namespace, MODEL)["metadata"]["annotations"]
    assert annotations[bluegreen.ACTIVE_VERSION] == "hand-edited"  # the other writer's change stands
