"""The gates' whole verdicts: the check name, pass/fail at the boundaries, and the detail users read."""

from __future__ import annotations

import math

import pytest

from mlops.promotion import gates
from mlops.promotion.gates import Check, Gates

LIMITS = Gates(min_accuracy=0.85, accuracy_tolerance=0.02, max_error_rate=0.01, max_p95_seconds=0.25)


@pytest.mark.parametrize(
    ("served", "labels", "minimum", "verdict"),
    [
        (
            [1, 2, 3, 4],
            [1, 2, 3, 4],
            0.75,
            Check("smoke", True, "4 held-out samples, served accuracy 1.000 (>= 0.750)", 1.0),
        ),
        (
            [1, 2, 3, 0],
            [1, 2, 3, 4],
            0.75,
            Check("smoke", True, "4 held-out samples, served accuracy 0.750 (>= 0.750)", 0.75),
        ),
        (
            [1, 2, 0, 0],
            [1, 2, 3, 4],
            0.75,
            Check("smoke", False, "4 held-out samples, served accuracy 0.500 (< 0.750)", 0.5),
        ),
    ],
)
def test_smoke_passes_at_the_minimum_and_fails_below_it(served, labels, minimum, verdict):
    assert gates.smoke_check(served, labels, minimum) == verdict


def test_parity_names_the_count_and_the_first_differing_indices():
    assert gates.parity_check([1, 2, 3], [1, 2, 3]) == Check(
        "parity", True, "3 of 3 served predictions match the trainer's"
    )
    assert gates.parity_check([0, 2, 0], [1, 2, 3]) == Check(
        "parity", False, "2 of 3 served predictions differ from the trainer's; first at indices 0, 2"
    )
    many = gates.parity_check([0] * 30, [1] * 30)
    shown = ", ".join(str(i) for i in range(gates.PARITY_INDICES_SHOWN))
    assert many.detail == f"30 of 30 served predictions differ from the trainer's; first at indices {shown}"


@pytest.mark.parametrize(
    ("candidate", "production", "verdict"),
    [
        (0.85, None, Check("quality", True, "accuracy 0.8500 >= 0.8500, no production yet")),
        (0.93, 0.95, Check("quality", True, "accuracy 0.9300 >= 0.8500, production 0.9500")),
        (
            0.92,
            0.95,
            Check(
                "quality",
                False,
                "accuracy 0.9200 is worse than production's 0.9500 by more than 0.0200",
            ),
        ),
        (
            0.80,
            0.95,
            Check(
                "quality",
                False,
                "accuracy 0.8000 < minimum 0.8500; accuracy 0.8000 is worse than production's 0.9500 by more "
                "than 0.0200",
            ),
        ),
        (math.nan, None, Check("quality", False, "the candidate has no accuracy in its metrics")),
        (None, None, Check("quality", False, "the candidate has no accuracy in its metrics")),
    ],
)
def test_the_quality_gate_verdict(candidate, production, verdict):
    assert gates.quality_gate(candidate, production, LIMITS) == verdict


@pytest.mark.parametrize(
    ("values", "verdict"),
    [
        (
            {"error_rate": 0.01, "p95_seconds": 0.25},
            Check("prometheus", True, "error_rate 0.0100, p95_seconds 0.2500"),
        ),
        (
            {"error_rate": 0.0101, "p95_seconds": 0.2501},
            Check("prometheus", False, "error rate 0.0101 > 0.0100; p95 latency 0.250 s > 0.250 s"),
        ),
        ({"error_rate": None, "p95_seconds": 0.1}, Check("prometheus", False, "error_rate: no data")),
    ],
)
def test_the_prometheus_verdict_at_its_limits(values, verdict):
    assert gates.evaluate_prometheus(values, LIMITS) == verdict


def test_allowed_missing_metrics_are_shown_as_allowed():
    allowing = Gates(allow_no_metrics=True)
    assert gates.evaluate_prometheus({"error_rate": None, "p95_seconds": 0.1}, allowing) == Check(
        "prometheus", True, "error_rate no data (allowed), p95_seconds 0.1000"
    )


def test_the_queries_select_the_version_over_the_window():
    queries = gates.PrometheusGate("http://prom", window="2m").queries("digits", "v8")
    sel = 'model="digits",version="v8"'
    assert queries == {
        "error_rate": f'(sum(rate(mlops_model_requests_total{{{sel},status=~"5.."}}[2m])) or vector(0)) / '
        f"sum(rate(mlops_model_requests_total{{{sel}}}[2m]))",
        "p95_seconds": "histogram_quantile(0.95, sum by (le) "
        f"(rate(mlops_model_request_duration_seconds_bucket{{{sel}}}[2m])))",
    }


def test_a_failed_analysis_names_only_the_failed_checks_and_reports_every_one():
    checks = [Check("ready", True, "fine"), Check("smoke", False, "0.5"), Check("parity", False, "2 differ")]
    report = gates.AnalysisReport("post-promotion", checks, seconds=1.23456, rounds=2)
    assert report.as_dict() == {
        "stage": "post-promotion",
        "ok": False,
        "seconds": 1.235,
        "rounds": 2,
        "checks": [
            {"name": "ready", "ok": True, "detail": "fine", "value": None},
            {"name": "smoke", "ok": False, "detail": "0.5", "value": None},
            {"name": "parity", "ok": False, "detail": "2 differ", "value": None},
        ],
    }
    with pytest.raises(gates.GateFailed) as failed:
        report.raise_if_failed()
    assert str(failed.value) == "post-promotion analysis failed: smoke: 0.5; parity: 2 differ"
    assert failed.value.checks == checks
    passing = gates.AnalysisReport("pre-promotion", [checks[0]])
    assert passing.raise_if_failed() is passing and passing.as_dict()["ok"] is True


def test_a_failure_limit_below_one_is_refused():
    with pytest.raises(ValueError, match="failure_limit must be at least 1, got 0"):
        Gates(failure_limit=0)
    assert Gates(failure_limit=1).failure_limit == 1


def test_the_gate_limits_come_from_the_settings(monkeypatch):
    for name, value in {
        "MIN_ACCURACY": "0.7",
        "ACCURACY_TOLERANCE": "0.05",
        "SMOKE_TOLERANCE": "0.2",
        "MAX_ERROR_RATE": "0.03",
        "MAX_P95_SECONDS": "0.5",
        "METRICS_WAIT_SECONDS": "7",
    }.items():
        monkeypatch.setenv(f"MLOPS_PROMOTION_{name}", value)
    assert Gates.from_settings() == Gates(
        min_accuracy=0.7,
        accuracy_tolerance=0.05,
        smoke_tolerance=0.2,
        max_error_rate=0.03,
        max_p95_seconds=0.5,
        allow_no_metrics=False,
        metrics_wait_seconds=7,
        failure_limit=3,
    )


def test_a_single_tolerated_round_is_named_in_the_singular():
    rounds = gates.RoundHistory(limit=3)
    rounds.record([Check("ready", True, "")])
    assert rounds.summary() == "no failed round"
    rounds.record([Check("ready", False, "503"), Check("smoke", False, "0.1")])
    assert (
        rounds.summary() == "1 failed round under the failure limit 3: round 2 (last: ready: 503; smoke: 0.1)"
    )


def test_a_server_answer_that_is_not_json_is_kept_as_text():
    assert gates._parse(b'{"a": 1}') == {"a": 1}
    assert gates._parse(b"plain \xff") == "plain \ufffd"
    assert gates._parse("[1]") == [1]
    assert gates._parse(None) is None


def test_a_partial_answer_is_never_judged_as_if_complete():
    """Served and expected lists of different lengths are an error, not a score over the overlap."""
    with pytest.raises(ValueError, match="zip"):
        gates.smoke_check([1, 2], [1, 2, 3], 0.5)
    with pytest.raises(ValueError, match="zip"):
        gates.parity_check([1, 2, 3], [1, 2])


def test_a_candidate_exactly_the_tolerance_below_production_passes():
    limits = Gates(min_accuracy=0.25, accuracy_tolerance=0.25)
    assert gates.quality_gate(0.5, 0.75, limits).ok  # 0.75 - 0.25 == 0.5 exactly in binary
    assert not gates.quality_gate(0.4375, 0.75, limits).ok
