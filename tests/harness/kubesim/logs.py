"""Container log buffers, followable until the container instance ends."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime


def rfc3339_nano(ns: int) -> str:
    """``2024-05-01T12:00:00.123456789Z``, the timestamp format of ``?timestamps=true`` logs."""
    seconds, frac = divmod(ns, 1_000_000_000)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:09d}Z"


class LogBuffer:
    """The output of one container instance. Lives on the server loop; ``close()`` ends followers."""

    def __init__(self) -> None:
        self.lines: list[tuple[int, str]] = []
        self.closed = False
        self._changed = asyncio.Event()

    def append(self, line: str) -> None:
        self.lines.append((time.time_ns(), line))
        self._wake()

    def close(self) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def tail(self, count: int) -> list[str]:
        return [line for _, line in self.lines[-count:]] if count > 0 else []

    async def read(
        self,
        *,
        follow: bool,
        timestamps: bool,
        tail_lines: int | None = None,
        since_seconds: float | None = None,
    ) -> AsyncIterator[str]:
        """Yield formatted lines (with ``\\n``); with ``follow`` keep going until the buffer is closed."""
        start = 0
        if since_seconds is not None:
            cutoff = time.time_ns() - int(since_seconds * 1e9)
            start = next((n for n, (ts, _) in enumerate(self.lines) if ts >= cutoff), len(self.lines))
        if tail_lines is not None:
            start = max(start, len(self.lines) - tail_lines)
        position = start
        while True:
            while position < len(self.lines):
                ts, line = self.lines[position]
                position += 1
                yield f"{rfc3339_nano(ts)} {line}\n" if timestamps else f"{line}\n"
            if not follow or self.closed:
                return
            await self._changed.wait()
