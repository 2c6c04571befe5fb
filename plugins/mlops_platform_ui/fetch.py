"""Backend reads with a deadline and a brief cache, so a slow or absent backend never breaks the page.

A section's reader runs in a worker thread. Its answer (data, or the backend's error) is kept for
``ttl`` seconds. Past that, the page is served from the kept answer at once while one refresh runs
in the background (stale-while-revalidate, as dashboards do), and the section says how old it is.
Only a section that has never been read waits, at most ``timeout`` seconds; past it the section
shows "timed out after N s" and the read finishes in the background for the next request.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, replace
from typing import Any

_POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="mlops-page")
_CACHE: dict[str, tuple[float, Section]] = {}
_RUNNING: dict[str, Future] = {}
_LOCK = threading.Lock()


@dataclass
class Section:
    """What one section shows: its data, or the error of the backend it needs."""

    data: Any = None
    error: str | None = None
    seconds: float = 0.0
    age_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "data": self.data,
            "error": self.error,
            "seconds": round(self.seconds, 3),
            "age_seconds": round(self.age_seconds, 1),
        }


def describe(exc: BaseException) -> str:
    """A one-line description of a backend failure: its type and message."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {message}"[:500] if message else type(exc).__name__


def _read(key: str, reader: Callable[[], Any]) -> Section:
    started = time.monotonic()
    try:
        section = Section(data=reader())
    except Exception as exc:
        section = Section(error=describe(exc))
    section.seconds = time.monotonic() - started
    with _LOCK:
        _CACHE[key] = (time.monotonic(), section)
        _RUNNING.pop(key, None)
    return section


def _refresh(key: str, reader: Callable[[], Any]) -> Future:
    with _LOCK:
        running = _RUNNING.get(key)
        if running is None:
            running = _RUNNING[key] = _POOL.submit(_read, key, reader)
        return running


def cached(key: str, reader: Callable[[], Any], *, ttl: float, timeout: float) -> Section:
    """``reader()``'s answer, at most ``ttl`` s old, else the last answer while a refresh runs; a
    section never read waits at most ``timeout`` s."""
    now = time.monotonic()
    with _LOCK:
        hit = _CACHE.get(key)
    if hit is not None:
        age = now - hit[0]
        if age >= ttl:
            _refresh(key, reader)
        return replace(hit[1], seconds=0.0, age_seconds=age)
    try:
        return _refresh(key, reader).result(timeout=timeout)
    except FutureTimeout:
        return Section(error=f"timed out after {timeout:g} s", seconds=time.monotonic() - now)


def forget(prefix: str = "") -> None:
    """Drop kept answers whose key starts with ``prefix`` (after an action changed what they show)."""
    with _LOCK:
        for key in [k for k in _CACHE if k.startswith(prefix)]:
            del _CACHE[key]
