"""A streamed multipart upload that never passes S3's 10,000-part limit and never overwrites.

A dump's size is unknown until ``pg_dump`` ends, and it can be far larger than the
database (an uncompressed dump of bytea or vector columns is about 1.9x), so no part
size picked up front is safe. Parts therefore *grow* (:class:`PartSchedule`): the
first ``band`` parts have the base size, the next ``band`` twice that, and so on up to
S3's 5 GiB maximum part. With the default 1,000-part bands, 10,000 parts starting at
8 MiB hold 8 TiB, more than S3's largest object (5 TiB), so the limit cannot be hit;
a small dump still goes in small parts, and memory is bounded by ``in_memory`` parts.

The final write is conditional (``If-None-Match: *`` on CompleteMultipartUpload, or on
PutObject for a dump smaller than one part): an existing object is never replaced.
On any failure the upload is aborted, so no part stays billed.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import IO, Any

log = logging.getLogger(__name__)

MIB = 1024 * 1024
GIB = 1024 * MIB
S3_MIN_PART = 5 * MIB
S3_MAX_PART = 5 * GIB
S3_MAX_PARTS = 10_000
S3_MAX_OBJECT = 5 * 1024 * GIB  # 5 TiB


class ObjectExists(RuntimeError):
    """The key already holds an object: the conditional write refused to replace it."""


@dataclass(frozen=True)
class PartSchedule:
    """Part ``n`` (1-based) is ``base * 2 ** ((n - 1) // band)`` bytes, at most 5 GiB."""

    base: int = 8 * MIB
    band: int = 1_000

    def __post_init__(self) -> None:
        if not S3_MIN_PART <= self.base <= S3_MAX_PART:
            raise ValueError(f"base part size {self.base} outside S3's {S3_MIN_PART}..{S3_MAX_PART}")
        if self.band < 1:
            raise ValueError("band must be >= 1")

    def size_of(self, part_number: int) -> int:
        """Size in bytes of part ``part_number`` (1-based)."""
        return min(S3_MAX_PART, self.base << min(40, (part_number - 1) // self.band))

    def capacity(self, parts: int = S3_MAX_PARTS) -> int:
        """Bytes that ``parts`` parts hold."""
        full_bands, rest = divmod(parts, self.band)
        total = sum(self.size_of(b * self.band + 1) * self.band for b in range(full_bands))
        return total + (self.size_of(full_bands * self.band + 1) * rest if rest else 0)

    def parts_for(self, size: int) -> int:
        """How many parts an object of ``size`` bytes takes."""
        parts, held = 0, 0
        while held < size or parts == 0:
            parts += 1
            held += self.size_of(parts)
            if parts > S3_MAX_PARTS:
                break
        return parts


def schedule_for(estimate_bytes: int) -> PartSchedule:
    """A schedule whose base part fits ``estimate_bytes`` in about 9,000 parts (8 MiB at least).

    The estimate only sets the starting size (fewer requests for big databases); the
    growth is what guarantees the part limit whatever the real size turns out to be.
    """
    base = max(8 * MIB, -(-estimate_bytes // 9_000))
    base = min(S3_MAX_PART, -(-base // MIB) * MIB)
    return PartSchedule(base=base)


@dataclass
class UploadResult:
    """What S3 stored: ETag (``"...-N"`` for N parts), VersionId on a versioned bucket, part sizes."""

    etag: str
    version_id: str | None
    size: int
    part_sizes: list[int] = field(default_factory=list)


def _read_exactly(stream: IO[bytes], n: int) -> bytes:
    chunks, left = [], n
    while left > 0:
        data = stream.read(left)
        if not data:
            break
        chunks.append(data)
        left -= len(data)
    return b"".join(chunks)


def upload_stream(
    client: Any,
    stream: IO[bytes],
    bucket: str,
    key: str,
    *,
    schedule: PartSchedule,
    extra_args: dict[str, Any] | None = None,
    threads: int = 4,
    in_memory: int = 4,
    on_abort: Callable[[], None] | None = None,
) -> UploadResult:
    """Upload ``stream`` to a new object ``bucket/key`` (see the module docstring).

    Raises :class:`ObjectExists` when ``key`` already exists (nothing is replaced), and
    re-raises whatever ``stream.read`` or S3 raised after aborting the upload.
    """
    extra = dict(extra_args or {})
    first = _read_exactly(stream, schedule.size_of(1))
    if len(first) < schedule.size_of(1):
        # Smaller than one part: a single conditional PutObject.
        resp = _conditional(
            key, lambda: client.put_object(Bucket=bucket, Key=key, Body=first, IfNoneMatch="*", **extra)
        )
        return UploadResult(resp["ETag"].strip('"'), resp.get("VersionId"), len(first), [len(first)])

    upload_id = client.create_multipart_upload(Bucket=bucket, Key=key, **extra)["UploadId"]
    sse_c = {k: v for k, v in extra.items() if k.startswith("SSECustomer")}
    parts: dict[int, str] = {}
    sizes: list[int] = []
    slots = threading.BoundedSemaphore(in_memory)

    def send(number: int, body: bytes) -> None:
        try:
            md5 = base64.b64encode(hashlib.md5(body).digest()).decode()  # noqa: S324 - S3's integrity header
            resp = client.upload_part(
                Bucket=bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                Body=body,
                ContentMD5=md5,
                **sse_c,
            )
            parts[number] = resp["ETag"]
        finally:
            slots.release()

    try:
        with ThreadPoolExecutor(threads, thread_name_prefix="upload-part") as pool:
            pending: set[Future] = set()
            number, body = 1, first
            while body:
                if number > S3_MAX_PARTS:
                    raise RuntimeError(f"s3://{bucket}/{key}: more than {S3_MAX_PARTS} parts")
                slots.acquire()
                sizes.append(len(body))
                pending.add(pool.submit(send, number, body))
                done, pending = wait(pending, timeout=0, return_when=FIRST_COMPLETED)
                for fut in done:
                    fut.result()  # an upload error stops the stream at once
                number += 1
                body = _read_exactly(stream, schedule.size_of(number))
            for fut in pending:
                fut.result()
        resp = _conditional(
            key,
            lambda: client.complete_multipart_upload(
                Bucket=bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in sorted(parts.items())]},
                IfNoneMatch="*",
            ),
        )
    except BaseException:
        if on_abort is not None:
            on_abort()
        try:
            client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        except Exception:
            log.exception("Could not abort multipart upload %s of s3://%s/%s", upload_id, bucket, key)
        raise
    return UploadResult(resp["ETag"].strip('"'), resp.get("VersionId"), sum(sizes), sizes)


def _conditional(key: str, call: Callable[[], dict]) -> dict:
    from botocore.exceptions import ClientError

    try:
        return call()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in {
            "PreconditionFailed",
            "412",
            "ConditionalRequestConflict",
        }:
            raise ObjectExists(f"{key} already exists; backups never overwrite an object") from exc
        raise
