"""Where every backup object lives in the backup bucket.

Keys are derived from the database (or series) and the run's *logical date*
only, so a rerun of the same logical date writes the same keys: it overwrites,
never duplicates::

    postgres/<database>/<YYYY-MM-DD>/<database>.dump           the pg_dump -Fc stream
    postgres/<database>/<YYYY-MM-DD>/manifest.json             written last: the commit point
    artifacts/<source key>                                     mirror of the artifacts bucket
    kubernetes/<YYYY-MM-DD>/<namespace>/<Kind>/<name>.yaml     one clean object per file
    kubernetes/<YYYY-MM-DD>/manifest.json                      what was exported (and Secret names)
    _markers/last_verified.json                                newest verified dump, any database
    _markers/postgres/<database>/last_verified.json            newest verified dump of one database
    _state/artifacts_sync.json                                 the artifact sync's ETag ledger
"""

from __future__ import annotations

import re
from datetime import date

POSTGRES_ROOT = "postgres/"
KUBERNETES_ROOT = "kubernetes/"
ARTIFACTS_ROOT = "artifacts/"
LAST_VERIFIED_MARKER = "_markers/last_verified.json"
ARTIFACTS_SYNC_STATE = "_state/artifacts_sync.json"

_DATE_DIR = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def _checked(name: str, what: str) -> str:
    if not _SAFE_NAME.match(name):
        raise ValueError(f"{what} {name!r} cannot be used in an S3 key (allowed: letters, digits, _ . -)")
    return name


def postgres_prefix(database: str) -> str:
    """Prefix holding every backup of ``database``."""
    return f"{POSTGRES_ROOT}{_checked(database, 'database name')}/"


def postgres_dump_key(database: str, day: date) -> str:
    """Key of the dump of ``database`` for logical date ``day``."""
    return f"{postgres_prefix(database)}{day.isoformat()}/{database}.dump"


def postgres_manifest_key(database: str, day: date) -> str:
    """Key of the manifest of the dump of ``database`` for logical date ``day``."""
    return f"{postgres_prefix(database)}{day.isoformat()}/manifest.json"


def database_marker_key(database: str) -> str:
    """Key of the per-database "last verified" marker."""
    return f"_markers/{postgres_prefix(database)}last_verified.json"


def kubernetes_prefix(day: date) -> str:
    """Prefix of the Kubernetes export of logical date ``day``."""
    return f"{KUBERNETES_ROOT}{day.isoformat()}/"


def kubernetes_object_key(day: date, namespace: str, kind: str, name: str) -> str:
    """Key of one exported object."""
    return f"{kubernetes_prefix(day)}{_checked(namespace, 'namespace')}/{kind}/{_checked(name, 'name')}.yaml"


def kubernetes_manifest_key(day: date) -> str:
    """Key of the Kubernetes export's manifest."""
    return f"{kubernetes_prefix(day)}manifest.json"


def artifact_backup_key(source_key: str) -> str:
    """Key in the backup bucket of artifact ``source_key``."""
    return f"{ARTIFACTS_ROOT}{source_key}"


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
