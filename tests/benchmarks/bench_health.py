"""Benchmark: a health sweep of 200 local HTTP endpoints, 10 of which hang.

Targets (issue 6): concurrent wall time <= timeout + 1 s, and <= 1/10 of a sequential
sweep of the same checks measured in the same run (same runner, one check at a time).

    .venv/bin/python -m pytest tests/benchmarks/bench_health.py -s
    .venv/bin/python tests/benchmarks/bench_health.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mlops.health.config import CheckSpec  # noqa: E402
from mlops.health.runner import run_checks  # noqa: E402
from mlops.settings import get_settings  # noqa: E402
from tests.integration.health.endpoints import EndpointServer  # noqa: E402

ENDPOINTS = 200
HANGING = 10
TIMEOUT = 1.0


def specs(server: EndpointServer, tag: str) -> list[CheckSpec]:
    hanging = set(range(0, ENDPOINTS, ENDPOINTS // HANGING))
    return [
        CheckSpec(
            f"ep-{i:03d}",
            "http",
            timeout_seconds=TIMEOUT,
            params={
                "url": server.url(f"/hang?{tag}-{i}" if i in hanging else f"/healthy?{tag}-{i}"),
                "json": [{"path": "status", "op": "eq", "value": "ok"}],
            },
        )
        for i in range(ENDPOINTS)
    ]


def sweep(server: EndpointServer, tag: str, max_concurrency: int | None) -> tuple[float, int]:
    started = time.perf_counter()
    report = run_checks(specs(server, tag), get_settings(), max_concurrency=max_concurrency)
    return time.perf_counter() - started, len(report.failing)


def test_bench_health_sweep() -> None:
    server = EndpointServer().start()
    try:
        sweep(server, "warmup", None)
        concurrent, failing_c = sweep(server, "concurrent", None)
        sequential, failing_s = sweep(server, "sequential", 1)
    finally:
        server.stop()
    ratio = concurrent / sequential
    print(f"\nhealth sweep: {ENDPOINTS} endpoints, {HANGING} hanging, timeout {TIMEOUT:g}s")
    print(f"  concurrent: {concurrent:.3f}s (target <= {TIMEOUT + 1:g}s), {failing_c} failing")
    print(f"  sequential: {sequential:.3f}s, {failing_s} failing")
    print(f"  ratio concurrent/sequential: {ratio:.3f} (target <= 0.100), x{sequential / concurrent:.1f}")
    assert failing_c == failing_s == HANGING
    assert concurrent <= TIMEOUT + 1
    assert ratio <= 0.1


if __name__ == "__main__":
    test_bench_health_sweep()
