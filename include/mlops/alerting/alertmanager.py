"""The Alertmanager sink: post the health DAG's alerts to Alertmanager's API v2 (``/api/v2/alerts``).

For teams that already route pages through Alertmanager (``alert_sink=alertmanager``,
``alertmanager_url``): its grouping, inhibition, silences and routing then apply, and
there is one paging path. Like Prometheus, every run re-posts every alert still
firing, with an ``endsAt`` a few intervals ahead (Alertmanager resolves an alert that
stops being re-posted), and posts a recovered alert once with ``endsAt`` set to when
it recovered.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from mlops.settings import Settings

log = logging.getLogger(__name__)

FIRING_TTL = timedelta(minutes=20)  # four runs of the default schedule


def _labels(alert: Any) -> dict[str, str]:
    labels = {
        "alertname": alert.check,
        "target": alert.target,
        "severity": alert.severity,
        "source": "mlops-health",
    }
    if alert.group:
        labels["group"] = alert.group
    return labels


def alert_payload(alert: Any, run_url: str, now: datetime) -> dict[str, Any]:
    """One alert in Alertmanager's v2 ``postableAlert`` form."""
    from mlops.health.state import FIRING

    ends = (
        now + FIRING_TTL
        if alert.status == FIRING
        else datetime.fromisoformat(alert.resolved_at or now.isoformat())
    )
    return {
        "labels": _labels(alert),
        "annotations": {
            "summary": alert.summary[:1000],
            "failing_since": alert.first_failed_at or "",
            "dedup_key": alert.dedup_key,
        },
        "startsAt": alert.fired_at or now.isoformat(),
        "endsAt": ends.astimezone(UTC).isoformat(),
        "generatorURL": run_url,
    }


def post_alerts(state: Any, settings: Settings, links: Any) -> Any:
    """Post every firing alert and every undelivered recovery; updates the channel marks on success."""
    import httpx

    from mlops.health.notify import DeliveryReport
    from mlops.health.state import FIRING, RESOLVE_PENDING, TRIGGER_PENDING, TRIGGERED

    report = DeliveryReport()
    now = datetime.now(UTC)
    firing = [a for a in state.alerts.values() if a.status == FIRING]
    recovered = [
        a for a in state.alerts.values() if a.status != FIRING and RESOLVE_PENDING in (a.pagerduty, a.slack)
    ]
    if not firing and not recovered:
        return report
    payload = [alert_payload(a, links.run_url, now) for a in [*firing, *recovered]]
    label = f"alertmanager {len(firing)} firing, {len(recovered)} resolved"
    try:
        answer = httpx.post(
            settings.alertmanager_url.rstrip("/") + "/api/v2/alerts",
            json=payload,
            timeout=settings.alert_delivery_deadline_seconds,
        )
        answer.raise_for_status()
    except httpx.HTTPError as exc:
        log.error("Alertmanager did not accept the alerts: %s", exc)
        report.failed.append(f"{label}: {exc}")
        return report
    for alert in firing:
        for channel in ("pagerduty", "slack"):
            if getattr(alert, channel) == TRIGGER_PENDING:
                setattr(alert, channel, TRIGGERED)
    for alert in recovered:
        alert.pagerduty = alert.slack = None
    report.delivered.append(label)
    return report
