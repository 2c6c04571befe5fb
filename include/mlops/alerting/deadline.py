"""A total time budget for one delivery, whatever the client's own retries would do.

An alert client left to its defaults can retry for minutes (the PagerDuty client
doubles from 1.5 s up to six times on a 503: 189 s for one event). Every delivery
therefore runs under a deadline: the clients' retry loops stop asking for another
attempt once the next one would not fit, and the call itself is abandoned when the
deadline passes, so a slow channel can never hold up another one or the task.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class DeliveryTimeoutError(TimeoutError):
    """A delivery did not finish within its deadline; it is treated as undelivered."""


class Deadline:
    """A point in monotonic time; ``remaining()`` seconds are left until it."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expires = time.monotonic() + seconds

    def remaining(self) -> float:
        """Seconds left (never negative)."""
        return max(0.0, self.expires - time.monotonic())

    def allows(self, seconds: float) -> bool:
        """Whether ``seconds`` more (a back-off sleep plus an attempt) still fit."""
        return time.monotonic() + seconds < self.expires


def call_with_deadline(fn: Callable[[], T], deadline: Deadline, what: str) -> T:
    """Run ``fn`` in a daemon thread and wait at most ``deadline.remaining()`` for it.

    Returns what ``fn`` returned or re-raises what it raised. Raises
    :class:`DeliveryTimeoutError` when time runs out; the abandoned thread ends on its
    client's own (deadline-bounded) timeouts. Connections must be looked up by the
    caller beforehand: only network I/O belongs in ``fn``.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller's thread below
            box["error"] = exc

    thread = threading.Thread(target=target, name=f"deliver-{what}", daemon=True)
    thread.start()
    thread.join(deadline.remaining())
    if thread.is_alive():
        raise DeliveryTimeoutError(f"{what}: no answer within the {deadline.seconds:g}s delivery deadline")
    if "error" in box:
        raise box["error"]
    return box["value"]
