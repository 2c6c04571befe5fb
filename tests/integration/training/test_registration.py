"""Registering a training run's candidate from its metrics.json on S3."""

from __future__ import annotations

import hashlib
import json

import pytest

from mlops.settings import Settings
from mlops.training.tasks import register_candidate

METRICS = {
    "accuracy": 0.97,
    "loss": 0.1,
    "epochs": 3,
    "samples_per_second": 1000.0,
    "device": "cpu",
    "dtype": "float32",
    "wall_seconds": 2.0,
    "train_size": 1438,
    "test_size": 359,
}


def _plan(bucket: str) -> dict:
    return {
        "model_name": "digits-reg",
        "model_version": "v20261127t020000-abcdef12",
        "artifact_uri": f"s3://{bucket}/models/digits-reg/versions/v20261127t020000-abcdef12/",
    }


def test_a_missing_metrics_file_is_a_clear_failure_naming_the_object(s3_conn, s3_bucket):
    with pytest.raises(ValueError, match=rf"metrics.json missing at s3://{s3_bucket}/models/digits-reg/"):
        register_candidate(_plan(s3_bucket), {"run_id": "r"}, Settings(artifacts_bucket=s3_bucket))


@pytest.mark.parametrize(
    "body", [b"{not json", json.dumps({"loss": 0.1}).encode(), json.dumps({"accuracy": 7}).encode()]
)
def test_a_malformed_metrics_file_is_a_clear_failure(s3_conn, s3_bucket, s3_client, body):
    plan = _plan(s3_bucket)
    key = plan["artifact_uri"].removeprefix(f"s3://{s3_bucket}/") + "metrics.json"
    s3_client.put_object(Bucket=s3_bucket, Key=key, Body=body)
    with pytest.raises(ValueError, match="metrics.json at s3://.* is malformed"):
        register_candidate(plan, {"run_id": "r"}, Settings(artifacts_bucket=s3_bucket))


def test_a_missing_model_file_is_a_clear_failure_naming_the_object(s3_conn, s3_bucket, s3_client):
    plan = _plan(s3_bucket)
    prefix = plan["artifact_uri"].removeprefix(f"s3://{s3_bucket}/")
    s3_client.put_object(Bucket=s3_bucket, Key=prefix + "metrics.json", Body=json.dumps(METRICS).encode())
    with pytest.raises(
        ValueError, match=rf"model.onnx missing at s3://{s3_bucket}/models/digits-reg/.*/model.onnx"
    ):
        register_candidate(plan, {"run_id": "r"}, Settings(artifacts_bucket=s3_bucket))


def test_valid_metrics_register_a_candidate_with_its_lineage_and_artifact_digest(
    s3_conn, s3_bucket, s3_client
):
    plan = _plan(s3_bucket)
    key = plan["artifact_uri"].removeprefix(f"s3://{s3_bucket}/") + "metrics.json"
    model = b"onnx bytes as the trainer wrote them"
    s3_client.put_object(Bucket=s3_bucket, Key=key.replace("metrics.json", "model.onnx"), Body=model)
    metrics = {
        "accuracy": 0.97,
        "loss": 0.1,
        "epochs": 3,
        "samples_per_second": 1000.0,
        "device": "cpu",
        "dtype": "float32",
        "wall_seconds": 2.0,
        "train_size": 1438,
        "test_size": 359,
    }
    s3_client.put_object(Bucket=s3_bucket, Key=key, Body=json.dumps(metrics).encode())
    lineage = {"run_id": "manual__1", "dag_id": "mlops_training", "image": "registry.example.com/trainer:1"}
    entry = register_candidate(plan, lineage, Settings(artifacts_bucket=s3_bucket))
    assert entry["status"] == "candidate" and entry["metrics"]["accuracy"] == 0.97
    stored = json.loads(
        s3_client.get_object(
            Bucket=s3_bucket, Key="registry/digits-reg/versions/v20261127t020000-abcdef12.json"
        )["Body"].read()
    )
    assert stored["lineage"]["run_id"] == "manual__1"
    assert stored["artifact_sha256"] == entry["artifact_sha256"] == hashlib.sha256(model).hexdigest()
