"""Backup freshness, per database: its last *verified* backup is younger than ``max_age_hours``
(26 h) and still exists exactly as verified.

The backup DAG writes ``_markers/postgres/<database>/last_verified.json`` in the backup
bucket only after a restore test of that backup succeeded (``mlops.backups.verify``). For
each database this check reads the marker, then confirms that the dump it names still
exists with the size and ETag that were verified, and that its manifest exists and names
the same backup and sha256. Otherwise, or with no marker at all, the database is stale:
there is no proof of a restorable backup. One result per database, so one that never
verifies cannot hide behind another that verifies nightly.

The databases are ``databases`` (a list, or a comma-separated string such as
``${backup_databases}``), else the backups' own list (setting ``backup_databases``, else
the Postgres connection's database), plus every database that has a marker.
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
        "databases": {"type": ["string", "array"], "items": {"type": "string"}},
        "max_age_hours": {"type": "number", "exclusiveMinimum": 0},
    },
}
MARKERS = "_markers/postgres/"


def _expected(spec: CheckSpec, ctx: CheckContext) -> list[str]:
    raw = spec.params.get("databases")
    if isinstance(raw, str):
        raw = [part.strip() for part in raw.split(",")]
    names = [n for n in raw or [] if n]
    if names:
        return names
    from mlops.backups.tasks import databases

    return databases(ctx.settings)


def _marked(client: Any, bucket: str) -> list[str]:
    found = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=MARKERS):
        for obj in page.get("Contents", []):
            rest = obj["Key"][len(MARKERS) :]
            if rest.endswith("/last_verified.json") and rest.count("/") == 1:
                found.append(rest.split("/", 1)[0])
    return found


def _get(client: Any, bucket: str, key: str) -> dict | None:
    try:
        return client.get_object(Bucket=bucket, Key=key)
    except client.exceptions.NoSuchKey:
        return None


def _head(client: Any, bucket: str, key: str) -> dict | None:
    from botocore.exceptions import ClientError

    try:
        return client.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
            return None
        raise


def _problems(client: Any, bucket: str, marker: dict) -> list[str]:
    """What no longer matches between the marker, its dump and its manifest."""
    head = _head(client, bucket, marker["key"])
    if head is None:
        return [f"the verified dump {marker['key']} is gone"]
    problems = []
    if head["ContentLength"] != marker.get("size_bytes"):
        problems.append(f"dump size {head['ContentLength']} != verified {marker.get('size_bytes')}")
    if marker.get("etag") and head["ETag"].strip('"') != marker["etag"]:
        problems.append("the dump was replaced after its verification (ETag differs)")
    obj = _get(client, bucket, marker.get("manifest_key", ""))
    if obj is None:
        return [*problems, f"its manifest {marker.get('manifest_key')} is gone"]
    manifest = json.loads(obj["Body"].read())
    for field in ("sha256", "backup_id", "key"):
        if manifest.get(field) != marker.get(field):
            problems.append(f"manifest {field} {manifest.get(field)!r} != marker {marker.get(field)!r}")
    return problems


def _one(spec: CheckSpec, client: Any, bucket: str, database: str, max_age: float) -> CheckResult:
    key = f"{MARKERS}{database}/last_verified.json"
    target = f"s3://{bucket}/{key}"
    obj = _get(client, bucket, key)
    if obj is None:
        return CheckResult(spec.name, target, False, f"{database}: no verified backup recorded ({target})",
                           details={"database": database})  # fmt: skip
    try:
        marker = json.loads(obj["Body"].read())
        verified_at = dt.datetime.fromisoformat(marker["verified_at"].replace("Z", "+00:00"))
        marker["key"]  # noqa: B018 - required
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        return CheckResult(spec.name, target, False, f"{database}: unreadable marker ({exc})",
                           details={"database": database})  # fmt: skip
    if verified_at.tzinfo is None:
        verified_at = verified_at.replace(tzinfo=dt.UTC)
    age_hours = (dt.datetime.now(dt.UTC) - verified_at).total_seconds() / 3600
    problems = _problems(client, bucket, marker)
    ok = age_hours < max_age and not problems
    summary = f"{database}: last verified backup {marker.get('backup_id', '?')} is {age_hours:.1f} h old"
    if age_hours >= max_age:
        summary += f" (limit {max_age:g} h)"
    if problems:
        summary += "; " + "; ".join(problems)
    return CheckResult(
        spec.name,
        target,
        ok,
        summary,
        details={
            "database": database,
            "backup_id": marker.get("backup_id"),
            "key": marker.get("key"),
            "verified_at": marker["verified_at"],
            "age_hours": round(age_hours, 2),
            "problems": problems,
        },
    )


def run(spec: CheckSpec, ctx: CheckContext) -> list[CheckResult]:
    """One result per database: marker age, and its dump and manifest still as verified."""
    bucket = spec.params["bucket"]
    max_age = float(spec.params.get("max_age_hours", 26))
    client = s3_client(ctx, spec.timeout_seconds)
    databases = list(dict.fromkeys([*_expected(spec, ctx), *_marked(client, bucket)]))
    return [_one(spec, client, bucket, db, max_age) for db in databases]
