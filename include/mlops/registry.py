"""Model registry on S3: versions with metrics and lineage, and a production pointer.

Layout in the artifacts bucket::

    models/{model}/versions/{version}/         model.onnx, metrics.json, model_card.json, samples.json
    models/{model}/checkpoints/{version}/      epoch-0003.pt, ...
    registry/{model}/versions/{version}.json   the registry entry of one version
    registry/{model}/production.json           the production pointer

The pointer is the single source of truth for which version serves production. It
is moved only by a compare-and-swap: ``PutObject`` with ``If-Match: <etag of the
pointer that was read>`` (or ``If-None-Match: *`` when there is no pointer yet). S3
rejects the write with 412 when another writer moved the pointer in between (409
``ConditionalRequestConflict`` when two writes race on AWS), so of N concurrent
promotions from the same expected state exactly one wins and the others get
:class:`ConcurrentUpdateError`. Every pointer carries an increasing ``revision``, so
its body (and hence its ETag) never repeats and an old ETag can never match again.

Verified against moto 5.2.5's server (the test harness): it answers 412 to a stale
``If-Match`` and to ``If-None-Match: *`` on an existing key. Its check and store are
not under one lock, unlike AWS S3 where conditional writes are atomic; in practice
the window is a few Python statements (no double win in 3,600 contended writes
here), and the race test in tests/integration/registry proves the protocol.
A versioned-bucket scheme would not be stronger there: moto appends versions with
the same unlocked read-modify-write.

The pointer is what serves production: the blue-green state machine
(:mod:`mlops.promotion.bluegreen`) treats moving it as the commit of a promotion or rollback,
and its reconcile step makes the cluster follow it. Each move records ``updated_by`` (the
run) and ``action``, which make a retried move idempotent: a run that finds its own move
already landed (the response was lost) succeeds instead of failing as a conflict.

Entry statuses (candidate, production, archived) are also written to the entries
for people browsing the bucket, but readers (:meth:`ModelRegistry.get`,
:meth:`ModelRegistry.list_versions`) derive the status from the pointer, so a
writer that dies between moving the pointer and updating the entries never shows
two production versions.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

CANDIDATE, PRODUCTION, ARCHIVED = "candidate", "production", "archived"
STATUSES = (CANDIDATE, PRODUCTION, ARCHIVED)
REQUIRED_LINEAGE = ("dag_id", "run_id", "image")

# Names become S3 key segments and Kubernetes label values: keep them to that alphabet.
_NAME = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$")
_STAMP_IN_RUN_ID = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})")
_CONFLICT_CODES = {"PreconditionFailed", "ConditionalRequestConflict"}
MODEL_FILE = "model.onnx"  # the artifact whose digest registration pins (the trainer's output contract)

METRICS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": [
        "accuracy",
        "loss",
        "epochs",
        "samples_per_second",
        "device",
        "dtype",
        "wall_seconds",
        "train_size",
        "test_size",
    ],
    "properties": {
        "accuracy": {"type": "number", "minimum": 0, "maximum": 1},
        "loss": {"type": "number", "minimum": 0},
        "epochs": {"type": "integer", "minimum": 1},
        "samples_per_second": {"type": "number", "minimum": 0},
        "device": {"type": "string", "minLength": 1},
        "dtype": {"type": "string", "minLength": 1},
        "wall_seconds": {"type": "number", "minimum": 0},
        "train_size": {"type": "integer", "minimum": 1},
        "test_size": {"type": "integer", "minimum": 1},
        "peak_gpu_memory_bytes": {"type": ["integer", "null"], "minimum": 0},
    },
}


class RegistryError(RuntimeError):
    """A registry operation cannot be carried out as asked."""


class VersionNotFoundError(RegistryError, LookupError):
    """The model version has no registry entry."""


class ConcurrentUpdateError(RegistryError):
    """The production pointer is not (or no longer) what the caller expected."""


def validate_name(value: str, field: str = "model") -> str:
    """Return ``value`` if it is a safe model name or version id; else ``ValueError`` naming ``field``."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):  # `$` alone lets "v1\n" through
        raise ValueError(
            f"{field}: {value!r} must be 1-63 lowercase letters, digits, '.', '_' or '-', "
            "starting and ending with a letter or digit"
        )
    return value


def validate_metrics(raw: bytes | str | Mapping[str, Any]) -> dict[str, Any]:
    """Parse and check a ``metrics.json`` document; return it as a dict.

    Raises ``ValueError`` whose message names the problem: not JSON, not an object,
    a required key missing, a value of the wrong type, ``accuracy`` outside [0, 1],
    or a NaN/infinite number.
    """
    import jsonschema

    if isinstance(raw, Mapping):
        doc: Any = dict(raw)
    else:
        if isinstance(raw, bytes | bytearray):
            try:
                raw = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValueError(f"metrics.json is not UTF-8 text: {exc}") from None
        if not raw.strip():
            raise ValueError("metrics.json is empty")

        def _reject_constant(name: str) -> Any:
            raise ValueError(f"metrics.json contains {name}, which is not a finite number")

        try:
            doc = json.loads(raw, parse_constant=_reject_constant)
        except json.JSONDecodeError as exc:
            raise ValueError(f"metrics.json is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"metrics.json must be a JSON object, got {type(doc).__name__}")
    for key, value in doc.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"metrics.json: {key} is {value}, not a finite number")
    error = jsonschema.exceptions.best_match(jsonschema.Draft7Validator(METRICS_SCHEMA).iter_errors(doc))
    if error is not None:
        where = ".".join(str(p) for p in error.absolute_path)
        prefix = f"metrics.json: {where}: " if where else "metrics.json: "
        raise ValueError(prefix + error.message)
    return doc


def version_for_run(run_id: str, logical_date: Any = None) -> str:
    """Deterministic version id for one DAG run; a retry of the run gets the same id.

    Shape ``v20261127t020000-1a2b3c4d``: the run's UTC timestamp (the logical date, or
    the timestamp inside the run id when the run has no logical date, as REST-triggered
    runs in Airflow 3 may not), then 8 hex digits of the run id's SHA-256. Lowercase
    alphanumerics and dashes, at most 25 characters: safe as a Kubernetes label value,
    an S3 key segment and a DNS label, and it sorts by time.
    """
    if not run_id:
        raise ValueError("run_id: must not be empty")
    digest = hashlib.sha256(run_id.encode("utf-8")).hexdigest()[:8]
    stamp = _timestamp(logical_date)
    if stamp is None and (match := _STAMP_IN_RUN_ID.search(run_id)):
        stamp = "{}{}{}t{}{}{}".format(*match.groups())
    return f"v{stamp}-{digest}" if stamp else f"v-{digest}"


def _timestamp(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if not isinstance(value, datetime):
        raise ValueError(f"logical_date: expected a datetime or ISO string, got {type(value).__name__}")
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.strftime("%Y%m%dt%H%M%S")


def artifact_uri(bucket: str, model: str, version: str) -> str:
    """``s3://{bucket}/models/{model}/versions/{version}/``: where the trainer writes a version's outputs."""
    return f"s3://{bucket}/models/{validate_name(model)}/versions/{validate_name(version, 'version')}/"


def checkpoint_uri(bucket: str, model: str, version: str) -> str:
    """``s3://{bucket}/models/{model}/checkpoints/{version}/``: the version's training checkpoints."""
    return f"s3://{bucket}/models/{validate_name(model)}/checkpoints/{validate_name(version, 'version')}/"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _is_conflict(exc: Exception) -> bool:
    response = getattr(exc, "response", None) or {}
    code = response.get("Error", {}).get("Code")
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code in _CONFLICT_CODES or status in (409, 412)


def _is_missing(exc: Exception) -> bool:
    response = getattr(exc, "response", None) or {}
    return response.get("Error", {}).get("Code") in {"NoSuchKey", "404", "NotFound"}


class ModelRegistry:
    """Versions, lineage and the production pointer of models, stored in one S3 bucket.

    :param s3_client: a boto3 S3 client (e.g. ``S3Hook(aws_conn_id=...).get_conn()``).
    :param bucket: the artifacts bucket.
    """

    def __init__(self, s3_client: Any, bucket: str) -> None:
        self.s3 = s3_client
        self.bucket = bucket

    @classmethod
    def from_settings(cls) -> ModelRegistry:
        """The registry in the configured artifacts bucket, through the Airflow AWS connection."""
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        from mlops.settings import get_settings

        settings = get_settings()
        return cls(S3Hook(aws_conn_id=settings.aws_conn_id).get_conn(), settings.artifacts_bucket)

    # -- keys -------------------------------------------------------------------------------
    @staticmethod
    def entry_key(model: str, version: str) -> str:
        return f"registry/{validate_name(model)}/versions/{validate_name(version, 'version')}.json"

    @staticmethod
    def pointer_key(model: str) -> str:
        return f"registry/{validate_name(model)}/production.json"

    # -- S3 primitives -----------------------------------------------------------------------
    def _read(self, key: str) -> tuple[dict[str, Any], str] | None:
        from botocore.exceptions import ClientError

        try:
            response = self.s3.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _is_missing(exc):
                return None
            raise
        return json.loads(response["Body"].read()), response["ETag"]

    def _write(self, key: str, doc: Mapping[str, Any], *, etag: str | None, create: bool = False) -> None:
        """Compare-and-swap write: replace the object whose ETag is ``etag``, or create it if ``create``."""
        from botocore.exceptions import ClientError

        condition = {"IfNoneMatch": "*"} if create else {"IfMatch": etag} if etag else {}
        try:
            self.s3.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=json.dumps(doc, indent=2, sort_keys=True, default=str).encode("utf-8"),
                ContentType="application/json",
                **condition,
            )
        except ClientError as exc:
            if _is_conflict(exc):
                raise ConcurrentUpdateError(
                    f"s3://{self.bucket}/{key} was changed by another writer"
                ) from exc
            raise

    # -- entries -----------------------------------------------------------------------------
    def register_candidate(
        self,
        model: str,
        version: str,
        metrics: Mapping[str, Any],
        lineage: Mapping[str, Any],
        artifact_uri: str,
        artifact_sha256: str | None = None,
    ) -> dict[str, Any]:
        """Record ``version`` of ``model`` as a candidate; return its entry.

        The entry pins the artifact: ``artifact_sha256`` is the SHA-256 of ``model.onnx`` under
        ``artifact_uri``, read from S3 now (``None`` when there is no such object); a digest passed
        by the caller must match the object's. The serving pods get it as ``MODEL_SHA256`` and
        refuse to start on other bytes, so an artifact overwritten in place is never served.

        Idempotent for the same version: registering it again (a retried task) returns the entry,
        refreshed with the new metrics while it is still a candidate. Raises ``ValueError`` for
        invalid metrics or lineage or a digest that does not match, and :class:`RegistryError`
        when the version belongs to another run or has already been promoted (with other metrics
        or another artifact).
        """
        metrics = validate_metrics(metrics)
        lineage = dict(lineage)
        missing = [k for k in REQUIRED_LINEAGE if not isinstance(lineage.get(k), str) or not lineage[k]]
        if missing:
            raise ValueError(f"lineage: missing {', '.join(missing)}")
        if not artifact_uri.startswith(f"s3://{self.bucket}/"):
            raise ValueError(f"artifact_uri: {artifact_uri!r} is not in s3://{self.bucket}/")
        digest = self.artifact_digest(artifact_uri)
        if artifact_sha256 is not None and artifact_sha256.lower() != digest:
            raise ValueError(
                f"artifact_sha256: the {MODEL_FILE} under {artifact_uri} has sha256 {digest}, "
                f"not {artifact_sha256.lower()}"
            )
        key = self.entry_key(model, version)
        for _ in range(5):
            now = _now()
            found = self._read(key)
            if found is None:
                entry = {
                    "model": model,
                    "version": version,
                    "status": CANDIDATE,
                    "metrics": metrics,
                    "lineage": lineage,
                    "artifact_uri": artifact_uri,
                    "artifact_sha256": digest,
                    "created_at": now,
                    "updated_at": now,
                }
                try:
                    self._write(key, entry, etag=None, create=True)
                except ConcurrentUpdateError:
                    continue  # registered concurrently: re-read and treat as a re-registration
                return entry
            entry, etag = found
            if entry["lineage"].get("run_id") != lineage["run_id"]:
                raise RegistryError(
                    f"{model} {version} is already registered by run {entry['lineage'].get('run_id')!r}, "
                    f"not {lineage['run_id']!r}"
                )
            same = (
                entry["metrics"],
                entry["lineage"],
                entry["artifact_uri"],
                entry.get("artifact_sha256", digest),  # entries from before pinning carry none
            ) == (metrics, lineage, artifact_uri, digest)
            if same:
                return self._with_status(entry, self._production_version(model))
            if entry["status"] != CANDIDATE:
                raise RegistryError(
                    f"{model} {version} is {entry['status']}: its record can no longer change"
                )
            entry = {
                **entry,
                "metrics": metrics,
                "lineage": lineage,
                "artifact_uri": artifact_uri,
                "artifact_sha256": digest,
                "updated_at": now,
            }
            try:
                self._write(key, entry, etag=etag)
            except ConcurrentUpdateError:
                continue
            return entry
        raise ConcurrentUpdateError(f"{model} {version}: the entry kept changing while registering it")

    def artifact_digest(self, artifact_uri: str) -> str | None:
        """SHA-256 (hex) of ``model.onnx`` under the version directory ``artifact_uri``, streamed from
        S3; ``None`` when the object does not exist."""
        from botocore.exceptions import ClientError

        key = artifact_uri.removeprefix(f"s3://{self.bucket}/").rstrip("/") + "/" + MODEL_FILE
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"]
        except ClientError as exc:
            if _is_missing(exc):
                return None
            raise
        digest = hashlib.sha256()
        try:
            for chunk in body.iter_chunks(1024 * 1024):
                digest.update(chunk)
        finally:
            body.close()
        return digest.hexdigest()

    def get(self, model: str, version: str) -> dict[str, Any]:
        """The entry of ``version``; raises :class:`VersionNotFoundError` when it is not registered."""
        found = self._read(self.entry_key(model, version))
        if found is None:
            raise VersionNotFoundError(
                f"{model} {version} is not in the registry (s3://{self.bucket}/registry/)"
            )
        return self._with_status(found[0], self._production_version(model))

    def list_versions(self, model: str) -> list[dict[str, Any]]:
        """Every registered version of ``model``, oldest first."""
        prefix = f"registry/{validate_name(model)}/versions/"
        production = self._production_version(model)
        entries = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                found = self._read(obj["Key"])
                if found is not None:
                    entries.append(self._with_status(found[0], production))
        return sorted(entries, key=lambda e: (e["created_at"], e["version"]))

    @staticmethod
    def _with_status(entry: dict[str, Any], production: str | None) -> dict[str, Any]:
        # The pointer is the truth; a stored status can lag it if a writer died mid-way.
        if entry["version"] == production:
            return {**entry, "status": PRODUCTION}
        if entry["status"] == PRODUCTION:
            return {**entry, "status": ARCHIVED}
        return entry

    def _set_status(self, model: str, version: str, status: str) -> None:
        key = self.entry_key(model, version)
        for _ in range(5):
            found = self._read(key)
            if found is None or found[0]["status"] == status:
                return
            entry, etag = found
            try:
                self._write(key, {**entry, "status": status, "updated_at": _now()}, etag=etag)
                return
            except ConcurrentUpdateError:
                continue

    # -- production pointer -------------------------------------------------------------------
    def production(self, model: str) -> dict[str, Any] | None:
        """The production pointer of ``model`` (``version``, ``previous_version``, ...), or ``None``."""
        found = self._read(self.pointer_key(model))
        return found[0] if found else None

    def _production_version(self, model: str) -> str | None:
        pointer = self.production(model)
        return pointer["version"] if pointer else None

    def promote(
        self, model: str, version: str, expected_current: str | None, actor: str, *, action: str = "promote"
    ) -> dict[str, Any]:
        """Move the production pointer of ``model`` to ``version``; return the new pointer.

        ``expected_current`` is the version the caller believes is in production
        (``None``: no production version yet). If the pointer is anything else, or
        another writer moves it before this write lands, nothing is written and
        :class:`ConcurrentUpdateError` is raised. The old version becomes archived and
        is kept as ``previous_version``, so :meth:`rollback` can return to it.

        Idempotent for its ``actor`` (the run, which is the idempotency key): a retry that
        finds the pointer already moved to ``version`` from ``expected_current`` by the same
        actor and action (its first response was lost) returns that pointer. Promoting the
        version that is already in production returns the pointer as is.
        """
        self.get(model, version)  # must be registered
        key = self.pointer_key(model)
        found = self._read(key)
        pointer, etag = found if found else (None, None)
        current = pointer["version"] if pointer else None
        if pointer is not None and _already_done(pointer, version, expected_current, actor, action):
            self._settle_statuses(model, version, expected_current)
            return pointer
        if current != expected_current:
            raise ConcurrentUpdateError(
                f"production of {model} is {current!r}, expected {expected_current!r}: "
                "another promotion or rollback happened; re-read and retry"
            )
        if current == version:
            return pointer  # type: ignore[return-value]
        new = {
            "model": model,
            "version": version,
            "previous_version": current,
            "revision": (pointer or {}).get("revision", 0) + 1,
            "action": action,
            "updated_at": _now(),
            "updated_by": actor,
        }
        try:
            self._write(key, new, etag=etag, create=pointer is None)
        except ConcurrentUpdateError as exc:
            raise ConcurrentUpdateError(
                f"production of {model} was changed by another writer while promoting {version} "
                f"(expected {expected_current!r}); re-read and retry"
            ) from exc
        self._settle_statuses(model, version, current)
        return new

    def _settle_statuses(self, model: str, version: str, previous: str | None) -> None:
        self._set_status(model, version, PRODUCTION)
        if previous is not None and previous != version:
            self._set_status(model, previous, ARCHIVED)

    def rollback(self, model: str, actor: str, expected_current: str | None = None) -> dict[str, Any]:
        """Point production back at ``previous_version``; return the new pointer.

        ``expected_current`` is the version the caller is rolling back from (what it saw in
        production). A retry by the same ``actor`` (the run) that finds its own rollback done
        returns the pointer without moving it again, with or without ``expected_current``:
        a retried rollback never re-promotes the version it rolled back from. A deliberate
        second rollback (another actor, expecting the version now in production) undoes
        the first, as ``previous_version`` is the version rolled back from.
        Raises :class:`RegistryError` when there is nothing to roll back to, and
        :class:`ConcurrentUpdateError` when production is not ``expected_current``, or moves
        meanwhile.
        """
        pointer = self.production(model)
        if pointer is None:
            raise RegistryError(f"{model} has no production version to roll back")
        done_by_actor = pointer.get("action") == "rollback" and pointer.get("updated_by") == actor
        if done_by_actor and expected_current in (None, pointer.get("previous_version")):
            return self.promote(
                model, pointer["version"], pointer["previous_version"], actor, action="rollback"
            )
        if expected_current is not None and pointer["version"] != expected_current:
            raise ConcurrentUpdateError(
                f"production of {model} is {pointer['version']!r}, expected {expected_current!r}: "
                "another promotion or rollback happened; re-read and retry"
            )
        if not pointer.get("previous_version"):
            raise RegistryError(f"{model} {pointer['version']} has no previous version to roll back to")
        return self.promote(model, pointer["previous_version"], pointer["version"], actor, action="rollback")


def _already_done(
    pointer: Mapping[str, Any], version: str, expected: str | None, actor: str, action: str
) -> bool:
    """Whether ``pointer`` is the very move asked for, by ``actor``: a retry after a lost response."""
    return (
        pointer.get("version") == version
        and pointer.get("previous_version") == expected
        and pointer.get("updated_by") == actor
        and pointer.get("action", "promote") == action
        and expected != version
    )
