"""Health runs end to end: real checks, alert state in S3, Slack and PagerDuty receivers.

Each ``run()`` is what one scheduled DAG run does: sweep, then evaluate and deliver.
"""

from __future__ import annotations

import json

import pytest
import yaml

from mlops.alerting.slack import MAX_MESSAGES
from mlops.health.state import S3StateStore
from mlops.health.tasks import AlertDeliveryError, evaluate_and_alert, send_daily_digest, sweep
from mlops.settings import get_settings
from tests.harness.receivers import slack_rejection

HEALTHY = {"status": "ok", "models": [{"name": "churn", "ready": True}]}
SICK = {"status": "degraded", "models": []}


@pytest.fixture
def health_env(monkeypatch, tmp_path, endpoints, s3_conn, s3_bucket, alert_conns):
    """One HTTP check on a switchable endpoint; state in this test's bucket; receivers wired."""
    endpoints.documents["model"] = HEALTHY
    checks = {
        "checks": [
            {
                "name": "model-health",
                "type": "http",
                "url": endpoints.url("/json/model"),
                "json": [{"path": "status", "op": "eq", "value": "ok"}],
                "failures_before_alert": 3,
                "severity": "critical",
                "timeout_seconds": 2,
            }
        ]
    }
    path = tmp_path / "checks.yaml"
    path.write_text(yaml.safe_dump(checks))
    monkeypatch.setenv("MLOPS_HEALTH_CHECKS_PATH", str(path))
    monkeypatch.setenv("MLOPS_HEALTH_STATE_BUCKET", s3_bucket)
    monkeypatch.setenv("MLOPS_AIRFLOW_BASE_URL", "https://airflow.example.test")
    monkeypatch.setenv("MLOPS_HEALTH_DIGEST_HOUR_UTC", "0")
    slack, pagerduty = alert_conns
    return endpoints, slack, pagerduty, path


class Runs:
    def __init__(self) -> None:
        self.n = 0

    def run(self) -> dict:
        self.n += 1
        return evaluate_and_alert(
            sweep(), dag_id="mlops_health", run_id=f"scheduled__2025-06-01T00:{self.n:02d}:00+00:00"
        )


def events(pagerduty, action=None):
    return [b for b in pagerduty.bodies("/v2/enqueue") if action is None or b["event_action"] == action]


def test_one_failure_pages_nobody_and_posts_nothing(health_env):
    endpoints, slack, pagerduty, _ = health_env
    endpoints.documents["model"] = SICK
    outcome = Runs().run()
    assert outcome["failing"] and outcome["firing"] == []
    assert events(pagerduty) == [] and slack.received == []


def test_n_failures_trigger_exactly_once_and_recovery_resolves_with_the_same_key(health_env):
    endpoints, slack, pagerduty, _ = health_env
    runs = Runs()
    endpoints.documents["model"] = SICK
    for _ in range(6):
        runs.run()
    (trigger,) = events(pagerduty, "trigger")
    key = f"mlops-health/model-health/{endpoints.url('/json/model')}"
    assert trigger["dedup_key"] == key
    assert trigger["payload"]["severity"] == "critical"
    assert "status: 'degraded' is not eq 'ok'" in trigger["payload"]["summary"]
    assert trigger["links"][0]["href"] == (
        "https://airflow.example.test/dags/mlops_health/runs/scheduled__2025-06-01T00%3A03%3A00%2B00%3A00"
    )
    assert len(slack.received) == 1 and "1 firing" in slack.bodies()[0]["text"]

    endpoints.documents["model"] = HEALTHY
    runs.run()
    runs.run()
    (resolve,) = events(pagerduty, "resolve")
    assert resolve["dedup_key"] == key
    assert len(events(pagerduty)) == 2
    assert len(slack.received) == 2 and "1 resolved" in slack.bodies()[1]["text"]


def test_a_notifier_answering_500_is_retried_and_the_run_reports_the_true_state(health_env):
    endpoints, slack, pagerduty, _ = health_env
    runs = Runs()
    endpoints.documents["model"] = SICK
    runs.run(), runs.run()
    pagerduty.fail_next(500, times=2)
    slack.fail_next(500, times=1)
    outcome = runs.run()
    assert outcome["firing"] and outcome["undelivered"] == []
    assert [r.body["event_action"] for r in pagerduty.received] == ["trigger"] * 3  # two 500s, then accepted
    assert len(slack.received) == 2


def test_an_alert_that_cannot_be_delivered_stays_pending_and_goes_out_next_run(health_env):
    endpoints, slack, pagerduty, _ = health_env
    runs = Runs()
    endpoints.documents["model"] = SICK
    runs.run(), runs.run()
    pagerduty.fail_next(503, times=100)
    with pytest.raises(AlertDeliveryError, match="pagerduty trigger mlops-health/model-health"):
        runs.run()
    state, _ = S3StateStore.from_settings(get_settings()).load()
    (alert,) = state.alerts.values()
    assert (alert.status, alert.pagerduty, alert.slack) == ("firing", "trigger_pending", "triggered")

    pagerduty.reset()
    outcome = runs.run()
    assert outcome["delivered"] == [f"pagerduty trigger {alert.dedup_key}"]
    assert len(events(pagerduty, "trigger")) == 1
    runs.run()
    assert len(events(pagerduty, "trigger")) == 1  # delivered once: no repeat page


def test_a_retried_task_does_not_count_the_same_failure_twice(health_env):
    endpoints, _, pagerduty, _ = health_env
    endpoints.documents["model"] = SICK
    report = sweep()
    for _ in range(3):
        evaluate_and_alert(report, dag_id="mlops_health", run_id="manual__one-run")
    assert events(pagerduty) == []


def test_an_alert_storm_of_oversized_alerts_still_reaches_slack_in_bounded_messages(health_env):
    """Before: 40 alerts with long details went out as one ~103k-character message, which
    Slack refuses (the receiver answers 400 like Slack), so nothing got through, run after run."""
    endpoints, slack, _, path = health_env
    many_predicates = [{"path": f"field_{n:03d}_that_is_missing", "op": "eq", "value": n} for n in range(200)]
    checks = [
        {
            "name": f"c{i:02d}",
            "type": "http",
            "url": endpoints.url(f"/healthy?{i}"),
            "failures_before_alert": 1,
            "severity": "warning",
            "json": many_predicates,
        }
        for i in range(60)
    ]
    path.write_text(yaml.safe_dump({"checks": checks}))
    outcome = Runs().run()
    assert len(outcome["firing"]) == 60 and outcome["undelivered"] == []
    bodies = [r.body for r in slack.received]
    assert [slack_rejection(b) for b in bodies] == [None] * len(bodies)
    assert 1 < len(bodies) <= MAX_MESSAGES
    text = json.dumps(bodies, ensure_ascii=False)
    assert "… (truncated)" in text
    shown = sum(1 for i in range(60) if f"`c{i:02d}`" in text)
    assert shown == 60 or f"and {60 - shown} more not shown" in text


def test_user_controlled_text_is_escaped_and_pings_nobody(health_env):
    """Before: a probed body containing <!channel> went into mrkdwn as is: Slack pings the channel."""
    endpoints, slack, _, path = health_env
    endpoints.documents["model"] = {"status": "<!channel> <@U123> <https://evil.example|click>"}
    checks = yaml.safe_load(path.read_text())
    checks["checks"][0]["failures_before_alert"] = 1
    path.write_text(yaml.safe_dump(checks))
    Runs().run()
    (body,) = slack.bodies()
    text = json.dumps(body)
    assert "<!channel>" not in text and "<@U123>" not in text and "<https://evil" not in text
    assert "&lt;!channel&gt;" in text


def test_the_daily_digest_lists_firing_alerts_once_a_day(health_env):
    endpoints, slack, _, _ = health_env
    runs = Runs()
    endpoints.documents["model"] = SICK
    for _ in range(3):
        runs.run()
    slack.reset()
    assert send_daily_digest(dag_id="mlops_health", run_id="r1") is True
    assert send_daily_digest(dag_id="mlops_health", run_id="r2") is False
    (digest,) = slack.bodies()
    assert digest["text"] == "Health daily digest: 1 alert still firing"
    assert "`model-health`" in json.dumps(digest["blocks"])
