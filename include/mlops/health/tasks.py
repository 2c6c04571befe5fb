"""What the ``mlops_health`` DAG's tasks do, as plain functions (testable without a DagBag).

1. :func:`sweep` runs every configured check and returns the results (XCom-sized JSON).
2. :func:`evaluate_and_alert` advances the alert state with them, delivers the
   transitions, and persists the state. It is idempotent per run, so a task retry
   re-delivers what failed without counting the failures twice.
3. :func:`send_daily_digest` posts the still-firing alerts once a day.
"""

from __future__ import annotations

import logging
from typing import Any

from mlops.health.config import load_checks
from mlops.health.notify import RunLinks, deliver, digest_due, send_digest
from mlops.health.results import SweepReport
from mlops.health.runner import run_checks
from mlops.health.state import S3StateStore, StateConflictError, apply_report
from mlops.settings import Settings, get_settings

log = logging.getLogger(__name__)
_CAS_ATTEMPTS = 3


class AlertDeliveryError(RuntimeError):
    """Some alerts did not reach their channel; they stay pending and are retried."""


def format_report(report: SweepReport) -> str:
    """A plain table of every result, failing first, for the task log."""
    rows = sorted(report.results, key=lambda r: (r.ok, r.check, r.target))
    lines = [
        f"{'OK' if r.ok else 'FAIL':4} {r.check:28} {r.duration_seconds:7.3f}s  {r.summary}" for r in rows
    ]
    return "\n".join([f"{len(report.results)} results in {report.duration_seconds:.2f}s", *lines])


def sweep(settings: Settings | None = None) -> dict[str, Any]:
    """Run every enabled check concurrently; the JSON form of the :class:`SweepReport`."""
    settings = settings or get_settings()
    report = run_checks(load_checks(settings), settings)
    log.info("health sweep\n%s", format_report(report))
    return report.to_dict()


def evaluate_and_alert(
    report: dict[str, Any], *, dag_id: str, run_id: str, settings: Settings | None = None, router: Any = None
) -> dict[str, Any]:
    """Apply ``report`` to the stored alert state, deliver pending alerts, persist.

    Returns the true check state (failing results, firing alerts, transitions and
    deliveries). Raises :class:`AlertDeliveryError` after saving when a delivery
    failed, so the task is retried and the run shows that alerts did not get out.
    """
    from mlops.alerting.router import AlertRouter

    settings = settings or get_settings()
    specs = load_checks(settings)
    sweep_report = SweepReport.from_dict(report)
    store = S3StateStore.from_settings(settings)
    links = RunLinks(settings.airflow_base_url, dag_id, run_id)
    router = router or AlertRouter(settings)

    for attempt in range(1, _CAS_ATTEMPTS + 1):
        state, etag = store.load()
        transitions = apply_report(state, sweep_report, specs, run_id)
        try:
            etag = store.save(state, etag)  # record transitions before telling anyone
            break
        except StateConflictError:
            if attempt == _CAS_ATTEMPTS:
                raise
            log.warning("alert state changed while evaluating; re-reading (attempt %d)", attempt)
    delivery = deliver(state, router, links)
    store.save(state, etag)

    outcome = {
        "failing": [f"{r.check}/{r.target}: {r.summary}" for r in sweep_report.failing],
        "firing": [a.dedup_key for a in state.firing()],
        "transitions": [f"{t.kind} {t.key}" for t in transitions],
        "delivered": delivery.delivered,
        "undelivered": delivery.failed,
    }
    log.info(
        "health state: %d failing, %d firing; transitions %s; delivered %s",
        len(outcome["failing"]),
        len(outcome["firing"]),
        outcome["transitions"],
        delivery.delivered,
    )
    if delivery.failed:
        raise AlertDeliveryError(
            f"{len(delivery.failed)} alert deliveries failed and stay pending: {delivery.failed}; "
            f"firing: {outcome['firing']}"
        )
    return outcome


def send_daily_digest(
    *, dag_id: str, run_id: str, settings: Settings | None = None, router: Any = None
) -> bool:
    """Post today's digest of firing alerts if it is due; True when one went out.

    Gated by the date stored in the alert state rather than by the run's schedule:
    the first run after ``health_digest_hour_utc`` sends it, a missed or failed
    delivery is retried by the next run, and it goes out once a day however often
    the DAG runs.
    """
    from mlops.alerting.router import AlertRouter

    settings = settings or get_settings()
    store = S3StateStore.from_settings(settings)
    state, etag = store.load()
    if not digest_due(state, settings.health_digest_hour_utc):
        return False
    if not send_digest(
        state, router or AlertRouter(settings), RunLinks(settings.airflow_base_url, dag_id, run_id)
    ):
        raise AlertDeliveryError("the daily health digest could not be posted to Slack")
    store.save(state, etag)
    return True
