"""Restore verification: prove that a dump in S3 restores to what its manifest says.

For one manifest, :func:`verify_backup`:

1. streams the dump from S3 straight into ``pg_restore`` (no temporary file),
   hashing it on the way; size and sha256 must equal the manifest's, and the
   object must still be the one the backup wrote (its ETag);
2. restores into a throwaway database (``verify_<db>_<date>_<random>``), created
   from ``template0`` (a table someone left in ``template1`` must not make a good
   dump look bad) on the *scratch* server (setting ``backup_verify_conn_id``),
   and dropped afterwards whatever happens; leftovers of killed runs
   (``verify_<db>_*``) are dropped first. Restoring onto the source server needs
   the explicit opt-in ``backup_verify_on_source``: a full restore writes the
   database's size in WAL to its replicas and needs twice the disk;
3. counts every table of the restored database and compares each count, and the
   set of tables, with the manifest; when the globals (roles) were restored first
   (``globals.py``), owners and grants are restored too and every table's
   privileges must equal the manifest's.

Any difference raises :class:`VerificationFailed` listing every problem found.

After a success, :func:`write_marker` writes the per-database marker
``_markers/postgres/<database>/last_verified.json`` that the freshness check and
the metrics read (only after verification, and never moving back to an older
backup)::

    {
      "database": "platform",
      "backup_id": "20260301T030512.204311Z-1a2b3c4d",
      "key": "postgres/platform/2026-03-01/20260301T030512.204311Z-1a2b3c4d/platform.dump",
      "manifest_key": "postgres/platform/2026-03-01/20260301T030512.204311Z-1a2b3c4d/manifest.json",
      "etag": "<the dump's ETag>",
      "sha256": "<hex>",                              # of the dump, checked on download
      "size_bytes": 123,
      "backup_seconds": 12.5,                         # manifest finished_at - started_at
      "verified_at": "2026-03-01T03:04:05.123456+00:00",     # ISO 8601, UTC
      "backup_logical_date": "2026-03-01",
      "grants_checked": true,
      "tables": {"public.models": 250}                # row counts after restore
    }
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import subprocess
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from mlops.backups import layout
from mlops.backups.manifest import BackupManifest
from mlops.backups.postgres import PgTarget, count_rows, pg_binary, table_grants
from mlops.backups.s3 import Encryption, get_json_and_etag, put_replacing

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024


class VerificationFailed(RuntimeError):
    """The dump does not restore to what its manifest promises."""

    def __init__(self, database: str, key: str, problems: list[str]) -> None:
        self.database, self.key, self.problems = database, key, problems
        super().__init__(f"verification of s3 object {key} ({database}) failed: " + "; ".join(problems))


@dataclass
class VerificationResult:
    """A successful verification; ``as_marker()`` is the marker JSON."""

    database: str
    backup_id: str
    key: str
    manifest_key: str
    etag: str
    sha256: str
    size_bytes: int
    backup_seconds: float
    backup_logical_date: str
    verified_at: str
    grants_checked: bool = False
    tables: dict[str, int] = field(default_factory=dict)
    restore_seconds: float = 0.0

    def as_marker(self) -> dict[str, Any]:
        marker = asdict(self)
        marker.pop("restore_seconds")
        return marker


class VerifyServerNotConfigured(RuntimeError):
    """No scratch server is configured and restoring onto the source was not opted into."""


def verify_server(settings: Any) -> PgTarget:
    """The server that restore tests run on: ``backup_verify_conn_id``'s (the scratch server).

    Without it, only ``backup_verify_on_source`` (an explicit opt-in) allows the source
    server, with a warning; otherwise :class:`VerifyServerNotConfigured`.
    """
    if settings.backup_verify_conn_id:
        return PgTarget.from_connection(settings.backup_verify_conn_id, "postgres")
    if not settings.backup_verify_on_source:
        raise VerifyServerNotConfigured(
            "no scratch server for restore tests: set MLOPS_BACKUP_VERIFY_CONN_ID to a Postgres "
            "connection of a server that is not the source "
            "(or, knowingly, MLOPS_BACKUP_VERIFY_ON_SOURCE=true)"
        )
    server = PgTarget.from_connection(settings.postgres_conn_id, "postgres")
    log.warning(
        "Restore tests run on the SOURCE server %s (MLOPS_BACKUP_VERIFY_ON_SOURCE): each one writes the "
        "database's size in WAL to its replicas and needs that much free disk. Configure a scratch "
        "server with MLOPS_BACKUP_VERIFY_CONN_ID.",
        server.describe(),
    )
    return server


def _throwaway_name(database: str, manifest: BackupManifest) -> str:
    return f"verify_{database[:30]}_{manifest.logical_date:%Y%m%d}_{uuid.uuid4().hex[:8]}"


def _leftover_pattern(database: str) -> re.Pattern[str]:
    return re.compile(rf"^verify_{re.escape(database[:30])}_\d{{8}}_[0-9a-f]{{8}}$")


def drop_leftovers(server: PgTarget, database: str) -> list[str]:
    """Drop throwaway databases of ``database`` that killed runs left on the scratch server."""
    with server.with_database("postgres").connect(autocommit=True) as admin:
        names = [
            r[0] for r in admin.execute("SELECT datname FROM pg_database WHERE datname LIKE 'verify\\_%'")
        ]
    leftovers = [n for n in names if _leftover_pattern(database).match(n)]
    for name in leftovers:
        log.warning("Dropping %s on %s, left by a killed verification run", name, server.describe())
        _drop_database(server, name)
    return leftovers


def _create_database(server: PgTarget, name: str) -> None:
    from psycopg import sql

    with server.with_database("postgres").connect(autocommit=True) as admin:
        # template0: whatever was added to template1 must not appear in (and fail) the restore.
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))


def _drop_database(server: PgTarget, name: str) -> None:
    from psycopg import sql

    try:
        with server.with_database("postgres").connect(autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    except Exception:
        log.exception("Could not drop throwaway database %s on %s; drop it by hand", name, server.describe())


def read_manifest(client: Any, bucket: str, manifest_key: str) -> BackupManifest:
    """Load and validate one manifest."""
    return BackupManifest.from_json(client.get_object(Bucket=bucket, Key=manifest_key)["Body"].read())


def _restore_stream(
    client: Any, manifest: BackupManifest, target: PgTarget, pg_restore: str, with_grants: bool
) -> tuple[list[str], str]:
    """Pipe the object into pg_restore; returns (problems, sha256)."""
    problems: list[str] = []
    obj = client.get_object(Bucket=manifest.bucket, Key=manifest.key)
    etag = obj["ETag"].strip('"')
    digest = hashlib.sha256()
    size = 0
    # Without the roles on the scratch server, owners and grants cannot be restored.
    ownership = [] if with_grants else ["--no-owner", "--no-acl"]
    with tempfile.TemporaryFile() as stderr_file:
        proc = subprocess.Popen(  # noqa: S603 - resolved client binary, no shell
            [
                pg_restore,
                *ownership,
                "--exit-on-error",
                "--no-password",
                "--dbname",
                target.dbname,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=stderr_file,
            env=target.env(),
        )
        stdin = proc.stdin
        try:
            for chunk in obj["Body"].iter_chunks(CHUNK):
                digest.update(chunk)
                size += len(chunk)
                if stdin is not None:
                    try:
                        stdin.write(chunk)
                    except BrokenPipeError:
                        stdin = None  # pg_restore gave up; keep hashing to report the checksum too
        except Exception as exc:  # e.g. botocore's FlexibleChecksumError: S3's own checksum disagrees
            problems.append(f"download failed after {size} bytes: {type(exc).__name__}: {exc}")
            proc.kill()
        finally:
            if proc.stdin is not None:
                try:
                    proc.stdin.close()
                except BrokenPipeError:
                    pass
            code = proc.wait()
        stderr_file.seek(0)
        stderr = stderr_file.read().decode(errors="replace").strip()[-1500:]
    sha = digest.hexdigest()
    if size != manifest.size_bytes:
        problems.append(f"size {size} != manifest {manifest.size_bytes} (truncated or replaced object)")
    if sha != manifest.sha256:
        problems.append(f"sha256 {sha} != manifest {manifest.sha256}")
    if manifest.etag and etag != manifest.etag:
        problems.append(f"object ETag {etag} != manifest {manifest.etag} (replaced after the backup)")
    if code != 0:
        problems.append(f"pg_restore exited with {code}: {stderr or '(no stderr)'}")
    return problems, sha


def compare_counts(expected: dict[str, int], actual: dict[str, int]) -> list[str]:
    """Human-readable differences between manifest and restored row counts (empty when equal)."""
    problems = [f"table {t} missing after restore" for t in sorted(expected.keys() - actual.keys())]
    problems += [f"table {t} restored but not in manifest" for t in sorted(actual.keys() - expected.keys())]
    problems += [
        f"table {t}: {actual[t]} rows restored, manifest says {expected[t]}"
        for t in sorted(expected.keys() & actual.keys())
        if expected[t] != actual[t]
    ]
    return problems


def compare_grants(expected: dict[str, list[str]], actual: dict[str, list[str]]) -> list[str]:
    """Differences between the manifest's table privileges and the restored ones."""
    problems = []
    for table in sorted(expected.keys() | actual.keys()):
        want, got = set(expected.get(table, [])), set(actual.get(table, []))
        if want - got:
            problems.append(f"table {table}: privileges missing after restore: {sorted(want - got)}")
        if got - want:
            problems.append(f"table {table}: privileges not in the manifest: {sorted(got - want)}")
    return problems


def verify_backup(
    client: Any,
    bucket: str,
    manifest_key: str,
    server: PgTarget,
    *,
    pg_bin_dir: str = "",
    with_grants: bool = False,
) -> VerificationResult:
    """Download, checksum, restore and count; raise :class:`VerificationFailed` on any difference.

    ``server`` says where to restore (its ``dbname`` is ignored: a throwaway database is
    created there from ``template0`` and always dropped). ``with_grants``: the backup's
    globals are on ``server`` (``globals.restore_globals``), so owners and privileges are
    restored and compared with the manifest as well.
    """
    manifest = read_manifest(client, bucket, manifest_key)
    pg_restore = pg_binary("pg_restore", pg_bin_dir)
    drop_leftovers(server, manifest.database)
    name = _throwaway_name(manifest.database, manifest)
    target = server.with_database(name)
    t0 = time.monotonic()
    _create_database(server, name)
    try:
        problems, sha = _restore_stream(client, manifest, target, pg_restore, with_grants)
        restored: dict[str, int] = {}
        if not problems:
            restored = count_rows(target)
            problems = compare_counts(manifest.row_counts(), restored)
            if with_grants:
                problems += compare_grants(manifest.grants, table_grants(target))
    finally:
        _drop_database(server, name)
    if problems:
        raise VerificationFailed(manifest.database, manifest.key, problems)
    result = VerificationResult(
        database=manifest.database,
        backup_id=manifest.backup_id,
        key=manifest.key,
        manifest_key=manifest_key,
        etag=manifest.etag,
        sha256=sha,
        size_bytes=manifest.size_bytes,
        backup_seconds=round((manifest.finished_at - manifest.started_at).total_seconds(), 3),
        backup_logical_date=manifest.logical_date.isoformat(),
        verified_at=datetime.now(UTC).isoformat(),
        grants_checked=with_grants,
        tables=restored,
        restore_seconds=round(time.monotonic() - t0, 3),
    )
    log.info(
        "Verified %s: sha256 ok, %d tables with equal row counts%s, restored in %.1f s",
        manifest.key,
        len(restored),
        " and privileges" if with_grants else "",
        result.restore_seconds,
    )
    return result


def write_marker(client: Any, bucket: str, result: VerificationResult, encryption: Encryption) -> str | None:
    """Point the database's "last verified" marker at ``result``; returns its key, or None when
    the marker already names a newer backup (it never moves back). The write is conditional on
    the marker read (``If-Match``/``If-None-Match``), so two runs cannot undo each other."""
    key = layout.database_marker_key(result.database)
    raw, etag = get_json_and_etag(client, bucket, key)
    if raw:
        current = json.loads(raw)
        if (current.get("backup_logical_date", ""), current.get("backup_id", "")) > (
            result.backup_logical_date,
            result.backup_id,
        ):
            log.info("Marker %s names a newer backup (%s); left as is", key, current.get("backup_id"))
            return None
    body = json.dumps(result.as_marker(), indent=2, sort_keys=True).encode()
    put_replacing(client, bucket, key, body, encryption, etag)
    return key


def read_marker(client: Any, bucket: str, database: str) -> dict[str, Any] | None:
    """The database's marker JSON, or None when it was never verified."""
    raw, _ = get_json_and_etag(client, bucket, layout.database_marker_key(database))
    return json.loads(raw) if raw else None


def dedup_key(database: str) -> str:
    """One PagerDuty incident per database for failed verifications."""
    return f"mlops-backups/verify/{database}"


def alert_failure(
    router: Any, error: BaseException, database: str, *, key: str = "", links: list | None = None
) -> bool:
    """Page (critical) about a failed verification; the incident is per database."""
    problems = getattr(error, "problems", None) or [str(error)]
    return router.pagerduty(
        action="trigger",
        dedup_key=dedup_key(database),
        summary=f"Backup verification failed for database {database}: {problems[0]}"[:1000],
        severity="critical",
        source="airflow/mlops_backups",
        component="verify_postgres_backup",
        group="mlops_backups",
        custom_details={"database": database, "key": key, "problems": problems},
        links=links,
    )


def report_success(router: Any, result: VerificationResult) -> bool:
    """Resolve the database's verification incident and post a Slack summary."""
    router.pagerduty(action="resolve", dedup_key=dedup_key(result.database))
    return router.slack(
        f"Backup verified: {result.database} ({result.backup_logical_date})",
        [
            f"*Object* `{result.key}`  *Size* {result.size_bytes:,} bytes",
            f"*sha256* `{result.sha256}`",
            f"*Restore* {len(result.tables)} tables, row counts equal to the manifest, "
            f"{result.restore_seconds:.1f} s",
        ],
    )
