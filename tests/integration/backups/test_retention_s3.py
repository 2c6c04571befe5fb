"""Retention applied to a simulated 60-day history of dumps in S3."""

from __future__ import annotations

import json
from datetime import date, timedelta

from mlops.backups import layout
from mlops.backups.retention import RetentionPolicy, apply_retention
from mlops.backups.s3 import s3_client
from mlops.settings import get_settings

DB = "platform"
HISTORY = [date(2026, 1, 1) + timedelta(days=i) for i in range(60)]
EXPECTED_KEPT = {
    date(2026, 3, 1), date(2026, 2, 28), date(2026, 2, 27), date(2026, 2, 26), date(2026, 2, 25),
    date(2026, 2, 24), date(2026, 2, 23),  # daily
    date(2026, 2, 22), date(2026, 2, 15), date(2026, 2, 8),  # weekly
    date(2026, 1, 31),  # monthly
    date(2026, 2, 20),  # newest verified
}  # fmt: skip


def backup_id(day: date) -> str:
    return f"{day:%Y%m%d}T030000Z-{day.toordinal() % 2**32:08x}"


def _seed(s3, bucket: str) -> None:
    for day in HISTORY[1:]:
        s3.put_object(Bucket=bucket, Key=layout.postgres_dump_key(DB, day, backup_id(day)), Body=b"PGDMP")
        s3.put_object(Bucket=bucket, Key=layout.postgres_manifest_key(DB, day, backup_id(day)), Body=b"{}")
    # The layout before backup ids (one backup per date directory) is still recognised.
    s3.put_object(Bucket=bucket, Key=f"postgres/{DB}/{HISTORY[0]}/{DB}.dump", Body=b"PGDMP")
    s3.put_object(Bucket=bucket, Key=f"postgres/{DB}/{HISTORY[0]}/manifest.json", Body=b"{}")
    # An interrupted night: a directory without a manifest is never touched by retention.
    s3.put_object(Bucket=bucket, Key=f"postgres/{DB}/2025-12-01/{backup_id(date(2025, 12, 1))}/{DB}.dump",
                  Body=b"PGDMP")  # fmt: skip


def _dates(s3, bucket: str) -> set[date]:
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="postgres/").get("Contents", [])]
    return {layout.parse_dated_dir(k, layout.postgres_prefix(DB)) for k in keys}


def _retain(s3, bucket: str, dry_run: bool) -> dict:
    """The policy under test: 7 daily, 4 weekly, 3 monthly; the newest verified dump is 2026-02-20."""
    return apply_retention(
        s3,
        bucket,
        layout.postgres_prefix(DB),
        RetentionPolicy(7, 4, 3),
        newest_verified=date(2026, 2, 20),
        require_verified=True,
        dry_run=dry_run,
    )


def test_retention_dry_run_logs_every_deletion_and_deletes_nothing(s3_conn, s3_bucket, retention_log):
    s3 = s3_client(get_settings())
    _seed(s3, s3_bucket)

    report = _retain(s3, s3_bucket, dry_run=True)

    assert len(_dates(s3, s3_bucket)) == 61
    assert report["deleted_objects"] == 2 * 48
    would = [m for m in retention_log if m.startswith("Retention would delete")]
    assert len(would) == 96
    assert any(f"postgres/{DB}/2026-01-01/{DB}.dump" in m for m in would)
    assert any(f"postgres/{DB}/2026-01-02/{backup_id(date(2026, 1, 2))}/{DB}.dump" in m for m in would)


def test_retention_keeps_exactly_the_policy_set_and_the_newest_verified_dump(
    s3_conn, s3_bucket, retention_log
):
    s3 = s3_client(get_settings())
    _seed(s3, s3_bucket)

    report = _retain(s3, s3_bucket, dry_run=False)

    assert _dates(s3, s3_bucket) == EXPECTED_KEPT | {date(2025, 12, 1)}
    assert {date.fromisoformat(d) for d in report["kept"]} == EXPECTED_KEPT
    deleting = [m for m in retention_log if m.startswith("Retention deleting")]
    assert len(deleting) == 96
    assert json.dumps(report)  # the report is the task's XCom


def test_retention_deletes_nothing_before_any_verification(s3_conn, s3_bucket):
    s3 = s3_client(get_settings())
    _seed(s3, s3_bucket)
    apply_retention(
        s3,
        s3_bucket,
        layout.postgres_prefix(DB),
        RetentionPolicy(1, 0, 0),
        require_verified=True,
        dry_run=False,
    )
    assert len(_dates(s3, s3_bucket)) == 61
