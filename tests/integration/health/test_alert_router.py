"""The alert router against the HTTP(S) Slack and PagerDuty receivers: what each channel receives."""

from __future__ import annotations

import pytest

from mlops.alerting.router import AlertRouter, deliver_independently, mark_paged, paged_as
from mlops.settings import get_settings


@pytest.fixture
def router(alert_conns) -> AlertRouter:
    slack, pagerduty = alert_conns
    slack.reset()
    pagerduty.reset()
    return AlertRouter(get_settings())


def test_a_trigger_carries_every_field_and_a_resolve_only_the_key(router, alert_conns):
    _, pagerduty = alert_conns
    links = [{"href": "http://airflow/run", "text": "run"}]
    assert router.pagerduty(
        action="trigger",
        dedup_key="mlops-health/api/u",
        summary="api down",
        severity="critical",
        source="health",
        custom_details={"status": 503},
        links=links,
        component="api",
        group="serving",
    )
    assert router.pagerduty(action="resolve", dedup_key="mlops-health/api/u", custom_details={"x": 1})
    trigger, resolve = pagerduty.bodies()
    assert trigger["event_action"] == "trigger" and trigger["dedup_key"] == "mlops-health/api/u"
    payload = trigger["payload"]
    assert (payload["summary"], payload["severity"], payload["source"]) == ("api down", "critical", "health")
    assert (payload["component"], payload["group"], payload["custom_details"]) == (
        "api",
        "serving",
        {"status": 503},
    )
    assert trigger["links"] == links
    assert resolve["event_action"] == "resolve" and resolve["dedup_key"] == "mlops-health/api/u"
    assert "links" not in resolve or not resolve["links"]
    assert "custom_details" not in (resolve.get("payload") or {})


def test_an_unknown_severity_is_refused_before_anything_is_sent(router, alert_conns):
    with pytest.raises(ValueError, match=r"^severity: must be one of .*, got 'fatal'$"):
        router.pagerduty(action="trigger", dedup_key="k", summary="s", severity="fatal")
    assert alert_conns[1].received == []


def test_a_channel_answering_500_is_reported_undelivered_not_raised(router, alert_conns, caplog):
    slack, pagerduty = alert_conns
    slack.fail_next(500, times=10)
    pagerduty.fail_next(500, times=10)
    assert router.slack("title", ["section"]) is False
    assert router.pagerduty(action="trigger", dedup_key="k", summary="s") is False
    with caplog.at_level("ERROR"):
        assert router.pagerduty_change("deployed v2") is False
    assert "PagerDuty change event could not be delivered: deployed v2" in caplog.text


def test_slack_gets_the_title_and_sections_and_a_change_event_reaches_pagerduty(router, alert_conns):
    slack, pagerduty = alert_conns
    assert router.slack("Model digits promoted", ["v2 is live"], context=["run r1"]) is True
    assert "Model digits promoted" in str(slack.bodies()[-1]) and "v2 is live" in str(slack.bodies()[-1])
    assert router.pagerduty_change("deployed v2", custom_details={"v": 2}) is True
    change = pagerduty.bodies()[-1]
    assert change["payload"]["summary"] == "deployed v2" and change["payload"]["source"] == "airflow"
    assert change["payload"]["custom_details"] == {"v": 2}
    assert router.pagerduty_change("deployed v3", source="mlops_promotion") is True
    assert pagerduty.bodies()[-1]["payload"]["source"] == "mlops_promotion"


def test_without_connections_every_channel_logs_and_reports_not_delivered(caplog):
    from dataclasses import replace

    settings = replace(
        get_settings(), slack_conn_id="mlops_test_no_slack", pagerduty_conn_id="mlops_test_no_pd"
    )
    router = AlertRouter(settings)
    assert not router.configured("slack") and not router.configured("pagerduty")
    with caplog.at_level("WARNING"):
        assert router.slack("t", ["s1", "s2"]) is False
        assert router.pagerduty(action="trigger", dedup_key="k", summary="down") is False
        assert router.pagerduty_change("deployed") is False
    assert "[alert:slack:not-configured] t | s1 | s2" in caplog.text
    assert "[alert:pagerduty:not-configured] trigger error k: down" in caplog.text
    assert "[alert:pagerduty-change:not-configured] deployed" in caplog.text


def test_channels_are_delivered_independently_and_a_failure_is_its_result():
    def boom() -> bool:
        raise RuntimeError("down")

    results = deliver_independently({"slack": lambda: True, "pagerduty": boom})
    assert results["slack"] is True and isinstance(results["pagerduty"], RuntimeError)
    assert deliver_independently({}) == {}


def test_an_error_marked_as_paged_names_its_incident():
    error = RuntimeError("x")
    assert paged_as(error) == "" and paged_as(None) == ""
    mark_paged(error, "mlops-backups/verify")
    assert paged_as(error) == "mlops-backups/verify"
