"""What one alert record and the stored state hold: unknown checks, blocked checks, stored JSON, repeats."""

from __future__ import annotations

import json
from datetime import timedelta

from mlops.health.results import CheckResult, SweepReport
from mlops.health.state import (
    FIRING,
    TRIGGER_PENDING,
    TRIGGERED,
    AlertRecord,
    AlertState,
    apply_report,
    dedup_key,
    group_key,
    schedule_repeats,
)
from tests.unit.health.test_state import SPECS, T0, sweep


def report(*results: CheckResult, completed=("api", "pods"), started_at=None) -> SweepReport:
    return SweepReport(list(results), list(completed), 0.1, started_at)


def test_a_check_missing_from_the_configuration_alerts_at_once_as_a_paging_error():
    state = AlertState()
    apply_report(state, report(CheckResult("gone", "t", False, "gone t down")), SPECS, "r1", T0)
    record = state.alerts["gone/t"]
    assert (record.status, record.severity, record.pages, record.group, record.inhibits) == (
        FIRING,
        "error",
        True,
        "",
        [],
    )
    assert (record.pagerduty, record.slack) == (TRIGGER_PENDING, TRIGGER_PENDING)
    record.pagerduty = record.slack = TRIGGERED
    apply_report(state, report(CheckResult("gone", "t", True, "ok")), SPECS, "r2", T0 + timedelta(minutes=5))
    assert record.status == "resolved"  # one pass resolves a check without a spec


def test_a_results_own_severity_overrides_the_checks():
    state = AlertState()
    result = CheckResult("pods", "p", False, "down", severity="critical")
    apply_report(state, report(result), SPECS, "r1", T0)
    assert state.alerts["pods/p"].severity == "critical"


def test_a_check_that_cannot_run_is_noted_once_and_forgotten_when_it_runs_again():
    blocked = CheckResult("pods", "ns", False, "forbidden: list pods", details={"permission_missing": True})
    state = AlertState()
    apply_report(state, report(blocked), SPECS, "r1", T0)
    assert state.notices == {"pods": {"summary": "forbidden: list pods", "told": False}}
    assert "pods/ns" not in state.alerts  # neither healthy nor failing
    state.notices["pods"]["told"] = True
    apply_report(state, report(blocked), SPECS, "r2", T0 + timedelta(minutes=5))
    assert state.notices == {"pods": {"summary": "forbidden: list pods", "told": True}}  # not told twice
    apply_report(state, report(completed=("api",)), SPECS, "r3", T0 + timedelta(minutes=10))
    assert "pods" in state.notices  # it did not run to completion: still unknown
    apply_report(
        state, report(CheckResult("pods", "ns", True, "ok")), SPECS, "r4", T0 + timedelta(minutes=15)
    )
    assert state.notices == {}


def test_details_are_kept_up_to_the_limit_and_truncated_beyond_it():
    state = AlertState()
    exact = {"k": "x" * (4000 - len('{"k": ""}'))}
    apply_report(state, report(CheckResult("pods", "a", False, "s", details=exact)), SPECS, "r1", T0)
    assert state.alerts["pods/a"].details == exact
    over = {"k": "y" * 4000}
    apply_report(
        state,
        report(CheckResult("pods", "a", False, "s", details=over)),
        SPECS,
        "r2",
        T0 + timedelta(minutes=1),
    )
    assert state.alerts["pods/a"].details == {"truncated": json.dumps(over)[:4000]}


def test_a_sweep_started_at_the_same_instant_as_the_newest_is_not_stale():
    state = AlertState()
    at = T0.isoformat()
    apply_report(state, sweep(("api", "u", False)), SPECS, "r1", T0)
    state.last_sweep_at = at
    apply_report(state, report(CheckResult("api", "u", False, "down"), started_at=at), SPECS, "r2", T0)
    assert state.alerts["api/u"].consecutive_failures == 2 and state.last_run_id == "r2"
    assert state.last_sweep_at == at


def test_the_stored_document_keeps_every_field_and_reads_back_equal():
    state = AlertState(
        alerts={"api/u": AlertRecord("api", "u", status=FIRING, fired_at="2025-06-01T12:00:00+00:00")},
        last_run_id="r9",
        last_digest_date="2025-06-01",
        updated_at="2025-06-01T12:05:00+00:00",
        last_sweep_at="2025-06-01T12:04:00+00:00",
        outages={"slack": {"down_since": "2025-06-01T11:00:00+00:00", "reported": True}},
        notices={"pods": {"summary": "forbidden", "told": True}},
    )
    raw = state.to_json()
    doc = json.loads(raw)
    assert doc["version"] == 1 and list(doc) == sorted(doc)
    assert {k: doc[k] for k in ("last_digest_date", "last_sweep_at", "outages", "notices")} == {
        "last_digest_date": "2025-06-01",
        "last_sweep_at": "2025-06-01T12:04:00+00:00",
        "outages": {"slack": {"down_since": "2025-06-01T11:00:00+00:00", "reported": True}},
        "notices": {"pods": {"summary": "forbidden", "told": True}},
    }
    assert AlertState.from_json(raw) == state


def test_a_document_from_an_older_version_without_the_newer_fields_reads_as_empty():
    old = AlertState.from_json(b'{"version": 1, "last_run_id": "r1", "outages": null}')
    assert old == AlertState(last_run_id="r1")
    assert old.alerts == {} and old.outages == {} and old.notices == {}


def test_firing_alerts_are_listed_oldest_first():
    state = AlertState(
        alerts={
            "b/1": AlertRecord("b", "1", status=FIRING, fired_at="2025-06-01T12:10:00+00:00"),
            "a/1": AlertRecord("a", "1", status=FIRING, fired_at="2025-06-01T12:00:00+00:00"),
            "c/1": AlertRecord("c", "1"),
        }
    )
    assert [a.dedup_key for a in state.firing()] == [dedup_key("a", "1"), dedup_key("b", "1")]


def test_a_group_has_one_incident_key_and_a_long_key_is_hashed_to_pagerdutys_limit():
    assert group_key("api") == "mlops-health/group/api"
    assert AlertRecord("x", "t", group="api").incident_key == "mlops-health/group/api"
    assert AlertRecord("x", "t").incident_key == "mlops-health/x/t"
    long = dedup_key("http", "u" * 300)
    assert len(long) == 255 and long.startswith("mlops-health/http/uuu") and long[238] == "#"
    assert dedup_key("http", "u" * 300) == long and dedup_key("http", "v" * 300) != long


def test_repeats_are_due_at_the_interval_not_before_and_never_for_an_alert_never_notified():
    state = AlertState(
        alerts={
            "a/1": AlertRecord("a", "1", status=FIRING, slack=TRIGGERED, notified_at=T0.isoformat()),
            "b/1": AlertRecord("b", "1", status=FIRING, slack=TRIGGERED, notified_at=None),
        }
    )
    assert schedule_repeats(state, T0 + timedelta(seconds=0.5), 1) == []
    assert schedule_repeats(state, T0 + timedelta(seconds=1), 1) == ["a/1"]
    assert state.alerts["a/1"].slack == TRIGGER_PENDING and state.alerts["b/1"].slack == TRIGGERED
    assert state.alerts["a/1"].notified_at == (T0 + timedelta(seconds=1)).isoformat()
    assert schedule_repeats(state, T0 + timedelta(days=1), 0) == []  # 0: repeats off
