"""The Backups section, read from the backup bucket the way the backup DAG writes it.

All knowledge of the bucket's layout that the page needs is here (the per-database "last
verified" marker, the dump's manifest, GFS retention, the artifact-sync ledger, the Kubernetes
export manifests), through :mod:`mlops.backups`' own readers, so a change of layout is one edit.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any


def _seconds_since(stamp: str | None, now: datetime) -> float | None:
    if not stamp:
        return None
    moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (now - moment).total_seconds()


def _database(s3: Any, settings: Any, database: str, now: datetime) -> dict[str, Any]:
    from mlops.backups import layout
    from mlops.backups.manifest import BackupManifest
    from mlops.backups.retention import RetentionPolicy, dated_backups, select_retention
    from mlops.backups.s3 import get_json_or_none
    from mlops.backups.verify import read_marker

    marker = read_marker(s3, settings.backup_bucket, database)
    row: dict[str, Any] = {"database": database, "verified": marker is not None}
    newest_verified = None
    if marker:
        row.update(
            backup_date=marker.get("backup_logical_date"),
            verified_at=marker.get("verified_at"),
            age_seconds=_seconds_since(marker.get("verified_at"), now),
            size_bytes=marker.get("size_bytes"),
            tables=len(marker.get("tables") or {}),
            key=marker.get("key"),
        )
        raw = get_json_or_none(s3, settings.backup_bucket, marker.get("manifest_key", ""))
        if raw:
            manifest = BackupManifest.from_json(raw)
            row["dump_seconds"] = (manifest.finished_at - manifest.started_at).total_seconds()
        from datetime import date

        newest_verified = date.fromisoformat(marker["backup_logical_date"])
    policy = RetentionPolicy(
        settings.backup_keep_daily, settings.backup_keep_weekly, settings.backup_keep_monthly
    )
    dated = dated_backups(s3, settings.backup_bucket, layout.postgres_prefix(database), "manifest.json")
    plan = select_retention(dated, policy, newest_verified)
    row["retention"] = {
        "backups": len(dated),
        "policy": {"daily": policy.daily, "weekly": policy.weekly, "monthly": policy.monthly},
        "kept": {
            rule: sum(rule in rules for rules in plan.keep.values())
            for rule in ("daily", "weekly", "monthly")
        },
        "to_delete": len(plan.delete),
    }
    return row


def _artifact_sync(s3: Any, bucket: str, now: datetime) -> dict[str, Any] | None:
    from botocore.exceptions import ClientError

    from mlops.backups import layout

    try:
        obj = s3.get_object(Bucket=bucket, Key=layout.ARTIFACTS_SYNC_STATE)
    except ClientError:
        return None
    ledger = json.loads(obj["Body"].read())
    written = obj["LastModified"].astimezone(UTC).isoformat(timespec="seconds")
    return {
        "synced_at": written,
        "age_seconds": _seconds_since(written, now),
        "objects": len(ledger.get("objects") or {}),
        "full_check_at": ledger.get("full_check_at"),
    }


def _kubernetes_export(s3: Any, bucket: str, now: datetime) -> dict[str, Any] | None:
    from mlops.backups import layout
    from mlops.backups.retention import dated_backups
    from mlops.backups.s3 import get_json_or_none

    dated = dated_backups(s3, bucket, layout.KUBERNETES_ROOT, "manifest.json")
    if not dated:
        return None
    newest = max(dated)
    # A day may hold several exports (a rerun writes a new backup id, never over the last one);
    # ids sort by their start time, so the newest manifest of the newest day is the last export.
    manifests = [k for k in dated[newest] if k.endswith(f"/{layout.MANIFEST}")]
    manifest = json.loads(get_json_or_none(s3, bucket, max(manifests)) or b"{}") if manifests else {}
    return {
        "date": newest.isoformat(),
        "exported_at": manifest.get("exported_at"),
        "age_seconds": _seconds_since(manifest.get("exported_at"), now),
        "namespaces": manifest.get("namespaces", []),
        "objects": sum(sum(kinds.values()) for kinds in (manifest.get("objects") or {}).values()),
        "exports": len(dated),
    }


def backups_state(settings: Any | None = None) -> dict[str, Any]:
    """Per database: the last verified backup, its age, size and dump time, and the retention state;
    plus the last artifact sync and Kubernetes export."""
    from mlops.backups.tasks import databases
    from mlops.settings import get_settings
    from mlops_platform_ui import clients

    settings = settings or get_settings()
    s3 = clients.s3(settings)
    now = datetime.now(UTC)
    return {
        "bucket": settings.backup_bucket,
        "databases": [_database(s3, settings, db, now) for db in databases(settings)],
        "artifacts": _artifact_sync(s3, settings.backup_bucket, now),
        "kubernetes": _kubernetes_export(s3, settings.backup_bucket, now),
    }
