"""Restore verification: prove that a dump in S3 restores to what its manifest says.

For one manifest, :func:`verify_backup`:

1. streams the dump from S3 straight into ``pg_restore`` (no temporary file),
   hashing it on the way; size, sha256 and the object's ``sha256`` metadata
   must all equal the manifest's;
2. restores into a throwaway database (``verify_<db>_<date>_<random>``) created
   on the verify server (setting ``backup_verify_conn_id``, default: the source
   server) and dropped afterwards whatever happens;
3. counts every table of the restored database and compares each count, and
   the set of tables, with the manifest.

Any difference raises :class:`VerificationFailed` listing every problem found.
A truncated object fails on size/sha256 (and ``pg_restore``); a corrupted one on
sha256. ``pg_restore --list`` alone would pass a truncated dump, hence the full
restore.

After a success, :func:`write_markers` writes the "last verified" markers the
health checks read, ``_markers/last_verified.json`` (newest verification, any
database) and ``_markers/postgres/<database>/last_verified.json``, both with
this schema::

    {
      "database": "platform",                         # database name
      "key": "postgres/platform/2026-03-01/platform.dump",   # verified dump object
      "manifest_key": "postgres/platform/2026-03-01/manifest.json",
      "sha256": "<hex>",                              # of the dump, checked on download
      "size_bytes": 123,
      "verified_at": "2026-03-01T03:04:05.123456+00:00",     # ISO 8601, UTC
      "backup_logical_date": "2026-03-01",            # the backup run's logical date
      "tables": {"public.models": 250}                # row counts after restore
    }
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from mlops.backups import layout
from mlops.backups.manifest import BackupManifest
from mlops.backups.postgres import PgTarget, count_rows, pg_binary
from mlops.backups.s3 import Encryption, put_json

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
    key: str
    manifest_key: str
    sha256: str
    size_bytes: int
    backup_logical_date: str
    verified_at: str
    tables: dict[str, int] = field(default_factory=dict)
    restore_seconds: float = 0.0

    def as_marker(self) -> dict[str, Any]:
        marker = asdict(self)
        marker.pop("restore_seconds")
        return marker


def _throwaway_name(database: str, manifest: BackupManifest) -> str:
    return f"verify_{database[:30]}_{manifest.logical_date:%Y%m%d}_{uuid.uuid4().hex[:8]}"


def _create_database(server: PgTarget, name: str) -> None:
    from psycopg import sql

    with server.with_database("postgres").connect(autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


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
    client: Any, manifest: BackupManifest, target: PgTarget, pg_restore: str
) -> tuple[list[str], str]:
    """Pipe the object into pg_restore; returns (problems, sha256)."""
    problems: list[str] = []
    obj = client.get_object(Bucket=manifest.bucket, Key=manifest.key)
    meta_sha = (obj.get("Metadata") or {}).get("sha256", "")
    digest = hashlib.sha256()
    size = 0
    with tempfile.TemporaryFile() as stderr_file:
        proc = subprocess.Popen(  # noqa: S603 - resolved client binary, no shell
            [
                pg_restore,
                "--no-owner",
                "--no-acl",
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
    if meta_sha and meta_sha != manifest.sha256:
        problems.append(f"object metadata sha256 {meta_sha} != manifest {manifest.sha256}")
    if not meta_sha:
        problems.append("object has no sha256 metadata")
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


def verify_backup(
    client: Any, bucket: str, manifest_key: str, server: PgTarget, *, pg_bin_dir: str = ""
) -> VerificationResult:
    """Download, checksum, restore and count; raise :class:`VerificationFailed` on any difference.

    ``server`` says where to restore (its ``dbname`` is ignored: a throwaway
    database is created there and always dropped).
    """
    manifest = read_manifest(client, bucket, manifest_key)
    pg_restore = pg_binary("pg_restore", pg_bin_dir)
    name = _throwaway_name(manifest.database, manifest)
    target = server.with_database(name)
    t0 = time.monotonic()
    _create_database(server, name)
    try:
        problems, sha = _restore_stream(client, manifest, target, pg_restore)
        restored: dict[str, int] = {}
        if not problems:
            restored = count_rows(target)
            problems = compare_counts(manifest.row_counts(), restored)
    finally:
        _drop_database(server, name)
    if problems:
        raise VerificationFailed(manifest.database, manifest.key, problems)
    result = VerificationResult(
        database=manifest.database,
        key=manifest.key,
        manifest_key=manifest_key,
        sha256=sha,
        size_bytes=manifest.size_bytes,
        backup_logical_date=manifest.logical_date.isoformat(),
        verified_at=datetime.now(UTC).isoformat(),
        tables=restored,
        restore_seconds=round(time.monotonic() - t0, 3),
    )
    log.info(
        "Verified %s: sha256 ok, %d tables with equal row counts, restored in %.1f s",
        manifest.key,
        len(restored),
        result.restore_seconds,
    )
    return result


def write_markers(client: Any, bucket: str, result: VerificationResult, encryption: Encryption) -> list[str]:
    """Write the per-database and global "last verified" markers; returns their keys."""
    body = json.dumps(result.as_marker(), indent=2, sort_keys=True).encode()
    keys = [layout.database_marker_key(result.database), layout.LAST_VERIFIED_MARKER]
    for key in keys:
        put_json(client, bucket, key, body, encryption)
    return keys


def read_marker(client: Any, bucket: str, database: str | None = None) -> dict[str, Any] | None:
    """The marker JSON (per database, or the global one), or None when never verified."""
    from mlops.backups.s3 import get_json_or_none

    key = layout.database_marker_key(database) if database else layout.LAST_VERIFIED_MARKER
    raw = get_json_or_none(client, bucket, key)
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
