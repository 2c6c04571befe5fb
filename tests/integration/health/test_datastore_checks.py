"""Postgres, S3 and backup-freshness checks against the real servers of the harness."""

from __future__ import annotations

import datetime as dt
import json
import time

import psycopg2

from mlops.health.config import CheckSpec
from mlops.health.runner import run_checks


def one(spec, settings):
    (result,) = run_checks([spec], settings).results
    return result


# -- Postgres ---------------------------------------------------------------------------------
def test_postgres_reports_connections_against_max_connections(pg_conn, pg_cluster, settings):
    result = one(CheckSpec("pg", "postgres", 5, params={"max_connection_ratio": 0.8}), settings)
    assert result.ok, result.summary
    with psycopg2.connect(pg_cluster.dsn(pg_conn)) as conn, conn.cursor() as cur:
        cur.execute("SHOW max_connections")
        assert result.details["max_connections"] == int(cur.fetchone()[0])
    assert result.details["connections"] >= 1


def test_postgres_fails_when_connections_near_the_limit(pg_conn, pg_cluster, settings):
    held = [psycopg2.connect(pg_cluster.dsn(pg_conn)) for _ in range(5)]
    try:
        probe = one(CheckSpec("pg", "postgres", 5, params={}), settings)
        usable = probe.details["max_connections"] - probe.details["superuser_reserved"]
        ratio = (len(held) + 1) / usable * 0.9  # the 5 held plus the check's own are above this
        result = one(CheckSpec("pg", "postgres", 5, params={"max_connection_ratio": ratio}), settings)
    finally:
        for conn in held:
            conn.close()
    assert not result.ok
    assert result.details["connections"] >= 6 and "above" in result.summary


def test_an_unreachable_postgres_fails_within_the_timeout(monkeypatch, settings):
    monkeypatch.setenv(
        "AIRFLOW_CONN_PLATFORM_POSTGRES",
        json.dumps(
            {"conn_type": "postgres", "host": "10.255.255.1", "port": 5432, "login": "x", "schema": "x"}
        ),
    )
    started = time.monotonic()
    result = one(CheckSpec("pg", "postgres", 1.5, params={}), settings)
    assert not result.ok and time.monotonic() - started < 3


# -- S3 -----------------------------------------------------------------------------------------
def test_s3_bucket_passes_the_write_read_probe_and_leaves_nothing(s3_conn, s3_bucket, s3_client, settings):
    result = one(CheckSpec("s3", "s3", 5, params={"bucket": s3_bucket}), settings)
    assert result.ok, result.summary
    assert s3_client.list_objects_v2(Bucket=s3_bucket).get("KeyCount", 0) == 0


def test_a_missing_bucket_fails(s3_conn, settings):
    result = one(CheckSpec("s3", "s3", 5, params={"bucket": "no-such-bucket-here"}), settings)
    assert not result.ok and "404" in result.summary


# -- Backup freshness -------------------------------------------------------------------------
def put_marker(s3_client, bucket: str, verified_at: dt.datetime) -> None:
    marker = {
        "database": "platform",
        "key": "postgres/platform/2025.dump",
        "sha256": "ab" * 32,
        "verified_at": verified_at.isoformat().replace("+00:00", "Z"),
    }
    s3_client.put_object(Bucket=bucket, Key="_markers/last_verified.json", Body=json.dumps(marker).encode())


def test_a_backup_verified_an_hour_ago_is_fresh(s3_conn, s3_bucket, s3_client, settings):
    put_marker(s3_client, s3_bucket, dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
    result = one(CheckSpec("bk", "backup_freshness", 5, params={"bucket": s3_bucket}), settings)
    assert result.ok, result.summary
    assert result.details["database"] == "platform" and 0.9 < result.details["age_hours"] < 1.1


def test_a_backup_verified_27_hours_ago_is_stale(s3_conn, s3_bucket, s3_client, settings):
    put_marker(s3_client, s3_bucket, dt.datetime.now(dt.UTC) - dt.timedelta(hours=27))
    result = one(
        CheckSpec("bk", "backup_freshness", 5, params={"bucket": s3_bucket, "max_age_hours": 26}), settings
    )
    assert not result.ok and "27.0 h old (limit 26 h)" in result.summary


def test_no_marker_means_no_verified_backup(s3_conn, s3_bucket, settings):
    result = one(CheckSpec("bk", "backup_freshness", 5, params={"bucket": s3_bucket}), settings)
    assert not result.ok and "no verified backup recorded" in result.summary
