"""The whole promotion DAG run by Airflow (`dag.test()`) against the simulated cluster, moto S3 and the
Slack/PagerDuty receivers, with real model-server processes answering the gates."""

from __future__ import annotations

import pytest

from tests.integration.promotion.conftest import MODEL

DAG_ID = "mlops_promotion"


@pytest.fixture(scope="module")
def promotion_dag():
    from airflow.dag_processing.dagbag import DagBag

    from tests.conftest import REPO_ROOT

    dag = DagBag(dag_folder=str(REPO_ROOT / "dags" / f"{DAG_ID}.py")).get_dag(DAG_ID)
    for task in dag.tasks:  # failures must show at once, not after a retry delay
        task.retries = 0
    return dag


@pytest.fixture
def env(airflow_db, serving, alert_conns, monkeypatch):
    monkeypatch.setenv("MLOPS_MODEL_SERVER_REPLICAS", "1")
    monkeypatch.setenv("MLOPS_PROMOTION_POLL_SECONDS", "0.2")
    monkeypatch.setenv("MLOPS_PROMOTION_ROLLOUT_TIMEOUT_SECONDS", "60")
    return serving


def run(dag, **conf):
    # Every param, every time: dag.test() keeps a previous run's conf in the (module-scoped) DAG's params.
    conf = {
        "model": MODEL,
        "version": None,
        "auto_promote": True,
        "analysis_duration_seconds": 1,
        "scale_down_delay_seconds": 0,
        "dry_run": False,
        "rollback": False,
        **conf,
    }
    dr = dag.test(run_conf=conf)
    return dr, {ti.task_id: ti.state for ti in dr.get_task_instances()}


def writes(env) -> int:
    return len(
        [r for r in env.kube.requests if r.method != "GET" and f"/namespaces/{env.namespace}/" in r.path]
    )


def test_the_dag_promotes_green_announces_it_and_rolls_back_on_request(promotion_dag, env, alert_conns):
    slack, pagerduty = alert_conns
    env.register("v1")
    env.register("v2")
    env.promote("v1")  # blue serves v1
    dr, states = run(promotion_dag, version="v2")
    assert dr.state == "success", states
    assert states["rollback_traffic"] == "skipped" and states["approve_promotion"] == "skipped"
    assert env.selector_color() == "green" and env.replicas("blue") == 0
    assert env.registry.production(MODEL)["version"] == "v2"
    assert env.client(MODEL).request("GET", "/version")[1]["model_version"] == "v2"
    texts = [b.get("text", "") for b in slack.bodies("/services")]
    assert any("Promoted digits v2 (blue -> green)" in t for t in texts), texts
    changes = pagerduty.bodies("/v2/change/enqueue")
    assert changes and "Promoted digits v2" in changes[-1]["payload"]["summary"]

    dr, states = run(promotion_dag, rollback=True)
    assert dr.state == "success", states
    assert states["resolve_active_color"] == "skipped" and states["switch_traffic"] == "skipped"
    assert env.selector_color() == "blue" and env.replicas("green") == 0 and env.replicas("blue") == 1
    assert env.registry.production(MODEL)["version"] == "v1"
    assert "Rolled back digits" in pagerduty.bodies("/v2/change/enqueue")[-1]["payload"]["summary"]


def test_a_failing_gate_fails_the_run_after_clean_up_leaves_blue_serving(promotion_dag, env):
    env.register("v1")
    env.register("v2", quality="bad")
    env.promote("v1")
    dr, states = run(promotion_dag, version="v2")
    assert dr.state == "failed"
    assert states["run_pre_promotion_analysis"] == "failed" and states["switch_traffic"] == "upstream_failed"
    assert states["clean_up"] == "success" and states["fail_run_if_any_failed"] == "failed"
    assert env.selector_color() == "blue" and env.replicas("green") == 0
    assert env.registry.production(MODEL)["version"] == "v1"


def test_rerunning_a_finished_promotion_and_a_dry_run_change_nothing(promotion_dag, env):
    env.register("v1")
    env.register("v2")
    env.promote("v1")
    before = writes(env)
    dr, states = run(promotion_dag, version="v1")
    assert dr.state == "success" and states["resolve_active_color"] == "skipped"
    assert states["deploy_candidate"] == "skipped" and states["notify"] == "skipped"
    dr, states = run(promotion_dag, version="v2", dry_run=True)
    assert dr.state == "success", states
    assert states["switch_traffic"] == "success" and states["scale_down_previous_color"] == "success"
    assert writes(env) == before
    assert env.selector_color() == "blue" and env.registry.production(MODEL)["version"] == "v1"
