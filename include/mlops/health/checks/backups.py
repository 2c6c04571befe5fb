"""Backup freshness: the last *verified* backup is younger than ``max_age_hours`` (26 h).

The backup DAG writes ``_markers/last_verified.json`` in the backup bucket after a
restore test succeeds: ``{"database", "key", "sha256", "verified_at" (ISO 8601 UTC), ...}``.
A missing or unreadable marker counts as stale: no proof of a restorable backup.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from mlops.health.checks.s3 import s3_client
from mlops.health.config import CheckSpec
from mlops.health.context import CheckContext
from mlops.health.results import CheckResult

# Imported before the sweep's clocks start: a cold import must not eat a check's timeout.
PRELOAD = ("airflow.providers.amazon.aws.hooks.s3", "botocore.config")

SCHEMA: dict[str, Any] = {
    "required": ["bucket"],
    "properties": {
        "bucket": {"type": "string", "minLength": 3},
        "marker_key": {"type": "string"},
        "max_age_hours": {"type": "number", "exclusiveMinimum": 0},
    },
}
DEFAULT_MARKER = "_markers/last_verified.json"


def run(spec: CheckSpec, ctx: CheckContext) -> list[CheckResult]:
    """Read the marker and compare ``verified_at`` with now."""
    bucket = spec.params["bucket"]
    key = spec.params.get("marker_key", DEFAULT_MARKER)
    max_age = float(spec.params.get("max_age_hours", 26))
    target = f"s3://{bucket}/{key}"
    client = s3_client(ctx, spec.timeout_seconds)
    try:
        raw = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    except client.exceptions.NoSuchKey:
        return [CheckResult(spec.name, target, False, f"{target}: no verified backup recorded")]
    try:
        marker = json.loads(raw)
        verified_at = dt.datetime.fromisoformat(marker["verified_at"].replace("Z", "+00:00"))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        return [CheckResult(spec.name, target, False, f"{target}: unreadable marker ({exc})")]
    if verified_at.tzinfo is None:
        verified_at = verified_at.replace(tzinfo=dt.UTC)
    age_hours = (dt.datetime.now(dt.UTC) - verified_at).total_seconds() / 3600
    ok = age_hours < max_age
    summary = f"{target}: last verified backup of {marker.get('database', '?')} is {age_hours:.1f} h old" + (
        "" if ok else f" (limit {max_age:g} h)"
    )
    return [
        CheckResult(
            spec.name,
            target,
            ok,
            summary,
            details={
                "database": marker.get("database"),
                "key": marker.get("key"),
                "verified_at": marker["verified_at"],
                "age_hours": round(age_hours, 2),
            },
        )
    ]
