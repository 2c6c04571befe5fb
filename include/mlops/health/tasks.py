"""What the ``mlops_health`` DAG's tasks do, as plain functions (testable without a DagBag).

1. :func:`sweep` runs every configured check and returns the results (XCom-sized JSON).
2. :func:`evaluate_and_alert` advances the alert state with them, delivers the
   transitions, and persists the state. It is idempotent per run, so a task retry
   re-delivers what failed without counting the failures twice.
3. :func:`send_daily_digest` posts the still-firing alerts once a day.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from mlops.health.config import load_checks
from mlops.health.notify import RunLinks, deliver, digest_due, send_digest
from mlops.health.results import SweepReport
from mlops.health.runner import run_checks
from mlops.health.silences import SilenceStore, matches_any
from mlops.health.state import S3StateStore, StateConflictError, apply_report, schedule_repeats
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
    """Run every enabled check concurrently; the JSON form of the :class:`SweepReport`.

    A finished sweep sends its heartbeat (the dead-man's switch an outside system
    watches): ``mlops_health_last_sweep_timestamp_seconds`` on the Pushgateway and,
    when ``health_heartbeat_url`` is set, a ping to that URL. A heartbeat that cannot
    be sent is logged; it never fails the sweep.
    """
    from mlops.health.publish import ping_heartbeat_url, publish_sweep_heartbeat

    settings = settings or get_settings()
    report = run_checks(load_checks(settings), settings)
    log.info("health sweep\n%s", format_report(report))
    try:
        publish_sweep_heartbeat(report.duration_seconds, len(report.failing))
    except Exception:
        log.warning("could not push the sweep heartbeat", exc_info=True)
    if settings.health_heartbeat_url:
        ping_heartbeat_url(settings.health_heartbeat_url)
    return report.to_dict()


def evaluate_and_alert(
    report: dict[str, Any], *, dag_id: str, run_id: str, settings: Settings | None = None, router: Any = None
) -> dict[str, Any]:
    """Apply ``report`` to the stored alert state, deliver pending alerts, persist.

    Returns the true check state (failing results, firing alerts, transitions and
    deliveries). Undelivered alerts stay pending and go out on the next attempt. A
    channel that is down is reported once through the other channel; the task fails
    (:class:`AlertDeliveryError`, after saving) only when an outage could be reported
    nowhere, so a Slack outage does not page on every run.
    """
    from mlops.alerting.router import AlertRouter

    settings = settings or get_settings()
    specs = load_checks(settings)
    sweep_report = SweepReport.from_dict(report)
    store = S3StateStore.from_settings(settings)
    links = RunLinks(settings.airflow_base_url, dag_id, run_id)
    router = router or AlertRouter(settings)

    silences = SilenceStore.from_settings(settings)
    active = silences.active()
    for attempt in range(1, _CAS_ATTEMPTS + 1):
        state, etag = store.load()
        transitions = apply_report(state, sweep_report, specs, run_id)
        schedule_repeats(state, datetime.now(UTC), settings.alert_repeat_interval_seconds)
        try:
            etag = store.save(state, etag)  # record transitions before telling anyone
            break
        except StateConflictError:
            if attempt == _CAS_ATTEMPTS:
                raise
            log.warning("alert state changed while evaluating; re-reading (attempt %d)", attempt)
    if settings.alert_sink == "alertmanager":
        from mlops.alerting.alertmanager import post_alerts

        delivery = post_alerts(state, settings, links)
    else:
        delivery = deliver(state, router, links, silenced=lambda alert: matches_any(active, alert))
    store.save(state, etag)

    outcome = {
        "failing": [f"{r.check}/{r.target}: {r.summary}" for r in sweep_report.failing],
        "firing": [a.dedup_key for a in state.firing()],
        "transitions": [f"{t.kind} {t.key}" for t in transitions],
        "delivered": delivery.delivered,
        "undelivered": delivery.failed,
        "muted": delivery.muted,
        "outages": sorted(state.outages),
    }
    log.info(
        "health state: %d failing, %d firing; transitions %s; delivered %s",
        len(outcome["failing"]),
        len(outcome["firing"]),
        outcome["transitions"],
        delivery.delivered,
    )
    unreported = [c for c in ("slack", "pagerduty") if delivery.failed_on(c) and not _reported(state, c)]
    if unreported or any("crashed" in f for f in delivery.failed):
        raise AlertDeliveryError(
            f"{len(delivery.failed)} alert deliveries failed and stay pending: {delivery.failed}; "
            f"firing: {outcome['firing']}"
        )
    return outcome


def _reported(state: Any, channel: str) -> bool:
    return bool(state.outages.get(channel, {}).get("reported"))


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
