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
S3 (``<prefix><YYYY-MM-DD>/...``), applies the selection, logs every deletion
(or would-be deletion in a dry run) and deletes whole date directories.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from mlops.backups import layout
from mlops.backups.s3 import delete_keys, list_keys

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


def dated_backups(client: Any, bucket: str, prefix: str, complete_marker: str) -> dict[date, list[str]]:
    """``{date: [keys]}`` of the series under ``prefix``; only dates holding ``complete_marker`` count."""
    by_date: dict[date, list[str]] = {}
    for obj in list_keys(client, bucket, prefix):
        d = layout.parse_dated_dir(obj["Key"], prefix)
        if d is not None:
            by_date.setdefault(d, []).append(obj["Key"])
    incomplete = sorted(
        d for d, keys in by_date.items() if not any(k.endswith(complete_marker) for k in keys)
    )
    for d in incomplete:
        log.warning("Retention: %s%s/ has no %s (incomplete backup); left alone", prefix, d, complete_marker)
        del by_date[d]
    return by_date


def apply_retention(
    client: Any,
    bucket: str,
    prefix: str,
    policy: RetentionPolicy,
    *,
    newest_verified: date | None = None,
    require_verified: bool = False,
    dry_run: bool = True,
    complete_marker: str = "manifest.json",
) -> dict[str, Any]:
    """Apply :func:`select_retention` to the dated series under ``prefix``; returns a report."""
    backups = dated_backups(client, bucket, prefix, complete_marker)
    plan = select_retention(backups, policy, newest_verified, require_verified)
    deleted_keys: list[str] = []
    for d in plan.delete:
        for key in sorted(backups[d]):
            log.info(
                "Retention %s s3://%s/%s (%s, outside %s)",
                "would delete" if dry_run else "deleting",
                bucket,
                key,
                d,
                policy,
            )
            deleted_keys.append(key)
    if deleted_keys and not dry_run:
        delete_keys(client, bucket, deleted_keys)
    report = {
        "prefix": prefix,
        "dry_run": dry_run,
        "kept": {d.isoformat(): why for d, why in plan.keep.items()},
        "deleted": [d.isoformat() for d in plan.delete],
        "deleted_objects": len(deleted_keys),
    }
    log.info(
        "Retention of s3://%s/%s: kept %d, %s %d backups (%d objects)",
        bucket,
        prefix,
        len(plan.keep),
        "would delete" if dry_run else "deleted",
        len(plan.delete),
        len(deleted_keys),
    )
    return report
