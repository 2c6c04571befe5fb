"""Retention and the orphan sweep against S3 (moto) at the edges an operator relies on: the defaults,
the report and log lines, the deletion cap at its boundary, Object Lock, what a listing holds besides
backups, per-database isolation and the age of an orphan."""

from __future__ import annotations

import re
import time
from datetime import UTC, date, datetime, timedelta

import pytest

from mlops.backups import layout
from mlops.backups.retention import (
    RetentionCapExceeded,
    RetentionPolicy,
    apply_retention,
    dated_backups,
    sweep_orphans,
)
from mlops.backups.s3 import bucket_protection

DB = "platform"
PREFIX = layout.postgres_prefix(DB)
MAR1, FEB28, FEB27, FEB26 = date(2026, 3, 1), date(2026, 2, 28), date(2026, 2, 27), date(2026, 2, 26)


def bid(day: date, n: int = 0) -> str:
    """A backup id of ``day``; ``n`` tells apart several backups of the same date."""
    return f"{day:%Y%m%d}T0300{n:02d}Z-{(4 * day.toordinal() + n) % 2**32:08x}"


def put_backup(s3, bucket: str, day: date, n: int = 0, db: str = DB, manifest: bool = True) -> list[str]:
    """One backup of ``db`` (its dump, and its manifest unless ``manifest`` is false); its keys."""
    keys = [layout.postgres_dump_key(db, day, bid(day, n))]
    if manifest:
        keys.append(layout.postgres_manifest_key(db, day, bid(day, n)))
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=b"PGDMP")
    return sorted(keys)


def keys_under(s3, bucket: str, prefix: str = "") -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []))


def versions_under(s3, bucket: str, prefix: str) -> list[str]:
    page = s3.list_object_versions(Bucket=bucket, Prefix=prefix)
    return sorted(v["Key"] for v in page.get("Versions", []) + page.get("DeleteMarkers", []))


def backup_dir_of(key: str) -> str:
    return key.rsplit("/", 1)[0] + "/"


# -- apply_retention: defaults, report and log ------------------------------------------------------
def test_apply_retention_is_a_dry_run_by_default_and_prunes_by_policy_without_verification(
    s3_client, s3_bucket
):
    written = [k for day in (MAR1, FEB28, FEB27, FEB26) for k in put_backup(s3_client, s3_bucket, day)]

    report = apply_retention(s3_client, s3_bucket, PREFIX, RetentionPolicy(daily=2, weekly=0, monthly=0))

    assert report == {
        "prefix": PREFIX,
        "dry_run": True,
        "bucket": "unversioned",
        "kept": {"2026-03-01": ["daily"], "2026-02-28": ["daily"]},
        "deleted": ["2026-02-27", "2026-02-26"],
        "deleted_objects": 4,
        "locked": [],
    }
    assert keys_under(s3_client, s3_bucket) == sorted(written)  # a dry run deletes nothing


@pytest.mark.parametrize(
    ("dry_run", "verb", "done"), [(True, "would delete", "would delete"), (False, "deleting", "deleted")]
)
def test_retention_logs_every_object_it_deletes_and_one_summary_line(
    s3_client, s3_bucket, retention_log, dry_run, verb, done
):
    put_backup(s3_client, s3_bucket, MAR1)
    put_backup(s3_client, s3_bucket, FEB28)
    # Two backups on the expired date (the nightly one and a manual one) go together.
    expired = put_backup(s3_client, s3_bucket, FEB27, n=0) + put_backup(s3_client, s3_bucket, FEB27, n=1)
    policy = RetentionPolicy(daily=2, weekly=0, monthly=0)

    report = apply_retention(s3_client, s3_bucket, PREFIX, policy, dry_run=dry_run)

    assert retention_log == [
        *(
            f"Retention {verb} s3://{s3_bucket}/{key} (2026-02-27, outside "
            "RetentionPolicy(daily=2, weekly=0, monthly=0))"
            for key in expired
        ),
        f"Retention of s3://{s3_bucket}/{PREFIX} (unversioned bucket): kept 2, {done} 1 backup dates "
        "(4 objects/versions), 0 versions under Object Lock left alone",
    ]
    assert report["deleted"] == ["2026-02-27"] and report["dry_run"] is dry_run
    assert bool(set(expired) & set(keys_under(s3_client, s3_bucket))) is dry_run


# -- the deletion cap -------------------------------------------------------------------------------
def test_a_retention_deleting_exactly_its_cap_goes_ahead(s3_client, s3_bucket):
    for day in (MAR1, FEB28, FEB27, FEB26):
        put_backup(s3_client, s3_bucket, day)

    report = apply_retention(
        s3_client, s3_bucket, PREFIX, RetentionPolicy(2, 0, 0), dry_run=False, max_delete_fraction=0.5
    )

    assert report["deleted"] == ["2026-02-27", "2026-02-26"]
    assert {layout.parse_dated_dir(k, PREFIX) for k in keys_under(s3_client, s3_bucket)} == {MAR1, FEB28}


def test_a_retention_over_its_cap_says_how_far_over_and_which_settings_to_check(
    s3_client, s3_bucket, retention_log
):
    written = [k for day in (MAR1, FEB28, FEB27, FEB26) for k in put_backup(s3_client, s3_bucket, day)]

    expected = (
        f"retention of s3://{s3_bucket}/{PREFIX} would delete 3 of 4 backup dates (75%), over the cap of 50% "
        "(MLOPS_BACKUP_RETENTION_MAX_DELETE_FRACTION); nothing was deleted. Check the policy "
        "(MLOPS_BACKUP_KEEP_*) and the dates in the bucket."
    )
    with pytest.raises(RetentionCapExceeded, match=f"^{re.escape(expected)}$"):
        apply_retention(
            s3_client, s3_bucket, PREFIX, RetentionPolicy(1, 0, 0), dry_run=False, max_delete_fraction=0.5
        )

    assert keys_under(s3_client, s3_bucket) == sorted(written)
    assert not any(m.startswith("Retention of ") for m in retention_log)  # no summary of a refused run
    # Nor a line per object claiming a deletion that never happened (before: one "Retention deleting
    # s3://..." line per expired object, then the error saying nothing was deleted).
    assert not any(m.startswith("Retention deleting") for m in retention_log), retention_log


# -- Object Lock ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("dry_run", "verb"), [(True, "would skip"), (False, "skipped")])
def test_every_version_object_lock_keeps_is_logged_with_its_key_version_and_reason(
    s3_client, locked_bucket, retention_log, dry_run, verb
):
    for day in (MAR1, FEB28, FEB27):
        put_backup(s3_client, locked_bucket, day)
    protection = bucket_protection(s3_client, locked_bucket)

    report = apply_retention(
        s3_client, locked_bucket, PREFIX, RetentionPolicy(2, 0, 0), dry_run=dry_run, protection=protection
    )

    assert report["bucket"] == "versioned, Object Lock (GOVERNANCE)"
    assert sorted(e["key"] for e in report["locked"]) == sorted(
        [layout.postgres_dump_key(DB, FEB27, bid(FEB27)), layout.postgres_manifest_key(DB, FEB27, bid(FEB27))]
    )
    assert [m for m in retention_log if m.startswith(f"Retention {verb} ")] == [
        f"Retention {verb} s3://{locked_bucket}/{e['key']} version {e['version_id']}: "
        f"Object Lock ({e['why']})"
        for e in report["locked"]
    ]
    assert all(re.fullmatch(r"GOVERNANCE until \d{4}-\d\d-\d\dT.*", e["why"]) for e in report["locked"])
    assert retention_log[-1].endswith(
        f"kept 2, {'would delete' if dry_run else 'deleted'} 1 backup dates (0 objects/versions), "
        "2 versions under Object Lock left alone"
    )
    assert len(versions_under(s3_client, locked_bucket, PREFIX)) == 6  # nothing deleted, no delete marker


# -- what a listing holds besides backups -----------------------------------------------------------
def test_folder_placeholders_and_malformed_date_directories_are_neither_backups_nor_obstacles(
    s3_client, s3_bucket
):
    # The S3 console's "create folder" writes a zero-byte key equal to the prefix (listed first);
    # a hand-made directory with an impossible date sorts among the real ones.
    strays = [PREFIX, f"{PREFIX}2026-02-30/notes.txt", f"{PREFIX}latest/{DB}.dump"]
    for key in strays:
        s3_client.put_object(Bucket=s3_bucket, Key=key, Body=b"")
    for day in (MAR1, FEB28, FEB27):
        put_backup(s3_client, s3_bucket, day)

    report = apply_retention(s3_client, s3_bucket, PREFIX, RetentionPolicy(1, 0, 0), dry_run=False)

    assert report["kept"] == {"2026-03-01": ["daily"]} and report["deleted"] == ["2026-02-28", "2026-02-27"]
    assert keys_under(s3_client, s3_bucket) == sorted(strays + put_backup(s3_client, s3_bucket, MAR1))


def test_a_series_with_another_commit_marker_counts_only_backups_that_carry_it(s3_client, s3_bucket):
    # complete_marker names the commit point: a directory without it is not a complete backup
    # (and retention never touches it), whatever other files it holds.
    for day in (MAR1, FEB28, FEB27):
        put_backup(s3_client, s3_bucket, day)
    for day in (FEB28, FEB27):
        s3_client.put_object(Bucket=s3_bucket, Key=f"{PREFIX}{day}/{bid(day)}/COMMITTED", Body=b"")

    report = apply_retention(
        s3_client, s3_bucket, PREFIX, RetentionPolicy(1, 0, 0), dry_run=False, complete_marker="COMMITTED"
    )

    assert report["kept"] == {"2026-02-28": ["daily"]} and report["deleted"] == ["2026-02-27"]
    assert {layout.parse_dated_dir(k, PREFIX) for k in keys_under(s3_client, s3_bucket)} == {MAR1, FEB28}


def test_one_databases_verified_marker_neither_protects_nor_exposes_another_databases_dumps(
    s3_client, s3_bucket
):
    for day in (MAR1, FEB28, FEB27):
        put_backup(s3_client, s3_bucket, day, db=DB)
    other = [k for day in (FEB28, FEB26) for k in put_backup(s3_client, s3_bucket, day, db="billing")]

    # billing's newest verified dump is of Feb 26; platform has no dump of that date.
    report = apply_retention(
        s3_client, s3_bucket, PREFIX, RetentionPolicy(1, 0, 0), newest_verified=FEB26, require_verified=True,
        dry_run=False,
    )  # fmt: skip

    assert report["kept"] == {"2026-03-01": ["daily"]} and report["deleted"] == ["2026-02-28", "2026-02-27"]
    assert keys_under(s3_client, s3_bucket, "postgres/billing/") == sorted(other)
    assert {layout.parse_dated_dir(k, PREFIX) for k in keys_under(s3_client, s3_bucket, PREFIX)} == {MAR1}


def test_dated_backups_lists_the_keys_of_complete_backups_by_date_only(s3_client, s3_bucket):
    mar1 = put_backup(s3_client, s3_bucket, MAR1, n=0) + put_backup(s3_client, s3_bucket, MAR1, n=1)
    feb28 = put_backup(s3_client, s3_bucket, FEB28)
    put_backup(s3_client, s3_bucket, FEB27, manifest=False)  # an orphan
    legacy = [f"{PREFIX}2026-02-26/{DB}.dump", f"{PREFIX}2026-02-26/manifest.json"]  # before backup ids
    for key in legacy:
        s3_client.put_object(Bucket=s3_bucket, Key=key, Body=b"PGDMP")

    assert dated_backups(s3_client, s3_bucket, PREFIX, layout.MANIFEST) == {
        MAR1: sorted(mar1),
        FEB28: feb28,
        FEB26: sorted(legacy),
    }


def test_dated_backups_judges_completeness_by_the_marker_it_is_given(s3_client, s3_bucket):
    put_backup(s3_client, s3_bucket, MAR1)
    committed = put_backup(s3_client, s3_bucket, FEB28) + [f"{PREFIX}2026-02-28/{bid(FEB28)}/COMMITTED"]
    s3_client.put_object(Bucket=s3_bucket, Key=committed[-1], Body=b"")

    assert dated_backups(s3_client, s3_bucket, PREFIX, "COMMITTED") == {FEB28: sorted(committed)}


# -- the orphan sweep -------------------------------------------------------------------------------
def test_the_orphan_sweep_is_a_dry_run_by_default_and_reports_and_logs_what_it_would_remove(
    s3_client, s3_bucket, retention_log
):
    complete = put_backup(s3_client, s3_bucket, MAR1)
    orphan = put_backup(s3_client, s3_bucket, FEB28, manifest=False)

    report = sweep_orphans(s3_client, s3_bucket, PREFIX, now=datetime.now(UTC) + timedelta(days=2))

    assert report == {
        "prefix": PREFIX,
        "dry_run": True,
        "orphans_removed": [backup_dir_of(orphan[0])],
        "orphans_too_young": [],
        "locked": [],
    }
    assert retention_log == [
        f"Orphan sweep would remove s3://{s3_bucket}/{backup_dir_of(orphan[0])}: 1 object(s) without a "
        f"manifest (a run killed after its upload): {orphan}"
    ]
    assert keys_under(s3_client, s3_bucket) == sorted(complete + orphan)


def test_a_fresh_orphan_may_be_a_running_backup_and_is_left_and_reported_as_too_young(
    s3_client, s3_bucket, retention_log
):
    orphan = put_backup(s3_client, s3_bucket, MAR1, manifest=False)

    report = sweep_orphans(s3_client, s3_bucket, PREFIX, dry_run=False)

    assert report == {
        "prefix": PREFIX,
        "dry_run": False,
        "orphans_removed": [],
        "orphans_too_young": [backup_dir_of(orphan[0])],
        "locked": [],
    }
    assert retention_log == [
        f"Orphan sweep: s3://{s3_bucket}/{backup_dir_of(orphan[0])} has no manifest yet but is younger "
        "than 1 day, 0:00:00; left"
    ]
    assert keys_under(s3_client, s3_bucket) == orphan


def test_an_orphan_exactly_min_age_old_is_removed_and_each_of_its_objects_logged(
    s3_client, s3_bucket, retention_log
):
    put_backup(s3_client, s3_bucket, MAR1)
    day_dir = f"{PREFIX}2026-02-28/"
    orphan = sorted([f"{day_dir}{DB}.dump", f"{day_dir}{DB}.dump.part2"])  # the layout before backup ids
    for key in orphan:
        s3_client.put_object(Bucket=s3_bucket, Key=key, Body=b"PGDMP")
    newest = max(
        o["LastModified"] for o in s3_client.list_objects_v2(Bucket=s3_bucket, Prefix=day_dir)["Contents"]
    )

    report = sweep_orphans(
        s3_client,
        s3_bucket,
        PREFIX,
        min_age=timedelta(hours=6),
        dry_run=False,
        now=newest + timedelta(hours=6),
    )

    assert report["orphans_removed"] == [day_dir] and report["orphans_too_young"] == []
    assert retention_log == [
        f"Orphan sweep removing s3://{s3_bucket}/{day_dir}: 2 object(s) without a manifest "
        f"(a run killed after its upload): {orphan}"
    ]
    assert keys_under(s3_client, s3_bucket, day_dir) == []
    assert len(keys_under(s3_client, s3_bucket)) == 2  # the complete backup is untouched


def test_an_orphans_age_counts_from_its_newest_object_not_the_last_one_listed(s3_client, s3_bucket):
    # A killed export wrote web.yaml first and cfg.yaml a second later; cfg.yaml is listed first.
    unit = f"kubernetes/2026-03-01/{bid(MAR1)}/"
    s3_client.put_object(Bucket=s3_bucket, Key=f"{unit}apps/Deployment/web.yaml", Body=b"kind: Deployment")
    time.sleep(1.1)  # LastModified has whole seconds
    s3_client.put_object(Bucket=s3_bucket, Key=f"{unit}apps/ConfigMap/cfg.yaml", Body=b"kind: ConfigMap")
    newest = max(
        o["LastModified"] for o in s3_client.list_objects_v2(Bucket=s3_bucket, Prefix=unit)["Contents"]
    )
    min_age = timedelta(hours=1)

    almost = sweep_orphans(
        s3_client,
        s3_bucket,
        "kubernetes/",
        min_age=min_age,
        now=newest + min_age - timedelta(milliseconds=500),
    )
    due = sweep_orphans(s3_client, s3_bucket, "kubernetes/", min_age=min_age, now=newest + min_age)

    assert (almost["orphans_removed"], almost["orphans_too_young"]) == ([], [unit])
    assert (due["orphans_removed"], due["orphans_too_young"]) == ([unit], [])


def test_the_orphan_sweep_on_a_versioned_bucket_removes_every_version_of_the_orphan(
    s3_client, versioned_bucket
):
    complete = put_backup(s3_client, versioned_bucket, MAR1)
    orphan = put_backup(s3_client, versioned_bucket, FEB28, manifest=False)
    s3_client.put_object(Bucket=versioned_bucket, Key=orphan[0], Body=b"PGDMP-retry")  # a second version

    protection = bucket_protection(s3_client, versioned_bucket)
    later = datetime.now(UTC) + timedelta(days=2)

    report = sweep_orphans(
        s3_client, versioned_bucket, PREFIX, dry_run=False, protection=protection, now=later
    )

    assert report["orphans_removed"] == [backup_dir_of(orphan[0])]
    assert (
        versions_under(s3_client, versioned_bucket, PREFIX) == complete
    )  # no version, no delete marker left
