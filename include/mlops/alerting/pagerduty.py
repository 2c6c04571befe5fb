"""PagerDuty Events API v2 through the provider's hook, with a configurable endpoint.

The provider's ``PagerdutyEventsHook`` always posts to events.pagerduty.com. Teams
on PagerDuty's EU service region, or behind an egress proxy, need another
endpoint, so the connection's extra may carry:

- ``events_url``: base URL of the Events API (default ``https://events.pagerduty.com``);
- ``ca_bundle``: a CA file to verify it with (for a TLS-inspecting proxy).

Retries on 429 and 5xx, with exponential backoff, come from the ``pagerduty``
client (the Events API's documented retry policy), bounded by the delivery's
:class:`~mlops.alerting.deadline.Deadline`: no retry is started that would end
after it, and each attempt's read timeout is what is left of it.
"""

from __future__ import annotations

import os
import ssl
from typing import Any

import pagerduty
from airflow.providers.pagerduty.hooks.pagerduty_events import PagerdutyEventsHook, prepare_event_data
from airflow.providers.pagerduty.notifications.pagerduty import PagerdutyNotifier

from mlops.alerting.deadline import Deadline, DeliveryTimeoutError

DEFAULT_EVENTS_URL = "https://events.pagerduty.com"
SEVERITIES = ("critical", "error", "warning", "info")
SUMMARY_LIMIT = 1024


def _backoff_seconds() -> float:
    return float(os.environ.get("MLOPS_ALERT_RETRY_BASE_SECONDS", "1.5"))


class DeadlineEventsClient(pagerduty.EventsApiV2Client):
    """The Events API v2 client whose retries stop where the delivery's deadline would be passed."""

    deadline: Deadline | None = None
    _next_sleep: float = 0.0

    def cooldown_factor(self) -> float:
        factor = super().cooldown_factor()
        # The client sleeps sleep_timer * factor before each retry: refuse one that cannot finish in time.
        self._next_sleep = (self._next_sleep or self.sleep_timer) * factor
        if self.deadline is not None and not self.deadline.allows(self._next_sleep + 0.5):
            raise DeliveryTimeoutError(
                f"PagerDuty: no retry fits in the {self.deadline.seconds:g}s delivery deadline"
            )
        return factor

    def request(self, method: str, url: str, **kwargs: Any) -> Any:
        self._next_sleep = 0.0
        if self.deadline is not None:
            self.timeout = max(0.5, min(self.timeout, self.deadline.remaining()))
        return super().request(method, url, **kwargs)


class PagerDutyEventsHook(PagerdutyEventsHook):
    """``PagerdutyEventsHook`` that honours ``events_url`` and ``ca_bundle`` in the connection extra."""

    def __init__(self, pagerduty_events_conn_id: str, **kwargs: Any) -> None:
        super().__init__(pagerduty_events_conn_id=pagerduty_events_conn_id, **kwargs)
        extra = self.get_connection(pagerduty_events_conn_id).extra_dejson
        self.events_url = extra.get("events_url") or DEFAULT_EVENTS_URL
        self.ca_bundle = extra.get("ca_bundle") or True

    deadline: Deadline | None = None

    def client(self) -> pagerduty.EventsApiV2Client:
        verify = (
            ssl.create_default_context(cafile=self.ca_bundle) if isinstance(self.ca_bundle, str) else True
        )
        client = DeadlineEventsClient(
            self.integration_key, base_url=self.events_url.rstrip("/"), verify=verify
        )
        client.sleep_timer = _backoff_seconds()
        # Every retried status is bounded: an alert that cannot be delivered must not hang the task.
        for status in (429, 500, 502, 503, 504):
            client.retry[status] = 3
        client.max_network_attempts = 2
        client.deadline = self.deadline
        return client

    def send_event(self, summary: str, severity: str, **kwargs: Any) -> str:  # type: ignore[override]
        """Send a trigger/acknowledge/resolve event; returns the dedup key PagerDuty answered."""
        data = prepare_event_data(summary=summary[:SUMMARY_LIMIT], severity=severity, **kwargs)
        return self.client().send_event(**data)

    def create_change_event(  # type: ignore[override]
        self,
        summary: str,
        source: str = "airflow",
        custom_details: Any | None = None,
        links: Any = None,
        **_: Any,
    ) -> Any:
        """Send a change event (e.g. a promotion) to the Change Events API."""
        payload: dict[str, Any] = {"summary": summary[:SUMMARY_LIMIT], "source": source}
        if custom_details is not None:
            payload["custom_details"] = custom_details
        return self.client().send_change_event(payload=payload, links=links)


class PagerDutyNotifier(PagerdutyNotifier):
    """The provider's ``PagerdutyNotifier`` sending through :class:`PagerDutyEventsHook`.

    ``events_hook`` is a hook built beforehand (its connection already read), for a
    delivery that runs its network I/O under a deadline in another thread.
    """

    def __init__(self, *, events_hook: PagerDutyEventsHook | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._events_hook = events_hook

    @property
    def hook(self) -> PagerDutyEventsHook:  # type: ignore[override]
        return self._events_hook or PagerDutyEventsHook(
            pagerduty_events_conn_id=self.pagerduty_events_conn_id
        )
