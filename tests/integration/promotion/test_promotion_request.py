"""The promotion run's request (model, version, options) resolved against the registry on moto S3,
and the trigger form as users see it."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from mlops.promotion.params import promotion_params, resolve_request, resolve_rollback
from mlops.registry import ModelRegistry, VersionNotFoundError
from tests.unit.serving.digits_artifacts import register_version


@pytest.fixture
def registry(s3_conn, s3_client, s3_bucket, monkeypatch) -> ModelRegistry:
    monkeypatch.setenv("MLOPS_ARTIFACTS_BUCKET", s3_bucket)
    register_version(s3_client, s3_bucket, "digits", "v1", reported_accuracy=0.91)
    register_version(s3_client, s3_bucket, "digits", "v2", reported_accuracy=0.95)
    return ModelRegistry(s3_client, s3_bucket)


def event(model: str, version: str, at: str) -> SimpleNamespace:
    """An asset event as the scheduler hands it to the run (``extra`` and ``timestamp``)."""
    return SimpleNamespace(extra={"model": model, "version": version}, timestamp=at)


def test_a_manual_request_carries_the_candidate_and_the_production_it_replaces(registry):
    registry.promote("digits", "v1", None, "test")
    request = resolve_request({"model": "digits", "version": "v2"}, None, "mlops_promotion", "manual__1")
    entry = registry.get("digits", "v2")
    assert request == {
        "model": "digits",
        "version": "v2",
        "holder": "mlops_promotion/manual__1",
        "dry_run": False,
        "rollback": False,
        "auto_promote": True,
        "analysis_duration_seconds": 60,
        "scale_down_delay_seconds": 30,
        "production_version": "v1",
        "production_accuracy": 0.91,
        "artifact_uri": entry["artifact_uri"],
        "artifact_sha256": entry["artifact_sha256"],
        "candidate_accuracy": 0.95,
    }


def test_the_options_are_taken_from_the_params(registry):
    params = {
        "model": "digits",
        "version": "v2",
        "dry_run": True,
        "auto_promote": False,
        "analysis_duration_seconds": "5",
        "scale_down_delay_seconds": 0,
    }
    request = resolve_request(params, None, "d", "r")
    assert (request["dry_run"], request["auto_promote"]) == (True, False)
    assert (request["analysis_duration_seconds"], request["scale_down_delay_seconds"]) == (5, 0)
    assert request["production_version"] is None and request["production_accuracy"] is None


def test_an_asset_triggered_run_takes_model_and_version_from_the_newest_event(registry):
    events = {"model_candidates": [event("digits", "v2", "2026-01-02"), event("digits", "v1", "2026-01-01")]}
    request = resolve_request({"model": None, "version": None}, events, "d", "r")
    assert (request["model"], request["version"]) == ("digits", "v2")
    pinned = resolve_request({"model": None, "version": "v1"}, events, "d", "r")
    assert pinned["version"] == "v1"  # a version param wins over the event's


def test_a_rollback_is_refused_by_the_promotion_and_needs_no_version_in_the_rollback_dag(registry):
    """Rollbacks moved to ``mlops_rollback`` (it pre-empts a promotion instead of queueing behind it)."""
    registry.promote("digits", "v1", None, "test")
    with pytest.raises(ValueError, match=r"^rollback: use the mlops_rollback DAG"):
        resolve_request({"model": "digits", "rollback": True}, None, "d", "r")
    with pytest.raises(ValueError, match=r"^model: 'digits' has no previous production version"):
        resolve_rollback({"model": "digits", "reason": "bad"}, "mlops_rollback", "r")
    registry.promote("digits", "v2", "v1", "test")
    request = resolve_rollback({"model": "digits", "reason": "INC-7"}, "mlops_rollback", "r")
    assert request["rollback"] is True and request["version"] is None
    assert (request["production_version"], request["previous_version"]) == ("v2", "v1")
    assert request["holder"] == "mlops_rollback/r" and request["reason"] == "INC-7"
    assert "artifact_uri" not in request


def test_a_request_without_model_or_version_or_with_an_unknown_version_is_refused(registry):
    with pytest.raises(
        ValueError, match=r"^model: set the model param \(or trigger through a model_candidates"
    ):
        resolve_request({}, None, "d", "r")
    with pytest.raises(
        ValueError, match=r"^version: set the version param \(or trigger through a model_candidates"
    ):
        resolve_request({"model": "digits"}, {"model_candidates": []}, "d", "r")
    with pytest.raises(VersionNotFoundError, match="v9"):
        resolve_request({"model": "digits", "version": "v9"}, None, "d", "r")


def test_snapshot_of_the_trigger_form():
    """SNAPSHOT (labelled): the form's fields, defaults, limits and help text as users read them in the
    UI. A change here must be deliberate: update this snapshot and the README together."""
    form = {
        name: (param.value, param.schema, param.description) for name, param in promotion_params().items()
    }
    nullable = ["null", "string"]
    seconds = {"type": "integer", "minimum": 0, "maximum": 3600}
    assert form == {
        "model": (
            None,
            {"type": nullable, "pattern": r"^[a-z][a-z0-9-]{1,38}[a-z0-9]$(?!\n)", "title": "Model"},
            "Registry name of the model. Empty on asset-triggered runs (taken from the event).",
        ),
        "version": (
            None,
            {
                "type": nullable,
                "pattern": r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$(?!\n)",
                "title": "Version",
            },
            "Registered version to promote. Empty on asset-triggered runs (from the event).",
        ),
        "auto_promote": (
            True,
            {"type": "boolean", "title": "Auto-promote"},
            "Switch traffic as soon as the pre-promotion gates pass. "
            "Off: wait for an approval in the UI (Required actions) before switching.",
        ),
        "analysis_duration_seconds": (
            60,
            {**seconds, "title": "Post-promotion analysis (s)"},
            "How long the new color is checked after the switch before the promotion counts.",
        ),
        "scale_down_delay_seconds": (
            30,
            {**seconds, "title": "Scale-down delay (s)"},
            "How long the old color keeps running after the switch, for an instant rollback "
            "(Argo Rollouts' scaleDownDelaySeconds).",
        ),
        "dry_run": (
            False,
            {"type": "boolean", "title": "Dry run"},
            "Read the cluster and the registry, log every change it would make, change nothing.",
        ),
    }
