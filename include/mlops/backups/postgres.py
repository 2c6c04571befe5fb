"""Stream ``pg_dump -Fc`` into an S3 multipart upload, with no temporary file.

What a backup promises:

- Every backup has its own keys (logical date + backup id, ``layout.py``); the
  dump and its manifest are written with ``If-None-Match: *``, so nothing is
  ever overwritten.
- The dump is read from ``pg_dump``'s stdout in growing parts
  (``upload.py``): never more than S3's 10,000 parts, whatever the dump's size;
  peak memory is a few parts.
- The sha256 and size are computed while streaming and stored in the manifest
  (``manifest.py``) with the object's ETag; there is no metadata self-copy (it
  stored every dump twice on a versioned bucket).
- Row counts are exact for the dump: a REPEATABLE READ transaction exports its
  snapshot, ``pg_dump --snapshot`` dumps that snapshot, and the same transaction
  counts every table.
- If ``pg_dump`` exits non-zero, is killed, or the task is cancelled (SIGTERM,
  ``AirflowTaskTimeout``, any exception while waiting), the stream raises
  instead of reporting end-of-file, so boto3 aborts the multipart upload; any
  upload left open on the key is aborted as well. A failure after the upload
  completed deletes what this run wrote (its own version), and only that.
- ``pg_dump --lock-wait-timeout`` (setting ``backup_lock_wait_timeout``): a dump
  that cannot get its share locks fails instead of queueing behind a migration
  while every later query queues behind it.
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
from mlops.backups.s3 import Encryption, delete_written, ensure_bucket, put_new
from mlops.backups.upload import PartSchedule, schedule_for, upload_stream
from mlops.settings import Settings

log = logging.getLogger(__name__)

MIB = 1024 * 1024
IN_MEMORY_PARTS = 4
UPLOAD_THREADS = 4
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
    sslcert: str = ""  # client certificate file
    sslkey: str = ""  # its private key file
    sslrootcert: str = ""  # CA bundle that the server certificate must chain to

    _SSL_FIELDS = ("sslmode", "sslcert", "sslkey", "sslrootcert")

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
            **{name: str(extra.get(name, "") or "") for name in cls._SSL_FIELDS},
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
        for name in self._SSL_FIELDS:
            env.pop(f"PG{name.upper()}", None)
            if getattr(self, name):
                env[f"PG{name.upper()}"] = getattr(self, name)
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
        for name in self._SSL_FIELDS:
            if getattr(self, name):
                kwargs[name] = getattr(self, name)
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


def part_schedule_for(database_bytes: int) -> PartSchedule:
    """Growing multipart parts starting near ``database_bytes / 9000`` (see ``upload.py``)."""
    return schedule_for(database_bytes)


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


def _table_grants(conn: Any) -> dict[str, list[str]]:
    """``{"schema.table": ["grantee:PRIVILEGE", ...]}`` of every user table, owner included."""
    rows = conn.execute(
        """
        SELECT table_schema, table_name, grantee, privilege_type FROM information_schema.role_table_grants
        WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2, 3, 4
        """
    ).fetchall()
    out: dict[str, list[str]] = {}
    for schema, table, grantee, privilege in rows:
        out.setdefault(f"{schema}.{table}", []).append(f"{grantee}:{privilege}")
    return out


def table_grants(target: PgTarget) -> dict[str, list[str]]:
    """Table privileges of ``target`` (used by verification to compare with the manifest)."""
    with target.connect(autocommit=True) as conn:
        return _table_grants(conn)


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
    backup_id = layout.new_backup_id()
    schedule = part_schedule_for(size)
    plan = {
        "database": target.dbname,
        "bucket": bucket,
        "key": layout.postgres_dump_key(target.dbname, logical_date, backup_id),
        "tables": tables,
        "database_bytes": size,
        "first_part_bytes": schedule.base,
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
    part_size: int | PartSchedule | None = None,
    compression: str = DEFAULT_COMPRESSION,
    backup_id: str | None = None,
    lock_wait_timeout: str = "",
) -> BackupManifest:
    """Dump ``target`` to ``postgres/<db>/<date>/<backup id>/<db>.dump`` and write its manifest.

    Never overwrites: the keys are new for every backup (a fresh ``backup_id`` unless
    one is given) and both writes are conditional. ``part_size`` fixes the first part
    (or the whole :class:`PartSchedule`); by default it follows the database's size.
    Raises :class:`DatabaseUnreachable`, :class:`~mlops.backups.s3.S3Unreachable`,
    :class:`PgDumpFailed`, :class:`BackupCancelled` or
    :class:`~mlops.backups.upload.ObjectExists`; in each case no object and no open
    multipart upload of *this* backup is left, and no other backup is touched.
    """
    import psycopg

    encryption = encryption or Encryption()
    database = target.dbname
    backup_id = backup_id or layout.new_backup_id()
    key = layout.postgres_dump_key(database, logical_date, backup_id)
    manifest_key = layout.postgres_manifest_key(database, logical_date, backup_id)
    pg_dump, dump_version, compression = _preflight(client, bucket, pg_bin_dir, compression)
    sse = encryption.extra_args()

    started = _now()
    t0 = time.monotonic()
    uploaded = None
    try:
        with target.connect() as conn:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            with conn.transaction():
                server_version = conn.execute("SHOW server_version").fetchone()[0]
                db_bytes = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
                snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
                grants = _table_grants(conn)
                # The counts run beside pg_dump: one core for them, the rest for the dump.
                conn.execute("SET LOCAL max_parallel_workers_per_gather = 0")
                if isinstance(part_size, PartSchedule):
                    schedule = part_size
                elif part_size:
                    schedule = PartSchedule(base=part_size)
                else:
                    schedule = part_schedule_for(db_bytes)
                log.info(
                    "Dumping %s (%d bytes on disk, snapshot %s) to s3://%s/%s, parts from %d MiB",
                    target.describe(),
                    db_bytes,
                    snapshot,
                    bucket,
                    key,
                    schedule.base // MIB,
                )
                argv = [
                    pg_dump,
                    "--format=custom",
                    f"--compress={compression}",
                    f"--snapshot={snapshot}",
                    "--no-password",
                ]
                if lock_wait_timeout:
                    argv.append(f"--lock-wait-timeout={lock_wait_timeout}")
                argv += ["--dbname", database]
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
                                    uploaded = upload_stream(
                                        client,
                                        stream,
                                        bucket,
                                        key,
                                        schedule=schedule,
                                        extra_args={"ContentType": "application/octet-stream", **sse},
                                        threads=UPLOAD_THREADS,
                                        in_memory=IN_MEMORY_PARTS,
                                        on_abort=stream.cancel,
                                    )
                            except BaseException:
                                conn.cancel_safe()  # do not wait for the counts of a failed dump
                                raise
                            streamed_s = time.monotonic() - t0
                            tables = counts.result()
                    finally:
                        if proc.poll() is None:
                            proc.kill()
                        proc.wait()
        manifest = BackupManifest(
            database=database,
            logical_date=logical_date,
            backup_id=backup_id,
            bucket=bucket,
            key=key,
            etag=uploaded.etag,
            version_id=uploaded.version_id or "",
            server_version=server_version,
            pg_dump_version=dump_version,
            compression=compression,
            size_bytes=stream.size,
            sha256=stream.sha256,
            started_at=started,
            finished_at=_now(),
            snapshot=snapshot,
            tables=tables,
            grants=grants,
            sse=SseInfo(**encryption.as_dict()),
            run_id=run_id,
        )
        put_new(client, bucket, manifest_key, manifest.to_json(), encryption)
    except BaseException:
        if uploaded is not None:
            log.error(
                "Backup %s of %s failed after its upload: deleting what this run wrote, s3://%s/%s",
                backup_id,
                database,
                bucket,
                key,
            )
            delete_written(client, bucket, key, uploaded.version_id)
        raise
    log.info(
        "Backed up %s as %s: %d bytes in %d parts, sha256 %s, %d tables; streamed in %.1f s, done in %.1f s",
        database,
        backup_id,
        stream.size,
        len(uploaded.part_sizes),
        stream.sha256,
        len(tables),
        streamed_s,
        time.monotonic() - t0,
    )
    return manifest


def manifest_key_of(manifest: BackupManifest) -> str:
    """Key of ``manifest`` itself."""
    return layout.postgres_manifest_key(manifest.database, manifest.logical_date, manifest.backup_id)
