"""The alert state machine and where its state lives between runs.

Per check and target, like Alertmanager with Prometheus ``for:``::

    ok --fail--> pending --N consecutive fails--> firing --M consecutive passes--> resolved
                    \\--ok--> (gone, nobody was told)                 --delivered--> (gone)

A firing alert that is still firing is notified again every ``repeat_interval``
(Alertmanager's ``repeat_interval``). A sweep older than the newest one already
applied (an old run being cleared late) changes nothing.

Each alert remembers, per channel (PagerDuty, Slack), what still has to be delivered:
``trigger_pending`` -> ``triggered`` -> ``resolve_pending`` -> done. A delivery that
fails stays pending and is retried by the next attempt, so the state never records
an alert as delivered when it was not. Firing again while a resolve is still
undelivered cancels the resolve: the incident was never closed.

Where the state lives: one JSON object in S3 (``health_state_bucket`` /
``health_state_key``), written with conditional requests (``If-Match`` on the ETag
read, ``If-None-Match: *`` for the first write).

- Durable and shared: any worker (KubernetesExecutor pods included) reads the same
  object; nothing depends on a worker's disk.
- Safe: ``max_active_runs=1`` already serialises runs; the conditional write turns any
  other writer (a manual ``dags test``, a second deployment) into a loud conflict
  instead of a silently lost update.
- Separate from the metadata DB: alert state survives a metadata DB restore or
  migration, and the health DAG can still page while the metadata DB is struggling.
  An Airflow Variable would put a hot, frequently rewritten JSON blob in that DB
  with no compare-and-swap.
- Readable by people and tools (``aws s3 cp ... -``), and testable against the S3
  server the tests already run.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from mlops.alerting.slack import truncate
from mlops.health.config import CheckSpec
from mlops.health.results import SweepReport

log = logging.getLogger(__name__)

DEDUP_PREFIX = "mlops-health"
TRIGGER_PENDING, TRIGGERED, RESOLVE_PENDING = "trigger_pending", "triggered", "resolve_pending"
PENDING, FIRING, RESOLVED = "pending", "firing", "resolved"
_SUMMARY_LIMIT = 1000
_DETAILS_LIMIT = 4000
_DEDUP_LIMIT = 255  # PagerDuty's maximum dedup_key length


def dedup_key(check: str, target: str) -> str:
    """The stable PagerDuty ``dedup_key`` of one check and target (hashed when too long)."""
    key = f"{DEDUP_PREFIX}/{check}/{target}"
    if len(key) <= _DEDUP_LIMIT:
        return key
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return f"{key[: _DEDUP_LIMIT - 17]}#{digest}"


def group_key(group: str) -> str:
    """The ``dedup_key`` of the incident shared by the alerts of ``group``."""
    return dedup_key("group", group)


def _now_iso(now: datetime) -> str:
    return now.astimezone(UTC).isoformat(timespec="seconds")


@dataclass
class AlertRecord:
    """What the state remembers about one check and target that is failing or was alerting."""

    check: str
    target: str
    status: str = PENDING
    consecutive_failures: int = 0
    severity: str = "error"
    pages: bool = True
    summary: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    first_failed_at: str | None = None
    last_failed_at: str | None = None
    fired_at: str | None = None
    resolved_at: str | None = None
    fired_run_id: str | None = None
    pagerduty: str | None = None
    slack: str | None = None
    consecutive_passes: int = 0
    notified_at: str | None = None  # when the channels last heard it fire (for repeat_interval)
    group: str = ""  # alerts of one group share one incident; "" : its own
    inhibits: list[str] = field(default_factory=list)  # checks of its group it mutes while firing

    @property
    def dedup_key(self) -> str:
        return dedup_key(self.check, self.target)

    @property
    def incident_key(self) -> str:
        """The PagerDuty incident this alert belongs to: its group's, or its own."""
        return group_key(self.group) if self.group else self.dedup_key

    @property
    def undelivered(self) -> bool:
        return self.pagerduty in (TRIGGER_PENDING, RESOLVE_PENDING) or self.slack in (
            TRIGGER_PENDING,
            RESOLVE_PENDING,
        )

    def fire(self, now: datetime, run_id: str) -> None:
        self.status, self.fired_at, self.fired_run_id, self.resolved_at = FIRING, _now_iso(now), run_id, None
        channels = ("pagerduty", "slack") if self.pages else ("slack",)
        for channel in channels:
            current = getattr(self, channel)
            # A resolve that never went out means the incident is still open there: keep it.
            setattr(self, channel, TRIGGERED if current in (RESOLVE_PENDING, TRIGGERED) else TRIGGER_PENDING)

    def recover(self, now: datetime) -> None:
        if self.status == FIRING:
            self.resolved_at = _now_iso(now)
        self.status, self.consecutive_failures, self.consecutive_passes = RESOLVED, 0, 0
        for channel in ("pagerduty", "slack"):
            current = getattr(self, channel)
            # A trigger that never went out needs no resolve.
            setattr(self, channel, RESOLVE_PENDING if current in (TRIGGERED, RESOLVE_PENDING) else None)


@dataclass
class Transition:
    """A state change worth telling people about."""

    kind: str  # "fired" | "resolved"
    key: str


@dataclass
class AlertState:
    """Every alert record, keyed by ``check/target``, plus run bookkeeping."""

    alerts: dict[str, AlertRecord] = field(default_factory=dict)
    last_run_id: str | None = None
    last_digest_date: str | None = None
    updated_at: str | None = None
    last_sweep_at: str | None = None  # start of the newest sweep applied
    # Notification channels that are failing: {"slack": {"down_since": iso, "reported": bool}}.
    outages: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Checks that cannot run (a missing permission): told once to Slack. {check: {"summary", "told"}}.
    notices: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> bytes:
        data = {
            "version": 1,
            "last_run_id": self.last_run_id,
            "last_digest_date": self.last_digest_date,
            "updated_at": self.updated_at,
            "last_sweep_at": self.last_sweep_at,
            "outages": self.outages,
            "notices": self.notices,
            "alerts": {k: asdict(v) for k, v in sorted(self.alerts.items())},
        }
        return json.dumps(data, indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> AlertState:
        data = json.loads(raw)
        return cls(
            alerts={k: AlertRecord(**v) for k, v in data.get("alerts", {}).items()},
            last_run_id=data.get("last_run_id"),
            last_digest_date=data.get("last_digest_date"),
            updated_at=data.get("updated_at"),
            last_sweep_at=data.get("last_sweep_at"),
            outages=data.get("outages") or {},
            notices=data.get("notices") or {},
        )

    def firing(self) -> list[AlertRecord]:
        return sorted((a for a in self.alerts.values() if a.status == FIRING), key=lambda a: a.fired_at or "")


def _clip_details(details: dict[str, Any]) -> dict[str, Any]:
    text = json.dumps(details, default=str)
    return details if len(text) <= _DETAILS_LIMIT else {"truncated": text[:_DETAILS_LIMIT]}


def _pass(record: AlertRecord, needed: int, now: datetime, key: str, transitions: list[Transition]) -> None:
    """One passing observation: a firing alert resolves after ``needed`` in a row."""
    if record.status == FIRING:
        record.consecutive_passes += 1
        if record.consecutive_passes < needed:
            return
        record.recover(now)
        transitions.append(Transition("resolved", key))
    elif record.status != RESOLVED:
        record.recover(now)


def schedule_repeats(state: AlertState, now: datetime, repeat_interval_seconds: float) -> list[str]:
    """Mark still-firing alerts last notified ``repeat_interval_seconds`` ago to be notified again."""
    due: list[str] = []
    if repeat_interval_seconds <= 0:
        return due
    for key, alert in state.alerts.items():
        if alert.status != FIRING or not alert.notified_at:
            continue
        if (now - datetime.fromisoformat(alert.notified_at)).total_seconds() < repeat_interval_seconds:
            continue
        for channel in ("pagerduty", "slack"):
            if getattr(alert, channel) == TRIGGERED:
                setattr(alert, channel, TRIGGER_PENDING)
        alert.notified_at = _now_iso(now)
        due.append(key)
    return due


def apply_report(
    state: AlertState,
    report: SweepReport,
    specs: Iterable[CheckSpec],
    run_id: str,
    now: datetime | None = None,
) -> list[Transition]:
    """Advance every alert with one sweep's results; return the transitions it caused.

    Idempotent per ``run_id``: applying the same run twice (a task retry) changes
    nothing, so a retry can never double-count a failure. A sweep that started
    before the newest sweep already applied is stale and changes nothing either.
    """
    now = now or datetime.now(UTC)
    if state.last_run_id == run_id:
        log.info("alert state already includes run %s; only pending deliveries are retried", run_id)
        return []
    if report.started_at and state.last_sweep_at and report.started_at < state.last_sweep_at:
        log.warning(
            "sweep of run %s started %s, before the newest applied sweep (%s): stale, state unchanged",
            run_id,
            report.started_at,
            state.last_sweep_at,
        )
        return []
    by_name = {s.name: s for s in specs}
    transitions: list[Transition] = []
    seen: set[str] = set()
    blocked = {r.check: r.summary for r in report.results if r.details.get("permission_missing")}
    for check, summary in blocked.items():
        state.notices.setdefault(check, {"summary": summary, "told": False})
    for check in [c for c in state.notices if c not in blocked and c in report.completed]:
        del state.notices[check]  # it can run again
    for result in report.results:
        if result.check in blocked:
            continue  # neither healthy nor failing: its targets keep their state
        key = f"{result.check}/{result.target}"
        seen.add(key)
        record = state.alerts.get(key)
        spec = by_name.get(result.check)
        if result.ok:
            if record is not None:
                _pass(record, spec.passes_before_resolve if spec else 1, now, key, transitions)
            continue
        if record is None:
            record = state.alerts[key] = AlertRecord(result.check, result.target)
        if record.status == RESOLVED:
            record.status, record.consecutive_failures = PENDING, 0
        if record.consecutive_failures == 0:
            record.first_failed_at = _now_iso(now)
        record.consecutive_failures += 1
        record.consecutive_passes = 0
        record.last_failed_at = _now_iso(now)
        record.summary = truncate(result.summary, _SUMMARY_LIMIT)
        record.details = _clip_details(result.details)
        record.severity = result.severity or (spec.severity if spec else "error")
        record.pages = spec.pages if spec else True
        record.group = spec.group if spec else ""
        record.inhibits = list(spec.inhibits) if spec else []
        threshold = spec.failures_before_alert if spec else 1
        if record.status == PENDING and record.consecutive_failures >= threshold:
            record.fire(now, run_id)
            record.notified_at = _now_iso(now)
            transitions.append(Transition("fired", key))
    # A target that a completed check no longer reports (or a check no longer configured) is healthy.
    for key, record in state.alerts.items():
        if key in seen or record.status == RESOLVED:
            continue
        spec = by_name.get(record.check)
        if record.check in report.completed or spec is None:
            _pass(record, spec.passes_before_resolve if spec else 1, now, key, transitions)
    prune(state)
    state.last_run_id = run_id
    state.updated_at = _now_iso(now)
    if report.started_at:
        state.last_sweep_at = report.started_at
    return transitions


def prune(state: AlertState) -> None:
    """Forget recovered alerts that have nothing left to deliver."""
    for key in [k for k, a in state.alerts.items() if a.status == RESOLVED and not a.undelivered]:
        del state.alerts[key]


_CLIENTS: dict[tuple[Any, ...], Any] = {}


def s3_client(
    aws_conn_id: str, connect_timeout: float = 10, read_timeout: float = 30, attempts: int = 5
) -> Any:
    """A boto3 S3 client from the Airflow connection, built once per process and connection.

    Building one costs ~0.3 s of CPU (botocore parses its service models); the health
    run and the callbacks talk to S3 several times each.
    """
    import os

    from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    from botocore.config import Config

    env_conn = os.environ.get(f"AIRFLOW_CONN_{aws_conn_id.upper()}", "")
    key = (aws_conn_id, env_conn, connect_timeout, read_timeout, attempts)
    client = _CLIENTS.get(key)
    if client is None:
        config = Config(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"max_attempts": attempts, "mode": "standard"},
        )
        client = _CLIENTS[key] = S3Hook(aws_conn_id=aws_conn_id, config=config).get_conn()
    return client


class StateConflictError(RuntimeError):
    """Another writer changed the alert state since it was read."""


class S3StateStore:
    """The alert state as one JSON object in S3, read and written with compare-and-swap."""

    def __init__(self, bucket: str, key: str, aws_conn_id: str) -> None:
        self.bucket, self.key, self.aws_conn_id = bucket, key, aws_conn_id

    @classmethod
    def from_settings(cls, settings: Any) -> S3StateStore:
        return cls(
            settings.health_state_bucket or settings.artifacts_bucket,
            settings.health_state_key,
            settings.aws_conn_id,
        )

    def _client(self) -> Any:
        return s3_client(self.aws_conn_id)

    def load(self) -> tuple[AlertState, str | None]:
        """The stored state and its ETag; an empty state and ``None`` when nothing is stored yet."""
        client = self._client()
        try:
            obj = client.get_object(Bucket=self.bucket, Key=self.key)
        except client.exceptions.NoSuchKey:
            return AlertState(), None
        return AlertState.from_json(obj["Body"].read()), obj["ETag"]

    def save(self, state: AlertState, etag: str | None) -> str:
        """Write ``state`` only if the object is still at ``etag``; returns the new ETag.

        Raises :class:`StateConflictError` when another writer got there first.
        """
        from botocore.exceptions import ClientError

        condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
        try:
            answer = self._client().put_object(
                Bucket=self.bucket,
                Key=self.key,
                Body=state.to_json(),
                ContentType="application/json",
                **condition,
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in (
                "PreconditionFailed",
                "412",
                "ConditionalRequestConflict",
            ):
                raise StateConflictError(
                    f"s3://{self.bucket}/{self.key} changed since it was read; is another health run writing?"
                ) from exc
            raise
        return answer["ETag"]
