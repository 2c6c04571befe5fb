"""S3 plumbing shared by the backup modules: client, encryption arguments, reachability.

The client always comes from the Airflow AWS connection (its ``endpoint_url``
extra points at a non-AWS S3 when set); nothing here hard-codes an endpoint.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from mlops.settings import Settings

log = logging.getLogger(__name__)

SSE_MODES = ("none", "AES256", "aws:kms")


class S3Unreachable(RuntimeError):
    """The backup bucket cannot be reached; nothing was written."""


@dataclass(frozen=True)
class Encryption:
    """Server-side encryption of backup objects: ``none``, SSE-S3 (``AES256``) or SSE-KMS."""

    mode: str = "AES256"
    kms_key_id: str = ""

    def __post_init__(self) -> None:
        if self.mode not in SSE_MODES:
            raise ValueError(f"backup_sse must be one of {SSE_MODES}, got {self.mode!r}")
        if self.kms_key_id and self.mode != "aws:kms":
            raise ValueError("backup_kms_key_id is set but backup_sse is not aws:kms")

    @classmethod
    def from_settings(cls, settings: Settings) -> Encryption:
        return cls(settings.backup_sse, settings.backup_kms_key_id)

    def extra_args(self) -> dict[str, str]:
        """Arguments for PutObject / CreateMultipartUpload / CopyObject."""
        if self.mode == "none":
            return {}
        args = {"ServerSideEncryption": self.mode}
        if self.kms_key_id:
            args["SSEKMSKeyId"] = self.kms_key_id
        return args

    def as_dict(self) -> dict[str, str]:
        return {"mode": self.mode, "kms_key_id": self.kms_key_id}


def s3_client(settings: Settings, max_pool_connections: int = 10) -> Any:
    """A boto3 S3 client built from the Airflow AWS connection ``settings.aws_conn_id``."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    from botocore.config import Config

    hook = S3Hook(aws_conn_id=settings.aws_conn_id)
    return hook.get_client_type(config=Config(max_pool_connections=max_pool_connections))


def describe_endpoint(client: Any) -> str:
    return getattr(getattr(client, "meta", None), "endpoint_url", "?")


def ensure_bucket(client: Any, bucket: str) -> None:
    """Raise :class:`S3Unreachable` with a readable message unless ``bucket`` answers HeadBucket."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        client.head_bucket(Bucket=bucket)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "?")
        raise S3Unreachable(
            f"S3 bucket {bucket!r} at {describe_endpoint(client)} is not usable ({code}): {exc}"
        ) from exc
    except BotoCoreError as exc:
        raise S3Unreachable(
            f"S3 at {describe_endpoint(client)} cannot be reached for bucket {bucket!r}: {exc}"
        ) from exc


def pending_uploads(client: Any, bucket: str, key: str) -> list[str]:
    """Upload ids of multipart uploads still open on exactly ``key``."""
    resp = client.list_multipart_uploads(Bucket=bucket, Prefix=key)
    return [u["UploadId"] for u in resp.get("Uploads", []) if u["Key"] == key]


def abort_pending_uploads(client: Any, bucket: str, key: str) -> int:
    """Abort every multipart upload left open on ``key``; returns how many there were."""
    ids = pending_uploads(client, bucket, key)
    for upload_id in ids:
        log.warning("Aborting dangling multipart upload %s of s3://%s/%s", upload_id, bucket, key)
        client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
    return len(ids)


def put_json(client: Any, bucket: str, key: str, body: bytes, encryption: Encryption) -> None:
    """Write (or replace) a small JSON object of the sync's own state, with the configured encryption."""
    client.put_object(
        Bucket=bucket, Key=key, Body=body, ContentType="application/json", **encryption.extra_args()
    )


def put_new(
    client: Any,
    bucket: str,
    key: str,
    body: bytes,
    encryption: Encryption,
    content_type: str = "application/json",
) -> dict[str, Any]:
    """Write a new object; ``If-None-Match: *`` makes S3 refuse to replace an existing one
    (:class:`~mlops.backups.upload.ObjectExists`). Returns PutObject's answer (ETag, VersionId)."""
    from mlops.backups.upload import _conditional

    return _conditional(
        key,
        lambda: client.put_object(
            Bucket=bucket,
            Key=key,
            Body=body,
            ContentType=content_type,
            IfNoneMatch="*",
            **encryption.extra_args(),
        ),
    )


def put_replacing(
    client: Any, bucket: str, key: str, body: bytes, encryption: Encryption, etag: str | None
) -> dict[str, Any]:
    """Replace ``key`` only if it still has ``etag`` (``If-Match``), or create it only if it does
    not exist yet (``etag`` None): two writers can never silently undo each other."""
    condition = {"IfMatch": f'"{etag}"'} if etag else {"IfNoneMatch": "*"}
    return client.put_object(
        Bucket=bucket,
        Key=key,
        Body=body,
        ContentType="application/json",
        **condition,
        **encryption.extra_args(),
    )


def get_json_and_etag(client: Any, bucket: str, key: str) -> tuple[bytes | None, str | None]:
    """The body and ETag of ``key``, or (None, None) when it does not exist."""
    from botocore.exceptions import ClientError

    try:
        obj = client.get_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404"}:
            return None, None
        raise
    return obj["Body"].read(), obj["ETag"].strip('"')


def get_json_or_none(client: Any, bucket: str, key: str) -> bytes | None:
    """The body of ``key``, or None when it does not exist."""
    from botocore.exceptions import ClientError

    try:
        return client.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404"}:
            return None
        raise


@dataclass(frozen=True)
class BucketProtection:
    """What the bucket does with deletions: versioning keeps old versions, Object Lock refuses them."""

    versioning: bool = False
    object_lock: bool = False
    default_lock_mode: str = ""  # GOVERNANCE | COMPLIANCE | "" (no default retention)

    def describe(self) -> str:
        if self.object_lock:
            return f"versioned, Object Lock ({self.default_lock_mode or 'no default retention'})"
        return "versioned" if self.versioning else "unversioned"


def bucket_protection(client: Any, bucket: str) -> BucketProtection:
    """Detect versioning and Object Lock on ``bucket``."""
    from botocore.exceptions import ClientError

    versioning = client.get_bucket_versioning(Bucket=bucket).get("Status") == "Enabled"
    try:
        conf = client.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ObjectLockConfigurationNotFoundError":
            return BucketProtection(versioning=versioning)
        raise
    locked = conf.get("ObjectLockEnabled") == "Enabled"
    mode = ((conf.get("Rule") or {}).get("DefaultRetention") or {}).get("Mode", "")
    return BucketProtection(versioning=versioning or locked, object_lock=locked, default_lock_mode=mode)


LIFECYCLE_ABORT_RULE = "mlops-abort-incomplete-multipart-uploads"
LIFECYCLE_NONCURRENT_RULE = "mlops-expire-noncurrent-versions"


def lifecycle_rules(abort_after_days: int, noncurrent_days: int | None) -> list[dict[str, Any]]:
    """The lifecycle rules the backups own: abort multipart uploads left open (a worker killed by
    SIGKILL or OOM cannot), and on a versioned bucket expire noncurrent versions."""
    rules: list[dict[str, Any]] = [
        {
            "ID": LIFECYCLE_ABORT_RULE,
            "Status": "Enabled",
            "Filter": {"Prefix": ""},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": abort_after_days},
        }
    ]
    if noncurrent_days:
        rules.append(
            {
                "ID": LIFECYCLE_NONCURRENT_RULE,
                "Status": "Enabled",
                "Filter": {"Prefix": ""},
                "NoncurrentVersionExpiration": {"NoncurrentDays": noncurrent_days},
            }
        )
    return rules


def ensure_lifecycle(
    client: Any, bucket: str, *, abort_after_days: int = 1, noncurrent_days: int | None = None
) -> bool:
    """Make the bucket's lifecycle hold our rules (by ID), keeping every other rule; True if changed.

    Idempotent: when the rules are already there nothing is written.
    """
    from botocore.exceptions import ClientError

    try:
        current = client.get_bucket_lifecycle_configuration(Bucket=bucket).get("Rules", [])
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "NoSuchLifecycleConfiguration":
            raise
        current = []
    ours = lifecycle_rules(abort_after_days, noncurrent_days)
    owned = {LIFECYCLE_ABORT_RULE, LIFECYCLE_NONCURRENT_RULE}
    wanted = [r for r in current if r.get("ID") not in owned] + ours
    if _normalised(wanted) == _normalised(current):
        return False
    client.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": wanted})
    log.info("Lifecycle of s3://%s now holds %s", bucket, [r["ID"] for r in ours])
    return True


def _normalised(rules: list[dict[str, Any]]) -> list[str]:
    import json

    return sorted(json.dumps(r, sort_keys=True, default=str) for r in rules)


def list_keys(client: Any, bucket: str, prefix: str) -> list[dict[str, Any]]:
    """Every object under ``prefix`` (ListObjectsV2 entries: Key, ETag, Size, LastModified)."""
    out: list[dict[str, Any]] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        out.extend(page.get("Contents", []))
    return out


def delete_keys(client: Any, bucket: str, keys: list[str]) -> None:
    """Delete ``keys`` in batches of 1000; raise if S3 reports any key it could not delete."""
    for i in range(0, len(keys), 1000):
        batch = keys[i : i + 1000]
        resp = client.delete_objects(
            Bucket=bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}
        )
        if resp.get("Errors"):
            raise RuntimeError(f"S3 refused to delete {len(resp['Errors'])} object(s): {resp['Errors'][:3]}")


@dataclass
class Deletion:
    """What a protected deletion removed, and what Object Lock kept (key, version, why)."""

    deleted: list[str]
    locked: list[dict[str, str]]


def _lock_of(client: Any, bucket: str, key: str, version_id: str) -> str:
    """Why this version cannot be deleted now ("" when it can): retention date or legal hold."""
    from datetime import UTC, datetime

    head = client.head_object(Bucket=bucket, Key=key, VersionId=version_id)
    if head.get("ObjectLockLegalHoldStatus") == "ON":
        return "legal hold"
    until = head.get("ObjectLockRetainUntilDate")
    if until is not None and until > datetime.now(UTC):
        return f"{head.get('ObjectLockMode', 'locked')} until {until.isoformat()}"
    return ""


def delete_protected(
    client: Any, bucket: str, groups: dict[str, set[str]], protection: BucketProtection, *, dry_run: bool
) -> Deletion:
    """Delete the keys of ``groups`` (``{directory prefix: {keys under it}}``), freeing the space.

    Unversioned: plain deletions. Versioned: every version and delete marker of those
    keys is deleted by VersionId (a plain delete only adds a delete marker and frees
    nothing). Object Lock: a version under retention or legal hold is never attempted;
    it is reported in ``locked`` (the dry run reports the same). Governance is never
    bypassed.
    """
    out = Deletion([], [])
    if not protection.versioning:
        keys = sorted(k for ks in groups.values() for k in ks)
        if not dry_run:
            delete_keys(client, bucket, keys)
        out.deleted = keys
        return out
    batch: list[dict[str, str]] = []
    for prefix, keys in groups.items():
        for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
            entries = [(v, False) for v in page.get("Versions", [])]
            entries += [(m, True) for m in page.get("DeleteMarkers", [])]
            for entry, is_marker in entries:
                key, version = entry["Key"], entry["VersionId"]
                if key not in keys:
                    continue
                why = (
                    "" if is_marker or not protection.object_lock else _lock_of(client, bucket, key, version)
                )
                if why:
                    out.locked.append({"key": key, "version_id": version, "why": why})
                    continue
                batch.append({"Key": key, "VersionId": version})
                out.deleted.append(f"{key}?versionId={version}")
    if not dry_run:
        for i in range(0, len(batch), 1000):
            resp = client.delete_objects(
                Bucket=bucket, Delete={"Objects": batch[i : i + 1000], "Quiet": True}
            )
            if resp.get("Errors"):
                raise RuntimeError(
                    f"S3 refused to delete {len(resp['Errors'])} version(s): {resp['Errors'][:3]}"
                )
    return out


def delete_written(client: Any, bucket: str, key: str, version_id: str | None) -> None:
    """Remove an object this run wrote (its own version on a versioned bucket); logs, never raises."""
    try:
        if version_id:
            client.delete_object(Bucket=bucket, Key=key, VersionId=version_id)
        else:
            client.delete_object(Bucket=bucket, Key=key)
    except Exception:
        log.exception(
            "Could not delete s3://%s/%s written by this failed run; the orphan sweep reports it", bucket, key
        )
