"""One real run of the ``mlops_health`` DAG (``dag.test()``): checks, alert state, delivery, digest."""

from __future__ import annotations

import json

import yaml


def test_a_health_run_checks_everything_pages_once_and_stores_the_state(
    airflow_db, endpoints, s3_conn, s3_bucket, s3_client, alert_conns, tmp_path, monkeypatch
):
    slack, pagerduty = alert_conns
    checks = {
        "checks": [
            {
                "name": "model-health",
                "type": "http",
                "url": endpoints.url("/healthy"),
                "json": [{"path": "status", "op": "eq", "value": "ok"}],
            },
            {
                "name": "model-ready",
                "type": "http",
                "url": endpoints.url("/error"),
                "failures_before_alert": 1,
                "severity": "critical",
            },
            {"name": "state-bucket", "type": "s3", "bucket": s3_bucket},
        ]
    }
    path = tmp_path / "checks.yaml"
    path.write_text(yaml.safe_dump(checks))
    monkeypatch.setenv("MLOPS_HEALTH_CHECKS_PATH", str(path))
    monkeypatch.setenv("MLOPS_HEALTH_STATE_BUCKET", s3_bucket)
    monkeypatch.setenv("MLOPS_HEALTH_DIGEST_HOUR_UTC", "0")

    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder="dags/mlops_health.py").get_dag("mlops_health")
    assert (dag.max_active_runs, dag.catchup) == (1, False)
    # Deliveries (channels side by side) plus one outage report must end well inside the task timeout.
    from mlops.settings import get_settings

    settings = get_settings()
    evaluate_timeout = dag.get_task("evaluate_alerts").execution_timeout.total_seconds()
    assert 2 * settings.alert_delivery_deadline_seconds + 10 < evaluate_timeout
    assert (
        settings.health_sweep_deadline_seconds + 10
        < dag.get_task("run_checks").execution_timeout.total_seconds()
    )
    assert dag.default_args["on_success_callback"]  # resolves a task's failure incident
    run = dag.test()

    assert run.state == "success", {ti.task_id: ti.state for ti in run.get_task_instances()}
    (trigger,) = [b for b in pagerduty.bodies("/v2/enqueue") if b["event_action"] == "trigger"]
    assert trigger["dedup_key"] == f"mlops-health/model-ready/{endpoints.url('/error')}"
    assert "/dags/mlops_health/runs/" in trigger["links"][0]["href"]
    texts = [b["text"] for b in slack.bodies()]
    assert texts == ["Health: 1 firing, 0 resolved", "Health daily digest: 1 alert still firing"]
    state = json.loads(s3_client.get_object(Bucket=s3_bucket, Key="health/alert-state.json")["Body"].read())
    assert state["last_run_id"] == run.run_id
    (alert,) = state["alerts"].values()
    assert (alert["check"], alert["status"], alert["pagerduty"], alert["slack"]) == (
        "model-ready",
        "firing",
        "triggered",
        "triggered",
    )
