"""Slack incoming-webhook messages through the provider's notifier, within Block Kit limits.

- Sizes: at most 50 blocks, 3000 characters a section, and a bounded total per
  message (:data:`MAX_MESSAGE_CHARS`): a long batch is split into several messages
  and, beyond :data:`MAX_MESSAGES`, summarised, so an alert storm still gets through.
- Escaping: text that people or probed services control goes through :func:`escape`,
  so a body containing ``<!channel>`` is shown, never acted on.
- Retries: 429 (honouring Retry-After) and 5xx, never past the delivery's deadline.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler, ServerErrorRetryHandler

from mlops.alerting.deadline import Deadline
from mlops.alerting.pagerduty import _backoff_seconds

MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
MAX_HEADER_TEXT = 150
# Slack refuses messages whose blocks add up to too much text ("invalid_blocks", "msg_too_long");
# staying well under keeps every message deliverable.
MAX_MESSAGE_CHARS = 12000
MAX_MESSAGES = 5  # per delivery; what does not fit is summarised in the last one
TRUNCATION_MARK = "… (truncated)"


def truncate(text: str, limit: int) -> str:
    """Cut ``text`` to ``limit`` characters, marking the cut."""
    return text if len(text) <= limit else text[: limit - len(TRUNCATION_MARK)] + TRUNCATION_MARK


def escape(text: str) -> str:
    """Escape ``&``, ``<`` and ``>`` for Slack mrkdwn: no mention, link or broadcast can be injected."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _deadline_bounded(handler_cls: type) -> type:
    class Bounded(handler_cls):  # type: ignore[misc, valid-type]
        def __init__(self, deadline: Deadline | None, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.deadline = deadline

        def _can_retry(self, **kwargs: Any) -> bool:
            if self.deadline is not None and not self.deadline.allows(1.0):
                return False
            return super()._can_retry(**kwargs)

    Bounded.__name__ = f"Deadline{handler_cls.__name__}"
    return Bounded


_RateLimit = _deadline_bounded(RateLimitErrorRetryHandler)
_ServerError = _deadline_bounded(ServerErrorRetryHandler)


def retry_handlers(deadline: Deadline | None = None) -> list[Any]:
    """Retry 429 (honouring Retry-After) and 5xx with backoff, while ``deadline`` allows."""
    from slack_sdk.http_retry.builtin_interval_calculators import BackoffRetryIntervalCalculator

    # The same back-off base as PagerDuty's (MLOPS_ALERT_RETRY_BASE_SECONDS): 0.5 s, 1 s, 2 s by default.
    backoff = BackoffRetryIntervalCalculator(backoff_factor=_backoff_seconds() / 3)
    return [
        _RateLimit(deadline, max_retry_count=3),
        _ServerError(deadline, max_retry_count=3, interval_calculator=backoff),
    ]


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": truncate(text, MAX_SECTION_TEXT)}}


def message_blocks(title: str, sections: list[str], context: list[str] | None = None) -> list[dict[str, Any]]:
    """Build Block Kit blocks within Slack's limits (50 blocks, 3000 chars a section)."""
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": truncate(title, MAX_HEADER_TEXT)}}
    ]
    room = MAX_BLOCKS - 1 - (1 if context else 0)
    if len(sections) > room:
        dropped = len(sections) - room + 1
        sections = [*sections[: room - 1], f"… and {dropped} more"]
    blocks.extend(_section(text) for text in sections)
    if context:
        elements = [{"type": "mrkdwn", "text": truncate(c, MAX_SECTION_TEXT)} for c in context[:10]]
        blocks.append({"type": "context", "elements": elements})
    return blocks


def split_sections(
    sections: list[str],
    *,
    max_chars: int = MAX_MESSAGE_CHARS,
    max_sections: int = MAX_BLOCKS - 2,
    max_messages: int = MAX_MESSAGES,
) -> list[list[str]]:
    """Group ``sections`` into messages of at most ``max_chars`` text and ``max_sections`` sections.

    At most ``max_messages`` messages; the last one then ends with a line saying how
    many more were left out, so the size of a batch can never make it undeliverable.
    """
    clipped = [truncate(s, min(MAX_SECTION_TEXT, max_chars // 2)) for s in sections]
    messages: list[list[str]] = [[]]
    size = 0
    for index, text in enumerate(clipped):
        if messages[-1] and (size + len(text) > max_chars or len(messages[-1]) >= max_sections):
            if len(messages) == max_messages:
                left = len(clipped) - index
                last = messages[-1]
                while last and size + 80 > max_chars:
                    size -= len(last.pop())
                    left += 1
                last.append(f"… and {left} more not shown here: see the Airflow run")
                return messages
            messages.append([])
            size = 0
        messages[-1].append(text)
        size += len(text)
    return messages if messages[0] else []


def slack_notifier(
    conn_id: str,
    text: str,
    blocks: list[dict[str, Any]] | None = None,
    deadline: Deadline | None = None,
) -> SlackWebhookNotifier:
    """A provider ``SlackWebhookNotifier`` with the project's retry policy and the delivery's deadline."""
    timeout = None if deadline is None else max(1, int(deadline.remaining()))
    return SlackWebhookNotifier(
        slack_webhook_conn_id=conn_id,
        text=truncate(text, MAX_SECTION_TEXT),
        blocks=blocks,
        timeout=timeout,
        retry_handlers=retry_handlers(deadline),
    )
