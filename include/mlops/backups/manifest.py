"""The manifest written beside every Postgres dump (in the spirit of pgBackRest's).

A dump without a manifest is incomplete: the manifest is written last, so its
presence is the commit point that retention and verification look for.
Schema (``format_version`` 1)::

    {
      "format_version": 2,
      "kind": "postgres",
      "database": "platform",           "logical_date": "2026-03-01",
      "backup_id": "20260301T030512Z-1a2b3c4d",
      "bucket": "mlops-backups",
      "key": "postgres/platform/2026-03-01/20260301T030512Z-1a2b3c4d/platform.dump",
      "etag": "<the dump object's ETag>", "version_id": "<its VersionId on a versioned bucket, else ''>",
      "server_version": "15.8",         "pg_dump_version": "pg_dump (PostgreSQL) 15.8",
      "compression": "1",               (pg_dump --compress; "" in manifests written before it)
      "size_bytes": 123,                "sha256": "<hex>",
      "started_at": "<ISO 8601 UTC>",   "finished_at": "<ISO 8601 UTC>",
      "snapshot": "00000003-0000001B-1",
      "tables": [{"schema": "public", "name": "models", "rows": 250}],
      "grants": {"public.models": ["reporting:SELECT"]},   (table privileges at the snapshot)
      "sse": {"mode": "AES256", "kms_key_id": ""},
      "run_id": "scheduled__2026-03-01T03:00:00+00:00"
    }

Row counts are exact: they are taken inside the REPEATABLE READ transaction whose
snapshot ``pg_dump --snapshot`` uses, so they describe exactly what the dump holds.
"""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, ConfigDict, Field


class TableCount(BaseModel):
    """Exact row count of one table at the dump's snapshot."""

    model_config = ConfigDict(frozen=True)

    schema_: str = Field(alias="schema")
    name: str
    rows: int

    @property
    def qualified(self) -> str:
        return f"{self.schema_}.{self.name}"


class SseInfo(BaseModel):
    mode: str
    kms_key_id: str = ""


class BackupManifest(BaseModel):
    """What a dump contains and how to check it."""

    model_config = ConfigDict(populate_by_name=True)

    format_version: int = 2
    kind: str = "postgres"
    database: str
    logical_date: date
    backup_id: str = ""
    bucket: str
    key: str
    etag: str = ""
    version_id: str = ""
    server_version: str
    pg_dump_version: str
    compression: str = ""
    size_bytes: int
    sha256: str
    started_at: datetime
    finished_at: datetime
    snapshot: str = ""
    tables: list[TableCount]
    grants: dict[str, list[str]] = Field(default_factory=dict)
    sse: SseInfo
    run_id: str = ""

    def to_json(self) -> bytes:
        return self.model_dump_json(by_alias=True, indent=2).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> BackupManifest:
        return cls.model_validate_json(raw)

    def row_counts(self) -> dict[str, int]:
        """``{"schema.table": rows}``."""
        return {t.qualified: t.rows for t in self.tables}
