"""Restore tests on a scratch server, with the source's roles and grants (real Postgres 15 x2, moto S3)."""

from __future__ import annotations

import logging
import uuid
from datetime import date

import psycopg
import pytest

from mlops.backups.tasks import backup_postgres, backup_server_globals, verify_postgres, verify_server_globals
from mlops.backups.verify import VerificationFailed, VerifyServerNotConfigured, read_marker

DAY = date(2026, 3, 1)


def _databases(cluster, pattern: str = "verify_%") -> list[str]:
    with psycopg.connect(cluster.dsn()) as conn:
        return [
            r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (pattern,))
        ]


@pytest.fixture
def granted_db(seeded_db, pg_cluster) -> tuple[str, str]:
    """The seeded database, with a reporting role that may only read ``models``."""
    role = f"reporting_{uuid.uuid4().hex[:8]}"
    pg_cluster.execute(f"CREATE ROLE {role} NOLOGIN")
    pg_cluster.execute(f"GRANT SELECT ON models TO {role}", seeded_db)
    return seeded_db, role


def test_globals_are_restored_onto_the_scratch_server_first_and_grants_are_verified(
    granted_db, backup_bucket, pg_bin, verify_conn, pg_scratch_cluster, s3_client
):
    db, role = granted_db
    globals_backup = backup_server_globals(DAY, dry_run=False)
    script = s3_client.get_object(Bucket=backup_bucket, Key=globals_backup["key"])["Body"].read().decode()
    assert f"CREATE ROLE {role};" in script
    assert "PASSWORD" not in script  # no password hashes unless configured

    restored = verify_server_globals(globals_backup)
    assert (
        role in restored["roles"]
        and _databases(pg_scratch_cluster, "%")
        and role in _roles(pg_scratch_cluster)
    )

    result = verify_postgres(backup_postgres(db, DAY, "manual__g", False), globals_restored=restored)
    assert result["grants_checked"] is True and result["tables"]["public.models"] == 250
    assert read_marker(s3_client, backup_bucket, db)["backup_id"] == result["backup_id"]


def _roles(cluster) -> list[str]:
    with psycopg.connect(cluster.dsn()) as conn:
        return [r[0] for r in conn.execute("SELECT rolname FROM pg_roles")]


def test_a_grant_that_does_not_survive_the_restore_fails_verification(
    granted_db, backup_bucket, pg_bin, verify_conn, pg_scratch_cluster, s3_client
):
    db, role = granted_db
    restored = verify_server_globals(backup_server_globals(DAY, dry_run=False))
    pg_scratch_cluster.execute(f"DROP ROLE {role}")  # the scratch server lost the role the dump grants to

    with pytest.raises(VerificationFailed, match=rf'role "{role}" does not exist'):
        verify_postgres(backup_postgres(db, DAY, "manual__g2", False), globals_restored=restored)
    assert read_marker(s3_client, backup_bucket, db) is None  # never written before a verification


def test_a_table_left_in_template1_of_the_scratch_server_does_not_fail_a_good_dump(
    seeded_db, backup_bucket, pg_bin, verify_conn, pg_scratch_cluster
):
    pg_scratch_cluster.execute("CREATE TABLE IF NOT EXISTS leftover_in_template1 (x int)", "template1")
    try:
        result = verify_postgres(backup_postgres(seeded_db, DAY, "manual__t1", False))
    finally:
        pg_scratch_cluster.execute("DROP TABLE leftover_in_template1", "template1")
    assert "public.leftover_in_template1" not in result["tables"]


def test_restore_tests_refuse_the_source_server_unless_opted_into_with_a_warning(
    seeded_db, backup_bucket, pg_bin, monkeypatch, caplog
):
    monkeypatch.delenv("MLOPS_BACKUP_VERIFY_CONN_ID", raising=False)
    backup = backup_postgres(seeded_db, DAY, "manual__src", False)
    with pytest.raises(VerifyServerNotConfigured, match="MLOPS_BACKUP_VERIFY_CONN_ID"):
        verify_postgres(backup)

    monkeypatch.setenv("MLOPS_BACKUP_VERIFY_ON_SOURCE", "true")
    with caplog.at_level(logging.WARNING, logger="mlops.backups.verify"):
        assert verify_postgres(backup)["tables"]["public.models"] == 250
    assert "Restore tests run on the SOURCE server" in caplog.text


def test_throwaway_databases_left_by_killed_runs_are_dropped(
    seeded_db, backup_bucket, pg_bin, verify_conn, pg_scratch_cluster
):
    leftover = f"verify_{seeded_db}_20260228_0badc0de"
    other = f"verify_{seeded_db}x_20260228_0badc0de"  # another database's: not ours to drop
    for name in (leftover, other):
        pg_scratch_cluster.execute(f'CREATE DATABASE "{name}"')

    verify_postgres(backup_postgres(seeded_db, DAY, "manual__left", False))

    assert _databases(pg_scratch_cluster, f"verify_{seeded_db}%") == [other]
    pg_scratch_cluster.execute(f'DROP DATABASE "{other}"')
