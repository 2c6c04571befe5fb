"""The alert state machine: flap suppression, one trigger per incident, one resolve, retries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from mlops.health.config import CheckSpec
from mlops.health.results import CheckResult, SweepReport
from mlops.health.state import (
    FIRING,
    RESOLVE_PENDING,
    TRIGGER_PENDING,
    TRIGGERED,
    AlertState,
    apply_report,
    dedup_key,
    schedule_repeats,
)

SPECS = [
    CheckSpec("api", "http", failures_before_alert=3, severity="critical", params={"url": "http://api/"}),
    CheckSpec(
        "pods", "kubernetes_pods", failures_before_alert=1, severity="warning", params={"namespace": "ns"}
    ),
]
T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def sweep(*results: tuple[str, str, bool], completed=("api", "pods")) -> SweepReport:
    return SweepReport(
        [CheckResult(c, t, ok, f"{c} {t} {'ok' if ok else 'down'}") for c, t, ok in results],
        list(completed),
        0.1,
    )


class Runs:
    """Applies sweeps as successive runs and delivers everything (as if every channel accepted)."""

    def __init__(self) -> None:
        self.state = AlertState()
        self.n = 0

    def run(self, *results, completed=("api", "pods"), deliver=True) -> list[str]:
        self.n += 1
        transitions = apply_report(
            self.state,
            sweep(*results, completed=completed),
            SPECS,
            f"run-{self.n}",
            T0 + timedelta(minutes=5 * self.n),
        )
        if deliver:
            for alert in self.state.alerts.values():
                for channel in ("pagerduty", "slack"):
                    mark = getattr(alert, channel)
                    setattr(
                        alert,
                        channel,
                        TRIGGERED if mark == TRIGGER_PENDING else None if mark == RESOLVE_PENDING else mark,
                    )
        return [f"{t.kind} {t.key}" for t in transitions]


def test_one_failure_raises_no_alert():
    runs = Runs()
    assert runs.run(("api", "u", False)) == []
    assert runs.state.alerts["api/u"].status == "pending"
    assert runs.state.alerts["api/u"].pagerduty is None and runs.state.alerts["api/u"].slack is None


def test_n_consecutive_failures_fire_exactly_once():
    runs = Runs()
    fired = [runs.run(("api", "u", False)) for _ in range(6)]
    assert fired == [[], [], ["fired api/u"], [], [], []]
    assert runs.state.alerts["api/u"].status == FIRING
    assert runs.state.alerts["api/u"].consecutive_failures == 6


def test_a_success_between_failures_restarts_the_count():
    runs = Runs()
    for ok in (False, False, True, False, False):
        assert runs.run(("api", "u", ok)) == []


def test_recovery_resolves_once_and_forgets_the_alert():
    runs = Runs()
    for _ in range(3):
        runs.run(("api", "u", False))
    assert runs.run(("api", "u", True)) == ["resolved api/u"]
    assert runs.run(("api", "u", True)) == []
    assert runs.state.alerts == {}


def test_a_recovery_before_firing_tells_nobody():
    runs = Runs()
    runs.run(("api", "u", False))
    assert runs.run(("api", "u", True)) == []
    assert runs.state.alerts == {}


def test_severity_decides_the_channels():
    runs = Runs()
    runs.run(("pods", "ns/deployment/a", False), deliver=False)
    alert = runs.state.alerts["pods/ns/deployment/a"]
    assert (alert.severity, alert.pagerduty, alert.slack) == ("warning", None, TRIGGER_PENDING)


def test_the_same_run_applied_twice_counts_once():
    runs = Runs()
    runs.run(("api", "u", False))
    apply_report(runs.state, sweep(("api", "u", False)), SPECS, "run-1")
    assert runs.state.alerts["api/u"].consecutive_failures == 1


def test_an_undelivered_trigger_stays_pending_and_needs_no_resolve():
    runs = Runs()
    for _ in range(3):
        runs.run(("api", "u", False), deliver=False)
    assert runs.state.alerts["api/u"].pagerduty == TRIGGER_PENDING
    runs.run(("api", "u", True), deliver=False)
    assert "api/u" not in runs.state.alerts  # nothing reached PagerDuty, so nothing to resolve


def test_firing_again_before_the_resolve_went_out_keeps_the_incident_open():
    runs = Runs()
    for _ in range(3):
        runs.run(("api", "u", False))
    runs.run(("api", "u", True), deliver=False)
    assert runs.state.alerts["api/u"].pagerduty == RESOLVE_PENDING
    for _ in range(3):
        runs.run(("api", "u", False), deliver=False)
    alert = runs.state.alerts["api/u"]
    assert (alert.status, alert.pagerduty, alert.slack) == (FIRING, TRIGGERED, TRIGGERED)


def test_a_target_a_completed_check_no_longer_reports_is_healthy():
    runs = Runs()
    runs.run(("pods", "ns/deployment/a", False))
    assert runs.run(("pods", "ns/deployment/b", True)) == ["resolved pods/ns/deployment/a"]


def test_targets_keep_their_state_while_their_check_cannot_run():
    runs = Runs()
    runs.run(("pods", "ns/deployment/a", False))
    assert runs.run(("pods", "ns", False), completed=()) == ["fired pods/ns"]
    assert runs.state.alerts["pods/ns/deployment/a"].status == FIRING


def test_alerts_of_a_check_removed_from_the_configuration_resolve():
    runs = Runs()
    runs.run(("gone", "x", False))  # no spec: fires at once
    assert runs.run(("api", "u", True)) == ["resolved gone/x"]


def test_dedup_keys_are_stable_per_check_and_target_and_fit_pagerduty():
    assert dedup_key("api", "http://a/health") == "mlops-health/api/http://a/health"
    long = dedup_key("api", "x" * 400)
    assert len(long) <= 255 and long == dedup_key("api", "x" * 400) != dedup_key("api", "x" * 401)


def test_the_state_survives_a_json_round_trip():
    runs = Runs()
    for _ in range(3):
        runs.run(("api", "u", False))
    again = AlertState.from_json(runs.state.to_json())
    assert again == runs.state


# -- recovery hysteresis, repeats, stale sweeps (issue 15) ---------------------------------------------
def test_recovery_needs_m_consecutive_passes_and_a_failure_in_between_keeps_it_firing():
    """Before: one passing sweep resolved a firing alert, so a flapping target paged again and again."""
    specs = [CheckSpec("api", "http", failures_before_alert=1, passes_before_resolve=3, params={"url": "u"})]
    state = AlertState()
    at = [T0 + timedelta(minutes=5 * n) for n in range(10)]

    def run(n: int, ok: bool) -> list[str]:
        report = SweepReport([CheckResult("api", "u", ok, "x")], ["api"], 0.1, started_at=at[n].isoformat())
        return [f"{t.kind} {t.key}" for t in apply_report(state, report, specs, f"run-{n}", at[n])]

    assert run(0, False) == ["fired api/u"]
    assert run(1, True) == [] and run(2, True) == []
    assert run(3, False) == []  # a failure restarts the count: still the same incident
    assert run(4, True) == [] and run(5, True) == []
    assert run(6, True) == ["resolved api/u"]


def test_a_sweep_older_than_the_newest_applied_one_changes_no_state():
    """Before: clearing an old run re-applied its (older) sweep over newer state."""
    specs = [CheckSpec("api", "http", failures_before_alert=1, params={"url": "u"})]
    state = AlertState()
    newer = SweepReport([CheckResult("api", "u", True, "ok")], ["api"], 0.1, started_at="2025-06-01T12:10:00")
    older = SweepReport(
        [CheckResult("api", "u", False, "down")], ["api"], 0.1, started_at="2025-06-01T12:05:00"
    )
    apply_report(state, newer, specs, "run-new", T0)
    assert apply_report(state, older, specs, "run-old", T0) == []
    assert state.alerts == {} and state.last_run_id == "run-new"


def test_a_still_firing_alert_is_notified_again_after_the_repeat_interval():
    """Before: an alert still firing after days was never re-sent (Alertmanager's repeat_interval)."""
    runs = Runs()
    for _ in range(3):
        runs.run(("api", "u", False))
    alert = runs.state.alerts["api/u"]
    assert (alert.pagerduty, alert.slack) == (TRIGGERED, TRIGGERED)
    fired = datetime.fromisoformat(alert.notified_at)
    assert schedule_repeats(runs.state, fired + timedelta(hours=3), 4 * 3600) == []
    assert schedule_repeats(runs.state, fired + timedelta(hours=4), 4 * 3600) == ["api/u"]
    assert (alert.pagerduty, alert.slack) == (TRIGGER_PENDING, TRIGGER_PENDING)
    assert schedule_repeats(runs.state, fired + timedelta(hours=5), 4 * 3600) == []  # clock restarted
