"""What the server process may consume: the cores its CPU limit gives, and how much request body it reads."""

from __future__ import annotations

import math
import os
from pathlib import Path

from starlette.requests import Request

CGROUP_ROOT = Path("/sys/fs/cgroup")


class BodyTooLarge(Exception):
    """The request body is (or would become) larger than the server accepts; the message says by how much."""


def cgroup_cpu_quota(root: Path = CGROUP_ROOT) -> float | None:
    """The CPU quota of this process's cgroup in cores (``cpu.max`` in v2, ``cpu.cfs_quota_us`` in v1);
    ``None`` when there is no quota (no limit, or no cgroup file)."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]  # v2: "max 100000" or "150000 100000"
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    for v1 in (root / "cpu", root / "cpu,cpuacct"):
        try:
            quota_us = int((v1 / "cpu.cfs_quota_us").read_text())
            period_us = int((v1 / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return None if quota_us <= 0 else quota_us / period_us
    return None


def cpu_limit(root: Path = CGROUP_ROOT) -> int:
    """The cores this process may use: its CPU affinity, capped by the cgroup quota rounded up (a pod
    limited to 1.5 CPU gets 2 threads, each throttled by the kernel to the quota); at least 1."""
    cores = len(os.sched_getaffinity(0))
    quota = cgroup_cpu_quota(root)
    if quota is not None:
        cores = min(cores, math.ceil(quota))
    return max(1, cores)


async def read_capped(request: Request, limit: int) -> bytes:
    """The request body, refused with :class:`BodyTooLarge` before it grows past ``limit`` bytes.

    A declared ``Content-Length`` over the limit is refused before any of the body is read; a body
    without one (chunked) is read until it crosses the limit, so at most ``limit`` bytes are held.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"body is {int(declared)} bytes (Content-Length); at most {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"body is over {limit} bytes; at most {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
