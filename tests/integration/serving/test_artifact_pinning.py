"""The artifact digest travels from registration to the serving pod's environment.

registration (sha256 of model.onnx in S3) -> the promotion's request -> the candidate's ServingSpec
-> ``MODEL_SHA256`` in the Deployment, which the server checks at start (test_model_server_limits).
"""

from __future__ import annotations

import hashlib
import json

import pytest

from mlops.promotion.manifests.render import deployment
from mlops.promotion.params import resolve_request
from mlops.promotion.tasks import serving_spec
from mlops.registry import ModelRegistry
from tests.unit.serving.digits_artifacts import onnx_bytes, register_version


def _env(manifest: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in manifest["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_the_registered_digest_reaches_the_candidate_pods_environment(
    s3_conn, s3_client, s3_bucket, monkeypatch
):
    monkeypatch.setenv("MLOPS_ARTIFACTS_BUCKET", s3_bucket)
    register_version(s3_client, s3_bucket, "digits", "v1")
    request = resolve_request({"model": "digits", "version": "v1"}, None, "mlops_promotion", "manual__1")
    assert request["artifact_sha256"] == hashlib.sha256(onnx_bytes()).hexdigest()
    manifest = deployment(serving_spec(request, "green", "ml-serving"))
    assert _env(manifest)["MODEL_SHA256"] == request["artifact_sha256"]


def test_an_entry_registered_before_pinning_deploys_without_a_digest(
    s3_conn, s3_client, s3_bucket, monkeypatch
):
    monkeypatch.setenv("MLOPS_ARTIFACTS_BUCKET", s3_bucket)
    register_version(s3_client, s3_bucket, "digits", "v1")
    key = ModelRegistry.entry_key("digits", "v1")
    old = json.loads(s3_client.get_object(Bucket=s3_bucket, Key=key)["Body"].read())
    del old["artifact_sha256"]  # as entries written before this field existed
    s3_client.put_object(Bucket=s3_bucket, Key=key, Body=json.dumps(old).encode())
    request = resolve_request({"model": "digits", "version": "v1"}, None, "mlops_promotion", "manual__1")
    assert request["artifact_sha256"] is None
    assert "MODEL_SHA256" not in _env(deployment(serving_spec(request, "green", "ml-serving")))


def test_registration_refuses_a_digest_that_is_not_the_objects(s3_client, s3_bucket):
    uri = register_version(s3_client, s3_bucket, "digits", "v1")
    registry = ModelRegistry(s3_client, s3_bucket)
    entry = registry.get("digits", "v1")
    with pytest.raises(ValueError, match="has sha256 .*, not 0{64}"):
        registry.register_candidate("digits", "v2", entry["metrics"], entry["lineage"], uri, "0" * 64)


def test_a_promoted_version_cannot_be_re_registered_with_another_artifact(s3_client, s3_bucket):
    from mlops.registry import RegistryError

    uri = register_version(s3_client, s3_bucket, "digits", "v1")
    registry = ModelRegistry(s3_client, s3_bucket)
    registry.promote("digits", "v1", None, "test")
    entry = registry.get("digits", "v1")
    s3_client.put_object(Bucket=s3_bucket, Key="models/digits/versions/v1/model.onnx", Body=onnx_bytes("bad"))
    with pytest.raises(RegistryError, match="can no longer change"):
        registry.register_candidate("digits", "v1", entry["metrics"], entry["lineage"], uri)
