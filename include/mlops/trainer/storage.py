"""Where the trainer reads and writes: an S3 prefix, or a local folder.

The trainer runs in a pod without Airflow, so S3 access is plain boto3: credentials,
region and endpoint come from the standard ``AWS_*`` environment variables
(``AWS_ENDPOINT_URL`` included). boto3 is imported only when an S3 location is used.
Each object is written whole (an S3 PUT, or a local write and rename), so a reader
never sees half an object.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from mlops.trainer.config import split_s3_uri


class StorageError(RuntimeError):
    """An object could not be read or written; the message names the URI and the reason.

    ``transient`` is true when a later attempt may succeed (S3 unreachable, throttled, 5xx or timed
    out after boto3's own retries); false for a mistake such as a missing bucket or refused credentials.
    """

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


# S3 error codes that mean "not now" rather than "not like this".
_TRANSIENT_CODES = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError", "ServiceUnavailable"}
)


def _transient(exc: Exception) -> bool:
    from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return status >= 500 or status == 429 or exc.response.get("Error", {}).get("Code") in _TRANSIENT_CODES
    return isinstance(exc, (ConnectionError, HTTPClientError))


class Location:
    """A folder-like place holding named objects."""

    uri: str

    def check(self, field: str) -> None:
        """Fail early, naming ``field``, if this location cannot be used."""

    def put(self, name: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        raise NotImplementedError

    def get(self, name: str) -> bytes | None:
        """The object's bytes, or ``None`` if it does not exist."""
        raise NotImplementedError

    def names(self) -> list[str]:
        """Names of the objects directly in this location."""
        raise NotImplementedError

    def delete(self, name: str) -> None:
        raise NotImplementedError

    def child(self, name: str) -> str:
        return self.uri + name


def _describe(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if response:
        error = response.get("Error", {})
        return f"{error.get('Code', '?')}: {error.get('Message') or 'no message'}"
    return f"{type(exc).__name__}: {exc}"


class S3Location(Location):
    """``s3://bucket/prefix/`` through a boto3 client built from the environment."""

    def __init__(self, uri: str, field: str, client: Any = None) -> None:
        self.bucket, self.prefix = split_s3_uri(uri, field)
        self.uri = f"s3://{self.bucket}/{self.prefix}"
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = boto3.client("s3", config=Config(retries={"mode": "standard", "max_attempts": 5}))
        return self._client

    def _call(self, what: str, fn, *args, **kwargs):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(*args, **kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"{what}: {_describe(exc)}", _transient(exc)) from None

    def check(self, field: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            raise StorageError(
                f"{field}: bucket {self.bucket!r} is not usable ({_describe(exc)})", _transient(exc)
            ) from None
        except BotoCoreError as exc:
            raise StorageError(
                f"{field}: cannot reach S3 for bucket {self.bucket!r} ({_describe(exc)})", _transient(exc)
            ) from None

    def put(self, name: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        uri = self.child(name)
        self._call(
            f"writing {uri}",
            self.client.upload_fileobj,  # the transfer manager: multipart for large checkpoints
            io.BytesIO(data),
            self.bucket,
            self.prefix + name,
            ExtraArgs={"ContentType": content_type},
        )
        return uri

    def get(self, name: str) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.prefix + name)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404"}:
                return None
            raise StorageError(f"reading {self.child(name)}: {_describe(exc)}", _transient(exc)) from None
        return self._call(f"reading {self.child(name)}", response["Body"].read)

    def names(self) -> list[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        pages = self._call(
            f"listing {self.uri}",
            lambda: list(paginator.paginate(Bucket=self.bucket, Prefix=self.prefix, Delimiter="/")),
        )
        return [obj["Key"][len(self.prefix) :] for page in pages for obj in page.get("Contents", [])]

    def delete(self, name: str) -> None:
        self._call(
            f"deleting {self.child(name)}",
            self.client.delete_object,
            Bucket=self.bucket,
            Key=self.prefix + name,
        )


class LocalLocation(Location):
    """A local folder (``--output-dir``), created on first write."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.uri = str(self.path) + os.sep

    def check(self, field: str) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"{field}: cannot create {self.path} ({exc.strerror})") from None
        if not os.access(self.path, os.W_OK):
            raise StorageError(f"{field}: {self.path} is not writable")

    def put(self, name: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        target = self.path / name
        tmp = target.with_name(f".{name}.partial")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(data)
            os.replace(tmp, target)
        except OSError as exc:
            raise StorageError(f"writing {target}: {exc.strerror}") from None
        return str(target)

    def get(self, name: str) -> bytes | None:
        try:
            return (self.path / name).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"reading {self.path / name}: {exc.strerror}") from None

    def names(self) -> list[str]:
        if not self.path.is_dir():
            return []
        return sorted(p.name for p in self.path.iterdir() if p.is_file() and not p.name.startswith("."))

    def delete(self, name: str) -> None:
        (self.path / name).unlink(missing_ok=True)


def open_location(uri: str, field: str) -> Location:
    """An :class:`S3Location` for ``s3://`` URIs, a :class:`LocalLocation` for anything else."""
    return S3Location(uri, field) if uri.startswith("s3://") else LocalLocation(uri)


def read_object(uri: str, field: str) -> bytes:
    """Read one object (``s3://bucket/key`` or a local path); raise :class:`StorageError` if it is missing."""
    if uri.startswith("s3://"):
        parent, _, name = uri.rpartition("/")
        location: Location = S3Location(parent + "/", field)
    else:
        location, name = LocalLocation(os.path.dirname(os.path.abspath(uri))), os.path.basename(uri)
    data = location.get(name)
    if data is None:
        raise StorageError(f"{field}: {uri} does not exist")
    return data
