"""The model server's HTTP contract, served in-process from a model loaded out of (moto) S3."""

from __future__ import annotations

import threading

import pytest
from starlette.testclient import TestClient

from mlops.serving.app import ServerConfig, create_app
from mlops.serving.model import artifact_location, download_model
from tests.unit.serving.digits_artifacts import accuracy, held_out, upload_version


@pytest.fixture
def model_uri(monkeypatch, s3_server, s3_client, s3_bucket) -> str:
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    return upload_version(s3_client, s3_bucket, "digits", "v1")


def serve(uri: str, loader=None, **config) -> TestClient:
    app = create_app(ServerConfig("digits", "v1", uri, **config), loader=loader)
    client = TestClient(app)
    client.__enter__()
    app.state.server_state.loaded_event.wait(30)
    return client


@pytest.fixture
def server(model_uri):
    client = serve(model_uri)
    yield client
    client.__exit__(None, None, None)


def test_model_uri_may_name_the_version_directory_or_the_onnx_file():
    assert artifact_location("s3://b/models/m/versions/v1/") == ("b", "models/m/versions/v1/model.onnx")
    assert artifact_location("s3://b/models/m/versions/v1") == ("b", "models/m/versions/v1/model.onnx")
    assert artifact_location("s3://b/x/custom.onnx") == ("b", "x/custom.onnx")
    with pytest.raises(ValueError, match="MODEL_URI must be s3://"):
        artifact_location("/tmp/model.onnx")


def test_ready_turns_200_only_after_the_model_is_loaded_and_warmed_up(model_uri):
    release = threading.Event()

    def slow_loader(uri: str) -> bytes:
        release.wait(10)
        return download_model(uri)

    app = create_app(ServerConfig("digits", "v1", model_uri), loader=slow_loader)
    with TestClient(app) as client:
        assert client.get("/health").status_code == 200  # alive while still loading
        not_ready = client.get("/ready")
        assert not_ready.status_code == 503 and not_ready.json()["reason"] == "loading"
        assert client.post("/predict", json={"instances": [[0.0] * 64]}).status_code == 503
        release.set()
        app.state.server_state.loaded_event.wait(30)
        assert client.get("/ready").json() == {"status": "ready", "model_version": "v1"}


def test_predict_answers_held_out_digits_with_the_models_accuracy(server):
    inputs, labels = held_out(64)
    reply = server.post("/predict", json={"instances": inputs})
    assert reply.status_code == 200
    body = reply.json()
    assert body["model"] == "digits" and body["model_version"] == "v1"
    assert len(body["predictions"]) == 64 and len(body["probabilities"]) == 64
    assert all(len(p) == 10 and abs(sum(p) - 1) < 1e-3 for p in body["probabilities"])
    served = sum(p == y for p, y in zip(body["predictions"], labels, strict=True)) / len(labels)
    assert served >= 0.9 and accuracy("good") >= 0.9


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"rows": []}, '"instances" field'),
        ({"instances": []}, "non-empty list"),
        ({"instances": [[0.5] * 63]}, "instances[0] has 63 values; expected 64"),
        ({"instances": [[0.5] * 64, [0.5] * 65]}, "instances[1] has 65 values"),
        ({"instances": [[0.5] * 63 + ["x"]]}, "instances[0][63] must be a number, got str"),
        ({"instances": [[True] * 64]}, "instances[0][0] must be a number, got bool"),
        ({"instances": [0.5] * 3}, "instances[0] must be a list of 64 numbers, got float"),
        ({"instances": [[0.5] * 64] * 5}, "5 rows; at most 4 per request"),
    ],
)
def test_bad_input_gets_422_with_a_message_naming_the_problem(model_uri, body, message):
    client = serve(model_uri, max_batch=4)
    try:
        reply = client.post("/predict", json=body)
        assert reply.status_code == 422
        assert message in reply.json()["error"]
    finally:
        client.__exit__(None, None, None)


def test_non_json_and_non_finite_values_get_422(server):
    reply = server.post("/predict", content=b"{not json", headers={"content-type": "application/json"})
    assert reply.status_code == 422 and "not valid JSON" in reply.json()["error"]
    reply = server.post("/predict", content=b'{"instances": [[' + b"NaN," * 63 + b"0.1]]}")
    assert reply.status_code == 422 and "not a finite number" in reply.json()["error"]


def test_metrics_count_requests_and_latency_by_status_code_and_name_the_version(server):
    inputs, _ = held_out(2)
    for _ in range(3):
        assert server.post("/predict", json={"instances": inputs}).status_code == 200
    assert server.post("/predict", json={"instances": [[1.0]]}).status_code == 422
    text = server.get("/metrics").text
    assert 'mlops_model_requests_total{model="digits",status="200",version="v1"} 3.0' in text
    assert 'mlops_model_requests_total{model="digits",status="422",version="v1"} 1.0' in text
    assert 'mlops_model_request_duration_seconds_count{model="digits",status="200",version="v1"} 3.0' in text
    assert (
        'mlops_model_request_duration_seconds_bucket{le="0.0005",model="digits",status="200",version="v1"}'
        in text
    )
    assert 'mlops_model_info{model="digits",version="v1"} 1.0' in text
    assert f'mlops_model_accuracy{{model="digits",version="v1"}} {accuracy("good")}' in text


def test_version_reports_the_model_version_and_artifact(server, model_uri):
    body = server.get("/version").json()
    assert body["model"] == "digits" and body["model_version"] == "v1"
    assert body["model_uri"] == model_uri and body["onnxruntime"]


def test_a_model_that_cannot_be_loaded_fails_liveness_and_never_turns_ready(
    monkeypatch, s3_server, s3_bucket
):
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    client = serve(f"s3://{s3_bucket}/models/digits/versions/missing/")
    try:
        health = client.get("/health")
        assert health.status_code == 500 and "NoSuchKey" in health.json()["error"]
        assert client.get("/ready").status_code == 503
    finally:
        client.__exit__(None, None, None)
