"""The Alertmanager sink against a real Alertmanager whose receivers are the Slack and PagerDuty receivers.

An alert fires and reaches both through Alertmanager, grouped with its group's other
alerts; a silence made through Alertmanager's API holds an alert back; recovery resolves.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import yaml

from mlops.health.tasks import evaluate_and_alert, sweep
from tests.harness.alertmanager import ALERTMANAGER, MISSING, alertmanager_config, running_alertmanager
from tests.harness.tools import require_tool

SICK = {"status": "degraded"}
HEALTHY = {"status": "ok"}


def check(name: str, url: str) -> dict:
    return {
        "name": name,
        "type": "http",
        "url": url,
        "json": [{"path": "status", "op": "eq", "value": "ok"}],
        "failures_before_alert": 1,
        "passes_before_resolve": 1,
        "severity": "critical",
        "group": "churn",
        "timeout_seconds": 2,
    }


@pytest.fixture
def alertmanager(tmp_path, alert_conns):
    require_tool(ALERTMANAGER, MISSING)
    slack, pagerduty = alert_conns
    config = alertmanager_config(slack.url, pagerduty.url, pagerduty.ca_path)
    with running_alertmanager(tmp_path / "am", config) as url:
        yield url


def wait_for(predicate, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def test_alerts_fire_grouped_are_silenced_and_resolve_through_alertmanager(
    alertmanager, alert_conns, endpoints, s3_conn, s3_bucket, tmp_path, monkeypatch
):
    slack, pagerduty = alert_conns
    for name in ("a", "b", "c"):
        endpoints.documents[name] = SICK
    path = tmp_path / "checks.yaml"
    path.write_text(
        yaml.safe_dump({"checks": [check(f"model-{n}", endpoints.url(f"/json/{n}")) for n in ("a", "b")]})
    )
    for key, value in {
        "MLOPS_HEALTH_CHECKS_PATH": str(path),
        "MLOPS_HEALTH_STATE_BUCKET": s3_bucket,
        "MLOPS_ALERT_SINK": "alertmanager",
        "MLOPS_ALERTMANAGER_URL": alertmanager,
    }.items():
        monkeypatch.setenv(key, value)

    outcome = evaluate_and_alert(sweep(), dag_id="mlops_health", run_id="r1")
    assert outcome["delivered"] == ["alertmanager 2 firing, 0 resolved"]
    # Fired and grouped: both alerts of group "churn" arrive as one page and one Slack message.
    (page,) = wait_for(lambda: [b for b in pagerduty.bodies("/v2/enqueue") if b["event_action"] == "trigger"])
    assert page["payload"]["custom_details"]["num_firing"] == "2"
    assert "model-a" in page["payload"]["custom_details"]["firing"]
    assert "model-b" in page["payload"]["custom_details"]["firing"]
    time.sleep(2)  # a second group_interval: still one page
    assert len([b for b in pagerduty.bodies("/v2/enqueue") if b["event_action"] == "trigger"]) == 1
    assert len(slack.received) == 1

    # Silenced through Alertmanager's API: model-c fires but nobody hears of it.
    now = datetime.now(UTC)
    silence = httpx.post(
        f"{alertmanager}/api/v2/silences",
        json={
            "matchers": [{"name": "alertname", "value": "model-c", "isRegex": False, "isEqual": True}],
            "startsAt": now.isoformat(),
            "endsAt": (now + timedelta(hours=1)).isoformat(),
            "createdBy": "tests",
            "comment": "maintenance of model c",
        },
    )
    assert silence.status_code == 200, silence.text
    checks = yaml.safe_load(path.read_text())
    checks["checks"].append({**check("model-c", endpoints.url("/json/c")), "group": "other"})
    path.write_text(yaml.safe_dump(checks))
    evaluate_and_alert(sweep(), dag_id="mlops_health", run_id="r2")
    alerts = wait_for(
        lambda: [
            a
            for a in httpx.get(f"{alertmanager}/api/v2/alerts").json()
            if a["labels"]["alertname"] == "model-c"
        ]
    )
    assert alerts[0]["status"]["state"] == "suppressed"
    assert alerts[0]["status"]["silencedBy"] == [silence.json()["silenceID"]]
    time.sleep(2)
    assert not any("model-c" in str(b) for b in pagerduty.bodies() + slack.bodies())

    # Recovery: the posted endsAt resolves the group in Alertmanager, which resolves the page.
    for name in ("a", "b", "c"):
        endpoints.documents[name] = HEALTHY
    evaluate_and_alert(sweep(), dag_id="mlops_health", run_id="r3")
    (resolve,) = wait_for(
        lambda: [b for b in pagerduty.bodies("/v2/enqueue") if b["event_action"] == "resolve"]
    )
    assert resolve["dedup_key"] == page["dedup_key"]
