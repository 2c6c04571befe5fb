"""The failure callbacks every DAG uses, and the training DAG's Deadline Alert, against the receivers."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import textwrap
from datetime import timedelta
from types import SimpleNamespace

import pytest

from mlops.callbacks import deadline_alert, failure_callbacks, notify_deadline_missed, success_callbacks

BASE = "https://airflow.example.test"
RUN_ID = "scheduled__2025-06-01T00:00:00+00:00"
RUN_URL = f"{BASE}/dags/mlops_training/runs/scheduled__2025-06-01T00%3A00%3A00%2B00%3A00"


@pytest.fixture
def links_base(monkeypatch):
    monkeypatch.setenv("MLOPS_AIRFLOW_BASE_URL", BASE)


def failure_context() -> dict:
    # The attributes Airflow's RuntimeTaskInstance carries into on_failure_callback.
    ti = SimpleNamespace(
        dag_id="mlops_training", task_id="train_model", run_id=RUN_ID, try_number=2, log_url="http://ignored/"
    )
    return {"ti": ti, "run_id": RUN_ID, "exception": RuntimeError("Pod train-abc returned a failure")}


def test_a_task_failure_reaches_slack_and_pagerduty_with_dag_run_and_log_links(alert_conns, links_base):
    slack, pagerduty = alert_conns
    (notifier,) = failure_callbacks()
    notifier(failure_context())

    (event,) = pagerduty.bodies("/v2/enqueue")
    assert event["event_action"] == "trigger"
    assert event["dedup_key"] == "airflow/mlops_training/train_model"  # one incident per DAG and task
    assert event["payload"]["summary"].endswith("RuntimeError: Pod train-abc returned a failure")
    assert {link["text"]: link["href"] for link in event["links"]} == {
        "Task log": f"{RUN_URL}/tasks/train_model?try_number=2",
        "DAG run": RUN_URL,
        "DAG": f"{BASE}/dags/mlops_training",
    }
    (message,) = slack.bodies()
    text = str(message["blocks"])
    assert f"<{RUN_URL}/tasks/train_model?try_number=2|Task log>" in text
    assert f"<{RUN_URL}|{RUN_ID}>" in text and f"<{BASE}/dags/mlops_training|mlops_training>" in text


def test_failures_of_many_runs_are_one_incident_resolved_when_the_task_next_succeeds(
    alert_conns, links_base, s3_conn, s3_bucket, monkeypatch
):
    """Before: the dedup key held the run id (a new incident every run) and nothing resolved it."""
    monkeypatch.setenv("MLOPS_HEALTH_STATE_BUCKET", s3_bucket)
    slack, pagerduty = alert_conns
    for n in range(3):
        context = failure_context()
        context["ti"].run_id = f"scheduled__2025-06-01T0{n}:00:00+00:00"
        failure_callbacks()[0](context)
    triggers = [b for b in pagerduty.bodies("/v2/enqueue") if b["event_action"] == "trigger"]
    assert len(triggers) == 3 and {t["dedup_key"] for t in triggers} == {"airflow/mlops_training/train_model"}

    ok_context = failure_context()
    ok_context.pop("exception")
    other = SimpleNamespace(dag_id="mlops_training", task_id="register_model", run_id=RUN_ID, try_number=1)
    success_callbacks()[0]({"ti": other, "run_id": RUN_ID})  # another task: its incident is not open
    assert [b["event_action"] for b in pagerduty.bodies("/v2/enqueue")].count("resolve") == 0
    success_callbacks()[0](ok_context)
    success_callbacks()[0](ok_context)  # a second success sends nothing more
    resolves = [b for b in pagerduty.bodies("/v2/enqueue") if b["event_action"] == "resolve"]
    assert [r["dedup_key"] for r in resolves] == ["airflow/mlops_training/train_model"]
    assert "Airflow task recovered: mlops_training.train_model" in slack.bodies()[-1]["text"]


def test_a_training_failure_counts_in_the_pushgateway(alert_conns, links_base, pushgateway, monkeypatch):
    """Before: mlops_training_failures_total was emitted by nothing (the rule and panel read a void)."""
    from tests.harness.pushgateway import wipe_pushgateway

    wipe_pushgateway(pushgateway)
    monkeypatch.setenv("MLOPS_PUSHGATEWAY_URL", pushgateway)
    failure_callbacks()[0](failure_context())
    failure_callbacks()[0](failure_context())
    import requests

    text = requests.get(f"{pushgateway}/metrics", timeout=5).text
    (line,) = [x for x in text.splitlines() if x.startswith("mlops_training_failures_total{")]
    assert 'dag_id="mlops_training"' in line and line.endswith(" 2")


def test_429_and_5xx_answers_are_retried_with_backoff(alert_conns, links_base):
    slack, pagerduty = alert_conns
    slack.fail_next(429, times=1)
    slack.fail_next(503, times=1)
    pagerduty.fail_next(429, times=1)
    pagerduty.fail_next(500, times=2)
    (notifier,) = failure_callbacks()
    notifier(failure_context())
    assert len(slack.received) == 3  # 429, 503, then delivered
    assert len(pagerduty.received) == 4  # 429, 500, 500, then delivered
    assert len({str(r.body) for r in pagerduty.received}) == 1  # the same event each time


def test_a_failing_notifier_is_logged_and_does_not_raise(alert_conns, links_base, caplog):
    slack, pagerduty = alert_conns
    slack.fail_next(500, times=100)
    pagerduty.fail_next(500, times=100)
    (notifier,) = failure_callbacks()
    with caplog.at_level(logging.ERROR):
        notifier(failure_context())  # must not raise
    assert "Slack alert could not be delivered" in caplog.text
    assert "PagerDuty trigger could not be delivered" in caplog.text


FAILING_DAG = """
import pendulum
from airflow.sdk import dag, task
from mlops.callbacks import failure_callbacks


@dag(dag_id="failing_probe", schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
     default_args={"owner": "tests", "retries": 0, "on_failure_callback": failure_callbacks()})
def failing_probe():
    @task
    def explode():
        raise ValueError("the original task error")

    explode()


failing_probe()
"""
RUNNER = """
import sys
from airflow.dag_processing.dagbag import DagBag

dag = DagBag(dag_folder=sys.argv[1]).get_dag("failing_probe")
run = dag.test()
ti = run.get_task_instance("explode")
print("RESULT", run.state, ti.state)
"""


def test_a_failing_notifier_never_masks_the_task_error_in_a_real_run(
    alert_conns, links_base, airflow_db, tmp_path
):
    """A real task fails under ``dag.test()`` while Slack is down: PagerDuty still gets the
    alert, the Slack failure is logged, and the task ends failed with its own error."""
    slack, pagerduty = alert_conns
    slack.fail_next(500, times=100)
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "failing_probe.py").write_text(textwrap.dedent(FAILING_DAG))
    env = {**os.environ, "AIRFLOW__CORE__DAGS_FOLDER": str(dags)}
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, str(dags)], env=env, capture_output=True, text=True, timeout=240
    )
    output = proc.stdout + proc.stderr
    assert "RESULT failed failed" in output, output[-3000:]
    assert "ValueError: the original task error" in output
    assert "Slack alert could not be delivered" in output
    (event,) = pagerduty.bodies("/v2/enqueue")
    assert event["payload"]["summary"].endswith("ValueError: the original task error")
    assert any(
        link["text"] == "Task log" and "/dags/failing_probe/runs/" in link["href"] for link in event["links"]
    )
    assert len(slack.received) == 4  # first try and three retries, all answered 500


# -- Deadline Alert -------------------------------------------------------------------------------
def deadline_context() -> dict:
    # What the scheduler hands the triggerer (airflow.models.deadline.Deadline.handle_miss).
    return {
        "dag_run": {
            "dag_id": "mlops_training",
            "dag_run_id": RUN_ID,
            "state": "running",
            "queued_at": "2025-06-01T00:00:01Z",
            "start_date": "2025-06-01T00:00:03Z",
        },
        "deadline": {"id": "0195", "deadline_time": "2025-06-01T02:00:01Z"},
    }


def test_a_missed_deadline_pages_through_the_same_routing(alert_conns, links_base):
    slack, pagerduty = alert_conns
    alert = deadline_alert(timedelta(hours=2), severity="critical")
    asyncio.run(notify_deadline_missed(context=deadline_context(), **alert.callback.kwargs))
    (event,) = pagerduty.bodies("/v2/enqueue")
    assert event["dedup_key"] == f"airflow-deadline/mlops_training/{RUN_ID}"
    assert event["payload"]["severity"] == "critical"
    assert event["payload"]["summary"] == "Deadline missed: mlops_training run not finished within 120 min"
    assert event["links"][0] == {"href": RUN_URL, "text": "DAG run"}
    (message,) = slack.bodies()
    assert message["text"].startswith("Deadline missed: mlops_training")


def test_the_deadline_alert_is_a_serializable_airflow_deadline():
    from airflow.sdk import DAG, AsyncCallback, DeadlineReference
    from airflow.serialization.serialized_objects import DagSerialization

    alert = deadline_alert(timedelta(hours=3))
    assert isinstance(alert.callback, AsyncCallback)
    assert alert.callback.path == "mlops.callbacks.notify_deadline_missed"
    assert alert.reference == DeadlineReference.DAGRUN_QUEUED_AT
    with DAG("deadline_probe", schedule=None, deadline=alert) as dag:
        pass
    serialized = DagSerialization.to_dict(dag)
    assert "mlops.callbacks.notify_deadline_missed" in str(serialized)
