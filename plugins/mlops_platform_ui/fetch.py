"""Backend reads with a deadline and a brief cache, so a slow or absent backend never breaks the page.

A section's reader runs in a worker thread; past its deadline the section shows
"timed out after N s" and the thread finishes in the background (its result is then cached
for the next request). A reader's exception becomes that section's error message.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

_POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="mlops-page")
_CACHE: dict[str, tuple[float, Any]] = {}
_LOCK = threading.Lock()


@dataclass
class Section:
    """What one section shows: its data, or the error of the backend it needs."""

    data: Any = None
    error: str | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"data": self.data, "error": self.error, "seconds": round(self.seconds, 3)}


def describe(exc: BaseException) -> str:
    """A one-line description of a backend failure: its type and message."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {message}"[:500] if message else type(exc).__name__


def _store(key: str, value: Any) -> None:
    with _LOCK:
        _CACHE[key] = (time.monotonic(), value)


def cached(key: str, reader: Callable[[], Any], *, ttl: float, timeout: float) -> Section:
    """``reader()``'s result (at most ``ttl`` s old), or the error that stopped it within ``timeout``."""
    started = time.monotonic()
    with _LOCK:
        hit = _CACHE.get(key)
    if hit is not None and started - hit[0] < ttl:
        return Section(data=hit[1], seconds=0.0)

    def run() -> Any:
        value = reader()
        _store(key, value)
        return value

    future = _POOL.submit(run)
    try:
        return Section(data=future.result(timeout=timeout), seconds=time.monotonic() - started)
    except FutureTimeout:
        return Section(error=f"timed out after {timeout:g} s", seconds=time.monotonic() - started)
    except Exception as exc:
        return Section(error=describe(exc), seconds=time.monotonic() - started)


def forget(prefix: str = "") -> None:
    """Drop cached reads whose key starts with ``prefix`` (after an action changed them)."""
    with _LOCK:
        for key in [k for k in _CACHE if k.startswith(prefix)]:
            del _CACHE[key]
