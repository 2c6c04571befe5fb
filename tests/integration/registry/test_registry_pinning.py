"""Registration pins the artifact's bytes, on the moto S3 server: the stored entry, its digest, changes."""

from __future__ import annotations

import hashlib

import pytest

from mlops.registry import ModelRegistry, RegistryError, artifact_uri
from tests.integration.registry.test_model_registry import MODEL, lineage, metrics, stored

BYTES = b"onnx" * (300 * 1024)  # 1.2 MiB: more than one streamed chunk


@pytest.fixture
def registry(s3_client, s3_bucket) -> ModelRegistry:
    return ModelRegistry(s3_client, s3_bucket)


def upload(registry: ModelRegistry, version: str, data: bytes = BYTES) -> str:
    uri = artifact_uri(registry.bucket, MODEL, version)
    key = uri.removeprefix(f"s3://{registry.bucket}/") + "model.onnx"
    registry.s3.put_object(Bucket=registry.bucket, Key=key, Body=data)
    return uri


def test_the_entry_pins_the_sha256_of_the_model_file_and_is_stored_as_json(registry, s3_client, s3_bucket):
    uri = upload(registry, "v1")
    entry = registry.register_candidate(MODEL, "v1", metrics(), lineage("run-1"), uri)
    digest = hashlib.sha256(BYTES).hexdigest()
    assert registry.artifact_digest(uri) == digest == registry.artifact_digest(uri.rstrip("/"))
    key = ModelRegistry.entry_key(MODEL, "v1")
    assert key == f"registry/{MODEL}/versions/v1.json"
    assert stored(s3_client, s3_bucket, key) == entry
    assert entry == {
        "model": MODEL,
        "version": "v1",
        "status": "candidate",
        "metrics": metrics(),
        "lineage": lineage("run-1"),
        "artifact_uri": uri,
        "artifact_sha256": digest,
        "created_at": entry["created_at"],
        "updated_at": entry["created_at"],
    }
    assert s3_client.head_object(Bucket=s3_bucket, Key=key)["ContentType"] == "application/json"


def test_a_digest_given_by_the_trainer_must_be_the_objects_in_any_case(registry):
    uri = upload(registry, "v1")
    digest = hashlib.sha256(BYTES).hexdigest()
    assert registry.register_candidate(MODEL, "v1", metrics(), lineage("run-1"), uri, digest.upper())
    wrong = "0" * 64
    with pytest.raises(ValueError) as refused:
        registry.register_candidate(
            MODEL, "v2", metrics(), lineage("run-2"), upload(registry, "v2"), wrong.upper()
        )
    assert str(refused.value) == (
        f"artifact_sha256: the model.onnx under {artifact_uri(registry.bucket, MODEL, 'v2')} has sha256 "
        f"{digest}, not {wrong}"
    )


def test_a_re_registration_with_new_bytes_refreshes_the_candidate_and_keeps_its_creation_time(registry):
    uri = upload(registry, "v1")
    first = registry.register_candidate(MODEL, "v1", metrics(), lineage("run-1"), uri)
    upload(registry, "v1", b"retrained")
    again = registry.register_candidate(MODEL, "v1", metrics(0.97), lineage("run-1"), uri)
    assert again["artifact_sha256"] == hashlib.sha256(b"retrained").hexdigest()
    assert again["metrics"] == metrics(0.97) and again["created_at"] == first["created_at"]
    assert again["updated_at"] > first["updated_at"]
    assert registry.get(MODEL, "v1")["artifact_sha256"] == again["artifact_sha256"]


def test_a_promoted_version_cannot_take_other_bytes(registry):
    uri = upload(registry, "v1")
    registry.register_candidate(MODEL, "v1", metrics(), lineage("run-1"), uri)
    registry.promote(MODEL, "v1", None, "test")
    upload(registry, "v1", b"overwritten in place")
    with pytest.raises(RegistryError, match=f"^{MODEL} v1 is production: its record can no longer change$"):
        registry.register_candidate(MODEL, "v1", metrics(), lineage("run-1"), uri)


def test_an_artifact_outside_the_bucket_or_without_a_model_file_is_handled(registry):
    with pytest.raises(ValueError, match=r"artifact_uri: 's3://elsewhere/x/' is not in s3://"):
        registry.register_candidate(MODEL, "v1", metrics(), lineage("run-1"), "s3://elsewhere/x/")
    assert registry.artifact_digest(artifact_uri(registry.bucket, MODEL, "v9")) is None


def test_incomplete_lineage_names_every_missing_field(registry):
    with pytest.raises(ValueError, match="^lineage: missing dag_id, image$"):
        registry.register_candidate(
            MODEL, "v1", metrics(), {"run_id": "r", "image": ""}, upload(registry, "v1")
        )
