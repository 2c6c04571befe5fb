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


def backup_postgres(database: str, day: date, run_id: str, dry_run: bool) -> dict[str, Any]:
    """Dump one database to S3 (or, in a dry run, check everything and say what would be written)."""
    from mlops.backups.postgres import PgTarget, backup_database, plan_backup
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
    )
    return {
        "database": database,
        "key": manifest.key,
        "manifest_key": _manifest_key(manifest),
        "sha256": manifest.sha256,
        "size_bytes": manifest.size_bytes,
        "tables": len(manifest.tables),
    }


def _manifest_key(manifest: Any) -> str:
    from mlops.backups import layout

    return layout.postgres_manifest_key(manifest.database, manifest.logical_date)


def verify_postgres(backup: dict[str, Any], run_url: str = "") -> dict[str, Any]:
    """Restore-test one fresh dump; page (critical, one incident per database) on any failure.

    That incident is the page for the failure: the task's generic failure callback
    sees it on the exception and only posts to Slack.
    """
    from mlops.alerting.router import AlertRouter, mark_paged
    from mlops.backups.postgres import PgTarget
    from mlops.backups.s3 import Encryption, s3_client
    from mlops.backups.verify import alert_failure, dedup_key, report_success, verify_backup, write_markers

    settings = get_settings()
    router = AlertRouter(settings)
    database = backup["database"]
    links = [{"href": run_url, "text": "Airflow run"}] if run_url else None
    try:
        s3 = s3_client(settings)
        server = PgTarget.from_connection(
            settings.backup_verify_conn_id or settings.postgres_conn_id, "postgres"
        )
        result = verify_backup(
            s3, settings.backup_bucket, backup["manifest_key"], server, pg_bin_dir=settings.pg_bin
        )
        markers = write_markers(s3, settings.backup_bucket, result, Encryption.from_settings(settings))
    except BaseException as exc:
        if alert_failure(router, exc, database, key=backup.get("key", ""), links=links):
            mark_paged(exc, dedup_key(database))  # the failure callback then posts to Slack only
        raise
    report_success(router, result)
    return {**result.as_marker(), "markers": markers, "restore_seconds": result.restore_seconds}


def sync_model_artifacts(dry_run: bool, delete: bool) -> dict[str, Any]:
    """Mirror the artifacts prefix into the backup bucket; returns copied/skipped/deleted counts."""
    from mlops.backups.artifacts import sync_artifacts
    from mlops.backups.s3 import Encryption, s3_client

    settings = get_settings()
    report = sync_artifacts(
        s3_client(settings, max_pool_connections=max(10, settings.artifacts_sync_workers)),
        source_bucket=settings.artifacts_bucket,
        source_prefix=settings.artifacts_prefix,
        backup_bucket=settings.backup_bucket,
        encryption=Encryption.from_settings(settings),
        workers=settings.artifacts_sync_workers,
        delete=delete,
        max_delete_fraction=settings.artifacts_max_delete_fraction,
        full_check_days=settings.artifacts_full_check_days,
        dry_run=dry_run,
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
    """Export the platform namespaces' configuration as clean YAML."""
    from mlops.backups.kube_export import api_client_from_connection, export_kubernetes
    from mlops.backups.s3 import Encryption, s3_client

    settings = get_settings()
    manifest = export_kubernetes(
        api_client_from_connection(settings.kubernetes_conn_id),
        s3_client(settings),
        bucket=settings.backup_bucket,
        logical_date=day,
        namespaces=kube_namespaces(settings),
        encryption=Encryption.from_settings(settings),
        dry_run=dry_run,
    )
    return {
        "objects": manifest["objects"],
        "secrets_by_name_only": manifest["secrets_by_name_only"],
        "files": len(manifest["keys"]),
        "dry_run": dry_run,
    }


def apply_retention_policy(dry_run: bool) -> dict[str, Any]:
    """GFS retention of every configured database's dumps (never the newest verified) and of the
    Kubernetes exports."""
    from mlops.backups import layout
    from mlops.backups.retention import RetentionPolicy, apply_retention
    from mlops.backups.s3 import s3_client
    from mlops.backups.verify import read_marker

    settings = get_settings()
    s3 = s3_client(settings)
    policy = RetentionPolicy(
        settings.backup_keep_daily, settings.backup_keep_weekly, settings.backup_keep_monthly
    )
    reports = {}
    for database in databases(settings):
        marker = read_marker(s3, settings.backup_bucket, database)
        newest_verified = date.fromisoformat(marker["backup_logical_date"]) if marker else None
        reports[f"postgres/{database}"] = apply_retention(
            s3,
            settings.backup_bucket,
            layout.postgres_prefix(database),
            policy,
            newest_verified=newest_verified,
            require_verified=True,
            dry_run=dry_run,
        )
    reports["kubernetes"] = apply_retention(
        s3, settings.backup_bucket, layout.KUBERNETES_ROOT, policy, dry_run=dry_run
    )
    return reports
