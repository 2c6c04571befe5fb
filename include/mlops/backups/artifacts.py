"""Incremental, server-side, parallel sync of model artifacts into the backup bucket.

``s3://<artifacts_bucket>/<prefix>KEY`` is mirrored to ``s3://<backup_bucket>/artifacts/<prefix>KEY``.

How "unchanged" is decided: by content checksum, never by size or mtime
-------------------------------------------------------------------------
The comparison uses the S3 **ETag**, the content digest S3 already returns for
every object in ListObjectsV2: the MD5 of the bytes for a single-part upload,
the MD5 of the parts' MD5s (``"…-N"``) for a multipart one. Either way it
changes whenever the bytes change. So deciding costs listings plus one GET of
a small ledger, and no request per object: that is what makes it cheaper than
``aws s3 sync`` (which compares size and mtime and
so misses same-size rewrites, and re-copies when only mtimes moved).

- A server-side copy of a single-part, non-KMS object keeps the MD5 ETag, so
  such objects are compared directly: source ETag == backup ETag.
- Where a copy's ETag cannot equal the source's (multipart sources, SSE-KMS on
  either side), the ledger ``_state/artifacts_sync.json`` records per key the
  source ETag that was copied and the ETag the copy received. The object is
  unchanged when the source still has the recorded ETag *and* the backup still
  has the recorded copy ETag (a backup object replaced behind our back is copied
  again). A lost ledger only costs one extra copy of those objects.
- Between full checks the ledger stands for the backup side, so a no-change run
  lists only the source (one listing instead of two: about half of what
  ``aws s3 sync`` costs). A full check, which also lists the backup prefix and
  catches copies deleted or replaced by hand, runs when the ledger is missing,
  every ``full_check_days`` (setting ``artifacts_full_check_days``, default 7),
  or when asked (``full_check=True``).
- Not chosen: S3 SHA256 checksums or a ``sha256`` metadata field. Reading either
  needs one HeadObject per object (the listing carries neither), and objects
  written without ``ChecksumAlgorithm`` or by other tools have none.

Copies are server-side (``CopyObject``; multipart copy above 5 GiB), conditional
on the compared ETag (``CopySourceIfMatch``), run in a thread pool, and carry
the backup bucket's SSE settings. Optional deletion of backup objects whose
source is gone is capped: if more than ``max_delete_fraction`` of the backup
copies would go, the sync raises :class:`DeleteCapExceeded` before changing
anything.
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from mlops.backups import layout
from mlops.backups.s3 import Encryption, delete_keys, ensure_bucket, get_json_or_none, list_keys, put_json

log = logging.getLogger(__name__)

SINGLE_COPY_LIMIT = 5 * 1024**3


class SyncError(RuntimeError):
    """Some artifacts could not be copied; the report counts what was done."""


class DeleteCapExceeded(SyncError):
    """Deletion would remove more than the allowed share of the backup copies; nothing was changed."""


@dataclass
class SyncReport:
    """Counts of one sync (``copied``/``deleted`` are "would" counts in a dry run)."""

    copied: int = 0
    skipped: int = 0
    deleted: int = 0
    failed: int = 0
    bytes_copied: int = 0
    source_objects: int = 0
    backup_objects: int = 0
    dry_run: bool = False
    full_check: bool = False
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _etag(obj: dict[str, Any]) -> str:
    return obj["ETag"].strip('"')


@dataclass(frozen=True)
class _Plan:
    to_copy: list[dict[str, Any]]
    to_delete: list[str]
    skipped: int


def _plan(
    source: dict[str, dict], backup: dict[str, dict], ledger: dict[str, dict], dest_prefix: str
) -> _Plan:
    to_copy, skipped = [], 0
    for key, obj in source.items():
        dest = backup.get(dest_prefix + key)
        src_etag = _etag(obj)
        if dest is not None:
            dest_etag = _etag(dest)
            seen = ledger.get(key, {})
            same = (src_etag == dest_etag and "-" not in src_etag) or (
                seen.get("source_etag") == src_etag and seen.get("backup_etag") == dest_etag
            )
            if same:
                skipped += 1
                continue
        to_copy.append(obj)
    sources = {dest_prefix + k for k in source}
    to_delete = sorted(k for k in backup if k not in sources)
    return _Plan(to_copy, to_delete, skipped)


def _copy_one(client: Any, src_bucket: str, obj: dict, dst_bucket: str, dst_key: str, sse: dict) -> str:
    """Server-side copy of the exact version compared; returns the copy's ETag."""
    source = {"Bucket": src_bucket, "Key": obj["Key"]}
    if obj["Size"] <= SINGLE_COPY_LIMIT:
        # ChecksumAlgorithm: S3 stores a whole-object SHA256 of the copy, checkable on every later GET.
        resp = client.copy_object(
            CopySource=source,
            Bucket=dst_bucket,
            Key=dst_key,
            CopySourceIfMatch=obj["ETag"],
            ChecksumAlgorithm="SHA256",
            **sse,
        )
        return resp["CopyObjectResult"]["ETag"].strip('"')
    client.copy(source, dst_bucket, dst_key, ExtraArgs=sse)  # multipart copy, still server-side
    return client.head_object(Bucket=dst_bucket, Key=dst_key)["ETag"].strip('"')


def _full_check_due(ledger_doc: dict | None, every_days: int) -> bool:
    if not ledger_doc or not ledger_doc.get("full_check_at"):
        return True
    last = datetime.fromisoformat(ledger_doc["full_check_at"])
    return datetime.now(UTC) - last >= timedelta(days=every_days)


def sync_artifacts(
    client: Any,
    *,
    source_bucket: str,
    source_prefix: str,
    backup_bucket: str,
    encryption: Encryption | None = None,
    workers: int = 16,
    delete: bool = False,
    max_delete_fraction: float = 0.1,
    dry_run: bool = False,
    full_check: bool | None = None,
    full_check_days: int = 7,
) -> SyncReport:
    """Mirror ``source_bucket/source_prefix`` into ``backup_bucket/artifacts/``; returns the counts.

    ``full_check`` also lists the backup side (catching copies deleted or
    replaced behind the sync's back); by default it runs when the ledger is
    missing or its last full check is ``full_check_days`` old, otherwise the
    ledger stands for the backup side. Raises :class:`DeleteCapExceeded`
    (before any change) when ``delete`` would remove more than
    ``max_delete_fraction`` of the backup copies, and :class:`SyncError` after
    the run when some copies failed.
    """
    t0 = time.monotonic()
    encryption = encryption or Encryption()
    dest_prefix = layout.ARTIFACTS_ROOT
    ensure_bucket(client, source_bucket)
    ensure_bucket(client, backup_bucket)
    with ThreadPoolExecutor(2) as pool:  # the source listing and the ledger are independent
        src_f = pool.submit(list_keys, client, source_bucket, source_prefix)
        raw_ledger = get_json_or_none(client, backup_bucket, layout.ARTIFACTS_SYNC_STATE)
        ledger_doc = json.loads(raw_ledger) if raw_ledger else None
        full = _full_check_due(ledger_doc, full_check_days) if full_check is None else full_check
        dst_f = pool.submit(list_keys, client, backup_bucket, dest_prefix + source_prefix) if full else None
        source = {o["Key"]: o for o in src_f.result() if not o["Key"].endswith("/")}
        ledger: dict[str, dict] = dict(ledger_doc["objects"]) if ledger_doc else {}
        if dst_f is not None:
            backup = {o["Key"]: o for o in dst_f.result()}
        else:
            backup = {
                dest_prefix + k: {"Key": dest_prefix + k, "ETag": v["backup_etag"]} for k, v in ledger.items()
            }
    plan = _plan(source, backup, ledger, dest_prefix)
    report = SyncReport(
        skipped=plan.skipped,
        source_objects=len(source),
        backup_objects=len(backup),
        dry_run=dry_run,
        full_check=full,
    )

    if delete and plan.to_delete:
        share = len(plan.to_delete) / max(1, len(backup))
        if share > max_delete_fraction:
            where = f"s3://{backup_bucket}/{dest_prefix}{source_prefix}"
            raise DeleteCapExceeded(
                f"refusing to delete {len(plan.to_delete)} of {len(backup)} backup copies ({share:.0%}) "
                f"under {where}: the cap is {max_delete_fraction:.0%}. Nothing was copied or deleted. "
                f"Check the source s3://{source_bucket}/{source_prefix}; if the deletions are intended, "
                "raise MLOPS_ARTIFACTS_MAX_DELETE_FRACTION for one run."
            )
    if dry_run:
        report.copied = len(plan.to_copy)
        report.bytes_copied = sum(o["Size"] for o in plan.to_copy)
        report.deleted = len(plan.to_delete) if delete else 0
        report.seconds = round(time.monotonic() - t0, 3)
        log.info(
            "Dry run: would copy %d, skip %d, delete %d artifacts",
            report.copied,
            report.skipped,
            report.deleted,
        )
        return report

    changed = False
    copying = {o["Key"] for o in plan.to_copy}
    if full:
        # Record what the listing proved identical, so later runs can trust the ledger alone.
        for key, obj in source.items():
            dest = backup.get(dest_prefix + key)
            if dest is not None and key not in copying:
                entry = {"source_etag": _etag(obj), "backup_etag": _etag(dest)}
                changed |= ledger.get(key) != entry
                ledger[key] = entry
    sse = encryption.extra_args()
    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="artifact-copy") as pool:
        futures = {
            pool.submit(
                _copy_one, client, source_bucket, obj, backup_bucket, dest_prefix + obj["Key"], sse
            ): obj
            for obj in plan.to_copy
        }
        for fut in as_completed(futures):
            obj = futures[fut]
            try:
                copy_etag = fut.result()
            except Exception as exc:
                report.failed += 1
                report.errors.append(f"{obj['Key']}: {exc}")
                log.error("Copy of s3://%s/%s failed: %s", source_bucket, obj["Key"], exc)
                continue
            ledger[obj["Key"]] = {"source_etag": _etag(obj), "backup_etag": copy_etag}
            report.copied += 1
            report.bytes_copied += obj["Size"]
            changed = True
            log.info(
                "Copied s3://%s/%s -> s3://%s/%s%s",
                source_bucket,
                obj["Key"],
                backup_bucket,
                dest_prefix,
                obj["Key"],
            )
    if delete and plan.to_delete:
        for key in plan.to_delete:
            log.info("Deleting s3://%s/%s: its source is gone", backup_bucket, key)
        delete_keys(client, backup_bucket, plan.to_delete)
        for key in plan.to_delete:
            ledger.pop(key[len(dest_prefix) :], None)
        report.deleted = len(plan.to_delete)
        changed = True
    if full:
        # Forget entries whose backup copy is gone (deleted by hand): the next run copies them again.
        for key in [k for k in ledger if dest_prefix + k not in backup and k not in copying]:
            del ledger[key]
    if changed or full:
        doc = {
            "format_version": 1,
            "objects": ledger,
            "full_check_at": datetime.now(UTC).isoformat() if full else ledger_doc.get("full_check_at"),
        }
        put_json(
            client,
            backup_bucket,
            layout.ARTIFACTS_SYNC_STATE,
            json.dumps(doc, sort_keys=True).encode(),
            encryption,
        )
    report.seconds = round(time.monotonic() - t0, 3)
    log.info(
        "Artifact sync (%s): copied %d (%d bytes), skipped %d, deleted %d, failed %d in %.2f s",
        "full check" if full else "ledger",
        report.copied,
        report.bytes_copied,
        report.skipped,
        report.deleted,
        report.failed,
        report.seconds,
    )
    if report.failed:
        raise SyncError(
            f"{report.failed} artifact copies failed (copied {report.copied}, skipped "
            f"{report.skipped}, deleted {report.deleted}); first: {report.errors[0]}"
        )
    return report
