"""Deliver alert transitions and the daily digest through :class:`~mlops.alerting.router.AlertRouter`.

- PagerDuty: one Events API v2 event per alert, ``trigger`` then ``resolve`` with the
  same ``dedup_key``; only alerts whose check pages (critical/error by default).
- Slack: only transitions (fired, resolved), grouped like Alertmanager groups them,
  a bounded number of alerts per message, within Block Kit limits.
- A channel marks an alert delivered only when the service accepted it; anything
  else stays pending in the state and is retried on the next attempt.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from mlops.alerting.slack import truncate
from mlops.health.state import (
    FIRING,
    RESOLVE_PENDING,
    TRIGGER_PENDING,
    TRIGGERED,
    AlertRecord,
    AlertState,
)

log = logging.getLogger(__name__)

ALERTS_PER_SLACK_MESSAGE = 40  # leaves room under Slack's 50-block cap for the header and context
_DETAIL_TEXT = 1500
_SEVERITY_ICON = {
    "critical": ":red_circle:",
    "error": ":large_orange_circle:",
    "warning": ":large_yellow_circle:",
    "info": ":large_blue_circle:",
}


@dataclass
class RunLinks:
    """Where the alert points people: the Airflow run that saw it."""

    base_url: str
    dag_id: str
    run_id: str

    @property
    def run_url(self) -> str:
        dag, run = quote(self.dag_id, safe=""), quote(self.run_id, safe="")
        return f"{self.base_url.rstrip('/')}/dags/{dag}/runs/{run}"

    def task_url(self, task_id: str) -> str:
        return f"{self.run_url}/tasks/{quote(task_id, safe='')}"


@dataclass
class DeliveryReport:
    """What reached its service in one delivery attempt, and what did not."""

    delivered: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def _pd_trigger(router: Any, alert: AlertRecord, links: RunLinks) -> bool:
    details = {
        "check": alert.check,
        "target": alert.target,
        "consecutive_failures": alert.consecutive_failures,
        "failing_since": alert.first_failed_at,
        "summary": alert.summary,
        "details": alert.details,
        "airflow_run": links.run_url,
    }
    return router.pagerduty(
        action="trigger",
        dedup_key=alert.dedup_key,
        summary=f"[{alert.check}] {alert.summary}",
        severity=alert.severity,
        source=alert.target,
        component=alert.check,
        group="mlops-health",
        custom_details=details,
        links=[{"href": links.run_url, "text": "Airflow health run"}],
    )


def _pd_resolve(router: Any, alert: AlertRecord) -> bool:
    return router.pagerduty(
        action="resolve",
        dedup_key=alert.dedup_key,
        summary=f"[{alert.check}] recovered: {alert.target}",
        severity=alert.severity,
    )


def _alert_section(alert: AlertRecord, fired: bool) -> str:
    if fired:
        head = f"{_SEVERITY_ICON.get(alert.severity, '')} *FIRING* `{alert.check}` on `{alert.target}`"
        body = (
            f"{alert.summary}\nfailing since {alert.first_failed_at} "
            f"({alert.consecutive_failures} consecutive failures)"
        )
        if alert.details:
            body += "\n```" + truncate(json.dumps(alert.details, default=str), _DETAIL_TEXT) + "```"
    else:
        head = f":large_green_circle: *RESOLVED* `{alert.check}` on `{alert.target}`"
        body = f"recovered at {alert.resolved_at} (fired {alert.fired_at})"
    return f"{head}\n{body}\n_dedup key_ `{alert.dedup_key}`"


def deliver(state: AlertState, router: Any, links: RunLinks) -> DeliveryReport:
    """Send every pending trigger and resolve in ``state``, updating each channel's mark."""
    report = DeliveryReport()
    for alert in sorted(state.alerts.values(), key=lambda a: a.dedup_key):
        if alert.pagerduty == TRIGGER_PENDING:
            ok = _pd_trigger(router, alert, links)
            next_state = TRIGGERED
        elif alert.pagerduty == RESOLVE_PENDING:
            ok = _pd_resolve(router, alert)
            next_state = None
        else:
            continue
        ok = ok or not router.configured("pagerduty")  # unconfigured: the router logged it instead
        label = f"pagerduty {'trigger' if next_state else 'resolve'} {alert.dedup_key}"
        if ok:
            alert.pagerduty = next_state
            report.delivered.append(label)
        else:
            report.failed.append(label)

    pending = sorted(
        (a for a in state.alerts.values() if a.slack in (TRIGGER_PENDING, RESOLVE_PENDING)),
        key=lambda a: (a.slack != TRIGGER_PENDING, a.dedup_key),
    )
    for start in range(0, len(pending), ALERTS_PER_SLACK_MESSAGE):
        batch = pending[start : start + ALERTS_PER_SLACK_MESSAGE]
        fired = sum(1 for a in batch if a.slack == TRIGGER_PENDING)
        title = f"Health: {fired} firing, {len(batch) - fired} resolved"
        sections = [_alert_section(a, a.slack == TRIGGER_PENDING) for a in batch]
        ok = router.slack(title, sections, [f"<{links.run_url}|Airflow health run> · {links.dag_id}"])
        ok = ok or not router.configured("slack")
        for alert in batch:
            label = f"slack {'fired' if alert.slack == TRIGGER_PENDING else 'resolved'} {alert.dedup_key}"
            if ok:
                alert.slack = TRIGGERED if alert.slack == TRIGGER_PENDING else None
                report.delivered.append(label)
            else:
                report.failed.append(label)
    return report


def digest_due(state: AlertState, hour_utc: int, now: datetime | None = None) -> bool:
    """Whether today's digest is still owed: past ``hour_utc`` and not yet delivered today."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    return now.hour >= hour_utc and state.last_digest_date != now.date().isoformat()


def send_digest(state: AlertState, router: Any, links: RunLinks, now: datetime | None = None) -> bool:
    """Post the list of alerts still firing; mark today's digest done once Slack accepted it.

    With nothing firing, a one-line all-clear goes out instead: a silent day and a
    broken digest must not look alike.
    """
    now = (now or datetime.now(UTC)).astimezone(UTC)
    firing = [a for a in state.firing() if a.status == FIRING]
    title = f"Health daily digest: {len(firing)} alert{'s' if len(firing) != 1 else ''} still firing"
    sections = [
        f"{_SEVERITY_ICON.get(a.severity, '')} `{a.check}` on `{a.target}` firing since {a.fired_at} "
        f"({a.consecutive_failures} consecutive failures)\n{a.summary}"
        for a in firing
    ] or [":white_check_mark: No health alert is firing."]
    ok = router.slack(title, sections, [f"<{links.run_url}|Airflow health run> · {now.date().isoformat()}"])
    ok = ok or not router.configured("slack")
    if ok:
        state.last_digest_date = now.date().isoformat()
    return ok
