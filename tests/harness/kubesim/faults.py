"""Fault injection and request recording."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Fault:
    """Answer matching requests with ``status`` (after ``delay``); ``status=None`` only adds latency.

    ``times=None`` means forever. ``hits`` counts the requests it has affected.
    """

    method: str | None
    path: str
    status: int | None = 503
    times: int | None = 1
    delay: float = 0.0
    body: Any = None
    hits: int = 0
    _pattern: re.Pattern = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._pattern = re.compile(self.path)

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method.upper() == method) and bool(self._pattern.search(path))

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.hits >= self.times


class Faults:
    """The active faults; the first non-exhausted match wins."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(
        self,
        method: str | None = "GET",
        path: str = ".*",
        status: int | None = 503,
        times: int | None = 1,
        delay: float = 0.0,
        body: Any = None,
    ) -> Fault:
        """Inject a fault for requests whose method and URL path (``re.search``) match."""
        fault = Fault(method, path, status, times, delay, body)
        with self._lock:
            self._faults.append(fault)
        return fault

    def take(self, method: str, path: str) -> Fault | None:
        """The fault that applies to this request (counting the hit), if any."""
        with self._lock:
            for fault in self._faults:
                if not fault.exhausted and fault.matches(method, path):
                    fault.hits += 1
                    return fault
        return None

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()


@dataclass
class RecordedRequest:
    """One request the API received, and the status it was answered with."""

    method: str
    path: str
    query: dict[str, str]
    content_type: str
    body: Any
    status: int | None = None
    accept: str = ""  # the Accept header (e.g. the metadata-only list form)
    # What RBAC saw (kubesim/rbac.py): who asked, the verb/resource/namespace, and what allowed it.
    user: str = ""
    verb: str = ""
    group: str = ""
    resource: str = ""
    namespace: str = ""
    name: str = ""
    allowed_by: str = ""


class RequestLog:
    """Every request, in arrival order (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[RecordedRequest] = []

    def append(self, request: RecordedRequest) -> None:
        with self._lock:
            self._items.append(request)

    def snapshot(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._items)

    def matching(self, method: str | None = None, path_regex: str | None = None) -> list[RecordedRequest]:
        pattern = re.compile(path_regex) if path_regex else None
        return [
            r
            for r in self.snapshot()
            if (method is None or r.method == method.upper()) and (pattern is None or pattern.search(r.path))
        ]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
