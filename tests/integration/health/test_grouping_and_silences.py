"""Grouped incidents, inhibition by a root cause, and silences, through the real receivers (issue 15)."""

from __future__ import annotations

import json
import time

import pytest
import yaml

from mlops.health import silences
from mlops.health.tasks import evaluate_and_alert, sweep

SICK, HEALTHY = {"status": "down"}, {"status": "ok"}


def check(name: str, url: str, **extra) -> dict:
    return {
        "name": name,
        "type": "http",
        "url": url,
        "json": [{"path": "status", "op": "eq", "value": "ok"}],
        "failures_before_alert": 1,
        "passes_before_resolve": 1,
        "severity": "critical",
        "timeout_seconds": 2,
        **extra,
    }


@pytest.fixture
def env(monkeypatch, tmp_path, endpoints, s3_conn, s3_bucket, alert_conns):
    path = tmp_path / "checks.yaml"
    monkeypatch.setenv("MLOPS_HEALTH_CHECKS_PATH", str(path))
    monkeypatch.setenv("MLOPS_HEALTH_STATE_BUCKET", s3_bucket)
    return path, endpoints, *alert_conns


class Runs:
    n = 0

    def run(self) -> dict:
        self.n += 1
        return evaluate_and_alert(sweep(), dag_id="mlops_health", run_id=f"run-{self.n}")


def pd_events(pagerduty, action):
    return [b for b in pagerduty.bodies("/v2/enqueue") if b["event_action"] == action]


def test_one_crash_loop_is_one_incident_and_the_root_cause_inhibits_its_dependants(env):
    """Before: five checks of one failing model server opened five PagerDuty incidents."""
    path, endpoints, slack, pagerduty = env
    names = ("health", "ready", "latency", "errors", "pods")
    checks = [check(f"churn-{n}", endpoints.url(f"/json/churn-{n}"), group="churn") for n in names]
    checks[0]["inhibits"] = ["churn-ready", "churn-pods"]  # serving down explains not-ready and pods
    path.write_text(yaml.safe_dump({"checks": checks}))
    for n in names:
        endpoints.documents[f"churn-{n}"] = SICK
    runs = Runs()
    outcome = runs.run()
    assert len(outcome["firing"]) == 5
    (trigger,) = pd_events(pagerduty, "trigger")
    assert trigger["dedup_key"] == "mlops-health/group/churn"
    listed = {f["check"] for f in trigger["payload"]["custom_details"]["failing"]}
    assert listed == {"churn-health", "churn-latency", "churn-errors"}  # ready and pods inhibited
    assert "3 checks failing" in trigger["payload"]["summary"]
    (message,) = slack.bodies()
    text = json.dumps(message)
    assert "churn-health" in text and "churn-ready" not in text and "churn-pods" not in text
    assert sorted(m.split(" (")[0] for m in outcome["muted"]) == sorted(
        [
            f"{ch} churn-{n}/{endpoints.url(f'/json/churn-{n}')}"
            for ch in ("pagerduty", "slack")
            for n in ("ready", "pods")
        ]
    )

    # The root recovers, its dependants still fail: they are no longer inhibited and go out,
    # in the same incident (no resolve while any of its checks fails).
    endpoints.documents["churn-health"] = HEALTHY
    runs.run()
    assert pd_events(pagerduty, "resolve") == []
    assert {t["dedup_key"] for t in pd_events(pagerduty, "trigger")} == {"mlops-health/group/churn"}
    assert "churn-ready" in json.dumps(slack.bodies()[-1])

    for n in names:
        endpoints.documents[f"churn-{n}"] = HEALTHY
    runs.run()
    assert [r["dedup_key"] for r in pd_events(pagerduty, "resolve")] == ["mlops-health/group/churn"]


def test_a_silence_holds_a_check_back_until_it_is_expired(env):
    """Before: there was no way to mute a check during maintenance but editing the checks file."""
    path, endpoints, slack, pagerduty = env
    path.write_text(yaml.safe_dump({"checks": [check("model-d", endpoints.url("/json/d"))]}))
    endpoints.documents["d"] = SICK
    silence_id = silences.silence("model-d", 3600, "ops@example.test", "replacing the d node pool")
    (active,) = silences.list_silences()
    assert (active.id, active.author, active.comment) == (
        silence_id,
        "ops@example.test",
        "replacing the d node pool",
    )

    runs = Runs()
    outcome = runs.run()
    assert outcome["firing"] and outcome["undelivered"] == [] and len(outcome["muted"]) == 2
    assert pagerduty.received == [] and slack.received == []

    assert silences.expire(silence_id) is True
    assert silences.list_silences() == [] and len(silences.list_silences(include_expired=True)) == 1
    runs.run()
    assert len(pd_events(pagerduty, "trigger")) == 1 and len(slack.received) == 1


def test_a_silence_expires_by_itself_and_matches_a_model_name_in_targets(env, capsys):
    path, endpoints, _, _ = env
    silence_id = silences.silence("churn", 1, "mlops_promotion", "blue-green switch of churn v4")
    from types import SimpleNamespace

    alert = SimpleNamespace(
        check="model-server-health", group="", target="http://churn.ml-serving.svc/health"
    )
    other = SimpleNamespace(
        check="model-server-health", group="", target="http://churner.ml-serving.svc/health"
    )
    (active,) = silences.list_silences()
    assert active.matches(alert) and not active.matches(other)
    time.sleep(1.2)
    assert silences.list_silences() == []
    assert silences.expire(silence_id) is False  # already over

    assert (
        silences.main(["create", "serving-pods", "--minutes", "5", "--author", "me", "--comment", "drain"])
        == 0
    )
    created = capsys.readouterr().out.strip()
    assert [s.id for s in silences.list_silences()] == [created]
    with pytest.raises(ValueError, match="author and comment are required"):
        silences.silence("serving-pods", 60, "me", " ")
