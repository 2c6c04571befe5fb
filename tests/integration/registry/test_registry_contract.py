"""The registry's pure contract: metrics.json validation, version ids and the key layout (no S3)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone

import pytest

from mlops.registry import ModelRegistry, artifact_uri, checkpoint_uri, validate_metrics, version_for_run

GOOD = {
    "accuracy": 0.97,
    "loss": 0.11,
    "epochs": 5,
    "samples_per_second": 81234.5,
    "device": "cuda",
    "dtype": "bfloat16",
    "peak_gpu_memory_bytes": 12_345_678,
    "wall_seconds": 3.2,
    "train_size": 1437,
    "test_size": 360,
}
LABEL_VALUE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def test_valid_metrics_are_returned_from_bytes_text_or_a_dict():
    raw = json.dumps(GOOD)
    assert validate_metrics(raw.encode()) == GOOD
    assert validate_metrics(raw) == GOOD
    assert validate_metrics(GOOD) == GOOD
    assert validate_metrics({**GOOD, "peak_gpu_memory_bytes": None})["peak_gpu_memory_bytes"] is None


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "metrics.json is empty"),
        (b"{not json", "metrics.json is not valid JSON"),
        (b"[1, 2]", "must be a JSON object, got list"),
        (b"\xff\xfe", "not UTF-8"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "accuracy"}), "'accuracy' is a required property"),
        (json.dumps({**GOOD, "accuracy": 1.2}), "accuracy: 1.2 is greater than the maximum of 1"),
        (json.dumps({**GOOD, "accuracy": -0.1}), "accuracy: -0.1 is less than the minimum of 0"),
        (json.dumps({**GOOD, "accuracy": "0.9"}), "accuracy: '0.9' is not of type 'number'"),
        (json.dumps({**GOOD, "accuracy": True}), "accuracy: True is not of type 'number'"),
        (json.dumps({**GOOD, "epochs": 2.5}), "epochs: 2.5 is not of type 'integer'"),
        (json.dumps({**GOOD, "device": ""}), "device"),
        ('{"accuracy": NaN}', "NaN, which is not a finite number"),
    ],
)
def test_malformed_metrics_raise_a_value_error_naming_the_problem(raw, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        validate_metrics(raw)


def test_a_non_finite_number_in_a_dict_is_refused():
    with pytest.raises(ValueError, match="loss is inf"):
        validate_metrics({**GOOD, "loss": float("inf")})


def test_version_for_run_is_deterministic_label_safe_and_sorts_by_time():
    run = "scheduled__2026-11-27T02:00:00+00:00"
    when = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)
    version = version_for_run(run, when)
    assert version == version_for_run(run, when) == version_for_run(run, when.isoformat())
    assert version.startswith("v20261127t020000-")
    assert LABEL_VALUE.match(version) and len(version) <= 63
    assert version_for_run(run, when + timedelta(days=1)) > version
    assert version_for_run("scheduled__other", when) != version


def test_version_for_run_converts_to_utc_and_uses_the_run_id_timestamp_without_a_logical_date():
    cet = timezone(timedelta(hours=1))
    assert version_for_run("r", datetime(2026, 1, 1, 3, 0, tzinfo=cet)).startswith("v20260101t020000-")
    api_run = "manual__2026-11-27T10:15:30.123456+00:00"
    assert version_for_run(api_run, None).startswith("v20261127t101530-")
    assert LABEL_VALUE.match(version_for_run("my custom run id", None))
    with pytest.raises(ValueError, match="run_id"):
        version_for_run("", None)


def test_layout_keys_and_uris():
    assert artifact_uri("b", "digits", "v1") == "s3://b/models/digits/versions/v1/"
    assert checkpoint_uri("b", "digits", "v1") == "s3://b/models/digits/checkpoints/v1/"
    assert ModelRegistry.entry_key("digits", "v1") == "registry/digits/versions/v1.json"
    assert ModelRegistry.pointer_key("digits") == "registry/digits/production.json"
    for bad in ("", "../x", "a/b", "UPPER", "-x"):
        with pytest.raises(ValueError):
            artifact_uri("b", bad, "v1")
