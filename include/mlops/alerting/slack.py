"""Slack incoming-webhook messages through the provider's notifier, with retries and Block Kit limits."""

from __future__ import annotations

from typing import Any

from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler, ServerErrorRetryHandler

MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
MAX_HEADER_TEXT = 150
TRUNCATION_MARK = "… (truncated)"


def truncate(text: str, limit: int) -> str:
    """Cut ``text`` to ``limit`` characters, marking the cut."""
    return text if len(text) <= limit else text[: limit - len(TRUNCATION_MARK)] + TRUNCATION_MARK


def retry_handlers() -> list[Any]:
    """Retry 429 (honouring Retry-After) and 5xx with backoff."""
    return [RateLimitErrorRetryHandler(max_retry_count=3), ServerErrorRetryHandler(max_retry_count=3)]


def message_blocks(title: str, sections: list[str], context: list[str] | None = None) -> list[dict[str, Any]]:
    """Build Block Kit blocks within Slack's limits (50 blocks, 3000 chars a section)."""
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": truncate(title, MAX_HEADER_TEXT)}}
    ]
    room = MAX_BLOCKS - 1 - (1 if context else 0)
    if len(sections) > room:
        dropped = len(sections) - room + 1
        sections = [*sections[: room - 1], f"… and {dropped} more"]
    for text in sections:
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": truncate(text, MAX_SECTION_TEXT)}}
        )
    if context:
        elements = [{"type": "mrkdwn", "text": truncate(c, MAX_SECTION_TEXT)} for c in context[:10]]
        blocks.append({"type": "context", "elements": elements})
    return blocks


def slack_notifier(
    conn_id: str, text: str, blocks: list[dict[str, Any]] | None = None
) -> SlackWebhookNotifier:
    """A provider ``SlackWebhookNotifier`` with the project's retry policy."""
    return SlackWebhookNotifier(
        slack_webhook_conn_id=conn_id,
        text=truncate(text, MAX_SECTION_TEXT),
        blocks=blocks,
        retry_handlers=retry_handlers(),
    )
