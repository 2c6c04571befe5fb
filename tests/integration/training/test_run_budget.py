"""The run-time budget alert (watch_run_budget): what reaches Slack and PagerDuty, and when.

The sensor runs against the real Slack/PagerDuty receivers; the runtime task instance and DAG run
it reads are stand-ins carrying only what Airflow hands a task (ids, the task states it asks for,
the run's start). The full DAG runs it under dag.test() in test_training_dag.py and under
`airflow standalone` in tests/e2e/test_training_clear.py.
"""

from __future__ import annotations

import types
from datetime import UTC, datetime, timedelta

import pendulum
import pytest

PARAMS = {"timeout_minutes": 30, "gpu_wait_minutes": 0}  # + the 30 min default margin = 60 min


class _TaskInstance:
    dag_id, task_id, run_id = "mlops_training", "watch_run_budget", "manual__budget"

    def __init__(self, states: dict) -> None:
        self.states = states

    def get_task_states(self, dag_id, task_ids, run_ids):
        assert (dag_id, run_ids) == (self.dag_id, [self.run_id])
        return {self.run_id: {t: self.states.get(t) for t in task_ids}}


def _poke(started_ago: timedelta, states: dict) -> bool:
    from airflow.sdk import DAG

    from mlops.training.budget import RunBudgetSensor

    with DAG("budget_probe", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
        sensor = RunBudgetSensor(
            task_id="watch_run_budget", watched=["train_model", "register_candidate"], poke_interval=60
        )
    context = {
        "ti": _TaskInstance(states),
        "dag_run": types.SimpleNamespace(
            start_date=datetime.now(UTC) - started_ago,
            queued_at=datetime.now(UTC) - started_ago - timedelta(seconds=5),
            run_after=datetime.now(UTC) - started_ago,
        ),
        "params": PARAMS,
    }
    return sensor.poke(context)


@pytest.fixture
def receivers(alert_conns):
    slack, pagerduty = alert_conns
    return slack, pagerduty


RUNNING = {"train_model": "running", "register_candidate": None}
DONE = {"train_model": "success", "register_candidate": "success"}


def test_a_run_within_its_budget_alerts_no_one(receivers):
    slack, pagerduty = receivers
    assert _poke(timedelta(minutes=59), RUNNING) is False
    assert _poke(timedelta(minutes=59), DONE) is True
    assert slack.bodies() == [] and pagerduty.bodies() == []


def test_the_budget_follows_the_runs_own_timeout_not_a_fixed_eight_hours(receivers):
    slack, pagerduty = receivers
    _poke(timedelta(minutes=60, seconds=10), RUNNING)  # 30 min timeout + 30 min margin: over after 60 min
    (event,) = pagerduty.bodies("/v2/enqueue")
    assert event["event_action"] == "trigger"
    assert event["dedup_key"] == "airflow-budget/mlops_training/manual__budget"
    assert "60 min" in event["payload"]["summary"]
    (message,) = slack.bodies()
    assert "over budget" in message["text"]


def test_later_looks_keep_the_one_incident_without_repeating_slack(receivers):
    slack, pagerduty = receivers
    _poke(timedelta(minutes=75), RUNNING)
    _poke(timedelta(minutes=76), RUNNING)
    events = pagerduty.bodies("/v2/enqueue")
    assert [e["event_action"] for e in events] == ["trigger", "trigger"]
    assert len({e["dedup_key"] for e in events}) == 1
    assert slack.bodies() == []  # Slack was told on the first look past the deadline


def test_a_cleared_run_gets_a_fresh_budget(receivers):
    """Clearing a running task sets the run's queued_at anew (its start_date stays): the budget restarts."""
    from airflow.sdk import DAG

    from mlops.training.budget import RunBudgetSensor

    slack, pagerduty = receivers
    with DAG("budget_probe", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
        sensor = RunBudgetSensor(task_id="watch_run_budget", watched=["train_model"], poke_interval=60)
    now = datetime.now(UTC)
    run = types.SimpleNamespace(start_date=now - timedelta(hours=5), queued_at=now - timedelta(minutes=1))
    assert sensor.poke({"ti": _TaskInstance(RUNNING), "dag_run": run, "params": PARAMS}) is False
    assert slack.bodies() == [] and pagerduty.bodies() == []


def test_the_incident_is_resolved_when_the_run_ends(receivers):
    slack, pagerduty = receivers
    assert _poke(timedelta(minutes=90), {"train_model": "failed", "register_candidate": "upstream_failed"})
    (event,) = pagerduty.bodies("/v2/enqueue")
    assert (event["event_action"], event["dedup_key"]) == (
        "resolve",
        "airflow-budget/mlops_training/manual__budget",
    )
    (message,) = slack.bodies()
    assert "ended after its budget" in message["text"]
