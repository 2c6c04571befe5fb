"""Health runs end to end: real checks, alert state in S3, Slack and PagerDuty receivers.

Each ``run()`` is what one scheduled DAG run does: sweep, then evaluate and deliver.
"""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import pytest
import yaml

from mlops.alerting.slack import MAX_MESSAGES
from mlops.callbacks import failure_callbacks, success_callbacks
from mlops.health.tasks import evaluate_and_alert, send_daily_digest, sweep
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


EVALUATE_TIMEOUT_SECONDS = 60  # dags/mlops_health.py: evaluate_alerts' execution_timeout


def KEY(endpoints) -> str:  # noqa: N802 - reads like the constant it is
    return f"mlops-health/model-health/{endpoints.url('/json/model')}"


class Runs:
    def __init__(self) -> None:
        self.n = 0

    def run_id(self) -> str:
        return f"scheduled__2025-06-01T{self.n // 60:02d}:{self.n % 60:02d}:00+00:00"

    def run(self) -> dict:
        self.n += 1
        return evaluate_and_alert(sweep(), dag_id="mlops_health", run_id=self.run_id())

    def run_as_task(self) -> dict | None:
        """One run of the evaluate task with the callbacks Airflow would call after it."""
        self.n += 1
        ti = SimpleNamespace(
            dag_id="mlops_health", task_id="evaluate_alerts", run_id=self.run_id(), try_number=3
        )
        context = {"ti": ti, "run_id": self.run_id()}
        try:
            outcome = evaluate_and_alert(sweep(), dag_id="mlops_health", run_id=self.run_id())
        except Exception as exc:
            for callback in failure_callbacks():
                callback({**context, "exception": exc})
            return None
        for callback in success_callbacks():
            callback(context)
        return outcome


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


def test_pagerduty_down_for_minutes_slack_still_gets_the_alert_within_the_task_timeout(
    health_env, monkeypatch
):
    """Before: the PagerDuty client retried a 503 six times doubling from 1.5 s (189 s), every page
    went before any Slack message, and the task's 60 s timeout killed it: Slack never heard a thing.

    Production back-off here (1.5 s); PagerDuty answers 503 for minutes. The Slack message must
    arrive while PagerDuty is still failing, the task must return within its timeout, PagerDuty's
    outage is told to Slack, and the page goes out on the first run after PagerDuty recovers."""
    endpoints, slack, pagerduty, _ = health_env
    monkeypatch.setenv("MLOPS_ALERT_RETRY_BASE_SECONDS", "1.5")
    monkeypatch.setenv("MLOPS_ALERT_DELIVERY_DEADLINE_SECONDS", "8")
    runs = Runs()
    endpoints.documents["model"] = SICK
    runs.run(), runs.run()
    pagerduty.fail_until(503, seconds=600)
    started = time.monotonic()
    outcome = runs.run()  # the third failure fires
    took = time.monotonic() - started
    assert took < EVALUATE_TIMEOUT_SECONDS / 2, took
    fired = [r for r in slack.accepted() if "1 firing" in r.body["text"]]
    assert fired and fired[0].at - started < 3  # Slack did not wait for PagerDuty
    assert any("PagerDuty is down" in r.body["text"] for r in slack.accepted())
    assert outcome["undelivered"] == [f"pagerduty trigger {KEY(endpoints)}"]
    assert outcome["outages"] == ["pagerduty"] and pagerduty.accepted() == []

    runs.run()  # still down: retried, but the outage is not told twice
    assert sum("PagerDuty is down" in r.body["text"] for r in slack.accepted()) == 1

    pagerduty.recover()
    outcome = runs.run()
    assert outcome["delivered"] == [f"pagerduty trigger {KEY(endpoints)}"]
    assert [b["event_action"] for b in (r.body for r in pagerduty.accepted())] == ["trigger"]
    assert any("PagerDuty recovered" in r.body["text"] for r in slack.accepted())
    runs.run()
    assert len(pagerduty.accepted()) == 1  # delivered once: no repeat page


def test_slack_down_for_an_hour_of_runs_is_one_pagerduty_incident_resolved_when_slack_recovers(
    health_env, monkeypatch, tmp_path
):
    """Before: each run's evaluate task raised, and the failure callback paged a new incident keyed
    by the run id every five minutes, never resolved. Twelve runs (an hour) with Slack answering
    500 and a Slack-only (warning) alert firing, each run handled as Airflow does: the task's
    failure callback when it raises, its success callback otherwise."""
    endpoints, slack, pagerduty, path = health_env
    checks = yaml.safe_load(path.read_text())
    checks["checks"][0].update(severity="warning", failures_before_alert=1)
    path.write_text(yaml.safe_dump(checks))
    endpoints.documents["model"] = SICK
    slack.fail_until(500, seconds=3600)
    runs = Runs()
    for _ in range(12):
        runs.run_as_task()
    triggers = [b for b in events(pagerduty, "trigger")]
    assert len({t["dedup_key"] for t in triggers}) <= 1, [t["dedup_key"] for t in triggers]
    (incident,) = {t["dedup_key"] for t in triggers}
    assert "Slack alert channel is down" in triggers[0]["payload"]["summary"]
    assert len(triggers) == 1  # told once, not every run

    slack.recover()
    runs.run_as_task()
    assert [b["dedup_key"] for b in events(pagerduty, "resolve")] == [incident]
    assert any("1 firing" in r.body["text"] for r in slack.accepted())  # the held-back alert went out


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
