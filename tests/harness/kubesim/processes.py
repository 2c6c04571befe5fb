"""Real local subprocesses standing in for containers: own process group, merged output, sure cleanup."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import signal
import threading
from collections.abc import Callable

_live_groups: set[int] = set()
_live_lock = threading.Lock()


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    """Signal a whole process group, ignoring groups that are already gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def kill_all_groups() -> None:
    """SIGKILL every process group started here that has not been reaped (safe from any thread)."""
    with _live_lock:
        groups = list(_live_groups)
        _live_groups.clear()
    for pgid in groups:
        kill_group(pgid)


atexit.register(kill_all_groups)


class ContainerProcess:
    """One subprocess in its own session; every stdout/stderr line goes to ``on_line``."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: str | None, on_line: Callable[[str], None]):
        self.argv, self.env, self.cwd, self.on_line = argv, env, cwd, on_line
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task | None = None

    async def start(self) -> None:
        """Spawn the process; raises ``OSError`` when it cannot be executed."""
        self._proc = await asyncio.create_subprocess_exec(
            *self.argv,
            env=self.env,
            cwd=self.cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        with _live_lock:
            _live_groups.add(self._proc.pid)
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        while line := await self._proc.stdout.readline():
            self.on_line(line.decode("utf-8", errors="replace").rstrip("\r\n"))

    async def wait(self) -> int:
        """Wait for exit (and for all output to be read); the container-style exit code (128+signal)."""
        assert self._proc is not None
        code = await self._proc.wait()
        if self._reader is not None:
            # The group's children may hold the pipe open; don't wait for them past a moment.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._reader), 1.0)
        self.kill()
        return 128 - code if code < 0 else code

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the process group (children included)."""
        if self._proc is None:
            return
        kill_group(self._proc.pid, sig)
        if sig == signal.SIGKILL:
            with _live_lock:
                _live_groups.discard(self._proc.pid)

    async def reap(self, timeout: float = 5.0) -> None:
        """Wait (bounded) until the killed process has been reaped, so no zombie outlives the pod."""
        if self._proc is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._proc.wait(), timeout)

    async def terminate(self, grace_seconds: float) -> int | None:
        """SIGTERM the group, then SIGKILL it after ``grace_seconds`` if the process is still there.

        ``grace_seconds <= 0`` sends SIGKILL only (a node losing power).

        Returns the container-style exit code (143 for a default SIGTERM death, 137 after SIGKILL, or the
        process's own code when it handled SIGTERM and exited), ``None`` if it never started.
        """
        if self._proc is None:
            return None
        if self._proc.returncode is None and grace_seconds > 0:
            self.kill(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._proc.wait(), grace_seconds)
        self.kill()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._proc.wait(), 5.0)
        code = self._proc.returncode
        if code is None:
            return 137
        return 128 - code if code < 0 else code
