"""Stream ``pg_dump -Fc`` into an S3 multipart upload, with no temporary file.

What a backup promises:

- The dump is read from ``pg_dump``'s stdout in bounded parts and handed to
  boto3's transfer manager; peak memory is about ``part_size x
  IN_MEMORY_PARTS`` whatever the database size.
- The sha256 and size are computed while streaming, then stored in the object's
  metadata (``x-amz-meta-sha256``) and in the manifest (``manifest.py``).
- Row counts are exact for the dump: a REPEATABLE READ transaction exports its
  snapshot, ``pg_dump --snapshot`` dumps that snapshot, and the same transaction
  counts every table.
- If ``pg_dump`` exits non-zero, is killed, or the task is cancelled (SIGTERM,
  ``AirflowTaskTimeout``, any exception while waiting), the stream raises
  instead of reporting end-of-file, so boto3 aborts the multipart upload; any
  upload left open on the key is aborted as well. Nothing half-written stays:
  a failure after the upload completed deletes the dump and its manifest.
- The password travels in ``PGPASSWORD``, never on a command line.
- Compression is ``pg_dump --compress`` (setting ``backup_pg_compress``),
  gzip level 1 by default rather than pg_dump's 6: on a 2-core worker level 6
  makes pg_dump's compression the bottleneck of the whole backup (2.6x slower
  on mixed data for 6.6 % fewer bytes, see ``tests/benchmarks/bench_backups.py``),
  and a shorter dump holds its snapshot, which blocks vacuum, for less time.
  WAL-G makes the same choice (lz4 by default). pg_dump 16+ also takes
  ``lz4`` and ``zstd[:level]``; ``pg_restore`` reads any of them unaided.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from typing import IO, Any

from mlops.backups import layout
from mlops.backups.manifest import BackupManifest, SseInfo, TableCount
from mlops.backups.s3 import Encryption, abort_pending_uploads, ensure_bucket, put_json
from mlops.settings import Settings

log = logging.getLogger(__name__)

MIB = 1024 * 1024
MIN_PART_SIZE = 8 * MIB
MAX_PARTS = 9_000  # S3 allows 10,000; keep headroom because the dump size is only estimated
IN_MEMORY_PARTS = 4
UPLOAD_THREADS = 4
SINGLE_COPY_LIMIT = 5 * 1024 * MIB - 1
DEFAULT_COMPRESSION = Settings.backup_pg_compress  # gzip level 1; see the module docstring
COMPRESSION_SETTING = "MLOPS_BACKUP_PG_COMPRESS"  # the setting backup_pg_compress
_GZIP_LEVEL = re.compile(r"[0-9]")
_METHOD = re.compile(r"(none|gzip|lz4|zstd)(?::(?:level=)?([0-9]{1,2}))?")


class BackupError(RuntimeError):
    """A backup failed; the message says which step and why."""


class DatabaseUnreachable(BackupError):
    """The database did not accept a connection; nothing was written."""


class PgDumpFailed(BackupError):
    """``pg_dump`` exited non-zero or was killed; the upload was aborted."""


class BackupCancelled(BackupError):
    """The task was cancelled mid-stream; the upload was aborted."""


@dataclass(frozen=True)
class PgTarget:
    """Where a database lives, as libpq needs it. The password never reaches argv or logs."""

    host: str
    port: int
    user: str
    dbname: str
    password: str = field(default="", repr=False)
    sslmode: str = ""

    @classmethod
    def from_connection(cls, conn_id: str, database: str | None = None) -> PgTarget:
        """Read an Airflow Postgres connection (``schema`` is the database)."""
        from airflow.sdk import BaseHook

        conn = BaseHook.get_connection(conn_id)
        extra = conn.extra_dejson or {}
        return cls(
            host=conn.host or "localhost",
            port=int(conn.port or 5432),
            user=conn.login or "postgres",
            dbname=database or conn.schema or "postgres",
            password=conn.password or "",
            sslmode=str(extra.get("sslmode", "")),
        )

    def with_database(self, dbname: str) -> PgTarget:
        return replace(self, dbname=dbname)

    def describe(self) -> str:
        return f"{self.user}@{self.host}:{self.port}/{self.dbname}"

    def env(self) -> dict[str, str]:
        """Environment for pg_dump/pg_restore: libpq variables, password included."""
        env = dict(os.environ)
        env.update(PGHOST=self.host, PGPORT=str(self.port), PGUSER=self.user, PGDATABASE=self.dbname)
        env.pop("PGPASSWORD", None)
        if self.password:
            env["PGPASSWORD"] = self.password
        if self.sslmode:
            env["PGSSLMODE"] = self.sslmode
        return env

    def connect(self, autocommit: bool = False, connect_timeout: int = 10) -> Any:
        """A psycopg connection; raises :class:`DatabaseUnreachable` with a readable message."""
        import psycopg

        kwargs: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "dbname": self.dbname,
            "connect_timeout": connect_timeout,
            "application_name": "mlops-backups",
        }
        if self.password:
            kwargs["password"] = self.password
        if self.sslmode:
            kwargs["sslmode"] = self.sslmode
        try:
            return psycopg.connect(autocommit=autocommit, **kwargs)
        except psycopg.OperationalError as exc:
            raise DatabaseUnreachable(f"cannot connect to Postgres {self.describe()}: {exc}".strip()) from exc


def pg_binary(name: str, bin_dir: str = "") -> str:
    """Path of a PostgreSQL client program: ``bin_dir`` (setting ``pg_bin``) or PATH."""
    path = os.path.join(bin_dir, name) if bin_dir else shutil.which(name)
    if not path or not os.access(path, os.X_OK):
        where = bin_dir or "PATH"
        raise BackupError(f"{name} not found in {where}; install the PostgreSQL client or set MLOPS_PG_BIN")
    return path


def client_version(program: str) -> str:
    """``pg_dump --version`` output, e.g. ``pg_dump (PostgreSQL) 15.8``."""
    return subprocess.run(  # noqa: S603 - a resolved client binary, no shell
        [program, "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()


def client_major(version: str) -> int:
    """Major version from ``pg_dump --version`` output (``pg_dump (PostgreSQL) 15.8 (Debian ...)`` -> 15)."""
    match = re.search(r"\)\s+(\d+)", version)
    if not match:
        raise BackupError(f"cannot read the PostgreSQL version from {version!r}")
    return int(match.group(1))


def compression_arg(value: str, pg_dump_version: str) -> str:
    """Check a ``pg_dump --compress`` value against this ``pg_dump``; returns it stripped.

    ``0``-``9`` is a gzip level and works with every pg_dump; ``none``,
    ``gzip[:N]``, ``lz4[:N]`` and ``zstd[:N]`` need pg_dump 16 or later. The
    error names the setting, so a bad value fails before anything is dumped.
    """
    value = value.strip().lower()
    if _GZIP_LEVEL.fullmatch(value):
        return value
    if not _METHOD.fullmatch(value):
        raise BackupError(
            f"{COMPRESSION_SETTING}={value!r}: not a pg_dump compression; use a gzip level 0-9, "
            "or (pg_dump 16+) none, gzip[:N], lz4[:N] or zstd[:N]"
        )
    major = client_major(pg_dump_version)
    if major < 16:
        raise BackupError(
            f"{COMPRESSION_SETTING}={value!r}: needs pg_dump 16 or later, and this is {pg_dump_version}; "
            "use a gzip level 0-9"
        )
    return value


def part_size_for(database_bytes: int) -> int:
    """Multipart part size: 8 MiB, raised so that the dump fits in S3's part limit."""
    size = max(MIN_PART_SIZE, -(-database_bytes // MAX_PARTS))
    return -(-size // MIB) * MIB


def _table_counts(conn: Any) -> list[TableCount]:
    """Exact ``count(*)`` of every user table, in the connection's current transaction."""
    from psycopg import sql

    rows = conn.execute(
        """
        SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
          AND n.nspname !~ '^pg_(toast|temp)'
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                          AND d.objid = c.oid AND d.deptype = 'e')
        ORDER BY 1, 2
        """
    ).fetchall()
    out = []
    for schema, name in rows:
        query = sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(name))
        (count,) = conn.execute(query).fetchone()
        out.append(TableCount(schema=schema, name=name, rows=count))
    return out


def count_rows(target: PgTarget) -> dict[str, int]:
    """``{"schema.table": rows}`` of every user table of ``target`` (used by verification)."""
    with target.connect(autocommit=True) as conn:
        return {t.qualified: t.rows for t in _table_counts(conn)}


class DumpStream:
    """File-like view of ``pg_dump``'s stdout that hashes as it goes and refuses a bad end.

    ``read(n)`` returns exactly ``n`` bytes until the end of the dump (S3 rejects
    short middle parts). At end of stream the process is reaped: a non-zero exit
    raises :class:`PgDumpFailed` (or :class:`BackupCancelled` after
    :meth:`cancel`) instead of returning ``b""``, which is what makes boto3 abort
    the multipart upload rather than complete a truncated object.
    """

    def __init__(self, proc: subprocess.Popen, stderr_file: IO[bytes], what: str) -> None:
        self._proc = proc
        self._stderr = stderr_file
        self._what = what
        self._hash = hashlib.sha256()
        self.size = 0
        self.cancelled = threading.Event()

    def readable(self) -> bool:
        return True

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def cancel(self) -> None:
        """Stop the dump: kill ``pg_dump``; the next read raises :class:`BackupCancelled`."""
        self.cancelled.set()
        if self._proc.poll() is None:
            self._proc.kill()

    def stderr_tail(self, limit: int = 2000) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-limit:].strip()

    def read(self, n: int = -1) -> bytes:
        if self.cancelled.is_set():
            raise BackupCancelled(f"backup of {self._what} cancelled; multipart upload aborted")
        if self._proc.stdout is None:
            raise BackupError("pg_dump was started without a stdout pipe")
        data = self._proc.stdout.read() if n is None or n < 0 else self._proc.stdout.read(n)
        if data:
            self._hash.update(data)
            self.size += len(data)
        if n is None or n < 0 or len(data) < n:
            self._check_exit()
        return data

    def _check_exit(self) -> None:
        code = self._proc.wait()
        if self.cancelled.is_set():
            raise BackupCancelled(f"backup of {self._what} cancelled; multipart upload aborted")
        if code != 0:
            raise PgDumpFailed(
                f"pg_dump of {self._what} exited with {code} after {self.size} bytes; "
                f"upload aborted. stderr: {self.stderr_tail() or '(empty)'}"
            )


@contextmanager
def _cancel_on_sigterm(cancel: Callable[[], None]) -> Iterator[None]:
    """While streaming, SIGTERM (Airflow's task kill) stops the dump, then runs the previous handler."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)

    def handler(signum: int, frame: Any) -> None:
        log.warning("SIGTERM received: stopping pg_dump and aborting the upload")
        cancel()
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _transfer_config(part_size: int) -> Any:
    from boto3.s3.transfer import TransferConfig

    config = TransferConfig(
        multipart_threshold=part_size,
        multipart_chunksize=part_size,
        max_concurrency=UPLOAD_THREADS,
        use_threads=True,
    )
    # Bounds the parts read ahead of the network: memory stays flat as the database grows.
    config.max_in_memory_upload_chunks = IN_MEMORY_PARTS
    return config


def _stream_upload(
    client: Any, stream: DumpStream, bucket: str, key: str, extra_args: dict[str, Any], part_size: int
) -> None:
    """Upload ``stream`` to ``bucket/key``; on any failure or interruption nothing stays on S3."""
    from boto3.s3.transfer import create_transfer_manager

    manager = create_transfer_manager(client, _transfer_config(part_size))
    future = manager.upload(stream, bucket, key, extra_args=extra_args)
    try:
        future.result()
    except BaseException as exc:
        # Also reached by AirflowTaskTimeout / KeyboardInterrupt raised in this thread.
        stream.cancel()
        future.cancel()
        manager.shutdown(cancel=True, cancel_msg=str(exc) or type(exc).__name__)
        abort_pending_uploads(client, bucket, key)
        raise
    manager.shutdown()


def _set_metadata(
    client: Any, bucket: str, key: str, size: int, metadata: dict[str, str], encryption: Encryption
) -> None:
    """Attach metadata known only after streaming, by a server-side copy onto itself.

    The copy also asks S3 for a SHA256 checksum of the whole object (a single
    CopyObject up to 5 GiB), so S3 itself can vouch for the bytes later.
    """
    from boto3.s3.transfer import TransferConfig

    extra = {
        "Metadata": metadata,
        "MetadataDirective": "REPLACE",
        "ContentType": "application/octet-stream",
        "ChecksumAlgorithm": "SHA256",
        **encryption.extra_args(),
    }
    client.copy(
        {"Bucket": bucket, "Key": key},
        bucket,
        key,
        ExtraArgs=extra,
        Config=TransferConfig(multipart_threshold=SINGLE_COPY_LIMIT, multipart_chunksize=512 * MIB),
    )


def _now() -> datetime:
    return datetime.now(UTC)


def _preflight(client: Any, bucket: str, pg_bin_dir: str, compression: str) -> tuple[str, str, str]:
    """What a backup and its dry run check before touching the database: ``pg_dump`` exists, it
    can do ``compression``, and the bucket is usable. Returns (pg_dump path, its version, the
    compression argument)."""
    pg_dump = pg_binary("pg_dump", pg_bin_dir)
    dump_version = client_version(pg_dump)
    compression = compression_arg(compression, dump_version)
    ensure_bucket(client, bucket)
    return pg_dump, dump_version, compression


def plan_backup(
    client: Any,
    target: PgTarget,
    *,
    bucket: str,
    logical_date: date,
    pg_bin_dir: str = "",
    compression: str = DEFAULT_COMPRESSION,
) -> dict:
    """Dry run: check S3, the database, ``pg_dump`` and its compression; say what would be written."""
    _, dump_version, compression = _preflight(client, bucket, pg_bin_dir, compression)
    with target.connect(autocommit=True) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
        ).fetchone()[0]
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    plan = {
        "database": target.dbname,
        "bucket": bucket,
        "key": layout.postgres_dump_key(target.dbname, logical_date),
        "tables": tables,
        "database_bytes": size,
        "pg_dump": dump_version,
        "compression": compression,
        "dry_run": True,
    }
    log.info(
        "Dry run: would dump %s (%d tables, %d bytes) to s3://%s/%s",
        target.describe(),
        tables,
        size,
        bucket,
        plan["key"],
    )
    return plan


def backup_database(
    client: Any,
    target: PgTarget,
    *,
    bucket: str,
    logical_date: date,
    encryption: Encryption | None = None,
    pg_bin_dir: str = "",
    run_id: str = "",
    part_size: int | None = None,
    compression: str = DEFAULT_COMPRESSION,
) -> BackupManifest:
    """Dump ``target`` to ``s3://bucket/postgres/<db>/<date>/<db>.dump`` and write its manifest.

    Idempotent per ``logical_date``: a rerun overwrites the same two keys.
    Raises :class:`DatabaseUnreachable`, :class:`~mlops.backups.s3.S3Unreachable`,
    :class:`PgDumpFailed` or :class:`BackupCancelled`; in each case no dump,
    manifest or open multipart upload is left for this date's keys.
    """
    import psycopg

    encryption = encryption or Encryption()
    database = target.dbname
    key = layout.postgres_dump_key(database, logical_date)
    manifest_key = layout.postgres_manifest_key(database, logical_date)
    pg_dump, dump_version, compression = _preflight(client, bucket, pg_bin_dir, compression)
    sse = encryption.extra_args()

    started = _now()
    t0 = time.monotonic()
    uploaded = False
    try:
        with target.connect() as conn:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            with conn.transaction():
                server_version = conn.execute("SHOW server_version").fetchone()[0]
                db_bytes = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
                snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
                # The counts run beside pg_dump: one core for them, the rest for the dump.
                conn.execute("SET LOCAL max_parallel_workers_per_gather = 0")
                size_of_part = part_size or part_size_for(db_bytes)
                log.info(
                    "Dumping %s (%d bytes on disk, snapshot %s) to s3://%s/%s in %d MiB parts",
                    target.describe(),
                    db_bytes,
                    snapshot,
                    bucket,
                    key,
                    size_of_part // MIB,
                )
                argv = [
                    pg_dump,
                    "--format=custom",
                    f"--compress={compression}",
                    f"--snapshot={snapshot}",
                    "--no-password",
                    "--dbname",
                    database,
                ]
                with tempfile.TemporaryFile() as stderr_file:
                    proc = subprocess.Popen(  # noqa: S603 - resolved client binary, no shell
                        argv, stdout=subprocess.PIPE, stderr=stderr_file, env=target.env()
                    )
                    stream = DumpStream(proc, stderr_file, target.describe())
                    try:
                        with ThreadPoolExecutor(1, thread_name_prefix="row-counts") as pool:
                            # Counts run in the exporting transaction while pg_dump streams that snapshot.
                            counts = pool.submit(_table_counts, conn)
                            try:
                                with _cancel_on_sigterm(stream.cancel):
                                    _stream_upload(
                                        client,
                                        stream,
                                        bucket,
                                        key,
                                        {"ContentType": "application/octet-stream", **sse},
                                        size_of_part,
                                    )
                            except BaseException:
                                conn.cancel_safe()  # do not wait for the counts of a failed dump
                                raise
                            uploaded = True
                            streamed_s = time.monotonic() - t0
                            tables = counts.result()
                    finally:
                        if proc.poll() is None:
                            proc.kill()
                        proc.wait()
        manifest = BackupManifest(
            database=database,
            logical_date=logical_date,
            bucket=bucket,
            key=key,
            server_version=server_version,
            pg_dump_version=dump_version,
            compression=compression,
            size_bytes=stream.size,
            sha256=stream.sha256,
            started_at=started,
            finished_at=_now(),
            snapshot=snapshot,
            tables=tables,
            sse=SseInfo(**encryption.as_dict()),
            run_id=run_id,
        )
        metadata = {
            "sha256": stream.sha256,
            "database": database,
            "logical-date": logical_date.isoformat(),
            "size": str(stream.size),
        }
        _set_metadata(client, bucket, key, stream.size, metadata, encryption)
        put_json(client, bucket, manifest_key, manifest.to_json(), encryption)
    except BaseException:
        if uploaded:
            log.error(
                "Backup of %s failed after its upload: deleting s3://%s/%s so no half backup stays",
                database,
                bucket,
                key,
            )
            for k in (manifest_key, key):
                try:
                    client.delete_object(Bucket=bucket, Key=k)
                except Exception:
                    log.exception("Could not delete s3://%s/%s", bucket, k)
        raise
    log.info(
        "Backed up %s: %d bytes, sha256 %s, %d tables; streamed in %.1f s, done in %.1f s",
        database,
        stream.size,
        stream.sha256,
        len(tables),
        streamed_s,
        time.monotonic() - t0,
    )
    return manifest


def newest_manifest_key(client: Any, bucket: str, database: str) -> str | None:
    """Key of the newest manifest of ``database`` (by logical date), or None."""
    from mlops.backups.s3 import list_keys

    prefix = layout.postgres_prefix(database)
    dated = [
        (layout.parse_dated_dir(o["Key"], prefix), o["Key"])
        for o in list_keys(client, bucket, prefix)
        if o["Key"].endswith("/manifest.json")
    ]
    dated = [(d, k) for d, k in dated if d is not None]
    return max(dated)[1] if dated else None
