"""The server's globals (roles, role memberships, tablespaces): backed up, restored first, verified.

A database dump holds owners and grants by role *name*; without the roles they name, a
restore either fails or (``--no-owner --no-acl``) silently loses every privilege. So each
run also takes ``pg_dumpall --globals-only`` — without password hashes unless
``backup_globals_with_passwords`` is set (``--no-role-passwords``; managed services such as
RDS refuse to read them anyway) — and the verification restores it onto the scratch
server *before* the databases, which are then restored with their owners and grants and
compared with the manifest's privileges.

Keys: ``globals/<date>/<backup id>/globals.sql`` and its ``manifest.json`` (both written
with ``If-None-Match: *``)::

    {"kind": "globals", "backup_id": ..., "logical_date": ..., "key": ..., "etag": ...,
     "sha256": ..., "size_bytes": ..., "roles": ["app", "reporting"], "passwords": false,
     "pg_dumpall_version": ..., "finished_at": ...}
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
from datetime import UTC, date, datetime
from typing import Any

from mlops.backups import layout
from mlops.backups.postgres import BackupError, PgTarget, client_version, pg_binary
from mlops.backups.s3 import Encryption, ensure_bucket, get_json_and_etag, put_new, put_replacing

log = logging.getLogger(__name__)

# Errors that restoring the globals onto a server that already has some of them may raise.
_TOLERATED = ("already exists", "current user cannot be dropped")


class GlobalsRestoreFailed(BackupError):
    """Restoring the globals onto the scratch server raised an error other than "already exists"."""


def _roles(target: PgTarget) -> list[str]:
    with target.with_database("postgres").connect(autocommit=True) as conn:
        rows = conn.execute("SELECT rolname FROM pg_roles WHERE rolname !~ '^pg_' ORDER BY 1").fetchall()
    return [r[0] for r in rows]


def backup_globals(
    client: Any,
    source: PgTarget,
    *,
    bucket: str,
    logical_date: date,
    encryption: Encryption | None = None,
    pg_bin_dir: str = "",
    with_passwords: bool = False,
    backup_id: str | None = None,
) -> dict[str, Any]:
    """Dump the source server's globals to S3; returns the manifest written."""
    encryption = encryption or Encryption()
    ensure_bucket(client, bucket)
    pg_dumpall = pg_binary("pg_dumpall", pg_bin_dir)
    backup_id = backup_id or layout.new_backup_id()
    argv = [
        pg_dumpall,
        "--globals-only",
        "--no-password",
        "--database=postgres",  # the database to connect to; globals are server-wide
    ]
    if not with_passwords:
        argv.append("--no-role-passwords")
    done = subprocess.run(argv, capture_output=True, env=source.env(), check=False)  # noqa: S603
    if done.returncode != 0:
        raise BackupError(
            f"pg_dumpall --globals-only of {source.describe()} exited with {done.returncode}: "
            f"{done.stderr.decode(errors='replace')[-1500:].strip()}"
        )
    body = done.stdout
    key = layout.globals_key(logical_date, backup_id)
    written = put_new(client, bucket, key, body, encryption, content_type="application/sql")
    manifest = {
        "format_version": 1,
        "kind": "globals",
        "backup_id": backup_id,
        "logical_date": logical_date.isoformat(),
        "bucket": bucket,
        "key": key,
        "etag": written["ETag"].strip('"'),
        "sha256": hashlib.sha256(body).hexdigest(),
        "size_bytes": len(body),
        "roles": _roles(source),
        "passwords": with_passwords,
        "pg_dumpall_version": client_version(pg_dumpall),
        "finished_at": datetime.now(UTC).isoformat(),
    }
    manifest_key = layout.globals_manifest_key(logical_date, backup_id)
    put_new(client, bucket, manifest_key, json.dumps(manifest, indent=2).encode(), encryption)
    roles = len(manifest["roles"])
    log.info("Backed up the globals of %s (%d roles) to s3://%s/%s", source.describe(), roles, bucket, key)
    return {**manifest, "manifest_key": manifest_key}


def restore_globals(
    client: Any, bucket: str, manifest_key: str, server: PgTarget, *, pg_bin_dir: str = ""
) -> dict[str, Any]:
    """Apply the globals script onto ``server`` (the scratch server) with ``psql``.

    "Already exists" errors are expected (the server has its own superuser) and
    tolerated; any other error, a checksum mismatch, or a role of the manifest that is
    missing afterwards raises :class:`GlobalsRestoreFailed`. Returns the manifest.
    """
    manifest = json.loads(client.get_object(Bucket=bucket, Key=manifest_key)["Body"].read())
    body = client.get_object(Bucket=bucket, Key=manifest["key"])["Body"].read()
    if hashlib.sha256(body).hexdigest() != manifest["sha256"]:
        raise GlobalsRestoreFailed(f"{manifest['key']}: sha256 differs from its manifest")
    psql = pg_binary("psql", pg_bin_dir)
    target = server.with_database("postgres")
    done = subprocess.run(  # noqa: S603 - resolved client binary, no shell
        [psql, "--no-psqlrc", "--no-password", "--quiet", "-v", "ON_ERROR_STOP=0", "-f", "-"],
        input=body,
        capture_output=True,
        env=target.env(),
        check=False,
    )
    errors = [
        line
        for line in done.stderr.decode(errors="replace").splitlines()
        if "ERROR:" in line and not any(t in line for t in _TOLERATED)
    ]
    missing = sorted(set(manifest["roles"]) - set(_roles(server)))
    if done.returncode != 0 or errors or missing:
        raise GlobalsRestoreFailed(
            f"restoring {manifest['key']} onto {server.describe()} failed: "
            + "; ".join(errors[:5] + ([f"roles missing afterwards: {missing}"] if missing else []))
            + (f" (psql exited with {done.returncode})" if done.returncode else "")
        )
    log.info(
        "Restored the globals %s onto %s (%d roles)",
        manifest["key"],
        server.describe(),
        len(manifest["roles"]),
    )
    return {**manifest, "manifest_key": manifest_key}


def write_globals_marker(client: Any, bucket: str, manifest: dict[str, Any], encryption: Encryption) -> str:
    """Record the newest verified globals backup (``_markers/globals/last_verified.json``)."""
    raw, etag = get_json_and_etag(client, bucket, layout.GLOBALS_MARKER)
    marker = {
        "backup_id": manifest["backup_id"],
        "key": manifest["key"],
        "manifest_key": manifest["manifest_key"],
        "backup_logical_date": manifest["logical_date"],
        "roles": manifest["roles"],
        "verified_at": datetime.now(UTC).isoformat(),
    }
    put_replacing(
        client, bucket, layout.GLOBALS_MARKER, json.dumps(marker, indent=2).encode(), encryption, etag
    )
    return layout.GLOBALS_MARKER
