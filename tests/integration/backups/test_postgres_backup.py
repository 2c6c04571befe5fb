"""Postgres dumps streamed to S3 and verified by a real restore (real Postgres 15, moto S3 over HTTP)."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import textwrap
import time
from datetime import date

import psutil
import psycopg
import pytest

from mlops.backups.manifest import BackupManifest
from mlops.backups.postgres import (
    BackupError,
    DatabaseUnreachable,
    PgDumpFailed,
    PgTarget,
    backup_database,
    manifest_key_of,
)
from mlops.backups.s3 import Encryption, S3Unreachable, s3_client
from mlops.backups.verify import VerificationFailed, read_marker, verify_backup, write_marker
from mlops.settings import get_settings
from tests.harness.postgres import PG_BIN

DAY = date(2026, 3, 1)
PART = 5 * 1024 * 1024  # S3's minimum part size: several parts even for a test-sized dump
EXPECTED_COUNTS = {
    "public.models": 250,
    "public.runs": 1200,
    "registry.Stage Names": 3,
    "registry.empty_table": 0,
}


def _source() -> PgTarget:
    return PgTarget.from_connection(get_settings().postgres_conn_id)


def _keys(s3_client, bucket: str) -> list[str]:
    return sorted(o["Key"] for o in s3_client.list_objects_v2(Bucket=bucket).get("Contents", []))


def _open_uploads(s3_client, bucket: str) -> list[dict]:
    return s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])


def _verify_databases(pg_cluster) -> list[str]:
    with psycopg.connect(pg_cluster.dsn()) as conn:
        return [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'verify_%'")]


# -- a database large enough that a dump is still streaming when the test interrupts it ----------
@pytest.fixture(scope="module")
def big_db(pg_cluster) -> PgTarget:
    db = pg_cluster.create_database("big")
    # Random hex compresses only ~2x, so the dump is ~50 MB: ten 5 MiB parts.
    pg_cluster.execute(
        "CREATE TABLE blobs AS SELECT g AS id, md5(random()::text) || md5(random()::text)"
        " || md5(random()::text) || md5(random()::text) || md5(random()::text) || md5(random()::text) AS body"
        " FROM generate_series(1, 500000) g",
        db,
    )
    return PgTarget(host=pg_cluster.host, port=pg_cluster.port, user=pg_cluster.user, dbname=db)


def _wait_for_upload(s3_client, bucket: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not _open_uploads(s3_client, bucket):
        if time.monotonic() > deadline:
            raise AssertionError("the multipart upload never started")
        time.sleep(0.02)


# -- round trip ------------------------------------------------------------------------------------
def test_round_trip_dump_upload_download_restore_keeps_every_row_count(
    seeded_db, backup_bucket, pg_bin, pg_cluster, s3_client
):
    settings = get_settings()
    client = s3_client_via(settings)
    manifest = backup_database(
        client,
        _source(),
        bucket=backup_bucket,
        logical_date=DAY,
        encryption=Encryption.from_settings(settings),
        pg_bin_dir=settings.pg_bin,
        run_id="manual__1",
    )

    prefix = f"postgres/{seeded_db}/2026-03-01/{manifest.backup_id}/"
    dump_key = f"{prefix}{seeded_db}.dump"
    assert _keys(s3_client, backup_bucket) == sorted([f"{prefix}{seeded_db}.dump", f"{prefix}manifest.json"])
    body = s3_client.get_object(Bucket=backup_bucket, Key=dump_key)
    data = body["Body"].read()
    assert data.startswith(b"PGDMP")  # custom format
    assert hashlib.sha256(data).hexdigest() == manifest.sha256
    assert body["ETag"].strip('"') == manifest.etag
    assert body["ServerSideEncryption"] == "AES256"  # the default: SSE-S3

    stored = BackupManifest.from_json(
        s3_client.get_object(Bucket=backup_bucket, Key=f"{prefix}manifest.json")["Body"].read()
    )
    assert stored.size_bytes == len(data)
    assert stored.row_counts() == EXPECTED_COUNTS
    assert stored.server_version.startswith("15.")
    assert stored.pg_dump_version.startswith("pg_dump (PostgreSQL) 15")
    assert stored.started_at <= stored.finished_at
    assert stored.sse.mode == "AES256" and stored.run_id == "manual__1"
    assert stored.compression == "1" == _archive_compression(data)  # the default: gzip level 1

    result = verify_backup(
        client, backup_bucket, manifest_key_of(manifest), _source(), pg_bin_dir=settings.pg_bin
    )
    assert result.tables == EXPECTED_COUNTS
    assert _verify_databases(pg_cluster) == []  # the throwaway database was dropped

    write_marker(client, backup_bucket, result, Encryption.from_settings(settings))
    marker = read_marker(client, backup_bucket, seeded_db)
    assert {
        k: marker[k] for k in ("database", "backup_id", "key", "sha256", "backup_logical_date", "tables")
    } == {
        "database": seeded_db,
        "backup_id": manifest.backup_id,
        "key": dump_key,
        "sha256": manifest.sha256,
        "backup_logical_date": "2026-03-01",
        "tables": EXPECTED_COUNTS,
    }
    assert marker["verified_at"].endswith("+00:00")


def _archive_compression(dump: bytes) -> str:
    """The compression a custom-format archive declares, as ``pg_restore -l`` reads it."""
    listing = subprocess.run(
        [str(PG_BIN / "pg_restore"), "-l"], input=dump, capture_output=True, check=True
    ).stdout.decode()
    (line,) = [line for line in listing.splitlines() if line.startswith(";     Compression:")]
    return line.split(":", 1)[1].strip()


def s3_client_via(settings):
    """The client the DAG uses: built from the ``aws_default`` Airflow connection."""
    return s3_client(settings)


def test_sse_kms_with_a_key_id_is_requested_for_the_dump_and_the_manifest(
    seeded_db, backup_bucket, pg_bin, s3_client, monkeypatch
):
    monkeypatch.setenv("MLOPS_BACKUP_SSE", "aws:kms")
    monkeypatch.setenv("MLOPS_BACKUP_KMS_KEY_ID", "alias/mlops-backups")
    settings = get_settings()
    manifest = backup_database(
        s3_client_via(settings),
        _source(),
        bucket=backup_bucket,
        logical_date=DAY,
        encryption=Encryption.from_settings(settings),
        pg_bin_dir=pg_bin,
    )

    for key in (manifest.key, manifest_key_of(manifest)):
        head = s3_client.head_object(Bucket=backup_bucket, Key=key)
        assert (head["ServerSideEncryption"], head["SSEKMSKeyId"]) == ("aws:kms", "alias/mlops-backups")
    assert manifest.sse.model_dump() == {"mode": "aws:kms", "kms_key_id": "alias/mlops-backups"}


def test_sse_none_sends_no_encryption_header(seeded_db, backup_bucket, pg_bin, s3_client):
    manifest = backup_database(
        s3_client_via(get_settings()),
        _source(),
        bucket=backup_bucket,
        logical_date=DAY,
        encryption=Encryption("none"),
        pg_bin_dir=pg_bin,
    )
    assert "ServerSideEncryption" not in s3_client.head_object(Bucket=backup_bucket, Key=manifest.key)


def test_row_counts_come_from_the_dumped_snapshot_even_while_rows_are_written(
    big_db, pg_cluster, s3_client, s3_server, s3_bucket
):
    import threading

    stop = threading.Event()

    def writer() -> None:
        with psycopg.connect(pg_cluster.dsn(big_db.dbname), autocommit=True) as conn:
            while not stop.is_set():
                conn.execute("INSERT INTO blobs VALUES (0, 'concurrent')")

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        manifest = backup_database(
            s3_client, big_db, bucket=s3_bucket, logical_date=DAY, pg_bin_dir=str(PG_BIN)
        )
    finally:
        stop.set()
        thread.join()
    restore = pg_cluster.create_database("restore")
    data = s3_client.get_object(Bucket=s3_bucket, Key=manifest.key)["Body"].read()
    subprocess.run(
        [str(PG_BIN / "pg_restore"), "--no-owner", "-d", pg_cluster.dsn(restore)], input=data, check=True
    )
    with psycopg.connect(pg_cluster.dsn(restore)) as conn:
        restored = conn.execute("SELECT count(*) FROM blobs").fetchone()[0]
    assert manifest.row_counts()["public.blobs"] == restored


# -- faults: nothing half-written ------------------------------------------------------------------
def test_pg_dump_killed_mid_stream_leaves_no_object_and_no_pending_upload(big_db, s3_client, s3_bucket):
    import threading

    outcome: dict = {}

    def run() -> None:
        try:
            backup_database(
                s3_client, big_db, bucket=s3_bucket, logical_date=DAY, pg_bin_dir=str(PG_BIN), part_size=PART
            )
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    _wait_for_upload(s3_client, s3_bucket)
    dumps = [p for p in psutil.Process().children() if p.name() == "pg_dump"]
    assert len(dumps) == 1, "pg_dump must still be streaming when it is killed"
    dumps[0].kill()
    thread.join(60)

    assert isinstance(outcome.get("error"), PgDumpFailed)
    assert "exited with -9" in str(outcome["error"])
    assert _keys(s3_client, s3_bucket) == []
    assert _open_uploads(s3_client, s3_bucket) == []


def test_task_timeout_mid_stream_aborts_the_upload(big_db, s3_client, s3_bucket):
    from airflow.sdk.exceptions import AirflowTaskTimeout
    from airflow.sdk.execution_time.timeout import timeout

    with pytest.raises(AirflowTaskTimeout), timeout(1):
        backup_database(
            s3_client, big_db, bucket=s3_bucket, logical_date=DAY, pg_bin_dir=str(PG_BIN), part_size=PART
        )

    assert _keys(s3_client, s3_bucket) == []
    assert _open_uploads(s3_client, s3_bucket) == []
    # pg_dump runs as this process's own child; not recursive: the e2e tier's standalone (a session
    # fixture still alive here) runs its own backups' pg_dump further down the tree.
    assert not [p for p in psutil.Process().children() if p.name() == "pg_dump"]


def test_sigterm_mid_stream_aborts_the_upload_and_stops_pg_dump(big_db, s3_client, s3_server, s3_bucket):
    script = textwrap.dedent(
        f"""
        import datetime, boto3
        from mlops.backups.postgres import PgTarget, backup_database
        client = boto3.client("s3", endpoint_url={s3_server!r}, region_name="us-east-1")
        backup_database(client, PgTarget(**{big_db.__dict__!r}), bucket={s3_bucket!r},
                        logical_date=datetime.date(2026, 3, 1), pg_bin_dir={str(PG_BIN)!r}, part_size={PART})
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
    _wait_for_upload(s3_client, s3_bucket)
    children = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)

    assert proc.returncode != 0
    assert "BackupCancelled" in stderr
    assert _keys(s3_client, s3_bucket) == []
    assert _open_uploads(s3_client, s3_bucket) == []
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]


def test_unreachable_database_fails_with_a_clear_message_and_writes_nothing(
    backup_bucket, pg_bin, pg_cluster, s3_client
):
    dead = PgTarget(host="127.0.0.1", port=1, user="postgres", dbname="platform")
    with pytest.raises(
        DatabaseUnreachable, match=r"cannot connect to Postgres postgres@127.0.0.1:1/platform"
    ):
        backup_database(
            s3_client_via(get_settings()), dead, bucket=backup_bucket, logical_date=DAY, pg_bin_dir=pg_bin
        )
    assert _keys(s3_client, backup_bucket) == []
    assert _open_uploads(s3_client, backup_bucket) == []


def test_unreachable_s3_fails_with_a_clear_message_before_dumping(seeded_db, pg_bin, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_AWS_DEFAULT",
        json.dumps(
            {
                "conn_type": "aws",
                "login": "k",
                "password": "s",
                "extra": {
                    "endpoint_url": "http://127.0.0.1:1",
                    "region_name": "us-east-1",
                    "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 1},
                },
            }
        ),
    )
    with pytest.raises(
        S3Unreachable, match=r"S3 at http://127.0.0.1:1 cannot be reached for bucket 'mlops-backups'"
    ):
        backup_database(
            s3_client_via(get_settings()),
            _source(),
            bucket="mlops-backups",
            logical_date=DAY,
            pg_bin_dir=pg_bin,
        )


def test_missing_bucket_is_reported_by_name(seeded_db, s3_conn, pg_bin):
    with pytest.raises(S3Unreachable, match=r"S3 bucket 'no-such-bucket-x' .* is not usable \(404\)"):
        backup_database(
            s3_client_via(get_settings()),
            _source(),
            bucket="no-such-bucket-x",
            logical_date=DAY,
            pg_bin_dir=pg_bin,
        )


# -- verification detects damaged objects ------------------------------------------------------------
def _backed_up(seeded_db, backup_bucket, pg_bin) -> tuple[object, BackupManifest]:
    client = s3_client_via(get_settings())
    return client, backup_database(
        client, _source(), bucket=backup_bucket, logical_date=DAY, pg_bin_dir=pg_bin
    )


def test_corrupted_object_fails_verification(seeded_db, backup_bucket, pg_bin, pg_cluster, s3_client):
    client, manifest = _backed_up(seeded_db, backup_bucket, pg_bin)
    obj = s3_client.get_object(Bucket=backup_bucket, Key=manifest.key)
    data = bytearray(obj["Body"].read())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, same size
    s3_client.put_object(Bucket=backup_bucket, Key=manifest.key, Body=bytes(data))  # bypasses the pipeline

    with pytest.raises(VerificationFailed) as err:
        verify_backup(client, backup_bucket, manifest_key_of(manifest), _source(), pg_bin_dir=pg_bin)
    assert any(p.startswith("sha256 ") for p in err.value.problems)
    assert not any(p.startswith("size ") for p in err.value.problems)
    assert _verify_databases(pg_cluster) == []
    assert read_marker(client, backup_bucket, seeded_db) is None


def test_truncated_object_fails_verification(seeded_db, backup_bucket, pg_bin, pg_cluster, s3_client):
    client, manifest = _backed_up(seeded_db, backup_bucket, pg_bin)
    obj = s3_client.get_object(Bucket=backup_bucket, Key=manifest.key)
    data = obj["Body"].read()
    s3_client.put_object(Bucket=backup_bucket, Key=manifest.key, Body=data[: len(data) * 2 // 3])

    with pytest.raises(VerificationFailed) as err:
        verify_backup(client, backup_bucket, manifest_key_of(manifest), _source(), pg_bin_dir=pg_bin)
    problems = " | ".join(err.value.problems)
    assert "truncated" in problems and "sha256" in problems and "pg_restore exited" in problems
    assert _verify_databases(pg_cluster) == []


def test_row_count_drift_between_manifest_and_restore_fails_verification(
    seeded_db, backup_bucket, pg_bin, s3_client
):
    client, manifest = _backed_up(seeded_db, backup_bucket, pg_bin)
    doctored = json.loads(manifest.to_json())
    doctored["tables"][0]["rows"] += 1  # the manifest promises a row the dump does not hold
    s3_client.put_object(
        Bucket=backup_bucket,
        Key=manifest_key_of(manifest),
        Body=json.dumps(doctored).encode(),
    )

    with pytest.raises(
        VerificationFailed, match=r"table public.models: 250 rows restored, manifest says 251"
    ):
        verify_backup(client, backup_bucket, manifest_key_of(manifest), _source(), pg_bin_dir=pg_bin)


def test_dry_run_checks_the_database_and_bucket_and_writes_nothing(
    seeded_db, backup_bucket, pg_bin, s3_client
):
    from mlops.backups.tasks import backup_postgres

    plan = backup_postgres(seeded_db, DAY, "manual__dry", dry_run=True)

    assert plan["dry_run"] is True and plan["tables"] == 4 and plan["compression"] == "1"
    assert plan["key"].startswith(f"postgres/{seeded_db}/2026-03-01/") and plan["key"].endswith(
        f"/{seeded_db}.dump"
    )
    assert _keys(s3_client, backup_bucket) == []


# -- compression (setting backup_pg_compress) -----------------------------------------------------------
def test_the_compression_setting_reaches_pg_dump_and_the_dump_still_verifies(
    seeded_db, backup_bucket, pg_bin, s3_client, monkeypatch
):
    from mlops.backups.tasks import backup_postgres

    default = backup_postgres(seeded_db, DAY, "manual__z1", dry_run=False)
    monkeypatch.setenv("MLOPS_BACKUP_PG_COMPRESS", "0")
    plain = backup_postgres(seeded_db, DAY, "manual__z0", dry_run=False)

    data = s3_client.get_object(Bucket=backup_bucket, Key=plain["key"])["Body"].read()
    assert _archive_compression(data) == "0"
    assert plain["size_bytes"] == len(data) > default["size_bytes"]
    manifest = BackupManifest.from_json(
        s3_client.get_object(Bucket=backup_bucket, Key=plain["manifest_key"])["Body"].read()
    )
    assert manifest.compression == "0"
    result = verify_backup(s3_client_via(get_settings()), backup_bucket, plain["manifest_key"], _source(),
                           pg_bin_dir=pg_bin)  # fmt: skip
    assert result.tables == EXPECTED_COUNTS


@pytest.mark.parametrize("dry_run", [True, False])
def test_a_compression_this_pg_dump_cannot_do_fails_naming_the_setting_and_writes_nothing(
    seeded_db, backup_bucket, pg_bin, s3_client, monkeypatch, dry_run
):
    from mlops.backups.tasks import backup_postgres

    monkeypatch.setenv("MLOPS_BACKUP_PG_COMPRESS", "zstd:3")  # pg_dump 16+; this machine has 15
    with pytest.raises(BackupError, match=r"MLOPS_BACKUP_PG_COMPRESS='zstd:3': needs pg_dump 16 or later"):
        backup_postgres(seeded_db, DAY, "manual__zstd", dry_run=dry_run)
    assert _keys(s3_client, backup_bucket) == []
    assert _open_uploads(s3_client, backup_bucket) == []


# -- parts that grow: a real upload crossing a part-size boundary ------------------------------------
def test_a_real_upload_crosses_part_size_boundaries_and_restores(big_db, pg_cluster, s3_client, s3_bucket):
    from mlops.backups.upload import PartSchedule

    schedule = PartSchedule(base=5 * 1024 * 1024, band=2)  # 5, 5, 10, 10, 20 MiB...: a boundary every 2 parts
    manifest = backup_database(
        s3_client, big_db, bucket=s3_bucket, logical_date=DAY, pg_bin_dir=str(PG_BIN), part_size=schedule
    )

    parts = int(manifest.etag.rsplit("-", 1)[1])
    assert parts == schedule.parts_for(manifest.size_bytes) >= 4  # at least one 10 MiB part after the 5s
    sizes = [s3_client.head_object(Bucket=s3_bucket, Key=manifest.key, PartNumber=n)["ContentLength"]
             for n in range(1, parts + 1)]  # fmt: skip
    assert sizes[:4] == [schedule.size_of(n) for n in range(1, 5)] and sum(sizes) == manifest.size_bytes
    data = s3_client.get_object(Bucket=s3_bucket, Key=manifest.key)["Body"].read()
    assert hashlib.sha256(data).hexdigest() == manifest.sha256
    restore = pg_cluster.create_database("restore")
    subprocess.run(
        [str(PG_BIN / "pg_restore"), "--no-owner", "-d", pg_cluster.dsn(restore)], input=data, check=True
    )
    with psycopg.connect(pg_cluster.dsn(restore)) as conn:
        assert (
            conn.execute("SELECT count(*) FROM blobs").fetchone()[0] == manifest.row_counts()["public.blobs"]
        )


# -- hardening ---------------------------------------------------------------------------------------
def test_a_dump_that_cannot_get_its_locks_fails_after_the_lock_wait_timeout(
    seeded_db, backup_bucket, pg_bin, pg_cluster, s3_client
):
    import threading

    locked, release = threading.Event(), threading.Event()

    def migration() -> None:  # holds an ACCESS EXCLUSIVE lock, as a long ALTER TABLE would
        with psycopg.connect(pg_cluster.dsn(seeded_db)) as conn, conn.transaction():
            conn.execute("LOCK TABLE models IN ACCESS EXCLUSIVE MODE")
            locked.set()
            release.wait(30)

    thread = threading.Thread(target=migration)
    thread.start()
    try:
        assert locked.wait(10)
        started = time.monotonic()
        # pg_dump turns --lock-wait-timeout into a statement timeout on its LOCK TABLE.
        with pytest.raises(PgDumpFailed, match=r"(?s)statement timeout.*LOCK TABLE public\.models"):
            backup_database(s3_client_via(get_settings()), _source(), bucket=backup_bucket, logical_date=DAY,
                            pg_bin_dir=pg_bin, lock_wait_timeout="1s")  # fmt: skip
        assert time.monotonic() - started < 15
    finally:
        release.set()
        thread.join()
    assert _keys(s3_client, backup_bucket) == [] and _open_uploads(s3_client, backup_bucket) == []


def test_ssl_settings_come_from_the_connection_extras(monkeypatch, pg_cluster):
    monkeypatch.setenv(
        "AIRFLOW_CONN_PLATFORM_TLS",
        json.dumps({"conn_type": "postgres", "host": "127.0.0.1", "port": pg_cluster.port, "login": "backup",
                    "password": "pw", "schema": "platform",
                    "extra": {"sslmode": "verify-full", "sslrootcert": "/etc/ssl/rds-ca.pem",
                              "sslcert": "/etc/ssl/backup.crt", "sslkey": "/etc/ssl/backup.key"}}),
    )  # fmt: skip
    target = PgTarget.from_connection("platform_tls")
    env = target.env()
    assert (env["PGSSLMODE"], env["PGSSLROOTCERT"], env["PGSSLCERT"], env["PGSSLKEY"]) == (
        "verify-full",
        "/etc/ssl/rds-ca.pem",
        "/etc/ssl/backup.crt",
        "/etc/ssl/backup.key",
    )
    assert "pw" not in repr(target) and env["PGPASSWORD"] == "pw"
    # libpq gets them too: this test server has no TLS, and verify-full refuses to go on without it.
    with pytest.raises(DatabaseUnreachable, match="server does not support SSL, but SSL was required"):
        target.connect(connect_timeout=2)
