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
the backup bucket's SSE settings.

A backup, not a mirror
----------------------
What the source overwrote or deleted is *kept* for a grace period
(``grace_days``, setting ``artifacts_retired_grace_days``), so a bad overwrite or
deletion at the source does not reach the only other copy the same night:

- unversioned backup bucket: before a backup copy is replaced or removed, it is
  copied (server-side, ``If-None-Match: *``) to
  ``artifacts-retired/<date>/<sync id>/<key>``; retired copies older than the
  grace period are expired by the sync itself;
- versioned backup bucket: the replaced or deleted copy stays as a noncurrent
  version, which the lifecycle rule applied by ``prepare_bucket`` expires after
  the grace period.

Removing backup copies whose source is gone is optional (``delete``) and capped:
when more than ``max_delete_fraction`` of the backup copies would go, *no*
copy is removed, copying of new and changed artifacts goes on, and the sync
raises :class:`DeleteCapExceeded` at the end (the task fails and alerts).
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from mlops.backups import layout
from mlops.backups.s3 import (
    BucketProtection,
    Encryption,
    delete_keys,
    delete_protected,
    ensure_bucket,
    get_json_or_none,
    list_keys,
    put_json,
)

log = logging.getLogger(__name__)

SINGLE_COPY_LIMIT = 5 * 1024**3


class SyncError(RuntimeError):
    """Some artifacts could not be copied; the report counts what was done."""


class DeleteCapExceeded(SyncError):
    """Deletion would remove more than the allowed share of the backup copies: none was removed
    (copies of new and changed artifacts were still made)."""


@dataclass
class SyncReport:
    """Counts of one sync (``copied``/``deleted`` are "would" counts in a dry run)."""

    copied: int = 0
    skipped: int = 0
    deleted: int = 0
    retired: int = 0  # backup copies kept for the grace period before being replaced or removed
    expired: int = 0  # retired copies removed after the grace period
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


def _retire(client: Any, bucket: str, key: str, retired_key: str, sse: dict) -> None:
    """Keep the backup copy ``key`` under ``retired_key`` (never replacing anything there)."""
    head = client.head_object(Bucket=bucket, Key=key)
    source = {"Bucket": bucket, "Key": key}
    if head["ContentLength"] <= SINGLE_COPY_LIMIT:
        client.copy_object(CopySource=source, Bucket=bucket, Key=retired_key, IfNoneMatch="*", **sse)
    else:
        client.copy(source, bucket, retired_key, ExtraArgs=sse)


def expire_retired(
    client: Any,
    bucket: str,
    grace_days: int,
    *,
    protection: BucketProtection | None = None,
    dry_run: bool = False,
    today: date | None = None,
) -> tuple[int, set[str]]:
    """Remove retired copies whose retirement date is more than ``grace_days`` ago.

    Returns (how many were removed, the retirement dates still holding copies).
    """
    today = today or datetime.now(UTC).date()
    groups: dict[str, set[str]] = {}
    remaining: set[str] = set()
    for obj in list_keys(client, bucket, layout.ARTIFACTS_RETIRED_ROOT):
        day = layout.parse_dated_dir(obj["Key"], layout.ARTIFACTS_RETIRED_ROOT)
        if day is None:
            continue
        if (today - day).days > grace_days:
            groups.setdefault(f"{layout.ARTIFACTS_RETIRED_ROOT}{day.isoformat()}/", set()).add(obj["Key"])
        else:
            remaining.add(day.isoformat())
    for prefix, keys in sorted(groups.items()):
        log.info("%s %d retired artifact copies under %s (older than %d days)",
                 "Would expire" if dry_run else "Expiring", len(keys), prefix, grace_days)  # fmt: skip
    if groups:
        delete_protected(client, bucket, groups, protection or BucketProtection(), dry_run=dry_run)
    return sum(len(k) for k in groups.values()), remaining


def _expiry_due(retired_days: set[str], today: date, grace_days: int, full: bool) -> bool:
    """Listing the retired copies is only needed on a full check or when the ledger knows of a due date."""
    return full or any((today - date.fromisoformat(d)).days > grace_days for d in retired_days)


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
    grace_days: int = 30,
    protection: BucketProtection | None = None,
    today: date | None = None,
) -> SyncReport:
    """Mirror ``source_bucket/source_prefix`` into ``backup_bucket/artifacts/``; returns the counts.

    ``full_check`` also lists the backup side (catching copies deleted or
    replaced behind the sync's back); by default it runs when the ledger is
    missing or its last full check is ``full_check_days`` old, otherwise the
    ledger stands for the backup side. What the source overwrote or deleted is
    kept for ``grace_days`` (see the module docstring; ``protection`` says whether
    the backup bucket is versioned). Raises :class:`DeleteCapExceeded` after the
    copies when ``delete`` would remove more than ``max_delete_fraction`` of the
    backup copies (none is removed then), and :class:`SyncError` after the run
    when some copies failed.
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

    protection = protection or BucketProtection()
    today = today or datetime.now(UTC).date()
    retired_days: set[str] = set((ledger_doc or {}).get("retired_days", []))
    capped: DeleteCapExceeded | None = None
    to_delete = plan.to_delete if delete else []
    if to_delete:
        share = len(to_delete) / max(1, len(backup))
        if share > max_delete_fraction:
            where = f"s3://{backup_bucket}/{dest_prefix}{source_prefix}"
            capped = DeleteCapExceeded(
                f"refusing to delete {len(to_delete)} of {len(backup)} backup copies ({share:.0%}) "
                f"under {where}: the cap is {max_delete_fraction:.0%}. No copy was removed; new and "
                "changed artifacts were still copied. "
                f"Check the source s3://{source_bucket}/{source_prefix}; if the deletions are intended, "
                "raise MLOPS_ARTIFACTS_MAX_DELETE_FRACTION for one run."
            )
            log.error("%s", capped)
            to_delete = []
    # Unversioned: replaced or removed copies are kept under artifacts-retired/ first.
    retire_first = not protection.versioning
    replacing = [o for o in plan.to_copy if dest_prefix + o["Key"] in backup]
    if dry_run:
        report.copied = len(plan.to_copy)
        report.bytes_copied = sum(o["Size"] for o in plan.to_copy)
        report.deleted = len(to_delete)
        report.retired = (len(replacing) + len(to_delete)) if retire_first else 0
        if _expiry_due(retired_days, today, grace_days, full):
            report.expired, _ = expire_retired(
                client, backup_bucket, grace_days, protection=protection, dry_run=True, today=today
            )
        report.seconds = round(time.monotonic() - t0, 3)
        log.info(
            "Dry run: would copy %d, skip %d, delete %d artifacts",
            report.copied,
            report.skipped,
            report.deleted,
        )
        if capped is not None:
            raise capped
        return report

    sync_id = layout.new_backup_id()
    sse = encryption.extra_args()
    if retire_first:
        for key in [dest_prefix + o["Key"] for o in replacing] + to_delete:
            retired_key = layout.artifact_retired_key(today, sync_id, key[len(dest_prefix) :])
            _retire(client, backup_bucket, key, retired_key, sse)
            report.retired += 1
            retired_days.add(today.isoformat())
            log.info("Kept s3://%s/%s as %s for %d days", backup_bucket, key, retired_key, grace_days)

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
    if to_delete:
        for key in to_delete:
            log.info(
                "Removing s3://%s/%s: its source is gone (kept for %d days)", backup_bucket, key, grace_days
            )
        delete_keys(client, backup_bucket, to_delete)
        for key in to_delete:
            ledger.pop(key[len(dest_prefix) :], None)
        report.deleted = len(to_delete)
        changed = True
    if _expiry_due(retired_days, today, grace_days, full):
        before = set(retired_days)
        report.expired, retired_days = expire_retired(
            client, backup_bucket, grace_days, protection=protection, today=today
        )
        changed |= retired_days != before
    changed |= report.retired > 0
    if full:
        # Forget entries whose backup copy is gone (deleted by hand): the next run copies them again.
        for key in [k for k in ledger if dest_prefix + k not in backup and k not in copying]:
            del ledger[key]
    if changed or full:
        doc = {
            "format_version": 1,
            "objects": ledger,
            "retired_days": sorted(retired_days),
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
    if capped is not None:
        raise capped
    if report.failed:
        raise SyncError(
            f"{report.failed} artifact copies failed (copied {report.copied}, skipped "
            f"{report.skipped}, deleted {report.deleted}); first: {report.errors[0]}"
        )
    return report
