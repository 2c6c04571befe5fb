"""Artifact sync into the backup bucket, against moto's S3 server over HTTP."""

from __future__ import annotations

import threading

import pytest
from boto3.s3.transfer import TransferConfig

from mlops.backups.artifacts import DeleteCapExceeded, sync_artifacts
from mlops.backups.s3 import Encryption, s3_client
from mlops.settings import get_settings

MIB = 1024 * 1024


@pytest.fixture
def buckets(s3_conn, s3_client):
    """(artifacts bucket with 20 small models and one multipart artifact, empty backup bucket)."""
    import uuid

    src, dst = f"art-{uuid.uuid4().hex[:10]}", f"bak-{uuid.uuid4().hex[:10]}"
    s3_client.create_bucket(Bucket=src)
    s3_client.create_bucket(Bucket=dst)
    for i in range(20):
        s3_client.put_object(
            Bucket=src, Key=f"models/m{i % 4}/v{i}/model.bin", Body=f"weights-{i}".encode() * 50
        )
    s3_client.put_object(Bucket=src, Key="other/not-synced.txt", Body=b"x")
    import io

    s3_client.upload_fileobj(
        io.BytesIO(b"\x01" * (11 * MIB)),
        src,
        "models/big/v1/weights.safetensors",
        Config=TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB),
    )
    return src, dst


class OperationLog:
    """The S3 operations the sync's client sends: (operation, bucket, thread)."""

    def __init__(self, client) -> None:
        self.calls: list[tuple[str, str, str]] = []
        client.meta.events.register("before-parameter-build.s3", self._record)

    def _record(self, model, params, **_):
        self.calls.append((model.name, params.get("Bucket", ""), threading.current_thread().name))

    def names(self) -> list[str]:
        return [name for name, _, _ in self.calls]


def _client():
    """The client the DAG uses: built from the ``aws_default`` Airflow connection."""
    return s3_client(get_settings(), max_pool_connections=16)


def _sync(client, src, dst, **kw):
    return sync_artifacts(client, source_bucket=src, source_prefix="models/", backup_bucket=dst, **kw)


def _backup_keys(s3_client, dst) -> list[str]:
    return sorted(
        o["Key"] for o in s3_client.list_objects_v2(Bucket=dst, Prefix="artifacts/").get("Contents", [])
    )


def test_second_sync_copies_nothing(buckets, s3_client):
    src, dst = buckets
    client = _client()
    first = _sync(client, src, dst)
    ops = OperationLog(client)
    second = _sync(client, src, dst)

    assert (first.copied, first.skipped, first.deleted, first.full_check) == (21, 0, 0, True)
    assert (second.copied, second.skipped, second.deleted, second.full_check) == (0, 21, 0, False)
    assert "CopyObject" not in ops.names() and "PutObject" not in ops.names()
    assert "HeadObject" not in ops.names()  # decided from the listing and the ledger alone
    # Between full checks only the source is listed; the ledger stands for the backup side.
    assert [b for name, b, _ in ops.calls if name == "ListObjectsV2"] == [src]
    assert len(_backup_keys(s3_client, dst)) == 21
    big = s3_client.get_object(Bucket=dst, Key="artifacts/models/big/v1/weights.safetensors")["Body"].read()
    assert big == b"\x01" * (11 * MIB)


def test_copies_are_server_side_and_parallel(buckets):
    src, dst = buckets
    client = _client()
    ops = OperationLog(client)
    report = _sync(client, src, dst, workers=8)

    names = ops.names()
    assert report.copied == 21
    assert names.count("CopyObject") == 21
    # No artifact bytes pass through the worker: the only object read is the (absent) sync ledger.
    assert names.count("GetObject") == 1 and "UploadPart" not in names
    copy_threads = {thread for name, _, thread in ops.calls if name == "CopyObject"}
    assert len(copy_threads) > 1


def test_same_size_rewrite_is_detected_by_content_not_size(buckets, s3_client):
    src, dst = buckets
    client = _client()
    _sync(client, src, dst)
    key = "models/m1/v5/model.bin"
    old = s3_client.get_object(Bucket=src, Key=key)["Body"].read()
    s3_client.put_object(Bucket=src, Key=key, Body=old.upper())  # same size, different bytes

    report = _sync(client, src, dst)

    assert (report.copied, report.skipped) == (1, 20)
    assert s3_client.get_object(Bucket=dst, Key=f"artifacts/{key}")["Body"].read() == old.upper()


def test_a_replaced_multipart_artifact_and_a_tampered_backup_copy_are_copied_again(buckets, s3_client):
    import io

    src, dst = buckets
    client = _client()
    _sync(client, src, dst)
    s3_client.upload_fileobj(
        io.BytesIO(b"\x02" * (11 * MIB)),
        src,
        "models/big/v1/weights.safetensors",
        Config=TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB),
    )
    s3_client.put_object(Bucket=dst, Key="artifacts/models/m0/v0/model.bin", Body=b"tampered")

    report = _sync(client, src, dst, full_check=True)

    assert (report.copied, report.skipped) == (2, 19)
    assert (
        s3_client.get_object(Bucket=dst, Key="artifacts/models/m0/v0/model.bin")["Body"]
        .read()
        .startswith(b"weights-0")
    )


def test_copies_carry_the_backup_encryption(buckets, s3_client):
    src, dst = buckets
    _sync(_client(), src, dst, encryption=Encryption("aws:kms", "alias/backups"))
    head = s3_client.head_object(Bucket=dst, Key="artifacts/models/m2/v2/model.bin")
    assert (head["ServerSideEncryption"], head["SSEKMSKeyId"]) == ("aws:kms", "alias/backups")


def _retired(s3_client, dst) -> dict[str, bytes]:
    listed = s3_client.list_objects_v2(Bucket=dst, Prefix="artifacts-retired/").get("Contents", [])
    return {o["Key"]: s3_client.get_object(Bucket=dst, Key=o["Key"])["Body"].read() for o in listed}


def test_a_copy_whose_source_was_deleted_is_kept_for_the_grace_period_then_expired(buckets, s3_client):
    from datetime import date, timedelta

    src, dst = buckets
    client = _client()
    _sync(client, src, dst)
    s3_client.delete_object(Bucket=src, Key="models/m3/v3/model.bin")

    kept = _sync(client, src, dst)  # deletion is optional: off by default
    report = _sync(client, src, dst, delete=True, max_delete_fraction=0.1, grace_days=30)

    assert (kept.deleted, report.deleted, report.retired, report.copied, report.skipped) == (0, 1, 1, 0, 20)
    assert "artifacts/models/m3/v3/model.bin" not in _backup_keys(s3_client, dst)
    ((key, body),) = _retired(s3_client, dst).items()
    assert key.endswith("/models/m3/v3/model.bin") and body == b"weights-3" * 50
    today = date.fromisoformat(key.split("/")[1])

    still = _sync(client, src, dst, grace_days=30, today=today + timedelta(days=30))
    assert still.expired == 0 and len(_retired(s3_client, dst)) == 1
    gone = _sync(client, src, dst, grace_days=30, today=today + timedelta(days=31))
    assert gone.expired == 1 and _retired(s3_client, dst) == {}


def test_an_overwritten_artifact_keeps_its_previous_backup_copy(buckets, s3_client):
    src, dst = buckets
    client = _client()
    _sync(client, src, dst)
    s3_client.put_object(Bucket=src, Key="models/m1/v5/model.bin", Body=b"a bad overwrite")

    report = _sync(client, src, dst)

    assert (report.copied, report.retired) == (1, 1)
    assert s3_client.get_object(Bucket=dst, Key="artifacts/models/m1/v5/model.bin")["Body"].read() == (
        b"a bad overwrite"
    )
    assert list(_retired(s3_client, dst).values()) == [b"weights-5" * 50]


def test_on_a_versioned_backup_bucket_the_previous_copy_stays_as_a_noncurrent_version(buckets, s3_client):
    from mlops.backups.s3 import bucket_protection

    src, dst = buckets
    s3_client.put_bucket_versioning(Bucket=dst, VersioningConfiguration={"Status": "Enabled"})
    client = _client()
    _sync(client, src, dst)
    s3_client.put_object(Bucket=src, Key="models/m1/v5/model.bin", Body=b"a bad overwrite")
    s3_client.delete_object(Bucket=src, Key="models/m3/v3/model.bin")

    report = _sync(client, src, dst, delete=True, protection=bucket_protection(client, dst))

    assert (report.copied, report.deleted, report.retired) == (1, 1, 0) and _retired(s3_client, dst) == {}
    versions = s3_client.list_object_versions(Bucket=dst, Prefix="artifacts/models/m")
    old = {v["Key"] for v in versions["Versions"] if not v["IsLatest"]}
    assert old == {"artifacts/models/m1/v5/model.bin", "artifacts/models/m3/v3/model.bin"}


def test_a_hit_delete_cap_stops_the_deletions_and_alerts_but_new_artifacts_are_still_copied(
    buckets, s3_client
):
    src, dst = buckets
    client = _client()
    _sync(client, src, dst)
    for i in range(0, 20, 2):  # half of the models vanish from the source
        s3_client.delete_object(Bucket=src, Key=f"models/m{i % 4}/v{i}/model.bin")
    s3_client.put_object(Bucket=src, Key="models/new/v1/model.bin", Body=b"new")

    with pytest.raises(
        DeleteCapExceeded, match=r"refusing to delete 10 of 21 backup copies \(48%\).*cap is 10%"
    ):
        _sync(client, src, dst, delete=True, max_delete_fraction=0.1)
    assert len(_backup_keys(s3_client, dst)) == 22  # nothing removed...
    assert "artifacts/models/new/v1/model.bin" in _backup_keys(s3_client, dst)  # ...and the new one copied


def test_dry_run_reports_counts_and_writes_nothing(buckets, s3_client):
    src, dst = buckets
    report = _sync(_client(), src, dst, dry_run=True)
    assert (report.copied, report.skipped, report.dry_run) == (21, 0, True)
    assert s3_client.list_objects_v2(Bucket=dst).get("KeyCount") == 0


def test_a_backup_copy_deleted_by_hand_comes_back_at_the_next_full_check(buckets, s3_client):
    src, dst = buckets
    client = _client()
    _sync(client, src, dst)
    s3_client.delete_object(Bucket=dst, Key="artifacts/models/m1/v1/model.bin")

    between = _sync(client, src, dst)  # trusts the ledger: does not see it
    full = _sync(client, src, dst, full_check=True)

    assert (between.copied, full.copied, full.skipped) == (0, 1, 20)
    assert "artifacts/models/m1/v1/model.bin" in _backup_keys(s3_client, dst)


def test_a_full_check_is_due_when_the_last_one_is_older_than_the_period(buckets, s3_client):
    import json

    src, dst = buckets
    client = _client()
    _sync(client, src, dst)
    ledger = json.loads(s3_client.get_object(Bucket=dst, Key="_state/artifacts_sync.json")["Body"].read())
    ledger["full_check_at"] = "2020-01-01T00:00:00+00:00"
    s3_client.put_object(Bucket=dst, Key="_state/artifacts_sync.json", Body=json.dumps(ledger).encode())

    assert _sync(client, src, dst, full_check_days=7).full_check is True
    assert _sync(client, src, dst, full_check_days=7).full_check is False


# -- issue 18: the comparison rules and the listing schedule, at their edges -------------------------
def test_after_the_ledger_is_lost_identical_copies_are_kept_and_only_the_multipart_one_is_copied_again(
    buckets, s3_client
):
    """Without the ledger, a single-part object is compared by its ETag (its MD5) and kept; a multipart
    ETag is not a content hash of the object, so that artifact is copied again."""
    src, dst = buckets
    client = _client()
    _sync(client, src, dst)
    s3_client.delete_object(Bucket=dst, Key="_state/artifacts_sync.json")

    report = _sync(client, src, dst)

    assert report.full_check is True  # no ledger: the backup side is listed
    assert (report.copied, report.skipped, report.failed) == (1, 20, 0), report.as_dict()


def test_a_multipart_backup_copy_with_the_same_etag_is_not_trusted_without_the_ledger(buckets, s3_client):
    import io

    src, dst = buckets
    big = "models/big/v1/weights.safetensors"
    # The same bytes uploaded with the same part size: the same multipart ETag on both sides.
    s3_client.upload_fileobj(
        io.BytesIO(b"\x01" * (11 * MIB)),
        dst,
        f"artifacts/{big}",
        Config=TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB),
    )
    assert (
        s3_client.head_object(Bucket=src, Key=big)["ETag"]
        == s3_client.head_object(Bucket=dst, Key=f"artifacts/{big}")["ETag"]
    )

    report = _sync(_client(), src, dst)

    assert report.copied == 21  # the 20 models and the multipart artifact, despite its equal ETag
    assert report.as_dict() == {
        "copied": 21,
        "skipped": 0,
        "deleted": 0,
        "retired": 1,  # the copy it replaced is kept for the grace period, as for any overwrite
        "expired": 0,
        "failed": 0,
        "bytes_copied": report.bytes_copied,
        "source_objects": 21,
        "backup_objects": 1,
        "dry_run": False,
        "full_check": True,
        "seconds": report.seconds,
        "errors": [],
    }
    assert report.bytes_copied >= 11 * MIB


def test_retired_copies_are_listed_only_once_one_is_past_its_grace_period(buckets, s3_client):
    """Between full checks the ledger says when a retired copy falls due; until then the sync does
    not list the retired prefix (an S3 LIST per sync per day saved)."""
    from datetime import date, timedelta

    src, dst = buckets
    client = _client()
    _sync(client, src, dst)
    s3_client.delete_object(Bucket=src, Key="models/m3/v3/model.bin")
    _sync(client, src, dst, delete=True, max_delete_fraction=0.1, grace_days=30)
    (key,) = _retired(s3_client, dst)
    retired_on = date.fromisoformat(key.split("/")[1])

    def retired_listings(day: date) -> int:
        log = OperationLog(client)
        report = _sync(client, src, dst, grace_days=30, today=day)
        assert report.full_check is False
        return sum(
            1
            for name, bucket, _ in log.calls
            if bucket == dst and name in ("ListObjectsV2", "ListObjectVersions")
        )

    at_grace = retired_listings(retired_on + timedelta(days=30))
    past_grace = retired_listings(retired_on + timedelta(days=31))
    assert at_grace == 0 and past_grace >= 1, (at_grace, past_grace)
