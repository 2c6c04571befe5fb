"""What each task of the ``mlops_backups`` DAG does, with settings and connections read at run time.

The DAG file only wires these functions; each returns a JSON-able dict that
becomes the task's XCom (counts, keys, checksums).
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime
from typing import Any

from mlops.settings import Settings, get_settings

log = logging.getLogger(__name__)


def run_day(context: dict[str, Any]) -> date:
    """The date the run's keys are named after: its logical date (or, for a manual run without one,
    the time it was queued for), in UTC."""
    when = (
        context.get("logical_date") or getattr(context.get("dag_run"), "run_after", None) or datetime.now(UTC)
    )
    return when.astimezone(UTC).date()


def _split(raw: str) -> list[str]:
    return [part.strip() for part in raw.split(",") if part.strip()]


def databases(settings: Settings | None = None) -> list[str]:
    """Databases to back up: ``backup_databases``, else the postgres connection's database."""
    from mlops.backups.postgres import PgTarget

    settings = settings or get_settings()
    return _split(settings.backup_databases) or [PgTarget.from_connection(settings.postgres_conn_id).dbname]


def prepare_bucket(dry_run: bool) -> dict[str, Any]:
    """Check the backup bucket, detect versioning/Object Lock, and apply (idempotently) the lifecycle
    rules: abort incomplete multipart uploads (killed workers cannot), and on a versioned bucket
    expire noncurrent versions after the artifacts' grace period."""
    from mlops.backups.s3 import (
        bucket_protection,
        ensure_bucket,
        ensure_lifecycle,
        lifecycle_rules,
        s3_client,
    )

    settings = get_settings()
    s3 = s3_client(settings)
    ensure_bucket(s3, settings.backup_bucket)
    protection = bucket_protection(s3, settings.backup_bucket)
    noncurrent = settings.artifacts_retired_grace_days if protection.versioning else None
    if dry_run:
        rules = lifecycle_rules(settings.backup_abort_incomplete_upload_days, noncurrent)
        log.info("Dry run: would ensure lifecycle rules %s", [r["ID"] for r in rules])
        changed = False
    else:
        changed = ensure_lifecycle(
            s3,
            settings.backup_bucket,
            abort_after_days=settings.backup_abort_incomplete_upload_days,
            noncurrent_days=noncurrent,
        )
    return {
        "bucket": settings.backup_bucket,
        "protection": protection.describe(),
        "lifecycle_changed": changed,
    }


def backup_postgres(database: str, day: date, run_id: str, dry_run: bool) -> dict[str, Any]:
    """Dump one database to S3 under a new backup id (or, in a dry run, check everything and say
    what would be written)."""
    from mlops.backups.postgres import PgTarget, backup_database, manifest_key_of, plan_backup
    from mlops.backups.s3 import Encryption, s3_client

    settings = get_settings()
    s3 = s3_client(settings)
    source = PgTarget.from_connection(settings.postgres_conn_id, database)
    if dry_run:
        return plan_backup(
            s3,
            source,
            bucket=settings.backup_bucket,
            logical_date=day,
            pg_bin_dir=settings.pg_bin,
            compression=settings.backup_pg_compress,
        )
    manifest = backup_database(
        s3,
        source,
        bucket=settings.backup_bucket,
        logical_date=day,
        encryption=Encryption.from_settings(settings),
        pg_bin_dir=settings.pg_bin,
        run_id=run_id,
        compression=settings.backup_pg_compress,
        lock_wait_timeout=settings.backup_lock_wait_timeout,
    )
    return {
        "database": database,
        "backup_id": manifest.backup_id,
        "key": manifest.key,
        "manifest_key": manifest_key_of(manifest),
        "sha256": manifest.sha256,
        "size_bytes": manifest.size_bytes,
        "tables": len(manifest.tables),
    }


def backup_server_globals(day: date, dry_run: bool) -> dict[str, Any] | None:
    """``pg_dumpall --globals-only`` of the source server (None when ``backup_globals`` is off)."""
    from mlops.backups.globals import backup_globals
    from mlops.backups.postgres import PgTarget, pg_binary
    from mlops.backups.s3 import Encryption, ensure_bucket, s3_client

    settings = get_settings()
    if not settings.backup_globals:
        log.info("MLOPS_BACKUP_GLOBALS is off: roles and grants are not backed up")
        return None
    s3 = s3_client(settings)
    source = PgTarget.from_connection(settings.postgres_conn_id)
    if dry_run:
        ensure_bucket(s3, settings.backup_bucket)
        pg_binary("pg_dumpall", settings.pg_bin)
        return {
            "dry_run": True,
            "server": source.describe(),
            "passwords": settings.backup_globals_with_passwords,
        }
    return backup_globals(
        s3,
        source,
        bucket=settings.backup_bucket,
        logical_date=day,
        encryption=Encryption.from_settings(settings),
        pg_bin_dir=settings.pg_bin,
        with_passwords=settings.backup_globals_with_passwords,
    )


def verify_server_globals(globals_backup: dict[str, Any] | None) -> dict[str, Any] | None:
    """Restore the globals onto the scratch server (before any database) and record them verified."""
    from mlops.backups.globals import restore_globals, write_globals_marker
    from mlops.backups.s3 import Encryption, s3_client
    from mlops.backups.verify import verify_server

    if not globals_backup or globals_backup.get("dry_run"):
        return None
    settings = get_settings()
    s3 = s3_client(settings)
    manifest = restore_globals(
        s3,
        settings.backup_bucket,
        globals_backup["manifest_key"],
        verify_server(settings),
        pg_bin_dir=settings.pg_bin,
    )
    write_globals_marker(s3, settings.backup_bucket, manifest, Encryption.from_settings(settings))
    return {"backup_id": manifest["backup_id"], "roles": manifest["roles"]}


def verify_postgres(
    backup: dict[str, Any], run_url: str = "", globals_restored: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Restore-test one fresh dump on the scratch server; then (only then) move the database's
    marker to it. Page (critical, one incident per database) on any failure.

    With ``globals_restored`` (the roles are on the scratch server), owners and grants are
    restored and compared too. That incident is the page for the failure: the task's
    generic failure callback sees it on the exception and only posts to Slack.
    """
    from mlops.alerting.router import AlertRouter, mark_paged
    from mlops.backups.s3 import Encryption, s3_client
    from mlops.backups.verify import (
        alert_failure,
        dedup_key,
        report_success,
        verify_backup,
        verify_server,
        write_marker,
    )

    settings = get_settings()
    router = AlertRouter(settings)
    database = backup["database"]
    links = [{"href": run_url, "text": "Airflow run"}] if run_url else None
    try:
        s3 = s3_client(settings)
        result = verify_backup(
            s3,
            settings.backup_bucket,
            backup["manifest_key"],
            verify_server(settings),
            pg_bin_dir=settings.pg_bin,
            with_grants=bool(globals_restored),
        )
        marker = write_marker(s3, settings.backup_bucket, result, Encryption.from_settings(settings))
    except BaseException as exc:
        if alert_failure(router, exc, database, key=backup.get("key", ""), links=links):
            mark_paged(exc, dedup_key(database))  # the failure callback then posts to Slack only
        raise
    report_success(router, result)
    return {**result.as_marker(), "marker": marker, "restore_seconds": result.restore_seconds}


def publish_backup_metrics(result: dict[str, Any]) -> bool:
    """Push one database's verified-backup metrics to the Pushgateway (grouped by database, so one
    database's push never replaces another's). False when no Pushgateway is configured."""
    from mlops import metrics

    verified_at = datetime.fromisoformat(result["verified_at"]).timestamp()
    return metrics.push(
        BACKUP_METRICS_JOB,
        {"database": result["database"]},
        {
            "mlops_backup_last_verified_timestamp_seconds": (
                verified_at,
                "Unix time when the newest backup of the database was verified by a restore.",
            ),
            "mlops_backup_size_bytes": (float(result["size_bytes"]), "Size of that backup's dump in bytes."),
            "mlops_backup_duration_seconds": (
                float(result["backup_seconds"]),
                "How long that backup took (dump and upload).",
            ),
            "mlops_backup_restore_seconds": (
                float(result.get("restore_seconds", 0.0)),
                "How long its verification restore took.",
            ),
        },
    )


BACKUP_METRICS_JOB = "mlops_backups"


def sync_model_artifacts(dry_run: bool, delete: bool) -> dict[str, Any]:
    """Back the artifacts prefix up into the backup bucket, keeping what the source overwrote or
    deleted for the grace period; returns copied/skipped/retired/deleted/expired counts."""
    from mlops.backups.artifacts import sync_artifacts
    from mlops.backups.s3 import Encryption, bucket_protection, s3_client

    settings = get_settings()
    client = s3_client(settings, max_pool_connections=max(10, settings.artifacts_sync_workers))
    report = sync_artifacts(
        client,
        source_bucket=settings.artifacts_bucket,
        source_prefix=settings.artifacts_prefix,
        backup_bucket=settings.backup_bucket,
        encryption=Encryption.from_settings(settings),
        workers=settings.artifacts_sync_workers,
        delete=delete,
        max_delete_fraction=settings.artifacts_max_delete_fraction,
        full_check_days=settings.artifacts_full_check_days,
        dry_run=dry_run,
        grace_days=settings.artifacts_retired_grace_days,
        protection=bucket_protection(client, settings.backup_bucket),
    )
    log.info("Artifact sync report: %s", report.as_dict())
    return report.as_dict()


def kube_namespaces(settings: Settings) -> list[str]:
    """Training and serving namespaces, plus ``backup_kube_namespaces``, each once."""
    names = [
        settings.training_namespace,
        settings.serving_namespace,
        *_split(settings.backup_kube_namespaces),
    ]
    return list(dict.fromkeys(names))


def export_kube_config(day: date, dry_run: bool) -> dict[str, Any]:
    """Export the platform namespaces' configuration as clean YAML.

    A refused read (RBAC) fails the task at once, without its retry: a missing Role does not come
    back in two minutes, and the message names the verb and resource to grant."""
    from airflow.sdk.exceptions import AirflowFailException

    from mlops.backups.kube_export import ExportForbidden, api_client_from_connection, export_kubernetes
    from mlops.backups.s3 import Encryption, s3_client

    settings = get_settings()
    try:
        manifest = export_kubernetes(
            api_client_from_connection(settings.kubernetes_conn_id),
            s3_client(settings),
            bucket=settings.backup_bucket,
            logical_date=day,
            namespaces=kube_namespaces(settings),
            encryption=Encryption.from_settings(settings),
            dry_run=dry_run,
            custom_resources=settings.backup_kube_custom_resources,
        )
    except ExportForbidden as exc:
        raise AirflowFailException(f"{exc} (not retried: grant it, then clear the task)") from exc
    return {
        "backup_id": manifest["backup_id"],
        "objects": manifest["objects"],
        "secrets_by_name_only": manifest["secrets_by_name_only"],
        "files": len(manifest["keys"]),
        "dry_run": dry_run,
    }


def apply_retention_policy(dry_run: bool) -> dict[str, Any]:
    """GFS retention of every configured database's dumps (never the newest verified), of the
    globals and of the Kubernetes exports; then the orphan sweep. Versioned and Object Lock
    buckets are detected (see ``retention.py``)."""
    from datetime import timedelta

    from mlops.backups import layout
    from mlops.backups.retention import RetentionPolicy, apply_retention, sweep_orphans
    from mlops.backups.s3 import bucket_protection, s3_client
    from mlops.backups.verify import read_marker

    settings = get_settings()
    s3 = s3_client(settings)
    bucket = settings.backup_bucket
    protection = bucket_protection(s3, bucket)
    policy = RetentionPolicy(
        settings.backup_keep_daily, settings.backup_keep_weekly, settings.backup_keep_monthly
    )
    common = {
        "dry_run": dry_run,
        "protection": protection,
        "max_delete_fraction": settings.backup_retention_max_delete_fraction,
    }
    reports: dict[str, Any] = {}
    series: list[str] = []
    for database in databases(settings):
        marker = read_marker(s3, bucket, database)
        newest_verified = date.fromisoformat(marker["backup_logical_date"]) if marker else None
        prefix = layout.postgres_prefix(database)
        series.append(prefix)
        reports[prefix] = apply_retention(
            s3, bucket, prefix, policy, newest_verified=newest_verified, require_verified=True, **common
        )
    for prefix in (layout.GLOBALS_ROOT, layout.KUBERNETES_ROOT):
        series.append(prefix)
        reports[prefix] = apply_retention(s3, bucket, prefix, policy, **common)
    reports["orphans"] = [
        sweep_orphans(
            s3,
            bucket,
            prefix,
            min_age=timedelta(hours=settings.backup_orphan_min_age_hours),
            dry_run=dry_run,
            protection=protection,
        )
        for prefix in series
    ]
    return reports
