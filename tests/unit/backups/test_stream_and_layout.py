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
    part_size_for,
)
from mlops.backups.s3 import Encryption
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


def test_keys_are_named_by_database_and_logical_date():
    day = date(2026, 3, 1)
    assert layout.postgres_dump_key("platform", day) == "postgres/platform/2026-03-01/platform.dump"
    assert layout.postgres_manifest_key("platform", day) == "postgres/platform/2026-03-01/manifest.json"
    assert layout.database_marker_key("platform") == "_markers/postgres/platform/last_verified.json"
    assert layout.kubernetes_object_key(day, "ml-serving", "Service", "m") == (
        "kubernetes/2026-03-01/ml-serving/Service/m.yaml"
    )
    assert layout.parse_dated_dir("postgres/platform/2026-02-30/x", "postgres/platform/") is None
    assert layout.parse_dated_dir("postgres/platform/2026-02-28/x", "postgres/platform/") == date(2026, 2, 28)
    with pytest.raises(ValueError, match="cannot be used in an S3 key"):
        layout.postgres_dump_key("../etc", day)


def test_part_size_is_flat_until_the_dump_would_need_more_than_9000_parts():
    assert part_size_for(0) == part_size_for(2 * 1024**3) == 8 * MIB
    assert part_size_for(1024**4) == 117 * MIB  # 1 TiB database: still under the 10,000-part limit
    assert 1024**4 / part_size_for(1024**4) < 9000


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
