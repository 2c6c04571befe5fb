"""Grandfather-father-son retention of dated backups.

:func:`select_retention` is pure: given the dates that have a complete backup,
it says which to keep and why. The rules are those of restic's ``--keep-daily
/--keep-weekly/--keep-monthly`` (and of the seed's "keep 7 daily"):

- ``daily=N``: the newest backup of each of the N newest days that have one;
- ``weekly=M``: the newest backup of each of the M newest ISO weeks that have one;
- ``monthly=K``: the newest backup of each of the K newest calendar months that have one;
- the newest *verified* backup is always kept, whatever its age;
- with ``require_verified`` (Postgres), nothing at all is deleted while no
  backup has ever been verified: a run of failed restores must not also eat
  the history.

A backup kept by any rule is kept. :func:`apply_retention` lists a series in
S3 (``<prefix><YYYY-MM-DD>/<backup id>/...``; a date may hold several backups, e.g.
the nightly one and a manual pre-migration one, and they are kept or expired
together), applies the selection, logs every deletion (or would-be deletion in a
dry run) and deletes the expired backups:

- on a versioned bucket it deletes the expired *versions* (a plain delete would
  only write delete markers and free nothing);
- under Object Lock it never tries to delete a version under retention or legal
  hold, and says so (in the dry run too);
- a cap (``max_delete_fraction`` of the complete backups) stops a wrong policy or
  clock from emptying a series: nothing is deleted and :class:`RetentionCapExceeded`
  is raised.

:func:`sweep_orphans` removes backup directories without a manifest (the commit
point) once they are older than a day: what a run killed after its upload left.
Each one is logged and reported, never removed silently.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from mlops.backups import layout
from mlops.backups.s3 import BucketProtection, delete_protected, list_keys

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetentionPolicy:
    """How many daily, weekly and monthly backups to keep."""

    daily: int = 7
    weekly: int = 4
    monthly: int = 6

    def __post_init__(self) -> None:
        if min(self.daily, self.weekly, self.monthly) < 0:
            raise ValueError(f"retention counts must be >= 0, got {self}")
        if self.daily + self.weekly + self.monthly == 0:
            raise ValueError("a retention policy that keeps nothing is refused")


@dataclass
class RetentionPlan:
    """``keep`` maps each kept date to the rules that keep it; ``delete`` is newest first."""

    keep: dict[date, list[str]] = field(default_factory=dict)
    delete: list[date] = field(default_factory=list)


_BUCKETS: list[tuple[str, Callable[[date], Any]]] = [
    ("daily", lambda d: d),
    ("weekly", lambda d: d.isocalendar()[:2]),
    ("monthly", lambda d: (d.year, d.month)),
]


def select_retention(
    dates: Iterable[date],
    policy: RetentionPolicy,
    newest_verified: date | None = None,
    require_verified: bool = False,
) -> RetentionPlan:
    """Decide which backup dates to keep and which to delete (see the module docstring)."""
    ordered = sorted(set(dates), reverse=True)
    plan = RetentionPlan()
    if require_verified and newest_verified is None:
        plan.keep = {d: ["no verified backup yet"] for d in ordered}
        return plan
    for rule, bucket_of in _BUCKETS:
        left = getattr(policy, rule)
        last = None
        for d in ordered:
            if left <= 0:
                break
            bucket = bucket_of(d)
            if bucket != last:
                plan.keep.setdefault(d, []).append(rule)
                last = bucket
                left -= 1
    if newest_verified is not None and newest_verified in ordered:
        plan.keep.setdefault(newest_verified, []).append("newest verified")
    plan.delete = [d for d in ordered if d not in plan.keep]
    plan.keep = dict(sorted(plan.keep.items(), reverse=True))
    return plan


class RetentionCapExceeded(RuntimeError):
    """Retention would delete more than its cap allows; nothing was deleted."""


@dataclass
class Series:
    """The backups under one prefix: complete ones by date, and orphan directories."""

    complete: dict[date, dict[str, set[str]]] = field(default_factory=dict)  # date -> {dir: keys}
    orphans: dict[str, set[str]] = field(default_factory=dict)  # dir -> keys
    orphan_newest: dict[str, datetime] = field(default_factory=dict)  # dir -> newest LastModified


def scan_series(client: Any, bucket: str, prefix: str, complete_marker: str = layout.MANIFEST) -> Series:
    """List ``prefix`` and group its keys into backups (``<date>/<backup id>/``).

    Keys under a date but outside a backup id (the layout before backup ids) form one
    backup per date.
    """
    dirs: dict[str, set[str]] = {}
    newest: dict[str, datetime] = {}
    dates: dict[str, date] = {}
    for obj in list_keys(client, bucket, prefix):
        key = obj["Key"]
        day = layout.parse_dated_dir(key, prefix)
        if day is None:
            continue
        # Keys of the layout before backup ids (``<date>/...``) form one backup per date.
        unit = layout.backup_dir(key, prefix) or f"{prefix}{day.isoformat()}/"
        dirs.setdefault(unit, set()).add(key)
        dates[unit] = day
        modified = obj.get("LastModified")
        if modified is not None and (unit not in newest or modified > newest[unit]):
            newest[unit] = modified
    series = Series()
    for unit, keys in dirs.items():
        if unit + complete_marker in keys:
            series.complete.setdefault(dates[unit], {})[unit] = keys
        else:
            series.orphans[unit] = keys
            series.orphan_newest[unit] = newest.get(unit, datetime.now(UTC))
    return series


def dated_backups(client: Any, bucket: str, prefix: str, complete_marker: str) -> dict[date, list[str]]:
    """``{date: [keys]}`` of the complete backups under ``prefix``."""
    series = scan_series(client, bucket, prefix, complete_marker)
    return {d: sorted(k for keys in units.values() for k in keys) for d, units in series.complete.items()}


def apply_retention(
    client: Any,
    bucket: str,
    prefix: str,
    policy: RetentionPolicy,
    *,
    newest_verified: date | None = None,
    require_verified: bool = False,
    dry_run: bool = True,
    complete_marker: str = layout.MANIFEST,
    max_delete_fraction: float = 1.0,
    protection: BucketProtection | None = None,
) -> dict[str, Any]:
    """Apply :func:`select_retention` to the series under ``prefix``; returns a report.

    ``protection`` (:func:`~mlops.backups.s3.bucket_protection`) decides how deletion
    is done on a versioned or Object Lock bucket; the report lists every version that
    Object Lock keeps (``locked``) and, in a dry run, what would be deleted.
    """
    protection = protection or BucketProtection()
    series = scan_series(client, bucket, prefix, complete_marker)
    plan = select_retention(series.complete, policy, newest_verified, require_verified)
    total = len(series.complete)
    if plan.delete and len(plan.delete) > max_delete_fraction * total:
        raise RetentionCapExceeded(
            f"retention of s3://{bucket}/{prefix} would delete {len(plan.delete)} of {total} backup dates "
            f"({len(plan.delete) / total:.0%}), over the cap of {max_delete_fraction:.0%} "
            "(MLOPS_BACKUP_RETENTION_MAX_DELETE_FRACTION); nothing was deleted. Check the policy "
            "(MLOPS_BACKUP_KEEP_*) and the dates in the bucket."
        )
    # Logged once the cap allowed the run: a refused run claims no deletion.
    groups: dict[str, set[str]] = {}
    for d in plan.delete:
        for unit, keys in sorted(series.complete[d].items()):
            groups[unit] = keys
            for key in sorted(keys):
                log.info(
                    "Retention %s s3://%s/%s (%s, outside %s)",
                    "would delete" if dry_run else "deleting",
                    bucket,
                    key,
                    d,
                    policy,
                )
    deletion = delete_protected(client, bucket, groups, protection, dry_run=dry_run)
    for locked in deletion.locked:
        log.warning(
            "Retention %s s3://%s/%s version %s: Object Lock (%s)",
            "would skip" if dry_run else "skipped",
            bucket,
            locked["key"],
            locked["version_id"],
            locked["why"],
        )
    report = {
        "prefix": prefix,
        "dry_run": dry_run,
        "bucket": protection.describe(),
        "kept": {d.isoformat(): why for d, why in plan.keep.items()},
        "deleted": [d.isoformat() for d in plan.delete],
        "deleted_objects": len(deletion.deleted),
        "locked": deletion.locked,
    }
    log.info(
        "Retention of s3://%s/%s (%s bucket): kept %d, %s %d backup dates (%d objects/versions), "
        "%d versions under Object Lock left alone",
        bucket,
        prefix,
        protection.describe(),
        len(plan.keep),
        "would delete" if dry_run else "deleted",
        len(plan.delete),
        len(deletion.deleted),
        len(deletion.locked),
    )
    return report


def sweep_orphans(
    client: Any,
    bucket: str,
    prefix: str,
    *,
    min_age: timedelta = timedelta(days=1),
    dry_run: bool = True,
    protection: BucketProtection | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Remove backup directories under ``prefix`` that have no manifest and are older than ``min_age``.

    Younger ones may belong to a backup still running and are only reported.
    """
    protection = protection or BucketProtection()
    now = now or datetime.now(UTC)
    series = scan_series(client, bucket, prefix)
    old = {u: k for u, k in series.orphans.items() if now - series.orphan_newest[u] >= min_age}
    young = sorted(set(series.orphans) - set(old))
    for unit, keys in sorted(old.items()):
        log.warning(
            "Orphan sweep %s s3://%s/%s: %d object(s) without a manifest (a run killed after its upload): %s",
            "would remove" if dry_run else "removing",
            bucket,
            unit,
            len(keys),
            sorted(keys),
        )
    for unit in young:
        log.info(
            "Orphan sweep: s3://%s/%s has no manifest yet but is younger than %s; left", bucket, unit, min_age
        )
    deletion = delete_protected(client, bucket, old, protection, dry_run=dry_run)
    return {
        "prefix": prefix,
        "dry_run": dry_run,
        "orphans_removed": sorted(old),
        "orphans_too_young": young,
        "locked": deletion.locked,
    }
