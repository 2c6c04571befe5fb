"""The dump stream's end-of-stream contract, key layout and encryption settings."""

from __future__ import annotations

import hashlib
import subprocess
import tempfile
from datetime import date

import pytest

from mlops.backups import layout
from mlops.backups.postgres import (
    MIB,
    BackupError,
    DumpStream,
    PgDumpFailed,
    client_major,
    compression_arg,
)
from mlops.backups.s3 import Encryption
from mlops.backups.upload import (
    GIB,
    S3_MAX_OBJECT,
    S3_MAX_PART,
    S3_MAX_PARTS,
    S3_MIN_PART,
    PartSchedule,
    schedule_for,
)
from mlops.backups.verify import compare_counts


def _stream(script: str) -> DumpStream:
    stderr = tempfile.TemporaryFile()
    proc = subprocess.Popen(["sh", "-c", script], stdout=subprocess.PIPE, stderr=stderr)
    return DumpStream(proc, stderr, "db")


def test_stream_returns_exact_sized_reads_and_hashes_what_it_returned():
    stream = _stream("head -c 300000 /dev/zero")
    parts = [stream.read(100000) for _ in range(3)]
    assert [len(p) for p in parts] == [100000] * 3
    assert stream.read(100000) == b""
    assert stream.sha256 == hashlib.sha256(b"\0" * 300000).hexdigest() and stream.size == 300000


def test_stream_raises_instead_of_ending_when_the_process_fails():
    stream = _stream("printf 'PGDMP partial'; echo 'pg_dump: error: connection lost' >&2; exit 1")
    with pytest.raises(PgDumpFailed, match=r"exited with 1 after 13 bytes.*connection lost"):
        stream.read(1024)


def test_stream_raises_when_the_process_is_killed():
    stream = _stream("printf x; kill -9 $$")
    with pytest.raises(PgDumpFailed, match="exited with -9"):
        stream.read(-1)


BID = "20260301T030512Z-1a2b3c4d"


def test_every_backup_has_its_own_keys_under_its_logical_date():
    day = date(2026, 3, 1)
    assert (
        layout.postgres_dump_key("platform", day, BID) == f"postgres/platform/2026-03-01/{BID}/platform.dump"
    )
    assert (
        layout.postgres_manifest_key("platform", day, BID)
        == f"postgres/platform/2026-03-01/{BID}/manifest.json"
    )
    assert layout.globals_key(day, BID) == f"globals/2026-03-01/{BID}/globals.sql"
    assert layout.database_marker_key("platform") == "_markers/postgres/platform/last_verified.json"
    assert layout.kubernetes_object_key(day, BID, "ml-serving", "Service", "m") == (
        f"kubernetes/2026-03-01/{BID}/ml-serving/Service/m.yaml"
    )
    assert layout.parse_dated_dir("postgres/platform/2026-02-30/x", "postgres/platform/") is None
    assert layout.parse_dated_dir("postgres/platform/2026-02-28/x", "postgres/platform/") == date(2026, 2, 28)
    assert (
        layout.backup_dir(f"postgres/p/2026-02-28/{BID}/p.dump", "postgres/p/")
        == f"postgres/p/2026-02-28/{BID}/"
    )
    with pytest.raises(ValueError, match="cannot be used in an S3 key"):
        layout.postgres_dump_key("../etc", day, BID)
    with pytest.raises(ValueError, match="not a backup id"):
        layout.postgres_dump_key("platform", day, "../x")


def test_backup_ids_are_unique_and_sort_by_start_time():
    from datetime import UTC, datetime

    ids = {layout.new_backup_id(datetime(2026, 3, 1, 3, 0, 5, tzinfo=UTC)) for _ in range(1000)}
    assert len(ids) == 1000 and all(i.startswith("20260301T030005.000000Z-") for i in ids)
    assert layout.new_backup_id(datetime(2026, 3, 1, 14, tzinfo=UTC)) > max(ids)  # a later manual run


def test_two_backups_started_in_the_same_second_sort_by_their_start():
    """CI found it: a rerun within the second of the first got an id that sorted lower, so the
    verified marker stayed on the older backup (test_immutable_backups, 1 run in 2)."""
    from datetime import UTC, datetime, timedelta

    first = datetime(2026, 3, 1, 3, 0, 5, 100, tzinfo=UTC)
    for _ in range(200):
        assert layout.new_backup_id(first + timedelta(milliseconds=1)) > layout.new_backup_id(first)


def test_ids_written_before_microseconds_are_still_read():
    key = layout.postgres_dump_key("platform", date(2026, 3, 1), "20260301T030512Z-1a2b3c4d")
    assert key == "postgres/platform/2026-03-01/20260301T030512Z-1a2b3c4d/platform.dump"


def test_kubernetes_names_with_a_colon_stay_readable_and_odd_ones_are_encoded():
    day = date(2026, 3, 1)
    key = layout.kubernetes_object_key(day, BID, "ml", "Role", "airflow:pod-launcher")
    assert key.endswith("/ml/Role/airflow:pod-launcher.yaml")
    assert layout.kubernetes_name("a b?") == "a%20b%3F"
    with pytest.raises(ValueError):
        layout.kubernetes_name("..")


def test_the_old_part_size_overflowed_the_part_limit_for_an_uncompressed_45_gib_database():
    """The bug: parts sized from pg_database_size/9000 (8 MiB here) and a dump of 1.9x the database."""
    database = 45 * GIB
    old_part = max(8 * MIB, -(-database // 9000))
    assert int(1.9 * database) / old_part > S3_MAX_PARTS  # the old sizing: part 10,001 fails every night
    assert schedule_for(database).parts_for(int(1.9 * database)) <= S3_MAX_PARTS


@pytest.mark.parametrize("database", [0, 1, 8 * MIB, 45 * GIB, 70 * GIB, 1024 * GIB, S3_MAX_OBJECT])
def test_any_dump_up_to_the_largest_s3_object_fits_in_10000_parts(database):
    schedule = schedule_for(database)
    assert schedule.capacity(S3_MAX_PARTS) >= S3_MAX_OBJECT
    assert schedule.parts_for(S3_MAX_OBJECT) <= S3_MAX_PARTS
    sizes = [schedule.size_of(n) for n in (1, 1000, 1001, 5000, 9999, 10_000)]
    assert all(S3_MIN_PART <= size <= S3_MAX_PART for size in sizes)
    assert sizes == sorted(sizes)  # parts only grow


def test_parts_stay_small_for_small_dumps_and_double_every_band():
    schedule = PartSchedule(base=8 * MIB, band=1000)
    assert [schedule.size_of(n) // MIB for n in (1, 1000, 1001, 2001, 9001)] == [8, 8, 16, 32, 4096]
    assert schedule.size_of(10_000) == 4096 * MIB
    assert schedule.parts_for(10 * GIB) == 1000 + 140  # 8,000 MiB in 8 MiB parts, 2,240 MiB in 16 MiB
    assert schedule.capacity() == 8 * MIB * 1000 * 1023  # ~8 TiB > 5 TiB
    assert PartSchedule(base=S3_MAX_PART).size_of(10_000) == S3_MAX_PART
    with pytest.raises(ValueError):
        PartSchedule(base=4 * MIB)


def test_encryption_settings_map_to_s3_arguments():
    assert Encryption("none").extra_args() == {}
    assert Encryption("AES256").extra_args() == {"ServerSideEncryption": "AES256"}
    assert Encryption("aws:kms", "alias/k").extra_args() == {
        "ServerSideEncryption": "aws:kms",
        "SSEKMSKeyId": "alias/k",
    }
    with pytest.raises(ValueError, match="backup_sse must be one of"):
        Encryption("aes")
    with pytest.raises(ValueError, match="backup_kms_key_id is set but backup_sse is not aws:kms"):
        Encryption("AES256", "alias/k")


def test_row_count_comparison_names_every_difference():
    assert compare_counts({"public.a": 1}, {"public.a": 1}) == []
    assert compare_counts({"public.a": 1, "public.b": 2}, {"public.a": 3, "public.c": 0}) == [
        "table public.b missing after restore",
        "table public.c restored but not in manifest",
        "table public.a: 3 rows restored, manifest says 1",
    ]


# -- pg_dump compression (setting backup_pg_compress) -----------------------------------------------
PG15 = "pg_dump (PostgreSQL) 15.8"
PG17 = "pg_dump (PostgreSQL) 17.2 (Debian 17.2-1.pgdg120+1)"


@pytest.mark.parametrize("value", ["0", "1", "6", "9", " 1 "])
def test_a_gzip_level_works_with_every_pg_dump(value):
    assert compression_arg(value, PG15) == value.strip()
    assert compression_arg(value, PG17) == value.strip()


@pytest.mark.parametrize("value", ["zstd", "zstd:3", "lz4:1", "gzip:9", "none", "ZSTD:level=5"])
def test_a_method_needs_pg_dump_16_and_names_the_setting(value):
    assert compression_arg(value, PG17) == value.lower()
    with pytest.raises(BackupError, match=r"^MLOPS_BACKUP_PG_COMPRESS='.*': needs pg_dump 16 or later.*15.8"):
        compression_arg(value, PG15)


@pytest.mark.parametrize("value", ["", "10", "-1", "fast", "brotli", "zstd:", "gzip:1:2", "1; rm -rf /"])
def test_anything_else_is_refused_naming_the_setting(value):
    with pytest.raises(BackupError, match=r"^MLOPS_BACKUP_PG_COMPRESS='.*': not a pg_dump compression"):
        compression_arg(value, PG17)


def test_the_client_major_version_is_read_from_pg_dump_version_output():
    assert client_major(PG15) == 15 and client_major(PG17) == 17
    with pytest.raises(BackupError, match="cannot read the PostgreSQL version"):
        client_major("pg_dump 15")
