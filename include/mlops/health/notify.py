"""Deliver alert transitions and the daily digest through :class:`~mlops.alerting.router.AlertRouter`.

- PagerDuty: one Events API v2 incident per group of alerts (a service or target;
  an ungrouped alert is its own group), ``trigger`` listing the failing checks, then
  one ``resolve`` when the last of them recovers; only alerts whose check pages.
- Slack: only transitions (fired, resolved) and repeats, in messages bounded in size
  (split, then summarised), with user-controlled text escaped.
- Each channel is delivered independently and under its own deadline: a channel that
  is down or slow never delays or blocks the other.
- Silenced alerts and alerts inhibited by a firing root cause are held back (and not
  counted as undelivered); they go out if they still fire when the mute ends.
- A channel marks an alert delivered only when the service accepted it; anything
  else stays pending in the state and is retried on the next attempt. A channel that
  is down is reported once through the other one, and its recovery too.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from mlops.alerting.router import deliver_independently
from mlops.alerting.slack import escape, split_sections, truncate
from mlops.health.state import (
    FIRING,
    RESOLVE_PENDING,
    TRIGGER_PENDING,
    TRIGGERED,
    AlertRecord,
    AlertState,
    dedup_key,
)

log = logging.getLogger(__name__)

_DETAIL_TEXT = 1500
_SEVERITY_ICON = {
    "critical": ":red_circle:",
    "error": ":large_orange_circle:",
    "warning": ":large_yellow_circle:",
    "info": ":large_blue_circle:",
}
_SEVERITY_RANK = {"critical": 0, "error": 1, "warning": 2, "info": 3}
CHANNEL_DOWN_CHECK = "alert-channel"


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
    """What reached its service in one delivery attempt, what did not, and what was held back."""

    delivered: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    muted: list[str] = field(default_factory=list)
    reported_outages: list[str] = field(default_factory=list)

    def failed_on(self, channel: str) -> list[str]:
        return [f for f in self.failed if f.startswith(channel)]


def muted_keys(state: AlertState, silenced: Callable[[AlertRecord], bool] | None = None) -> dict[str, str]:
    """``{alert key: why}`` for alerts held back: silenced, or inhibited by a firing root of their group."""
    muted: dict[str, str] = {}
    roots = [a for a in state.alerts.values() if a.status == FIRING and a.inhibits]
    for key, alert in state.alerts.items():
        if silenced is not None and silenced(alert):
            muted[key] = "silenced"
            continue
        for root in roots:
            if root is not alert and alert.check in root.inhibits and root.group == alert.group:
                muted[key] = f"inhibited by {root.check}"
                break
    return muted


def _incident_summary(members: list[AlertRecord]) -> str:
    worst = min(members, key=lambda a: _SEVERITY_RANK.get(a.severity, 9))
    if len(members) == 1:
        return f"[{worst.check}] {worst.summary}"
    checks = ", ".join(sorted({a.check for a in members}))
    return f"[{worst.group}] {len(members)} checks failing ({checks}): {worst.summary}"


def _deliver_pagerduty(
    state: AlertState, router: Any, links: RunLinks, muted: dict[str, str], report: DeliveryReport
) -> None:
    deadline = router.deadline()
    incidents: dict[str, list[AlertRecord]] = {}
    for key in sorted(state.alerts):
        incidents.setdefault(state.alerts[key].incident_key, []).append(state.alerts[key])
    for incident, members in incidents.items():
        live = [a for a in members if a.status == FIRING and a.pagerduty in (TRIGGER_PENDING, TRIGGERED)]
        to_trigger = [a for a in live if a.pagerduty == TRIGGER_PENDING and _key(a) not in muted]
        to_resolve = [a for a in members if a.pagerduty == RESOLVE_PENDING]
        if to_trigger:
            label = f"pagerduty trigger {incident}"
            shown = [a for a in live if _key(a) not in muted]
            worst = min(shown, key=lambda a: _SEVERITY_RANK.get(a.severity, 9))
            details = {
                "failing": [
                    {
                        "check": a.check,
                        "target": a.target,
                        "summary": a.summary,
                        "failing_since": a.first_failed_at,
                        "consecutive_failures": a.consecutive_failures,
                    }
                    for a in shown
                ],
                "details": worst.details,
                "airflow_run": links.run_url,
            }
            ok = deadline.remaining() > 0 and router.pagerduty(
                action="trigger",
                dedup_key=incident,
                summary=_incident_summary(shown),
                severity=worst.severity,
                source=worst.target,
                component=worst.check,
                group=worst.group or "mlops-health",
                custom_details=details,
                links=[{"href": links.run_url, "text": "Airflow health run"}],
                deadline=deadline,
            )
            ok = ok or not router.configured("pagerduty")  # unconfigured: the router logged it instead
            (report.delivered if ok else report.failed).append(label)
            if ok:
                for a in to_trigger:
                    a.pagerduty = TRIGGERED
        if to_resolve:
            if live:  # other checks of the incident still fail: it stays open
                for a in to_resolve:
                    a.pagerduty = None
                continue
            label = f"pagerduty resolve {incident}"
            ok = deadline.remaining() > 0 and router.pagerduty(
                action="resolve",
                dedup_key=incident,
                summary=f"[{to_resolve[0].group or to_resolve[0].check}] recovered: {to_resolve[0].target}",
                severity=to_resolve[0].severity,
                deadline=deadline,
            )
            ok = ok or not router.configured("pagerduty")
            (report.delivered if ok else report.failed).append(label)
            if ok:
                for a in to_resolve:
                    a.pagerduty = None
    report.muted.extend(
        f"pagerduty {k} ({why})" for k, why in muted.items() if state.alerts[k].pagerduty == TRIGGER_PENDING
    )


def _key(alert: AlertRecord) -> str:
    return f"{alert.check}/{alert.target}"


def _alert_section(alert: AlertRecord, fired: bool) -> str:
    check, target = escape(alert.check), escape(alert.target)
    if fired:
        head = f"{_SEVERITY_ICON.get(alert.severity, '')} *FIRING* `{check}` on `{target}`"
        body = (
            f"{escape(alert.summary)}\nfailing since {alert.first_failed_at} "
            f"({alert.consecutive_failures} consecutive failures)"
        )
        if alert.details:
            body += "\n```" + escape(truncate(json.dumps(alert.details, default=str), _DETAIL_TEXT)) + "```"
    else:
        head = f":large_green_circle: *RESOLVED* `{check}` on `{target}`"
        body = f"recovered at {alert.resolved_at} (fired {alert.fired_at})"
    return f"{head}\n{body}\n_dedup key_ `{escape(alert.dedup_key)}`"


def _deliver_notices(
    state: AlertState, router: Any, links: RunLinks, report: DeliveryReport, deadline: Any
) -> None:
    untold = {check: n for check, n in state.notices.items() if not n.get("told")}
    if not untold:
        return
    sections = [f"`{escape(check)}`: {escape(n['summary'])}" for check, n in sorted(untold.items())]
    sections.append("These checks are not counted as failing. Grant the permission or disable the check.")
    ok = router.slack(
        f"Health: {len(untold)} check{'s' if len(untold) != 1 else ''} cannot run",
        sections,
        [f"<{links.run_url}|Airflow health run>"],
        deadline=deadline,
    ) or not router.configured("slack")
    label = f"slack notice {', '.join(sorted(untold))}"
    (report.delivered if ok else report.failed).append(label)
    if ok:
        for notice in untold.values():
            notice["told"] = True


def _deliver_slack(
    state: AlertState, router: Any, links: RunLinks, muted: dict[str, str], report: DeliveryReport
) -> None:
    deadline = router.deadline()
    pending = sorted(
        (
            a
            for k, a in state.alerts.items()
            if a.slack in (TRIGGER_PENDING, RESOLVE_PENDING)
            and not (a.slack == TRIGGER_PENDING and k in muted)
        ),
        key=lambda a: (a.slack != TRIGGER_PENDING, _SEVERITY_RANK.get(a.severity, 9), a.dedup_key),
    )
    report.muted.extend(
        f"slack {k} ({why})" for k, why in muted.items() if state.alerts[k].slack == TRIGGER_PENDING
    )
    _deliver_notices(state, router, links, report, deadline)
    if not pending:
        return
    messages = split_sections([_alert_section(a, a.slack == TRIGGER_PENDING) for a in pending])
    fired_total = sum(1 for a in pending if a.slack == TRIGGER_PENDING)
    title = f"Health: {fired_total} firing, {len(pending) - fired_total} resolved"
    position = 0
    for number, sections in enumerate(messages, start=1):
        last = number == len(messages)
        # The last message may end with a summary line standing for every alert not shown.
        batch = pending[position:] if last else pending[position : position + len(sections)]
        position += len(sections)
        part = f" ({number}/{len(messages)})" if len(messages) > 1 else ""
        ok = deadline.remaining() > 0 and router.slack(
            title + part,
            sections,
            [f"<{links.run_url}|Airflow health run> · {escape(links.dag_id)}"],
            deadline=deadline,
        )
        ok = ok or not router.configured("slack")
        for alert in batch:
            label = f"slack {'fired' if alert.slack == TRIGGER_PENDING else 'resolved'} {alert.dedup_key}"
            if ok:
                alert.slack = TRIGGERED if alert.slack == TRIGGER_PENDING else None
                report.delivered.append(label)
            else:
                report.failed.append(label)


def _track_outages(
    state: AlertState, router: Any, links: RunLinks, report: DeliveryReport, attempted: Iterable[str]
) -> None:
    """Report a channel that went down through the other channel, once; and its recovery."""
    now = datetime.now(UTC).isoformat(timespec="seconds")
    for channel in attempted:
        other = "slack" if channel == "pagerduty" else "pagerduty"
        failed = report.failed_on(channel)
        outage = state.outages.get(channel)
        if failed and outage is None:
            outage = state.outages[channel] = {"down_since": now, "reported": False}
        if failed and not outage["reported"]:
            outage["reported"] = _report_outage(router, links, channel, other, outage, failed)
            if outage["reported"]:
                report.reported_outages.append(channel)
        elif not failed and outage is not None:
            if outage["reported"] and not _report_recovery(router, links, channel, other, outage):
                continue  # tell the other channel next time
            del state.outages[channel]


def channel_dedup_key(channel: str) -> str:
    """The incident that stands for a notification channel being down."""
    return dedup_key(CHANNEL_DOWN_CHECK, channel)


def _report_outage(
    router: Any, links: RunLinks, channel: str, other: str, outage: dict[str, Any], failed: list[str]
) -> bool:
    names = {"slack": "Slack", "pagerduty": "PagerDuty"}
    summary = (
        f"{names[channel]} alert channel is down since {outage['down_since']}: "
        f"{len(failed)} health notifications undelivered (retried every run)"
    )
    if other == "pagerduty":
        return router.pagerduty(
            action="trigger",
            dedup_key=channel_dedup_key(channel),
            summary=summary,
            severity="error",
            source="mlops-health",
            component=CHANNEL_DOWN_CHECK,
            group="mlops-health",
            custom_details={"undelivered": failed[:50]},
            links=[{"href": links.run_url, "text": "Airflow health run"}],
        )
    return router.slack(
        f"{names[channel]} is down: pages are not getting out",
        [summary, "Undelivered:\n" + escape("\n".join(failed[:30]))],
        [f"<{links.run_url}|Airflow health run>"],
    )


def _report_recovery(router: Any, links: RunLinks, channel: str, other: str, outage: dict[str, Any]) -> bool:
    names = {"slack": "Slack", "pagerduty": "PagerDuty"}
    if other == "pagerduty":
        return router.pagerduty(
            action="resolve",
            dedup_key=channel_dedup_key(channel),
            summary=f"{names[channel]} alert channel recovered",
            severity="error",
        )
    return router.slack(
        f"{names[channel]} recovered",
        [f"{names[channel]} accepts alerts again (down since {outage['down_since']})."],
        [f"<{links.run_url}|Airflow health run>"],
    )


def deliver(
    state: AlertState,
    router: Any,
    links: RunLinks,
    silenced: Callable[[AlertRecord], bool] | None = None,
) -> DeliveryReport:
    """Send every pending trigger and resolve in ``state``, each channel on its own, under its deadline.

    ``silenced(alert)`` says whether an active silence covers an alert.
    """
    report = DeliveryReport()
    muted = muted_keys(state, silenced)
    jobs: dict[str, Callable[[], None]] = {}
    if any(a.pagerduty in (TRIGGER_PENDING, RESOLVE_PENDING) for a in state.alerts.values()):
        jobs["pagerduty"] = lambda: _deliver_pagerduty(state, router, links, muted, report)
    slack_due = any(a.slack in (TRIGGER_PENDING, RESOLVE_PENDING) for a in state.alerts.values())
    if slack_due or any(not n.get("told") for n in state.notices.values()):
        jobs["slack"] = lambda: _deliver_slack(state, router, links, muted, report)
    for channel, outcome in deliver_independently(jobs).items():
        if isinstance(outcome, Exception):
            report.failed.append(f"{channel} delivery crashed: {type(outcome).__name__}: {outcome}")
    attempted = [c for c in jobs if router.configured(c)]
    attempted += [c for c in state.outages if c not in attempted]
    _track_outages(state, router, links, report, attempted)
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
        f"{_SEVERITY_ICON.get(a.severity, '')} `{escape(a.check)}` on `{escape(a.target)}` firing since "
        f"{a.fired_at} ({a.consecutive_failures} consecutive failures)\n{escape(a.summary)}"
        for a in firing
    ] or [":white_check_mark: No health alert is firing."]
    (sections,) = split_sections(sections, max_messages=1)
    ok = router.slack(title, sections, [f"<{links.run_url}|Airflow health run> · {now.date().isoformat()}"])
    ok = ok or not router.configured("slack")
    if ok:
        state.last_digest_date = now.date().isoformat()
    return ok
