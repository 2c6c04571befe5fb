"""Run every check concurrently, each under its own timeout.

Network checks written as coroutines share one event loop; checks built on blocking
clients (kubernetes, psycopg2, boto3) run in a thread pool sized to them, so a hung
database never delays an HTTP probe. ``asyncio.wait_for`` bounds each check: a check
past its timeout is reported as failed at once. A blocking client cannot be
interrupted, so each such check also passes its timeout to its client (connect/read
timeouts), which ends the abandoned thread soon after.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from mlops.health.checks import preload, runner_for
from mlops.health.config import CheckSpec
from mlops.health.context import CheckContext
from mlops.health.results import CheckResult, SweepReport
from mlops.settings import Settings

log = logging.getLogger(__name__)


def default_target(spec: CheckSpec) -> str:
    """The target a check's own failure is filed under (its URL, namespace, bucket...)."""
    p = spec.params
    for key in ("url", "query", "namespace", "bucket", "conn_id"):
        if p.get(key):
            return str(p[key])
    return spec.name


def _forbidden(exc: Exception) -> bool:
    status = getattr(exc, "status", None) or getattr(getattr(exc, "response", None), "status_code", None)
    return status == 403


def _permission_missing(spec: CheckSpec, exc: Exception) -> CheckResult:
    """The check lacks a permission: reported (once, by the state) but not counted as the service failing."""
    reason = str(getattr(exc, "reason", "") or "Forbidden")
    body = str(getattr(exc, "body", "") or "")[:300]
    return CheckResult(
        spec.name,
        default_target(spec),
        True,
        f"{spec.name}: cannot run, permission missing (403 {reason}): {body}".rstrip(": "),
        errored=True,
        details={"permission_missing": True},
    )


async def _run_one(
    spec: CheckSpec, ctx: CheckContext, pool: ThreadPoolExecutor
) -> tuple[list[CheckResult], bool]:
    fn = runner_for(spec.type)
    started = time.perf_counter()
    try:
        if inspect.iscoroutinefunction(fn):
            pending = fn(spec, ctx)
        else:
            pending = asyncio.get_running_loop().run_in_executor(pool, fn, spec, ctx)
        results = await asyncio.wait_for(pending, spec.timeout_seconds)
        completed = True
    except TimeoutError:
        results = [
            CheckResult(
                spec.name,
                default_target(spec),
                False,
                f"{spec.name}: timed out after {spec.timeout_seconds:g}s",
                errored=True,
            )
        ]
        completed = False
    except Exception as exc:  # a broken check is a failing check, never a crashed sweep
        if _forbidden(exc):
            return [_permission_missing(spec, exc)], False
        log.warning("check %s raised", spec.name, exc_info=True)
        results = [
            CheckResult(
                spec.name,
                default_target(spec),
                False,
                f"{spec.name}: {type(exc).__name__}: {exc}",
                errored=True,
            )
        ]
        completed = False
    elapsed = round(time.perf_counter() - started, 4)
    for result in results:
        result.duration_seconds = elapsed
    return results, completed


def _deadline_result(spec: CheckSpec, deadline: float) -> list[CheckResult]:
    return [
        CheckResult(
            spec.name,
            default_target(spec),
            False,
            f"{spec.name}: not finished when the sweep's {deadline:g}s deadline passed",
            errored=True,
        )
    ]


async def run_checks_async(
    specs: Sequence[CheckSpec],
    settings: Settings,
    max_concurrency: int | None = None,
    deadline_seconds: float | None = None,
) -> SweepReport:
    """Run ``specs`` concurrently on the running event loop; see :func:`run_checks`."""
    preload({s.type for s in specs})
    started_at = datetime.now(UTC).isoformat(timespec="microseconds")
    started = time.perf_counter()
    deadline = deadline_seconds if deadline_seconds is not None else settings.health_sweep_deadline_seconds
    ctx = CheckContext(settings)
    blocking = sum(1 for s in specs if not inspect.iscoroutinefunction(runner_for(s.type)))
    pool = ThreadPoolExecutor(max_workers=max(1, blocking), thread_name_prefix="health-check")
    try:
        if max_concurrency:
            gate = asyncio.Semaphore(max_concurrency)

            async def gated(spec: CheckSpec) -> tuple[list[CheckResult], bool]:
                async with gate:  # each check's timeout starts when it gets a slot
                    return await _run_one(spec, ctx, pool)

            tasks = [asyncio.ensure_future(gated(s)) for s in specs]
        else:
            tasks = [asyncio.ensure_future(_run_one(s, ctx, pool)) for s in specs]
        if tasks:
            # The sweep's own deadline: checks still running (or still queued) are cut off and
            # reported as not finished; the results of those that finished are kept.
            await asyncio.wait(tasks, timeout=deadline)
        outcomes: list[tuple[list[CheckResult], bool]] = []
        for spec, task in zip(specs, tasks, strict=True):
            if task.done() and not task.cancelled():
                outcomes.append(task.result())
            else:
                task.cancel()
                outcomes.append((_deadline_result(spec, deadline), False))
    finally:
        await ctx.aclose()
        pool.shutdown(wait=False, cancel_futures=True)
    results = [r for rs, _ in outcomes for r in rs]
    completed = [s.name for s, (_, done) in zip(specs, outcomes, strict=True) if done]
    return SweepReport(results, completed, round(time.perf_counter() - started, 4), started_at)


def run_checks(
    specs: Sequence[CheckSpec],
    settings: Settings,
    max_concurrency: int | None = None,
    deadline_seconds: float | None = None,
) -> SweepReport:
    """Run every check at once; the sweep takes about as long as the slowest check's timeout.

    ``max_concurrency`` caps how many run at a time (1 gives a sequential sweep, the
    benchmark's baseline). The whole sweep ends by ``deadline_seconds`` (default
    ``health_sweep_deadline_seconds``): checks not finished by then are reported as such
    and the others' results are kept. Never raises for a failing, hanging or crashing
    check: each becomes a failed result.
    """
    return asyncio.run(run_checks_async(specs, settings, max_concurrency, deadline_seconds))
