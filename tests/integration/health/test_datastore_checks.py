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


# -- Backup freshness (per database; the marker's dump and manifest must still match) -----------------
BID = "20260301T030512Z-1a2b3c4d"


def put_backup(s3_client, bucket: str, database: str, verified_at: dt.datetime) -> dict:
    """A verified backup as the backups DAG leaves it: dump, manifest, then the database's marker."""
    prefix = f"postgres/{database}/2026-03-01/{BID}/"
    dump = s3_client.put_object(Bucket=bucket, Key=f"{prefix}{database}.dump", Body=b"PGDMP-data")
    manifest = {"backup_id": BID, "key": f"{prefix}{database}.dump", "sha256": "ab" * 32}
    s3_client.put_object(Bucket=bucket, Key=f"{prefix}manifest.json", Body=json.dumps(manifest).encode())
    marker = {
        "database": database,
        "backup_id": BID,
        "key": f"{prefix}{database}.dump",
        "manifest_key": f"{prefix}manifest.json",
        "etag": dump["ETag"].strip('"'),
        "sha256": "ab" * 32,
        "size_bytes": len(b"PGDMP-data"),
        "verified_at": verified_at.isoformat().replace("+00:00", "Z"),
    }
    s3_client.put_object(
        Bucket=bucket,
        Key=f"_markers/postgres/{database}/last_verified.json",
        Body=json.dumps(marker).encode(),
    )
    return marker


def freshness(bucket: str, settings, **params) -> dict[str, object]:
    spec = CheckSpec("bk", "backup_freshness", 5, params={"bucket": bucket, **params})
    return {r.details["database"]: r for r in run_checks([spec], settings).results}


def test_a_backup_verified_an_hour_ago_is_fresh(s3_conn, s3_bucket, s3_client, settings):
    put_backup(s3_client, s3_bucket, "platform", dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
    result = freshness(s3_bucket, settings, databases="platform")["platform"]
    assert result.ok, result.summary
    assert result.details["backup_id"] == BID and 0.9 < result.details["age_hours"] < 1.1


def test_a_backup_verified_27_hours_ago_is_stale(s3_conn, s3_bucket, s3_client, settings):
    put_backup(s3_client, s3_bucket, "platform", dt.datetime.now(dt.UTC) - dt.timedelta(hours=27))
    result = freshness(s3_bucket, settings, databases="platform", max_age_hours=26)["platform"]
    assert not result.ok and "27.0 h old (limit 26 h)" in result.summary


def test_no_marker_means_no_verified_backup(s3_conn, s3_bucket, settings):
    result = freshness(s3_bucket, settings, databases="platform")["platform"]
    assert not result.ok and "no verified backup recorded" in result.summary


def test_a_database_that_never_verifies_is_stale_while_another_verifies_nightly(
    s3_conn, s3_bucket, s3_client, settings
):
    put_backup(s3_client, s3_bucket, "airflow", dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
    results = freshness(s3_bucket, settings, databases="airflow,mlflow")
    assert results["airflow"].ok
    assert not results["mlflow"].ok and "mlflow: no verified backup recorded" in results["mlflow"].summary


def test_a_marker_whose_dump_is_gone_or_replaced_is_not_fresh(s3_conn, s3_bucket, s3_client, settings):
    marker = put_backup(s3_client, s3_bucket, "platform", dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
    s3_client.put_object(Bucket=s3_bucket, Key=marker["key"], Body=b"PGDMP-other")  # replaced
    replaced = freshness(s3_bucket, settings, databases="platform")["platform"]
    assert not replaced.ok and "replaced after its verification" in replaced.summary

    s3_client.delete_object(Bucket=s3_bucket, Key=marker["key"])
    gone = freshness(s3_bucket, settings, databases="platform")["platform"]
    assert not gone.ok and f"the verified dump {marker['key']} is gone" in gone.summary
