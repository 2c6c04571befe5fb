"""Scheduled evaluation of the serving model: its measured accuracy, published for the rules.

The live model server (``url``, its Service) says which version it serves and where its
artifacts are (``GET /version``); the version's held-out ``samples.json`` (format:
:mod:`mlops.samples`) is sent to ``/predict`` and the answers compared with the labels.
The accuracy is pushed as ``mlops_model_accuracy{model,version,source="scheduled-evaluation"}``
(what ``ModelAccuracyDrop`` reads) and the check fails below ``min_accuracy``
(default: the ``promotion_min_accuracy`` setting, the rule's threshold).
"""

from __future__ import annotations

import json
from typing import Any

from mlops.health.config import CheckSpec
from mlops.health.context import CheckContext
from mlops.health.results import CheckResult

PRELOAD = ("httpx", "airflow.providers.amazon.aws.hooks.s3")

SCHEMA: dict[str, Any] = {
    "required": ["url"],
    "properties": {
        "url": {"type": "string", "pattern": "^https?://"},
        "min_accuracy": {"type": "number", "minimum": 0, "maximum": 1},
        "batch": {"type": "integer", "minimum": 1},
        "publish": {"type": "boolean"},
    },
}


def _samples_key(model_uri: str) -> tuple[str, str]:
    bucket, _, key = model_uri.removeprefix("s3://").partition("/")
    directory = key if key.endswith("/") or not key else key.rsplit("/", 1)[0] + "/"
    return bucket, f"{directory}samples.json"


def run(spec: CheckSpec, ctx: CheckContext) -> list[CheckResult]:
    """Evaluate the served version on its held-out samples; one result per model server."""
    import httpx

    from mlops.health.publish import publish_model_accuracy
    from mlops.health.state import s3_client
    from mlops.samples import parse_samples

    p = spec.params
    base = p["url"].rstrip("/")
    minimum = float(p.get("min_accuracy", ctx.settings.promotion_min_accuracy))
    with httpx.Client(timeout=spec.timeout_seconds, trust_env=False) as http:
        served = http.get(f"{base}/version")
        served.raise_for_status()
        about = served.json()
        model, version = about["model"], about["model_version"]
        bucket, key = _samples_key(about["model_uri"])
        body = s3_client(ctx.settings.aws_conn_id).get_object(Bucket=bucket, Key=key)["Body"].read()
        inputs, labels = parse_samples(json.loads(body))
        correct, batch = 0, int(p.get("batch", 256))
        for start in range(0, len(inputs), batch):
            answer = http.post(f"{base}/predict", json={"instances": inputs[start : start + batch]})
            answer.raise_for_status()
            predictions = answer.json()["predictions"]
            correct += sum(
                int(a == b) for a, b in zip(predictions, labels[start : start + batch], strict=True)
            )
    accuracy = correct / len(labels)
    if p.get("publish", True):
        publish_model_accuracy(model, version, accuracy, source="scheduled-evaluation")
    ok = accuracy >= minimum
    summary = (
        f"{model} {version}: accuracy {accuracy:.4f} on {len(labels)} held-out samples "
        f"({'>=' if ok else '<'} {minimum:g})"
    )
    details = {"model": model, "version": version, "accuracy": accuracy, "samples": len(labels)}
    return [CheckResult(spec.name, f"{model}/{version}", ok, summary, details=details)]
