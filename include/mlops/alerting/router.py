"""One place that decides where an alert goes: Slack, PagerDuty, or the task log.

A channel whose connection is not configured is not an error: the alert is
written to the log instead (the laptop default). A channel that fails is logged
and reported as undelivered; it never raises into the caller, so an alerting
outage can never mask the failure being reported.

Every delivery runs under a total deadline (``alert_delivery_deadline_seconds``,
well inside the tasks' timeouts): a channel that is slow or down costs at most that
long, and :func:`deliver_independently` runs the channels side by side so that one
channel's outage never delays or blocks the other.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from airflow.exceptions import AirflowNotFoundException
from airflow.sdk import BaseHook

from mlops.alerting.deadline import Deadline, call_with_deadline
from mlops.alerting.pagerduty import SEVERITIES, PagerDutyEventsHook, PagerDutyNotifier
from mlops.alerting.slack import message_blocks, slack_notifier
from mlops.settings import Settings, get_settings

log = logging.getLogger(__name__)


def _configured(conn_id: str) -> bool:
    try:
        BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return False
    return True


@dataclass
class AlertRouter:
    """Delivers alerts; every method returns True when the message reached its service."""

    settings: Settings = field(default_factory=get_settings)

    def configured(self, channel: str) -> bool:
        """Whether ``channel`` ("slack" or "pagerduty") has a connection; if not, alerts go to the log."""
        conn_ids = {"slack": self.settings.slack_conn_id, "pagerduty": self.settings.pagerduty_conn_id}
        return _configured(conn_ids[channel])

    def deadline(self) -> Deadline:
        """A fresh deadline of ``alert_delivery_deadline_seconds``."""
        return Deadline(self.settings.alert_delivery_deadline_seconds)

    def slack(
        self,
        title: str,
        sections: list[str],
        context: list[str] | None = None,
        ctx: dict[str, Any] | None = None,
        deadline: Deadline | None = None,
    ) -> bool:
        """Post a Block Kit message; ``title`` doubles as the notification text."""
        conn_id = self.settings.slack_conn_id
        if not _configured(conn_id):
            log.warning("[alert:slack:not-configured] %s | %s", title, " | ".join(sections))
            return False
        deadline = deadline or self.deadline()
        try:
            notifier = slack_notifier(conn_id, title, message_blocks(title, sections, context), deadline)
            notifier.hook.client  # noqa: B018 - reads the connection here, not in the delivery thread
            call_with_deadline(lambda: notifier.notify(ctx or {}), deadline, "slack")
        except Exception:
            log.exception("Slack alert could not be delivered (connection %s): %s", conn_id, title)
            return False
        return True

    def pagerduty(
        self,
        *,
        action: str,
        dedup_key: str,
        summary: str = "",
        severity: str = "error",
        source: str = "airflow",
        custom_details: Any = None,
        links: list[dict[str, str]] | None = None,
        component: str | None = None,
        group: str | None = None,
        ctx: dict[str, Any] | None = None,
        deadline: Deadline | None = None,
    ) -> bool:
        """Send an Events API v2 trigger or resolve with a stable ``dedup_key``."""
        if severity not in SEVERITIES:
            raise ValueError(f"severity: must be one of {SEVERITIES}, got {severity!r}")
        conn_id = self.settings.pagerduty_conn_id
        if not _configured(conn_id):
            log.warning("[alert:pagerduty:not-configured] %s %s %s: %s", action, severity, dedup_key, summary)
            return False
        deadline = deadline or self.deadline()
        trigger = action == "trigger"
        try:
            hook = PagerDutyEventsHook(pagerduty_events_conn_id=conn_id)
            hook.deadline = deadline
            # The provider's notifier, sending through the hook that honours the connection's events_url.
            notifier = PagerDutyNotifier(
                events_hook=hook,
                pagerduty_events_conn_id=conn_id,
                # resolve/acknowledge carry only the key; the Events API still wants a summary field.
                summary=summary if trigger else (summary or dedup_key),
                severity=severity,
                source=source,
                action=action,
                dedup_key=dedup_key,
                custom_details=custom_details if trigger else None,
                links=links if trigger else None,
                component=component if trigger else None,
                group=group if trigger else None,
            )
            call_with_deadline(lambda: notifier.notify(ctx or {}), deadline, "pagerduty")
        except Exception:
            log.exception(
                "PagerDuty %s could not be delivered (connection %s): %s", action, conn_id, dedup_key
            )
            return False
        return True

    def pagerduty_change(
        self,
        summary: str,
        custom_details: Any = None,
        links: list[dict[str, str]] | None = None,
        source: str = "airflow",
    ) -> bool:
        """Send a change event (deployments, promotions, rollbacks)."""
        conn_id = self.settings.pagerduty_conn_id
        if not _configured(conn_id):
            log.warning("[alert:pagerduty-change:not-configured] %s", summary)
            return False
        deadline = self.deadline()
        try:
            hook = PagerDutyEventsHook(pagerduty_events_conn_id=conn_id)
            hook.deadline = deadline
            call_with_deadline(
                lambda: hook.create_change_event(
                    summary=summary, source=source, custom_details=custom_details, links=links
                ),
                deadline,
                "pagerduty-change",
            )
        except Exception:
            log.exception("PagerDuty change event could not be delivered: %s", summary)
            return False
        return True


def deliver_independently(jobs: dict[str, Callable[[], Any]]) -> dict[str, Any]:
    """Run each channel's delivery job at the same time; ``{channel: result}``.

    A job that raises yields its exception as the result: one channel's failure or
    slowness never delays or blocks another's (each job bounds itself by its deadline).
    """
    if not jobs:
        return {}
    with ThreadPoolExecutor(max_workers=len(jobs), thread_name_prefix="alert-channel") as pool:
        futures = {name: pool.submit(job) for name, job in jobs.items()}
        results: dict[str, Any] = {}
        for name, future in futures.items():
            try:
                results[name] = future.result()
            except Exception as exc:  # reported by the caller as undelivered
                log.exception("%s delivery failed", name)
                results[name] = exc
    return results


# -- inhibition: a failure that already paged through its own incident is not paged again ----------
_PAGED_AS = "mlops_paged_as"


def mark_paged(error: BaseException, dedup_key: str) -> None:
    """Record on ``error`` that a specific incident (``dedup_key``) already pages for it.

    The generic task-failure callback (``mlops.callbacks``) then posts to Slack
    only, naming that incident, instead of opening a second, vaguer one: the
    inhibition Alertmanager applies when a specific alert fires beside a
    generic one. Call it only after the specific page was delivered.
    """
    try:
        setattr(error, _PAGED_AS, dedup_key)
    except (AttributeError, TypeError):  # an exception type without a __dict__: page twice, never zero
        log.debug("cannot mark %r as paged", error)


def paged_as(error: BaseException | None) -> str:
    """The incident that already pages for ``error`` (see :func:`mark_paged`), or ``""``."""
    return str(getattr(error, _PAGED_AS, "") or "")
