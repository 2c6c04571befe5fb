"""The registry's pure rules: which S3 answers are a lost compare-and-swap, version ids, key layout."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone

import pytest
from botocore.exceptions import ClientError

from mlops import registry
from mlops.registry import checkpoint_uri, version_for_run


def client_error(code: str | None = None, status: int | None = None) -> ClientError:
    response: dict = {}
    if code is not None:
        response["Error"] = {"Code": code, "Message": "m"}
    if status is not None:
        response["ResponseMetadata"] = {"HTTPStatusCode": status}
    return ClientError(response, "PutObject")


@pytest.mark.parametrize(
    ("error", "conflict"),
    [
        (client_error("PreconditionFailed"), True),  # If-Match / If-None-Match failed (412)
        (client_error("ConditionalRequestConflict"), True),  # a concurrent conditional write (409)
        (client_error(status=409), True),
        (client_error(status=412), True),
        (client_error("InternalError", 500), False),
        (client_error("AccessDenied", 403), False),
        (client_error(), False),
        (ValueError("not an S3 error"), False),
    ],
)
def test_only_a_lost_conditional_write_is_a_conflict(error, conflict):
    assert registry._is_conflict(error) is conflict


@pytest.mark.parametrize(
    ("error", "missing"),
    [
        (client_error("NoSuchKey", 404), True),
        (client_error("404"), True),
        (client_error("NotFound"), True),
        (client_error("AccessDenied", 403), False),
        (ValueError("x"), False),
    ],
)
def test_only_a_missing_key_reads_as_missing(error, missing):
    assert registry._is_missing(error) is missing


def digest(run_id: str) -> str:
    return hashlib.sha256(run_id.encode()).hexdigest()[:8]


def test_a_version_id_comes_from_the_logical_date_in_utc():
    run = "scheduled__2026-11-27T02:00:00+00:00"
    assert version_for_run(run, datetime(2026, 11, 27, 2, 0, tzinfo=UTC)) == f"v20261127t020000-{digest(run)}"
    paris = timezone(timedelta(hours=1))
    assert (
        version_for_run(run, datetime(2026, 11, 27, 3, 0, tzinfo=paris)) == f"v20261127t020000-{digest(run)}"
    )
    assert (
        version_for_run(run, datetime(2026, 11, 27, 3, 0)) == f"v20261127t030000-{digest(run)}"
    )  # naive: as is
    assert version_for_run(run, "2026-11-27T02:00:00Z") == f"v20261127t020000-{digest(run)}"


def test_without_a_logical_date_the_run_ids_timestamp_or_none_is_used():
    run = "manual__2026-01-02T03:04:05.123+00:00"
    assert version_for_run(run) == f"v20260102t030405-{digest(run)}"
    assert version_for_run(run, "") == f"v20260102t030405-{digest(run)}"
    assert version_for_run("api-run") == f"v-{digest('api-run')}"


def test_a_version_id_needs_a_run_id_and_a_date_it_can_read():
    with pytest.raises(ValueError, match="run_id: must not be empty"):
        version_for_run("")
    with pytest.raises(ValueError, match="logical_date: expected a datetime or ISO string, got int"):
        version_for_run("r", 20261127)


def test_checkpoints_live_beside_the_versions_outputs():
    assert checkpoint_uri("b", "digits", "v1") == "s3://b/models/digits/checkpoints/v1/"
    with pytest.raises(ValueError, match="^version: "):
        checkpoint_uri("b", "digits", "V1")
