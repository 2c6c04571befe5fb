"""Promotion under crashes, rejections, retries and rollbacks (issue 12), against kubesim and real servers.

The registry's production pointer is the truth; each test names what a user saw before the fix.
"""

from __future__ import annotations

import time

import pytest

from mlops.promotion import bluegreen, gates
from mlops.promotion.lease import lease_name
from mlops.promotion.reconcile import reconcile
from tests.integration.promotion.conftest import MODEL


def served_version(serving) -> str:
    status, body = serving.client(MODEL).request("GET", "/version")
    assert status == 200, f"the active Service answered {status}: {body}"
    return body["model_version"]


def annotations(serving) -> dict:
    return serving.kube.get("Service", serving.namespace, MODEL)["metadata"]["annotations"]


def available(serving, color: str) -> int:
    dep = serving.kube.get("Deployment", serving.namespace, f"{MODEL}-{color}")
    return (dep.get("status") or {}).get("availableReplicas", 0) or 0


def wait_until(predicate, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def switched_not_committed(serving, version: str, holder: str) -> dict:
    """A run that switched traffic to ``version`` and died before moving the pointer (no clean-up)."""
    state = bluegreen.resolve_active_color(serving.cluster, MODEL, holder, 1)  # a 1 s lease
    deployed = bluegreen.deploy_candidate(
        serving.cluster, serving.spec(version, state["candidate_color"]), holder
    )
    bluegreen.wait_for_rollout(
        serving.cluster, deployed["deployment"], version, deployed["generation"], 30, 0.1
    )
    bluegreen.switch_traffic(
        serving.cluster, MODEL, state["candidate_color"], state["active_color"], version, holder
    )
    time.sleep(1.1)  # its lease runs out
    return state


# -- bug 1: a rollback only ever returns to the version that last served production ----------------
def rejected_v3_on_blue(serving) -> None:
    """v1 on blue, v2 promoted to green, v3 deployed to blue and refused by the quality gate."""
    serving.register("v1")
    serving.register("v2")
    serving.register("v3", quality="bad")
    serving.promote("v1")
    serving.promote("v2")
    with pytest.raises(gates.GateFailed, match="quality"):
        serving.promote("v3")
    assert (
        serving.kube.get("Deployment", serving.namespace, f"{MODEL}-blue")["metadata"]["labels"]["version"]
        == "v3"
    )


def test_a_rollback_refuses_to_switch_to_a_rejected_candidate_on_the_idle_color(serving):
    rejected_v3_on_blue(serving)
    holder = "mlops_promotion/rollback"
    bluegreen.resolve_active_color(serving.cluster, MODEL, holder)
    # Before: the rollback scaled blue (now v3) up and switched to it: /version answered v3.
    with pytest.raises(
        bluegreen.PromotionError, match=r"refusing to roll back to blue: it runs 'v3', not 'v1'"
    ):
        bluegreen.rollback(serving.cluster, MODEL, holder, 60, 0.1)
    assert serving.selector_color() == "green" and served_version(serving) == "v2"
    assert serving.replicas("blue") == 0


def test_a_rollback_redeploys_the_last_production_version_when_the_idle_color_runs_another(serving):
    rejected_v3_on_blue(serving)
    holder = "mlops_promotion/rollback"
    bluegreen.resolve_active_color(serving.cluster, MODEL, holder)
    target = serving.registry.production(MODEL)["previous_version"]
    result = bluegreen.rollback(
        serving.cluster, MODEL, holder, 60, 0.1, to_version=target, spec_for=lambda c, v: serving.spec(v, c)
    )
    pointer = serving.registry.rollback(MODEL, holder, expected_current="v2")
    bluegreen.release_lease(serving.cluster, MODEL, holder)
    assert (result["to_color"], result["version"], result["switched"]) == ("blue", "v1", True)
    assert served_version(serving) == "v1" and pointer["version"] == "v1"
    assert reconcile(serving.cluster, serving.registry, MODEL, "check", repair=False)["consistent"]


def test_a_retried_rollback_does_not_switch_back_to_the_version_it_rolled_back_from(serving):
    serving.register("v1")
    serving.register("v2")
    serving.promote("v1")
    serving.promote("v2")
    holder = "mlops_promotion/rollback-2"
    bluegreen.resolve_active_color(serving.cluster, MODEL, holder)
    first = bluegreen.rollback(serving.cluster, MODEL, holder, 60, 0.1)
    # Before: the retry read "previous = green" off the Service and switched back to v2.
    retried = bluegreen.rollback(serving.cluster, MODEL, holder, 60, 0.1)
    assert first["switched"] and not retried["switched"]
    assert serving.selector_color() == "blue" and served_version(serving) == "v1"


# -- bug 3: the registry pointer is the truth, and every step is idempotent with respect to it ----
def test_a_pointer_move_whose_response_was_lost_is_retried_and_traffic_stays_on_the_new_version(
    serving, monkeypatch
):
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    serving.register("v1")
    serving.register("v2")
    serving.promote("v1")
    lost: list[str] = []

    def remember_key(params, context, **kwargs):
        context["key"] = params.get("Key", "")

    def drop_response(http_response, context, **kwargs):
        if not lost and context.get("key", "").endswith("/production.json"):
            lost.append(context["key"])
            raise ConnectionResetError("connection reset while reading the PutObject response")

    # The network drops the response of the pointer's PutObject once (the write landed): the handlers
    # ride on the real boto3 client that the DAG's tasks get from the AWS connection.
    real_get_conn = S3Hook.get_conn

    def get_conn(hook):
        client = real_get_conn(hook)
        client.meta.events.register("provide-client-params.s3.PutObject", remember_key, unique_id="lost-key")
        client.meta.events.register("after-call.s3.PutObject", drop_response, unique_id="lost-response")
        return client

    monkeypatch.setattr(S3Hook, "get_conn", get_conn)
    # Before: the retry failed as final ("production is 'v2', expected 'v1'") and the clean-up put
    # traffic back on v1 while the registry said v2.
    out = serving.promote("v2")  # move_registry_pointer fails once and Airflow retries it (retries=1)
    assert lost and out["pointer"]["version"] == "v2"
    assert serving.last_run.tries["move_registry_pointer"] == 2
    assert serving.selector_color() == "green" and served_version(serving) == "v2"
    assert serving.registry.production(MODEL)["version"] == "v2"


def test_a_clean_up_after_a_landed_pointer_move_leaves_the_committed_version_serving(serving):
    serving.register("v1")
    serving.register("v2")
    serving.promote("v1")
    holder = "mlops_promotion/committed"
    state = bluegreen.resolve_active_color(serving.cluster, MODEL, holder)
    deployed = bluegreen.deploy_candidate(serving.cluster, serving.spec("v2", "green"), holder)
    bluegreen.wait_for_rollout(serving.cluster, deployed["deployment"], "v2", deployed["generation"], 30, 0.1)
    bluegreen.switch_traffic(serving.cluster, MODEL, "green", "blue", "v2", holder)
    serving.registry.promote(MODEL, "v2", "v1", holder)  # landed; the task never learnt it (completed=False)
    outcome = bluegreen.clean_up(
        serving.cluster, MODEL, "green", state["active_color"], holder, False, 30, 0.1,
        registry=serving.registry, version="v2",
    )  # fmt: skip
    assert outcome == "completed: nothing to undo"
    assert served_version(serving) == "v2"


def test_re_promoting_a_version_that_serves_but_was_never_committed_moves_the_pointer(serving):
    serving.register("v1")
    serving.register("v2")
    serving.promote("v1")
    switched_not_committed(serving, "v2", "mlops_promotion/crashed")
    assert served_version(serving) == "v2" and serving.registry.production(MODEL)["version"] == "v1"
    # Before: resolve_active_color said "already active" and the run skipped: the pointer stayed v1.
    # The DAG's reconcile first puts traffic back on the registry's v1 (the truth), then the run
    # promotes v2 as usual.
    out = serving.promote("v2")
    assert out["reconciled"]["repairs"] and all(r["done"] for r in out["reconciled"]["repairs"])
    assert not out["state"]["already_active"]
    assert out["pointer"]["version"] == "v2" and out["switched"]["to_color"] == "green"
    assert serving.selector_color() == "green" and served_version(serving) == "v2"
    assert serving.replicas("blue") == 0


def test_reconcile_puts_traffic_back_on_the_registry_version_after_a_run_died_mid_promotion(serving):
    serving.register("v1")
    serving.register("v2")
    serving.promote("v1")
    switched_not_committed(serving, "v2", "mlops_promotion/crashed")
    report = reconcile(serving.cluster, serving.registry, MODEL, "mlops_promotion/next", repair=False)
    assert not report["consistent"] and not report["repairs"][0]["done"]
    assert "the registry says v1 serves production, but traffic goes to green" in report["differences"][0]
    assert (
        "kubectl -n" in report["repairs"][0]["command"]
        and '"color":"blue"' in report["repairs"][0]["command"]
    )
    assert serving.selector_color() == "green"  # repair=False only reads

    report = reconcile(serving.cluster, serving.registry, MODEL, "mlops_promotion/next", timeout_seconds=30)
    assert report["consistent"] and report["repairs"][0]["done"]
    assert serving.selector_color() == "blue" and served_version(serving) == "v1"
    assert annotations(serving)[bluegreen.ACTIVE_VERSION] == "v1"
    again = reconcile(serving.cluster, serving.registry, MODEL, "mlops_promotion/next")
    assert again == {"consistent": True, "differences": [], "repairs": []}


def test_reconcile_scales_a_serving_color_at_zero_back_up(serving):
    serving.register("v1")
    serving.promote("v1")
    serving.admin_apps.patch_namespaced_deployment_scale(
        f"{MODEL}-blue", serving.namespace, {"spec": {"replicas": 0}}
    )
    wait_until(lambda: available(serving, "blue") == 0)
    report = reconcile(serving.cluster, serving.registry, MODEL, "mlops_promotion/next", timeout_seconds=30)
    assert "blue runs v1 but is not a complete rollout" in report["differences"][0]
    assert report["consistent"] and served_version(serving) == "v1"


def test_reconcile_reports_the_exact_repair_when_no_color_runs_the_registry_version(serving):
    rejected_v3_on_blue(serving)
    serving.registry.rollback(MODEL, "someone")  # the pointer back to v1, which no color runs now
    report = reconcile(serving.cluster, serving.registry, MODEL, "mlops_promotion/next")
    assert not report["consistent"]
    (repair,) = report["repairs"]
    assert not repair["done"] and "no color runs v1" in repair["action"]
    assert (
        "airflow dags trigger mlops_promotion" in repair["command"] and '"version": "v1"' in repair["command"]
    )
    assert 'promote("digits", "v2", "v1", "by-hand")' in repair["command"]
    assert serving.selector_color() == "green" and served_version(serving) == "v2"  # nothing guessed


# -- bug 4: a color at zero replicas never takes traffic; only the lease holder scales ------------
def deployed_candidate(serving, holder: str) -> dict:
    serving.register("v1")
    serving.register("v2")
    serving.promote("v1")
    state = bluegreen.resolve_active_color(serving.cluster, MODEL, holder)
    deployed = bluegreen.deploy_candidate(serving.cluster, serving.spec("v2", "green"), holder)
    bluegreen.wait_for_rollout(serving.cluster, deployed["deployment"], "v2", deployed["generation"], 30, 0.1)
    return state


def test_a_stale_holders_clean_up_cannot_scale_the_candidate_down(serving):
    deployed_candidate(serving, "mlops_promotion/current")
    # Before: the stale run's clean-up scaled green to 0, and the switch then sent traffic to no pod.
    outcome = bluegreen.clean_up(
        serving.cluster, MODEL, "green", "blue", "mlops_promotion/stale", False, 30, 0.1
    )
    assert "no longer holds the lease" in outcome and "left as they are" in outcome
    with pytest.raises(bluegreen.LeaseLost, match="held by 'mlops_promotion/current'"):
        bluegreen.scale(serving.cluster, MODEL, "green", 0, holder="mlops_promotion/stale")
    assert serving.replicas("green") == 1
    bluegreen.switch_traffic(serving.cluster, MODEL, "green", "blue", "v2", "mlops_promotion/current")
    assert served_version(serving) == "v2"


def test_a_candidate_scaled_to_zero_is_never_switched_to(serving):
    deployed_candidate(serving, "mlops_promotion/current")
    serving.admin_apps.patch_namespaced_deployment_scale(
        f"{MODEL}-green", serving.namespace, {"spec": {"replicas": 0}}
    )
    wait_until(lambda: available(serving, "green") == 0)
    # Before: 0 desired = 0 ready = 0 available counted as complete, and /version answered 503.
    with pytest.raises(bluegreen.PromotionError, match="desired 0 replicas"):
        bluegreen.switch_traffic(serving.cluster, MODEL, "green", "blue", "v2", "mlops_promotion/current")
    assert serving.selector_color() == "blue" and served_version(serving) == "v1"


def test_an_emergency_rollback_preempts_a_running_promotion_which_then_leaves_its_state_alone(serving):
    serving.register("v1")
    serving.register("v2")
    serving.promote("v1")
    promotion = "mlops_promotion/slow"
    state = bluegreen.resolve_active_color(serving.cluster, MODEL, promotion)
    deployed = bluegreen.deploy_candidate(serving.cluster, serving.spec("v2", "green"), promotion)
    bluegreen.wait_for_rollout(serving.cluster, deployed["deployment"], "v2", deployed["generation"], 30, 0.1)
    bluegreen.switch_traffic(serving.cluster, MODEL, "green", "blue", "v2", promotion)  # post window now

    emergency = "mlops_rollback/now"
    with pytest.raises(bluegreen.ConcurrentPromotion, match="mlops_promotion/slow"):
        bluegreen.acquire_lease(serving.cluster, MODEL, emergency, 60)
    before = serving.kube.get("Lease", serving.namespace, lease_name(MODEL))["spec"]["leaseTransitions"]
    lease = bluegreen.preempt_lease(serving.cluster, MODEL, emergency, 600)
    assert lease["spec"]["holderIdentity"] == emergency and lease["spec"]["leaseTransitions"] == before + 1
    bluegreen.rollback(serving.cluster, MODEL, emergency, 60, 0.1, to_version="v1")
    assert served_version(serving) == "v1"

    with pytest.raises(bluegreen.LeaseLost, match="pre-empted by 'mlops_rollback/now'"):
        bluegreen.renew_lease(serving.cluster, MODEL, promotion, 600)
    with pytest.raises(bluegreen.LeaseLost):
        bluegreen.scale_down(serving.cluster, MODEL, "blue", 0, holder=promotion)
    with pytest.raises(bluegreen.LeaseLost):
        bluegreen.acquire_lease(serving.cluster, MODEL, promotion, 600)  # never takes it back
    outcome = bluegreen.clean_up(
        serving.cluster, MODEL, state["candidate_color"], "blue", promotion, False, 30, 0.1,
        registry=serving.registry, version="v2",
    )  # fmt: skip
    assert "left as they are" in outcome
    assert (
        serving.selector_color() == "blue"
        and serving.replicas("blue") == 1
        and served_version(serving) == "v1"
    )
    assert (
        serving.kube.get("Lease", serving.namespace, lease_name(MODEL))["spec"]["holderIdentity"] == emergency
    )
    assert bluegreen.release_lease(serving.cluster, MODEL, emergency)


# -- bug 6: capacity at the switch and after a rollback ----------------------------------------
def test_the_candidate_starts_at_the_active_colors_count_and_a_rollback_restores_the_count_it_had(serving):
    serving.register("v1")
    serving.register("v2")
    serving.promote("v1")
    # The HPA scaled blue to 3 under load (through the scale subresource, and in its own status).
    serving.admin_apps.patch_namespaced_deployment_scale(
        f"{MODEL}-blue", serving.namespace, {"spec": {"replicas": 3}}
    )
    serving.admin_autoscaling.patch_namespaced_horizontal_pod_autoscaler_status(
        f"{MODEL}-blue", serving.namespace, {"status": {"currentReplicas": 3, "desiredReplicas": 3}}
    )
    wait_until(lambda: available(serving, "blue") == 3)
    # Before: green started at the static count (1) and took all of blue's traffic.
    out = serving.promote("v2")
    assert (
        out["deployed"]["replicas"] == 3
        and serving.replicas("green") == 3
        and available(serving, "green") == 3
    )
    blue = serving.kube.get("Deployment", serving.namespace, f"{MODEL}-blue")
    assert (
        blue["spec"]["replicas"] == 0 and blue["metadata"]["annotations"][bluegreen.SCALED_DOWN_FROM] == "3"
    )
    holder = "mlops_promotion/rollback"
    bluegreen.resolve_active_color(serving.cluster, MODEL, holder)
    # Before: blue came back at its configured minimum (1).
    bluegreen.rollback(serving.cluster, MODEL, holder, 60, 0.1)
    assert (
        serving.replicas("blue") == 3 and available(serving, "blue") == 3 and served_version(serving) == "v1"
    )
    bluegreen.release_lease(serving.cluster, MODEL, holder)
