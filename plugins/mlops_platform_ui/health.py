"""The Health section: each configured check's state, open incidents and active silences.

Read from what the health DAG itself reads and writes: the checks file
(:func:`mlops.health.config.load_checks`), the alert state in S3
(:class:`mlops.health.state.S3StateStore`) and the silences beside it (:mod:`mlops.health.silences`).
A check with no alert record is ok: the state only remembers checks that failed.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any


def _check_row(spec: Any, records: list[Any]) -> dict[str, Any]:
    firing = [r for r in records if r.status == "firing"]
    failing = [r for r in records if r.status in ("pending", "firing")]
    state = "firing" if firing else "failing" if failing else "ok"
    return {
        "name": spec.name,
        "type": spec.type,
        "severity": spec.severity,
        "description": spec.description,
        "group": spec.group,
        "state": state,
        "failing_since": min((r.first_failed_at for r in failing if r.first_failed_at), default=None),
        "fired_at": min((r.fired_at for r in firing if r.fired_at), default=None),
        "targets": [{"target": r.target, "status": r.status, "summary": r.summary} for r in failing],
    }


def health_state(settings: Any | None = None) -> dict[str, Any]:
    """``checks`` (ok / failing since / firing), ``incidents`` (firing, by incident) and ``silences``."""
    from mlops.health.config import load_checks
    from mlops.health.silences import SilenceStore
    from mlops.health.state import S3StateStore
    from mlops.settings import get_settings
    from mlops_platform_ui import clients

    settings = settings or get_settings()
    checks = load_checks(settings)
    client = clients.s3(settings)
    state_store, silence_store = S3StateStore.from_settings(settings), SilenceStore.from_settings(settings)
    state_store._client = silence_store._client = lambda: client  # the stores' reads, on a kept client
    state, _ = state_store.load()
    silences = [s for s in silence_store.load()[0] if s.active()]
    by_check: dict[str, list[Any]] = {}
    for record in state.alerts.values():
        by_check.setdefault(record.check, []).append(record)
    incidents: dict[str, dict[str, Any]] = {}
    for record in state.firing():
        incident = incidents.setdefault(
            record.incident_key,
            {"key": record.incident_key, "severity": record.severity, "since": record.fired_at, "alerts": []},
        )
        incident["alerts"].append(f"{record.check} on {record.target}")
        incident["since"] = min(filter(None, (incident["since"], record.fired_at)), default=None)
    return {
        "checks": [_check_row(spec, by_check.get(spec.name, [])) for spec in checks],
        "incidents": sorted(incidents.values(), key=lambda i: i["since"] or ""),
        "silences": [asdict(s) for s in silences],
        "last_run_id": state.last_run_id,
        "updated_at": state.updated_at,
    }
