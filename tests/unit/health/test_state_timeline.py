"""What the alert state remembers about WHEN: failing since, last failure, fired and resolved times."""

from __future__ import annotations

from datetime import timedelta

from mlops.health.state import FIRING, PENDING, RESOLVED, AlertState, apply_report
from tests.unit.health.test_state import SPECS, T0, Runs, sweep


def iso(minutes: int) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat()


def test_failing_since_is_the_first_failure_of_the_streak_and_survives_every_later_failure():
    runs = Runs()  # run n happens at T0 + 5n minutes; "api" fires after 3 failures
    for _ in range(5):
        runs.run(("api", "u", False))
        record = runs.state.alerts["api/u"]
        assert record.first_failed_at == iso(5), "failing-since moved on a later failure"
    assert record.last_failed_at == iso(25)
    assert record.fired_at == iso(15) and record.fired_run_id == "run-3"
    assert record.consecutive_failures == 5


def test_a_new_streak_after_a_pass_starts_a_new_failing_since():
    runs = Runs()
    runs.run(("api", "u", False))
    runs.run(("api", "u", True))
    runs.run(("api", "u", False))
    assert runs.state.alerts["api/u"].first_failed_at == iso(15)


def test_a_resolved_alert_that_fails_again_restarts_its_count_and_its_failing_since():
    runs = Runs()
    for _ in range(3):
        runs.run(("api", "u", False))
    state = runs.state
    record = state.alerts["api/u"]
    record.pagerduty = "resolve_pending"  # keep it in the state after the recovery (an undelivered resolve)
    runs.run(("api", "u", True), deliver=False)
    assert record.status == RESOLVED and record.resolved_at == iso(20)
    runs.run(("api", "u", False), deliver=False)
    assert record.status == PENDING and record.consecutive_failures == 1
    assert record.first_failed_at == iso(25) and record.consecutive_passes == 0


def test_a_warning_fires_on_slack_only_and_records_its_run():
    state = AlertState()
    apply_report(state, sweep(("pods", "p", False)), SPECS, "r1", T0)
    record = state.alerts["pods/p"]
    assert record.status == FIRING and record.severity == "warning" and record.summary == "pods p down"
    assert record.pages is False and (record.pagerduty, record.slack) == (None, "trigger_pending")
    assert record.group == "" and record.inhibits == [] and record.notified_at == T0.isoformat()
    assert state.last_run_id == "r1" and state.updated_at == T0.isoformat()
