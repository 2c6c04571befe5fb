"""Where every backup object lives in the backup bucket.

Every backup has its own immutable keys: the run's *logical date* (what retention
counts by) plus a unique *backup id* (``20260301T030512.204311Z-1a2b3c4d``: when it started,
and a random part). Clearing a run, or a manual run on the same day as the nightly
one, writes new keys beside the old ones; nothing is ever overwritten (every final
write is conditional: ``If-None-Match: *``)::

    postgres/<database>/<YYYY-MM-DD>/<backup id>/<database>.dump    the pg_dump -Fc stream
    postgres/<database>/<YYYY-MM-DD>/<backup id>/manifest.json      written last: the commit point
    globals/<YYYY-MM-DD>/<backup id>/globals.sql                    pg_dumpall --globals-only
    globals/<YYYY-MM-DD>/<backup id>/manifest.json
    kubernetes/<YYYY-MM-DD>/<backup id>/<namespace>/<Kind>/<name>.yaml
    kubernetes/<YYYY-MM-DD>/<backup id>/manifest.json
    artifacts/<source key>                                          current copy of each artifact
    artifacts-retired/<YYYY-MM-DD>/<sync id>/<source key>           copies the source deleted or
                                                                    overwrote, kept for a grace period
    _markers/postgres/<database>/last_verified.json                 newest verified dump of one database
    _markers/globals/last_verified.json                             newest verified globals
    _state/artifacts_sync.json                                      the artifact sync's ETag ledger

A backup directory without its ``manifest.json`` is an orphan (a run killed after its
upload); the retention task's sweep removes orphans older than a day and reports them.
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, date, datetime
from urllib.parse import quote

POSTGRES_ROOT = "postgres/"
GLOBALS_ROOT = "globals/"
KUBERNETES_ROOT = "kubernetes/"
ARTIFACTS_ROOT = "artifacts/"
ARTIFACTS_RETIRED_ROOT = "artifacts-retired/"
MANIFEST = "manifest.json"
GLOBALS_MARKER = "_markers/globals/last_verified.json"
ARTIFACTS_SYNC_STATE = "_state/artifacts_sync.json"

_DATE_DIR = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
# Microseconds since issue 14's CI found two same-second backups ordered by their random part
# (the marker then stayed on the older one); ids written before carry whole seconds only.
BACKUP_ID = re.compile(r"^\d{8}T\d{6}(\.\d{6})?Z-[0-9a-f]{8}$")


def _checked(name: str, what: str) -> str:
    if not _SAFE_NAME.match(name) or name in {".", ".."}:
        raise ValueError(f"{what} {name!r} cannot be used in an S3 key (allowed: letters, digits, _ . -)")
    return name


def _checked_id(backup_id: str) -> str:
    if not BACKUP_ID.match(backup_id):
        raise ValueError(f"{backup_id!r} is not a backup id (YYYYMMDDTHHMMSS.ffffffZ-xxxxxxxx)")
    return backup_id


def new_backup_id(now: datetime | None = None) -> str:
    """A fresh, sortable, unique backup id: UTC start time (to the microsecond, so that two runs
    in the same second still sort by start) plus 32 random bits."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{now:%Y%m%dT%H%M%S.%fZ}-{secrets.token_hex(4)}"


def postgres_prefix(database: str) -> str:
    """Prefix holding every backup of ``database``."""
    return f"{POSTGRES_ROOT}{_checked(database, 'database name')}/"


def postgres_backup_prefix(database: str, day: date, backup_id: str) -> str:
    """Directory of one backup of ``database``."""
    return f"{postgres_prefix(database)}{day.isoformat()}/{_checked_id(backup_id)}/"


def postgres_dump_key(database: str, day: date, backup_id: str) -> str:
    """Key of one dump of ``database`` (logical date ``day``, id ``backup_id``)."""
    return f"{postgres_backup_prefix(database, day, backup_id)}{database}.dump"


def postgres_manifest_key(database: str, day: date, backup_id: str) -> str:
    """Key of the manifest of that dump."""
    return f"{postgres_backup_prefix(database, day, backup_id)}{MANIFEST}"


def globals_prefix(day: date, backup_id: str) -> str:
    """Directory of one backup of the server's globals (roles, tablespaces)."""
    return f"{GLOBALS_ROOT}{day.isoformat()}/{_checked_id(backup_id)}/"


def globals_key(day: date, backup_id: str) -> str:
    return f"{globals_prefix(day, backup_id)}globals.sql"


def globals_manifest_key(day: date, backup_id: str) -> str:
    return f"{globals_prefix(day, backup_id)}{MANIFEST}"


def database_marker_key(database: str) -> str:
    """Key of the per-database "last verified" marker."""
    return f"_markers/{postgres_prefix(database)}last_verified.json"


def kubernetes_prefix(day: date, backup_id: str) -> str:
    """Prefix of one Kubernetes export."""
    return f"{KUBERNETES_ROOT}{day.isoformat()}/{_checked_id(backup_id)}/"


def kubernetes_name(name: str) -> str:
    """An object's name as a key segment: RBAC names such as ``airflow:pod-launcher`` are kept
    readable; anything S3 tools handle badly is percent-encoded. Kubernetes path-segment names
    never contain ``/`` or ``%`` and are never ``.`` or ``..``."""
    if not name or name in {".", ".."} or "/" in name:
        raise ValueError(f"{name!r} is not a Kubernetes object name")
    return quote(name, safe=":@+=-_.")


def kubernetes_object_key(day: date, backup_id: str, namespace: str, kind: str, name: str) -> str:
    """Key of one exported object."""
    return (
        f"{kubernetes_prefix(day, backup_id)}{_checked(namespace, 'namespace')}/{kind}/"
        f"{kubernetes_name(name)}.yaml"
    )


def kubernetes_manifest_key(day: date, backup_id: str) -> str:
    """Key of one Kubernetes export's manifest."""
    return f"{kubernetes_prefix(day, backup_id)}{MANIFEST}"


def artifact_backup_key(source_key: str) -> str:
    """Key in the backup bucket of the current copy of artifact ``source_key``."""
    return f"{ARTIFACTS_ROOT}{source_key}"


def artifact_retired_key(day: date, sync_id: str, source_key: str) -> str:
    """Key of a copy retired on ``day`` (the source deleted or overwrote it)."""
    return f"{ARTIFACTS_RETIRED_ROOT}{day.isoformat()}/{_checked_id(sync_id)}/{source_key}"


def parse_dated_dir(key: str, prefix: str) -> date | None:
    """The date of ``<prefix><YYYY-MM-DD>/...``, or None when ``key`` is not laid out that way."""
    if not key.startswith(prefix):
        return None
    first = key[len(prefix) :].split("/", 1)[0]
    m = _DATE_DIR.match(first)
    if not m:
        return None
    try:
        return date(int(m[1]), int(m[2]), int(m[3]))
    except ValueError:
        return None


def backup_dir(key: str, prefix: str) -> str | None:
    """``<prefix><YYYY-MM-DD>/<backup id>/`` of a key laid out that way, else None."""
    if parse_dated_dir(key, prefix) is None:
        return None
    parts = key[len(prefix) :].split("/")
    if len(parts) < 3 or not BACKUP_ID.match(parts[1]):
        return None
    return f"{prefix}{parts[0]}/{parts[1]}/"
