"""The gates' rules: Prometheus "no data", prediction parity with the trainer, and the failure limit."""

from __future__ import annotations

import json

import pytest

from mlops.promotion import gates
from mlops.samples import samples_document
from mlops.settings import get_settings

LIMITS = gates.Gates(max_error_rate=0.01, max_p95_seconds=0.25)
QUERIES = gates.PrometheusGate("http://prom:9090", window="1m").queries("digits", "v8")


def test_a_prometheus_query_without_data_fails_the_gate_and_names_the_query():
    check = gates.evaluate_prometheus({"error_rate": None, "p95_seconds": 0.01}, LIMITS, QUERIES)
    assert not check.ok
    assert "error_rate: no data" in check.detail and QUERIES["error_rate"] in check.detail
    assert QUERIES["p95_seconds"] not in check.detail  # the query that answered is not blamed


def test_no_data_passes_only_when_the_gate_is_configured_to_allow_it():
    allowing = gates.Gates(allow_no_metrics=True)
    check = gates.evaluate_prometheus({"error_rate": None, "p95_seconds": None}, allowing, QUERIES)
    assert check.ok and "error_rate no data (allowed)" in check.detail
    # Allowing "no data" never excuses a breach that the data does show.
    breach = gates.evaluate_prometheus({"error_rate": None, "p95_seconds": 0.4}, allowing, QUERIES)
    assert not breach.ok and "p95 latency 0.400 s > 0.250 s" in breach.detail


def test_the_new_gate_settings_come_from_the_environment(monkeypatch):
    assert get_settings().promotion_allow_no_metrics is False
    monkeypatch.setenv("MLOPS_PROMOTION_ALLOW_NO_METRICS", "true")
    monkeypatch.setenv("MLOPS_PROMOTION_ANALYSIS_FAILURE_LIMIT", "5")
    monkeypatch.setenv("MLOPS_PROMOTION_METRICS_WAIT_SECONDS", "12")
    limits = gates.Gates.from_settings()
    assert limits.allow_no_metrics is True and limits.failure_limit == 5 and limits.metrics_wait_seconds == 12
    monkeypatch.setenv("MLOPS_PROMOTION_ANALYSIS_FAILURE_LIMIT", "0")
    with pytest.raises(ValueError, match="failure_limit must be at least 1"):
        gates.Gates.from_settings()


def test_samples_carry_the_trainers_predictions_when_every_entry_has_one():
    doc = samples_document([[0.0] * 64, [1.0] * 64], [3, 4], [3, 5])
    samples = gates.Samples.parse(json.loads(json.dumps(doc)))
    assert samples.predicted == [3, 5] and samples.labels == [3, 4]
    assert gates.Samples.parse(samples_document([[0.0] * 64], [1])).predicted is None
    doc["samples"][1].pop("predicted")
    with pytest.raises(ValueError, match=r'samples\[1\] has no "predicted"'):
        gates.Samples.parse(doc)


def test_parity_fails_naming_how_many_predictions_differ_and_the_first_indices():
    trainer = [i % 10 for i in range(500)]
    served = list(trainer)
    for i in (3, 17, 260, 261, 262, 263, 499):
        served[i] = (served[i] + 1) % 10
    check = gates.parity_check(served, trainer)
    assert not check.ok
    assert check.detail == (
        "7 of 500 served predictions differ from the trainer's; first at indices 3, 17, 260, 261, 262"
    )
    same = gates.parity_check(trainer, trainer)
    assert same.ok and same.detail == "500 of 500 served predictions match the trainer's"


def test_requests_cover_every_sample_in_chunks_under_the_row_and_byte_limits():
    rows = [[0.123456] * 64 for _ in range(1000)]
    one_row = len(json.dumps(rows[0]))
    chunks = list(gates.request_chunks(rows, max_rows=256, max_bytes=100 * one_row))
    assert [i for start, end in chunks for i in range(start, end)] == list(range(1000))
    assert all(0 < end - start <= 99 for start, end in chunks)  # the byte limit binds first here
    assert list(gates.request_chunks(rows[:10], max_rows=4, max_bytes=10**9)) == [(0, 4), (4, 8), (8, 10)]
    # A row larger than the budget still goes, alone: the server is the one to refuse it.
    assert list(gates.request_chunks(rows[:2], max_rows=4, max_bytes=1)) == [(0, 1), (1, 2)]


def ok(name: str = "ready") -> gates.Check:
    return gates.Check(name, True, "fine")


def bad(name: str = "ready", detail: str = "/ready answered 503") -> gates.Check:
    return gates.Check(name, False, detail)


def test_one_flaky_round_under_the_failure_limit_does_not_fail_the_analysis():
    rounds = gates.RoundHistory(limit=3)
    for checks in ([ok()], [bad()], [bad()], [ok()], [ok()]):
        rounds.record(checks)
    assert not rounds.failed and rounds.streak == []
    assert rounds.summary() == (
        "2 failed rounds under the failure limit 3: round 2, round 3 (last: ready: /ready answered 503)"
    )


def test_limit_consecutive_failed_rounds_fail_the_analysis_listing_the_rounds():
    rounds = gates.RoundHistory(limit=3)
    for checks in ([ok()], [bad()], [ok()], [bad(), ok("version")], [bad("smoke", "x")], [bad()]):
        rounds.record(checks)
    assert rounds.failed and [r for r, _ in rounds.streak] == [4, 5, 6]
    verdicts = rounds.verdicts()
    assert [c.name for c in verdicts] == ["ready", "smoke"] and not any(c.ok for c in verdicts)
    assert verdicts[0].detail == (
        "failed in rounds 4, 6 of 3 consecutive failed rounds 4-6 (failure limit 3); "
        "last: /ready answered 503"
    )


def test_a_failure_limit_of_one_fails_at_the_first_failed_round():
    rounds = gates.RoundHistory(limit=1)
    rounds.record([bad()])
    assert rounds.failed and [r for r, _ in rounds.streak] == [1]
