"""A cleared run, a manual run on the same day, a failure after the upload: no backup is ever replaced."""

from __future__ import annotations

import hashlib
from datetime import date

import pytest

from mlops.backups.postgres import PgTarget, backup_database
from mlops.backups.s3 import s3_client
from mlops.backups.tasks import backup_postgres, verify_postgres
from mlops.backups.upload import ObjectExists
from mlops.backups.verify import read_marker
from mlops.settings import get_settings

DAY = date(2026, 3, 1)


def _sha(s3, bucket: str, key: str) -> str:
    return hashlib.sha256(s3.get_object(Bucket=bucket, Key=key)["Body"].read()).hexdigest()


def _keys(s3, bucket: str, prefix: str = "") -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []))


def test_a_second_backup_on_the_same_day_keeps_the_first_one(
    seeded_db, backup_bucket, pg_bin, pg_cluster, s3_client
):
    nightly = backup_postgres(seeded_db, DAY, "scheduled__2026-03-01", dry_run=False)
    nightly_sha = _sha(s3_client, backup_bucket, nightly["key"])
    pg_cluster.execute("INSERT INTO models VALUES (999, 'pre-migration')", seeded_db)

    manual = backup_postgres(seeded_db, DAY, "manual__pre-migration", dry_run=False)

    assert manual["key"] != nightly["key"] and manual["manifest_key"] != nightly["manifest_key"]
    assert _sha(s3_client, backup_bucket, nightly["key"]) == nightly_sha == nightly["sha256"]
    assert len(_keys(s3_client, backup_bucket, f"postgres/{seeded_db}/2026-03-01/")) == 4


def test_a_failure_after_the_upload_removes_only_what_that_run_wrote(
    seeded_db, backup_bucket, pg_bin, s3_client, verify_conn
):
    good = backup_postgres(seeded_db, DAY, "scheduled__2026-03-01", dry_run=False)
    verify_postgres(good)
    before = _keys(s3_client, backup_bucket)

    client = s3_client_for_test()

    def lose_the_manifest(params, **_):  # S3 fails the commit point of the second run
        if params["Key"].endswith("manifest.json"):
            raise ConnectionError("S3 went away while writing the manifest")

    client.meta.events.register("before-parameter-build.s3.PutObject", lose_the_manifest)
    with pytest.raises(ConnectionError):
        backup_database(
            client, PgTarget.from_connection(get_settings().postgres_conn_id), bucket=backup_bucket,
            logical_date=DAY, pg_bin_dir=pg_bin, run_id="manual__2",
        )  # fmt: skip

    assert _keys(s3_client, backup_bucket) == before  # the failed run's dump is gone, nothing else
    marker = read_marker(s3_client, backup_bucket, seeded_db)
    assert marker["key"] == good["key"] and _sha(s3_client, backup_bucket, marker["key"]) == marker["sha256"]
    assert s3_client.list_multipart_uploads(Bucket=backup_bucket).get("Uploads", []) == []


def test_the_final_writes_are_conditional_so_an_existing_backup_cannot_be_replaced(
    seeded_db, backup_bucket, pg_bin, s3_client
):
    client, source = s3_client_for_test(), PgTarget.from_connection(get_settings().postgres_conn_id)
    first = backup_database(client, source, bucket=backup_bucket, logical_date=DAY, pg_bin_dir=pg_bin,
                            backup_id="20260301T030000Z-00000001")  # fmt: skip
    with pytest.raises(ObjectExists, match="never overwrite"):
        backup_database(client, source, bucket=backup_bucket, logical_date=DAY, pg_bin_dir=pg_bin,
                        backup_id="20260301T030000Z-00000001")  # fmt: skip
    assert _sha(s3_client, backup_bucket, first.key) == first.sha256
    assert s3_client.list_multipart_uploads(Bucket=backup_bucket).get("Uploads", []) == []


def test_the_marker_moves_only_after_verification_and_never_back_to_an_older_backup(
    seeded_db, backup_bucket, pg_bin, s3_client, verify_conn
):
    older = backup_postgres(seeded_db, DAY, "scheduled__1", dry_run=False)
    newer = backup_postgres(seeded_db, DAY, "manual__2", dry_run=False)
    assert read_marker(s3_client, backup_bucket, seeded_db) is None  # backed up, not yet verified

    verify_postgres(newer)
    verify_postgres(older)  # e.g. a slow retry of the older run finishing last

    assert read_marker(s3_client, backup_bucket, seeded_db)["backup_id"] == newer["backup_id"]


def s3_client_for_test():
    return s3_client(get_settings())
