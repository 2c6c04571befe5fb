"""The verified-backup metrics reach a real Pushgateway, scraped by a real Prometheus that evaluates the
shipped alert rules: ``BackupStale`` fires for a stale database and for no other."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from mlops.backups.tasks import publish_backup_metrics
from tests.conftest import REPO_ROOT
from tests.harness.prometheus import PROMETHEUS, firing_alerts, query_until, running_prometheus
from tests.harness.pushgateway import pushgateway_target

RULES = REPO_ROOT / "helm-values" / "monitoring" / "prometheus-rules.yaml"


def _verified(database: str, age: timedelta) -> dict:
    """What verify_postgres_backup hands to publish_backup_metrics."""
    return {
        "database": database,
        "verified_at": (datetime.now(UTC) - age).isoformat(),
        "size_bytes": 123456,
        "backup_seconds": 12.5,
        "restore_seconds": 3.25,
    }


def _stale(prom: str, databases: set[str]) -> set[str]:
    return {a["labels"]["database"] for a in firing_alerts(prom, "BackupStale")} & databases


@pytest.fixture
def prometheus_with_rules(tmp_path, pushgateway, monkeypatch):
    assert PROMETHEUS, "Debian's prometheus package is needed (make system-deps)"
    monkeypatch.setenv("MLOPS_PUSHGATEWAY_URL", pushgateway)
    with running_prometheus(
        tmp_path, {}, scrape_configs=[pushgateway_target(pushgateway)], rule_files=[RULES]
    ) as url:
        yield url


def test_backup_stale_fires_for_the_stale_database_only_and_resolves_after_a_verified_backup(
    prometheus_with_rules,
):
    prom = prometheus_with_rules
    fresh, stale = f"fresh_{uuid.uuid4().hex[:6]}", f"stale_{uuid.uuid4().hex[:6]}"
    assert publish_backup_metrics(_verified(fresh, timedelta(hours=1)))
    assert publish_backup_metrics(_verified(stale, timedelta(hours=27)))

    series = query_until(
        prom,
        f'mlops_backup_last_verified_timestamp_seconds{{database=~"{fresh}|{stale}"}}',
        lambda result: len(result) == 2,
    )
    assert {s["metric"]["job"] for s in series} == {"mlops_backups"}  # the pushed labels, kept
    sizes = query_until(prom, f'mlops_backup_size_bytes{{database="{fresh}"}}')
    assert float(sizes[0]["value"][1]) == 123456
    assert query_until(prom, f'mlops_backup_duration_seconds{{database="{fresh}"}}')[0]["value"][1] == "12.5"

    _wait(lambda: _stale(prom, {fresh, stale}) == {stale}, "BackupStale to fire for the stale database")
    (alert,) = [a for a in firing_alerts(prom, "BackupStale") if a["labels"]["database"] == stale]
    assert alert["labels"]["severity"] == "error" and stale in alert["annotations"]["summary"]

    # The next verified backup of that database (and only its group) clears it.
    assert publish_backup_metrics(_verified(stale, timedelta(minutes=1)))
    _wait(lambda: _stale(prom, {fresh, stale}) == set(), "BackupStale to resolve")


def _wait(condition, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except Exception:  # noqa: BLE001, S110 - Prometheus still starting
            pass
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")
