"""Retention and clean-up on versioned and Object Lock buckets, the lifecycle rule, orphans and the cap."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from mlops.backups import layout
from mlops.backups.retention import RetentionCapExceeded, RetentionPolicy, apply_retention, sweep_orphans
from mlops.backups.s3 import LIFECYCLE_ABORT_RULE, bucket_protection, s3_client
from mlops.backups.tasks import prepare_bucket
from mlops.settings import get_settings

DB = "platform"
DAYS = [date(2026, 3, 1) - timedelta(days=i) for i in range(10)]  # newest first


def bid(day: date) -> str:
    return f"{day:%Y%m%d}T030000Z-{day.toordinal() % 2**32:08x}"


def _seed(s3, bucket: str, days=DAYS) -> None:
    for day in days:
        s3.put_object(Bucket=bucket, Key=layout.postgres_dump_key(DB, day, bid(day)), Body=b"PGDMP")
        s3.put_object(Bucket=bucket, Key=layout.postgres_manifest_key(DB, day, bid(day)), Body=b"{}")


def _versions(s3, bucket: str, prefix: str = "postgres/") -> list[str]:
    page = s3.list_object_versions(Bucket=bucket, Prefix=prefix)
    return sorted(v["Key"] for v in page.get("Versions", []) + page.get("DeleteMarkers", []))


def _retain(s3, bucket: str, dry_run: bool, **kw) -> dict:
    return apply_retention(
        s3, bucket, layout.postgres_prefix(DB), RetentionPolicy(3, 0, 0), newest_verified=DAYS[0],
        require_verified=True, dry_run=dry_run, protection=bucket_protection(s3, bucket), **kw,
    )  # fmt: skip


def test_retention_on_a_versioned_bucket_removes_the_versions_it_expires(versioned_bucket):
    s3 = s3_client(get_settings())
    _seed(s3, versioned_bucket)

    report = _retain(s3, versioned_bucket, dry_run=False)

    kept = {layout.parse_dated_dir(k, layout.postgres_prefix(DB)) for k in _versions(s3, versioned_bucket)}
    assert kept == set(DAYS[:3])  # no version and no delete marker of an expired backup is left
    assert report["bucket"] == "versioned" and report["deleted_objects"] == 2 * 7


def test_retention_never_tries_to_delete_a_locked_version_and_says_so_in_the_dry_run(locked_bucket):
    s3 = s3_client(get_settings())
    _seed(s3, locked_bucket)
    assert bucket_protection(s3, locked_bucket).describe() == "versioned, Object Lock (GOVERNANCE)"

    plan = _retain(s3, locked_bucket, dry_run=True)
    report = _retain(s3, locked_bucket, dry_run=False)

    for r in (plan, report):
        assert len(r["locked"]) == 2 * 7 and r["deleted_objects"] == 0
        assert all(entry["why"].startswith("GOVERNANCE until ") for entry in r["locked"])
    assert len(_versions(s3, locked_bucket)) == 2 * 10  # nothing deleted, not even a delete marker


def test_the_abort_incomplete_uploads_rule_is_applied_idempotently_and_keeps_other_rules(
    backup_bucket, s3_client, monkeypatch
):
    foreign = {"ID": "team-archive", "Status": "Enabled", "Filter": {"Prefix": "archive/"},
               "Expiration": {"Days": 365}}  # fmt: skip
    s3_client.put_bucket_lifecycle_configuration(
        Bucket=backup_bucket, LifecycleConfiguration={"Rules": [foreign]}
    )

    assert prepare_bucket(dry_run=True)["lifecycle_changed"] is False  # a dry run writes nothing
    assert [r["ID"] for r in _rules(s3_client, backup_bucket)] == ["team-archive"]
    first, second = prepare_bucket(dry_run=False), prepare_bucket(dry_run=False)

    assert (first["lifecycle_changed"], second["lifecycle_changed"]) == (True, False)
    rules = {r["ID"]: r for r in _rules(s3_client, backup_bucket)}
    assert set(rules) == {"team-archive", LIFECYCLE_ABORT_RULE}
    assert rules[LIFECYCLE_ABORT_RULE]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}
    assert rules[LIFECYCLE_ABORT_RULE]["Filter"] == {"Prefix": ""}  # the whole bucket


def test_on_a_versioned_bucket_noncurrent_versions_expire_after_the_grace_period(
    versioned_bucket, s3_client, monkeypatch
):
    monkeypatch.setenv("MLOPS_BACKUP_BUCKET", versioned_bucket)
    monkeypatch.setenv("MLOPS_ARTIFACTS_RETIRED_GRACE_DAYS", "21")
    assert prepare_bucket(dry_run=False)["protection"] == "versioned"
    rules = {r["ID"]: r for r in _rules(s3_client, versioned_bucket)}
    assert rules["mlops-expire-noncurrent-versions"]["NoncurrentVersionExpiration"]["NoncurrentDays"] == 21


def _rules(s3, bucket: str) -> list[dict]:
    return s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]


def test_the_orphan_sweep_removes_dumps_without_a_manifest_older_than_a_day_and_reports_them(
    s3_conn, s3_bucket, s3_client
):
    s3 = s3_client_via()
    _seed(s3, s3_bucket, DAYS[:2])
    orphan = layout.postgres_dump_key(DB, DAYS[1], "20260228T030000Z-0000dead")
    s3.put_object(Bucket=s3_bucket, Key=orphan, Body=b"PGDMP-killed-after-upload")
    prefix = layout.postgres_prefix(DB)

    young = sweep_orphans(s3, s3_bucket, prefix, dry_run=False)
    assert young["orphans_removed"] == [] and young["orphans_too_young"] == [orphan.rsplit("/", 1)[0] + "/"]

    later = datetime.now(UTC) + timedelta(days=2)
    dry = sweep_orphans(s3, s3_bucket, prefix, dry_run=True, now=later)
    assert dry["orphans_removed"] == [orphan.rsplit("/", 1)[0] + "/"] and _exists(s3, s3_bucket, orphan)
    sweep_orphans(s3, s3_bucket, prefix, dry_run=False, now=later)
    assert not _exists(s3, s3_bucket, orphan)
    assert len(_versions(s3, s3_bucket)) == 4  # the complete backups are untouched


def _exists(s3, bucket: str, key: str) -> bool:
    return s3.list_objects_v2(Bucket=bucket, Prefix=key).get("KeyCount", 0) == 1


def s3_client_via():
    return s3_client(get_settings())


def test_a_retention_that_would_delete_more_than_its_cap_deletes_nothing(s3_conn, s3_bucket):
    s3 = s3_client_via()
    _seed(s3, s3_bucket)
    with pytest.raises(RetentionCapExceeded, match="would delete 7 of 10 backup dates"):
        _retain(s3, s3_bucket, dry_run=False, max_delete_fraction=0.5)
    assert len(_versions(s3, s3_bucket)) == 2 * 10
