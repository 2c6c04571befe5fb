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
    """Write a small JSON object with the configured encryption."""
    client.put_object(
        Bucket=bucket, Key=key, Body=body, ContentType="application/json", **encryption.extra_args()
    )


def get_json_or_none(client: Any, bucket: str, key: str) -> bytes | None:
    """The body of ``key``, or None when it does not exist."""
    from botocore.exceptions import ClientError

    try:
        return client.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404"}:
            return None
        raise


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
