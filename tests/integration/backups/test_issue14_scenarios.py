"""Issue 14's scenarios through the DAG's task functions (each failed on the code before the fix)."""

import hashlib
from datetime import date

import psycopg

from mlops.backups.tasks import backup_postgres, verify_postgres
from mlops.health.config import CheckSpec
from mlops.health.runner import run_checks
from mlops.settings import get_settings

DAY = date(2026, 3, 1)


def _sha(s3, bucket, key):
    return hashlib.sha256(s3.get_object(Bucket=bucket, Key=key)["Body"].read()).hexdigest()


def test_1_a_second_backup_on_the_same_day_keeps_the_first(
    seeded_db, backup_bucket, pg_bin, pg_cluster, s3_client
):
    nightly = backup_postgres(seeded_db, DAY, "scheduled", False)
    pg_cluster.execute("INSERT INTO models VALUES (999, 'x')", seeded_db)
    manual = backup_postgres(seeded_db, DAY, "manual", False)
    assert manual["key"] != nightly["key"]
    assert _sha(s3_client, backup_bucket, nightly["key"]) == nightly["sha256"]


def test_2_freshness_reports_a_database_that_never_verified(
    seeded_db, backup_bucket, pg_bin, verify_conn, monkeypatch
):
    verify_postgres(backup_postgres(seeded_db, DAY, "s", False))
    monkeypatch.setenv("MLOPS_BACKUP_DATABASES", f"{seeded_db},mlflow")
    results = run_checks(
        [CheckSpec("bk", "backup_freshness", 5, params={"bucket": backup_bucket})], get_settings()
    ).results
    assert any(not r.ok and "mlflow" in r.summary for r in results), [r.summary for r in results]


def test_3_freshness_fails_when_the_verified_dump_is_gone(
    seeded_db, backup_bucket, pg_bin, verify_conn, s3_client
):
    backup = backup_postgres(seeded_db, DAY, "s", False)
    verify_postgres(backup)
    s3_client.delete_object(Bucket=backup_bucket, Key=backup["key"])
    results = run_checks(
        [CheckSpec("bk", "backup_freshness", 5, params={"bucket": backup_bucket})], get_settings()
    ).results
    assert results and not any(r.ok for r in results), [r.summary for r in results]


def test_4_a_table_in_template1_does_not_fail_a_good_dump(
    seeded_db, backup_bucket, pg_bin, verify_conn, pg_scratch_cluster
):
    pg_scratch_cluster.execute("CREATE TABLE IF NOT EXISTS leftover_in_template1 (x int)", "template1")
    try:
        verify_postgres(backup_postgres(seeded_db, DAY, "s", False))
    finally:
        pg_scratch_cluster.execute("DROP TABLE leftover_in_template1", "template1")


def test_5_no_restore_on_the_source_without_opt_in(seeded_db, backup_bucket, pg_bin, monkeypatch, pg_cluster):
    monkeypatch.delenv("MLOPS_BACKUP_VERIFY_CONN_ID", raising=False)
    backup = backup_postgres(seeded_db, DAY, "s", False)
    try:
        verify_postgres(backup)
    except Exception as exc:  # the fix refuses
        assert "MLOPS_BACKUP_VERIFY_CONN_ID" in str(exc)
    else:
        raise AssertionError("restored onto the source server without an opt-in")


def test_6_leftover_verify_databases_are_dropped(
    seeded_db, backup_bucket, pg_bin, verify_conn, pg_scratch_cluster
):
    leftover = f"verify_{seeded_db}_20260228_0badc0de"
    pg_scratch_cluster.execute(f'CREATE DATABASE "{leftover}"')
    verify_postgres(backup_postgres(seeded_db, DAY, "s", False))
    with psycopg.connect(pg_scratch_cluster.dsn()) as conn:
        names = [r[0] for r in conn.execute("SELECT datname FROM pg_database")]
    assert leftover not in names


def test_7_a_versioned_bucket_stores_each_dump_once(seeded_db, backup_bucket, pg_bin, s3_client):
    s3_client.put_bucket_versioning(Bucket=backup_bucket, VersioningConfiguration={"Status": "Enabled"})
    backup = backup_postgres(seeded_db, DAY, "s", False)
    versions = s3_client.list_object_versions(Bucket=backup_bucket, Prefix=backup["key"]).get("Versions", [])
    assert len(versions) == 1, versions
