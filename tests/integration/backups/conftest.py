"""Fixtures of the backup tests: the dump tools, a bucket behind the AWS connection, a seeded database,
versioned and Object Lock buckets, and the retention module's log."""

from __future__ import annotations

import logging
import uuid

import pytest

from tests.harness.postgres import PG_BIN


@pytest.fixture
def pg_bin(monkeypatch) -> str:
    """The PostgreSQL 15 client binaries, through the project's ``MLOPS_PG_BIN`` setting."""
    monkeypatch.setenv("MLOPS_PG_BIN", str(PG_BIN))
    return str(PG_BIN)


@pytest.fixture
def backup_bucket(monkeypatch, s3_conn, s3_bucket) -> str:
    """A fresh bucket that the project's ``backup_bucket`` setting names, reached through ``aws_default``."""
    monkeypatch.setenv("MLOPS_BACKUP_BUCKET", s3_bucket)
    return s3_bucket


@pytest.fixture
def seeded_db(pg_cluster, pg_conn) -> str:
    """The ``platform_postgres`` database with a few tables, a schema, an empty table and odd names."""
    db = pg_conn
    pg_cluster.execute(
        """
        CREATE TABLE models (id int PRIMARY KEY, name text NOT NULL);
        CREATE TABLE runs (id bigserial PRIMARY KEY, model_id int REFERENCES models(id), metrics jsonb);
        CREATE SCHEMA registry;
        CREATE TABLE registry."Stage Names" (stage text);
        CREATE TABLE registry.empty_table (x int);
        INSERT INTO models SELECT g, 'model-' || g FROM generate_series(1, 250) g;
        INSERT INTO runs (model_id, metrics) SELECT 1 + g % 250, jsonb_build_object('loss', g)
            FROM generate_series(1, 1200) g;
        INSERT INTO registry."Stage Names" VALUES ('staging'), ('production'), ('archived');
        """,
        db,
    )
    return db


@pytest.fixture(scope="session")
def pg_scratch_cluster(session_dir):
    """A second Postgres server: the scratch server that restore tests run on (never the source)."""
    from tests.harness.postgres import PostgresCluster

    cluster = PostgresCluster(session_dir / "pg-scratch").start()
    yield cluster
    cluster.stop()


@pytest.fixture
def verify_conn(monkeypatch, pg_scratch_cluster) -> str:
    """``MLOPS_BACKUP_VERIFY_CONN_ID`` names a connection to the scratch server; returns its id."""
    import json

    monkeypatch.setenv(
        "AIRFLOW_CONN_BACKUP_SCRATCH",
        json.dumps(
            {
                "conn_type": "postgres",
                "host": pg_scratch_cluster.host,
                "port": pg_scratch_cluster.port,
                "login": pg_scratch_cluster.user,
                "schema": "postgres",
            }
        ),
    )
    monkeypatch.setenv("MLOPS_BACKUP_VERIFY_CONN_ID", "backup_scratch")
    return "backup_scratch"


@pytest.fixture
def scratch(pg_scratch_cluster):
    """The scratch server as the backups reach it."""
    from mlops.backups.postgres import PgTarget

    c = pg_scratch_cluster
    return PgTarget(host=c.host, port=c.port, user=c.user, dbname="postgres")


@pytest.fixture
def retention_log():
    """Messages logged by the retention module (own handler: Airflow reconfigures the root logger)."""
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    logger = logging.getLogger("mlops.backups.retention")
    handler, level = Collect(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield messages
    logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.fixture
def versioned_bucket(s3_conn, s3_client) -> str:
    name = f"ver-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    s3_client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


@pytest.fixture
def locked_bucket(s3_conn, s3_client) -> str:
    name = f"lock-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    s3_client.put_object_lock_configuration(
        Bucket=name,
        ObjectLockConfiguration={"ObjectLockEnabled": "Enabled",
                                 "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 30}}},
    )  # fmt: skip
    return name
