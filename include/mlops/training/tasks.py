"""The callables that the training DAG's tasks call (the DAG file only declares them)."""

from __future__ import annotations

from typing import Any

from mlops.settings import Settings


def register_candidate(plan: dict[str, Any], lineage: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Validate the run's ``metrics.json`` and register the candidate; returns the registry entry.

    The entry pins ``model.onnx`` by its sha256 (read from S3 at registration), which the serving
    pods check at start. A missing ``model.onnx`` or a missing or malformed ``metrics.json`` raises
    ``ValueError`` with the object's URI.
    """
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    from mlops.registry import MODEL_FILE, ModelRegistry, validate_metrics

    s3 = S3Hook(aws_conn_id=settings.aws_conn_id).get_conn()
    key = plan["artifact_uri"].removeprefix(f"s3://{settings.artifacts_bucket}/") + "metrics.json"
    uri = f"s3://{settings.artifacts_bucket}/{key}"
    try:
        raw = s3.get_object(Bucket=settings.artifacts_bucket, Key=key)["Body"].read()
    except s3.exceptions.NoSuchKey:
        raise ValueError(
            f"metrics.json missing at {uri}: the trainer did not finish writing its outputs"
        ) from None
    try:
        metrics = validate_metrics(raw)
    except ValueError as exc:
        raise ValueError(f"metrics.json at {uri} is malformed: {exc}") from exc
    try:
        s3.head_object(Bucket=settings.artifacts_bucket, Key=key.removesuffix("metrics.json") + MODEL_FILE)
    except s3.exceptions.ClientError:
        raise ValueError(
            f"{MODEL_FILE} missing at {uri.removesuffix('metrics.json')}{MODEL_FILE}: "
            "the trainer did not finish writing its outputs"
        ) from None
    registry = ModelRegistry(s3, settings.artifacts_bucket)
    return registry.register_candidate(
        plan["model_name"], plan["model_version"], metrics, lineage, plan["artifact_uri"]
    )
