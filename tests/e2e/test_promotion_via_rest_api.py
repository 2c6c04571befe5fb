"""Promotion decisions taken through the REST API (the official client), as an operator or a ChatOps
bot takes them: an approval given at once, a Reject, and an emergency rollback while a promotion
waits for its approval.

The model here is its own (not the platform loop's), registered from ready-made artifacts, so these
tests run alone: `pytest tests/e2e/test_promotion_via_rest_api.py -k reject`.
"""

from __future__ import annotations

import json
import time
import urllib.request

import pytest

from tests.e2e.conftest import SERVING_NAMESPACE, wait_for_dag
from tests.e2e.flows import trigger, wait
from tests.unit.serving.digits_artifacts import register_version

pytestmark = pytest.mark.e2e
MODEL = "digits-gate"
BUCKET = "mlops-artifacts"
PROMOTION, ROLLBACK = "mlops_promotion", "mlops_rollback"


def _finished(api, standalone, dag_id: str, run_id: str, timeout: float = 240) -> str:
    import airflow_client.client as ac

    def done():
        state = ac.DagRunApi(api).get_dag_run(dag_id, run_id).state
        return state if state in ("success", "failed") else None

    try:
        state = wait(f"{dag_id} run {run_id}", done, timeout, 0.5)
    except AssertionError:
        raise AssertionError(f"{dag_id} {run_id} did not finish:\n{standalone.log_tail()}") from None
    if state == "failed":  # the scheduler's and the tasks' own words, for a failure read from CI output
        log = (standalone.home / "standalone.log").read_text(errors="replace")
        print("\n".join(line for line in log.splitlines() if "state mismatch" in line or "killed" in line))
        run_logs = standalone.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}"
        for log_file in sorted(run_logs.glob("task_id=*/attempt=*.log")):
            text = log_file.read_text(errors="replace")
            if '"level":"error"' in text:
                print(f"\n--- {log_file.relative_to(run_logs)} ---\n{text[-3000:]}")
    return state


def _task_states(api, dag_id: str, run_id: str) -> dict[str, str | None]:
    import airflow_client.client as ac

    tis = ac.TaskInstanceApi(api).get_task_instances(dag_id, run_id).task_instances
    return {ti.task_id: ti.state for ti in tis}


def _version(kube) -> str | None:
    url = f"{kube.url}/api/v1/namespaces/{SERVING_NAMESPACE}/services/{MODEL}/proxy/version"
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return json.loads(resp.read()).get("model_version")
    except OSError:
        return None


def _replicas(kube, color: str) -> int | None:
    deployment = kube.get("Deployment", SERVING_NAMESPACE, f"{MODEL}-{color}")
    return deployment["spec"]["replicas"] if deployment else None


def _active_color(kube) -> str | None:
    return kube.get("Service", SERVING_NAMESPACE, MODEL)["spec"]["selector"]["color"]


def _lease_holder(kube) -> str | None:
    lease = kube.get("Lease", SERVING_NAMESPACE, f"mlops-promotion-{MODEL}")
    return ((lease or {}).get("spec") or {}).get("holderIdentity")


def _answer(api, run_id: str, option: str) -> None:
    import airflow_client.client as ac

    ac.TaskInstanceApi(api).update_hitl_detail(
        PROMOTION, run_id, "approve_promotion", -1, ac.UpdateHITLDetailPayload(chosen_options=[option])
    )


def _wait_for_request(api, run_id: str, parked: bool, timeout: float = 240) -> None:
    """Return the moment the approval request appears (``parked``: the moment the task parks)."""
    import airflow_client.client as ac

    instances = ac.TaskInstanceApi(api)

    def asked():
        if parked:
            ti = instances.get_task_instance(PROMOTION, run_id, "approve_promotion")
            return ti.state == "deferred"  # PromotionApproval waits in the triggerer, not parked
        try:
            return instances.get_hitl_detail(PROMOTION, run_id, "approve_promotion", -1)
        except ac.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    wait("the approval request", asked, timeout, 0.05)


def _promote(api, version: str, auto_promote: bool, scale_down_delay: int = 0) -> str:
    conf = {
        "model": MODEL,
        "version": version,
        "auto_promote": auto_promote,
        "analysis_duration_seconds": 1,
        "scale_down_delay_seconds": scale_down_delay,
    }
    return trigger(api, PROMOTION, conf)


@pytest.fixture(scope="module")
def serving_v1(api, standalone, kube, s3_client):
    """The model serves v1 (its first deployment), promoted through the REST API; its scale-down
    delay is waited in standalone's triggerer (the task defers)."""
    import airflow_client.client as ac

    wait_for_dag(api, PROMOTION)
    register_version(s3_client, BUCKET, MODEL, "v1")
    run_id = _promote(api, "v1", auto_promote=True, scale_down_delay=8)
    assert _finished(api, standalone, PROMOTION, run_id) == "success", _task_states(api, PROMOTION, run_id)
    assert _version(kube) == "v1"
    wait = ac.TaskInstanceApi(api).get_task_instance(PROMOTION, run_id, "wait_before_scale_down")
    assert (wait.end_date - wait.start_date).total_seconds() >= 8
    tries = ac.TaskInstanceApi(api).get_log(PROMOTION, run_id, "wait_before_scale_down", wait.try_number)
    assert "in the triggerer" in str(tries), tries
    return {"serving": "v1"}


@pytest.mark.timeout(900)
def test_an_approval_given_at_once_takes_effect_every_time(api, standalone, kube, s3_client, serving_v1):
    # Alternately the moment the request appears and the moment the task parks: before the fix one
    # run in two failed ("Server indicated the task shouldn't be running anymore ... Task killed!").
    for attempt in range(2):  # once at each moment (5 tries cost 2 min more of CI for no new case)
        version = f"v-quick-{attempt}"
        register_version(s3_client, BUCKET, MODEL, version)
        run_id = _promote(api, version, auto_promote=False)
        _wait_for_request(api, run_id, parked=bool(attempt % 2))
        _answer(api, run_id, "Approve")
        state = _finished(api, standalone, PROMOTION, run_id)
        assert state == "success", (attempt, _task_states(api, PROMOTION, run_id))
        assert _version(kube) == version
        serving_v1["serving"] = version


def test_a_rejected_promotion_scales_the_candidate_down_and_releases_the_lease(
    api, standalone, kube, s3_client, serving_v1
):
    register_version(s3_client, BUCKET, MODEL, "v-rejected")
    active = _active_color(kube)
    run_id = _promote(api, "v-rejected", auto_promote=False)
    _wait_for_request(api, run_id, parked=True)
    candidate = "green" if active == "blue" else "blue"
    assert _replicas(kube, candidate) == 1  # deployed and analysed, waiting for the decision
    _answer(api, run_id, "Reject")
    assert _finished(api, standalone, PROMOTION, run_id) == "success"
    states = _task_states(api, PROMOTION, run_id)
    assert states["switch_traffic"] == "skipped" and states["clean_up"] == "success", states
    assert _active_color(kube) == active and _version(kube) == serving_v1["serving"]
    assert _replicas(kube, candidate) == 0
    assert _lease_holder(kube) is None


@pytest.mark.timeout(900)
def test_an_emergency_rollback_does_not_wait_for_a_promotion_waiting_for_approval(
    api, standalone, kube, s3_client, serving_v1
):
    from mlops.registry import ModelRegistry

    wait_for_dag(api, ROLLBACK)
    registry = ModelRegistry(s3_client, BUCKET)
    if not registry.production(MODEL).get("previous_version"):  # run alone: promote once more first
        register_version(s3_client, BUCKET, MODEL, "v-before-rollback")
        run_id = _promote(api, "v-before-rollback", auto_promote=True)
        assert _finished(api, standalone, PROMOTION, run_id) == "success"
    pointer = registry.production(MODEL)
    bad, good = pointer["version"], pointer["previous_version"]
    assert _version(kube) == bad

    register_version(s3_client, BUCKET, MODEL, "v-preempted")
    promotion = _promote(api, "v-preempted", auto_promote=False)
    _wait_for_request(api, promotion, parked=True)
    assert _lease_holder(kube) == f"{PROMOTION}/{promotion}"

    started = time.monotonic()
    rollback = trigger(api, ROLLBACK, {"model": MODEL, "reason": "e2e: emergency"})
    assert _finished(api, standalone, ROLLBACK, rollback, timeout=300) == "success", _task_states(
        api, ROLLBACK, rollback
    )
    print(f"\n[figure] emergency rollback beside a waiting promotion: {time.monotonic() - started:.1f} s")
    assert _version(kube) == good and registry.production(MODEL)["version"] == good
    assert _task_states(api, PROMOTION, promotion)["approve_promotion"] == "deferred"

    _answer(api, promotion, "Approve")  # too late: the promotion lost its lease to the rollback
    assert _finished(api, standalone, PROMOTION, promotion) == "failed"
    states = _task_states(api, PROMOTION, promotion)
    assert states["switch_traffic"] == "failed" and states["clean_up"] == "success", states
    assert _version(kube) == good and registry.production(MODEL)["version"] == good
    assert _lease_holder(kube) is None
