"""The pure rules of a promotion: rollout completeness, leases, gates and the request."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from mlops.promotion import bluegreen, gates
from mlops.promotion import lease as lease_module
from mlops.promotion.params import candidate_from_events, other_candidates, promotion_params
from mlops.samples import samples_document


def deployment(generation=2, observed=2, desired=2, updated=2, ready=2, available=2, total=2, conditions=()):
    return {
        "metadata": {"generation": generation},
        "spec": {"replicas": desired, "progressDeadlineSeconds": 60},
        "status": {
            "observedGeneration": observed,
            "replicas": total,
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "availableReplicas": available,
            "conditions": list(conditions),
        },
    }


def test_a_rollout_is_complete_only_when_every_count_matches_the_observed_spec():
    assert bluegreen.rollout_status(deployment())[0] == "complete"
    assert bluegreen.rollout_status(deployment(ready=1))[0] == "progressing"
    assert bluegreen.rollout_status(deployment(available=1))[0] == "progressing"
    assert bluegreen.rollout_status(deployment(updated=1))[0] == "progressing"
    assert bluegreen.rollout_status(deployment(total=3))[0] == "progressing"  # an old pod is still there


def test_every_count_at_one_of_three_desired_is_progressing():
    state, why = bluegreen.rollout_status(deployment(desired=3, updated=1, ready=1, available=1, total=1))
    assert state == "progressing" and "desired 3, updated 1, ready 1, available 1, total 1" in why


def test_a_color_at_zero_desired_replicas_is_never_a_complete_rollout():
    # Before: 0 desired = 0 updated = 0 ready = 0 available counted as complete, and the switch sent
    # production traffic to a color without pods (503).
    at_zero = deployment(desired=0, updated=0, ready=0, available=0, total=0)
    state, why = bluegreen.rollout_status(at_zero)
    assert state == "progressing" and "desired 0 replicas" in why


def test_zero_available_replicas_is_never_complete_even_if_the_other_counts_match():
    assert bluegreen.rollout_status(deployment(desired=2, available=0))[0] == "progressing"


def test_a_stale_status_is_never_complete_even_when_its_counts_match():
    state, why = bluegreen.rollout_status(deployment(generation=3, observed=2))
    assert state == "progressing" and "observedGeneration 2 < generation 3" in why


def test_progress_deadline_exceeded_fails_the_rollout_but_only_for_the_observed_spec():
    deadline = {
        "type": "Progressing",
        "status": "False",
        "reason": "ProgressDeadlineExceeded",
        "message": 'ReplicaSet "m-green-1" has timed out progressing.',
    }
    state, why = bluegreen.rollout_status(deployment(ready=0, available=0, conditions=[deadline]))
    assert state == "failed" and "progress deadline (60 s) exceeded" in why
    assert (
        bluegreen.rollout_status(deployment(generation=3, observed=2, conditions=[deadline]))[0]
        == "progressing"
    )


def test_the_idle_color_is_the_other_one_and_blue_on_a_first_deployment():
    assert bluegreen.other_color("blue") == "green"
    assert bluegreen.other_color("green") == "blue"
    assert bluegreen.other_color(None) == "blue"


def lease(holder: str | None, renewed: datetime, seconds: int = 60, preempted: list | None = None) -> dict:
    annotations = {lease_module.PREEMPTED: json.dumps(preempted)} if preempted else {}
    return {
        "metadata": {"annotations": annotations},
        "spec": {
            "holderIdentity": holder,
            "renewTime": renewed.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "leaseDurationSeconds": seconds,
        },
    }


def test_a_lease_is_live_until_renew_time_plus_its_duration():
    now = datetime.now(UTC)
    assert lease_module.is_live(lease("a", now - timedelta(seconds=30), 60))
    assert not lease_module.is_live(lease("a", now - timedelta(seconds=61), 60))
    assert not lease_module.is_live(lease(None, now, 60))  # released
    assert not lease_module.is_live(None)
    assert lease_module.expires_at(lease("a", now, 60)) == now + timedelta(seconds=60)


def test_a_preempted_holder_is_recorded_with_who_preempted_it():
    record = {"holder": "run-a", "by": "rollback-1", "at": "2026-01-01T00:00:00.000000Z"}
    assert lease_module.preempted_records(lease("rollback-1", datetime.now(UTC), preempted=[record])) == [
        record
    ]
    assert lease_module.preempted_records(lease("a", datetime.now(UTC))) == []


def test_the_active_color_is_read_from_the_selector_and_none_means_never_switched():
    assert bluegreen.service_color({"spec": {"selector": {"color": "green"}}}) == "green"
    assert bluegreen.service_color({"spec": {"selector": {"color": "none"}}}) is None
    assert bluegreen.service_color(None) is None


GATES = gates.Gates(min_accuracy=0.85, accuracy_tolerance=0.02)


@pytest.mark.parametrize(
    ("candidate", "production", "ok", "detail"),
    [
        (0.95, None, True, "no production yet"),
        (0.95, 0.96, True, "production 0.9600"),
        (0.85, None, True, ">= 0.8500"),
        (0.84, None, False, "accuracy 0.8400 < minimum 0.8500"),
        (0.90, 0.95, False, "worse than production's 0.9500 by more than 0.0200"),
        (None, 0.95, False, "no accuracy"),
    ],
)
def test_quality_gate_needs_the_minimum_and_at_most_the_tolerance_below_production(
    candidate, production, ok, detail
):
    check = gates.quality_gate(candidate, production, GATES)
    assert check.ok is ok and detail in check.detail


def test_prometheus_gate_fails_on_error_rate_or_p95_and_on_a_window_without_traffic():
    limits = gates.Gates(max_error_rate=0.01, max_p95_seconds=0.25)
    assert gates.evaluate_prometheus({"error_rate": 0.0, "p95_seconds": 0.01}, limits).ok
    bad = gates.evaluate_prometheus({"error_rate": 0.05, "p95_seconds": 0.4}, limits)
    assert (
        not bad.ok
        and "error rate 0.0500 > 0.0100" in bad.detail
        and "p95 latency 0.400 s > 0.250 s" in bad.detail
    )
    empty = gates.evaluate_prometheus({"error_rate": None, "p95_seconds": None}, limits)
    assert not empty.ok and "error_rate: no data" in empty.detail and "p95_seconds: no data" in empty.detail


def test_prometheus_queries_select_the_candidate_version():
    queries = gates.PrometheusGate("http://prom:9090", window="2m").queries("digits", "v2")
    assert (
        'mlops_model_requests_total{model="digits",version="v2",status=~"5.."}[2m]' in queries["error_rate"]
    )
    assert queries["p95_seconds"].startswith("histogram_quantile(0.95, sum by (le)")


def test_samples_json_must_pair_inputs_with_labels():
    samples = gates.Samples.parse(samples_document([[0.0] * 64, [1.0] * 64], [3, 4]))
    assert samples.labels == [3, 4] and len(samples.inputs[0]) == 64
    with pytest.raises(ValueError, match="same length"):
        samples_document([[0.0] * 64], [1, 2])
    with pytest.raises(ValueError, match=r'samples\[0\] needs an "input" list'):
        gates.Samples.parse({"samples": [{"label": 1}]})


def test_a_failed_gate_names_every_failed_check():
    report = gates.AnalysisReport(
        "pre-promotion",
        [gates.Check("ready", True, "200"), gates.Check("smoke", False, "answered 500")],
    )
    with pytest.raises(gates.GateFailed, match="pre-promotion analysis failed: smoke: answered 500"):
        report.raise_if_failed()


def test_an_asset_triggered_run_takes_model_and_version_from_the_newest_event():
    events = {
        "model_candidates": [
            SimpleNamespace(extra={"model": "digits", "version": "v1"}),
            SimpleNamespace(extra={"model": "digits", "version": "v2"}),
        ]
    }
    assert candidate_from_events(events) == {"model": "digits", "version": "v2"}
    assert candidate_from_events(None) == {}


def test_candidates_of_other_models_in_the_same_batch_get_runs_of_their_own():
    def event(model: str, version: str, at: str) -> SimpleNamespace:
        return SimpleNamespace(extra={"model": model, "version": version}, timestamp=at)

    events = {
        "model_candidates": [
            event("fraud", "v1", "2026-11-27T10:00:01"),
            event("digits", "v1", "2026-11-27T10:00:02"),
            event("fraud", "v2", "2026-11-27T10:00:03"),
            event("churn", "v7", "2026-11-27T10:00:04"),
        ]
    }
    assert candidate_from_events(events) == {"model": "churn", "version": "v7"}
    # fraud v1 is superseded by fraud v2; nothing else is dropped.
    assert other_candidates(events) == [
        {"model": "digits", "version": "v1"},
        {"model": "fraud", "version": "v2"},
    ]
    assert other_candidates(None) == []


def test_a_candidate_registered_with_promote_false_is_never_promoted_by_its_asset_event():
    from airflow.sdk.exceptions import AirflowSkipException

    from mlops.promotion.params import resolve_request

    def event(model: str, version: str, at: str, promote: bool | None) -> SimpleNamespace:
        extra = {"model": model, "version": version}
        if promote is not None:
            extra["promote"] = promote
        return SimpleNamespace(extra=extra, timestamp=at)

    events = {
        "model_candidates": [
            event("digits", "v1", "2026-11-27T10:00:01", True),
            event("digits", "v2", "2026-11-27T10:00:02", False),  # a manual run: not asked to promote
            event("fraud", "v3", "2026-11-27T10:00:03", False),
        ]
    }
    # The newest candidate that asked to be promoted; fraud's only candidate did not.
    assert candidate_from_events(events)["version"] == "v1"
    assert other_candidates(events) == []
    # Candidates from before the field existed still promote.
    assert candidate_from_events({"c": [event("churn", "v9", "t", None)]})["version"] == "v9"
    only_manual = {"model_candidates": [event("digits", "v2", "2026-11-27T10:00:02", False)]}
    with pytest.raises(AirflowSkipException, match="promote=false"):
        resolve_request({}, only_manual, "mlops_promotion", "asset_triggered__x")


def test_the_trigger_form_offers_every_documented_option():
    params = promotion_params()
    assert set(params) == {
        "model",
        "version",
        "auto_promote",
        "analysis_duration_seconds",
        "scale_down_delay_seconds",
        "dry_run",
    }  # rollback has its own DAG, mlops_rollback
    assert params["scale_down_delay_seconds"].value == 30 and params["auto_promote"].value is True
