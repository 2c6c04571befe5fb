"""The Open Inference Protocol (V2) of a real server process, driven by a third-party client:
NVIDIA's ``tritonclient[http]`` (Triton's own client), in JSON and in binary tensor mode."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.integration.serving.server_process import start_server, stop, wait_ready
from tests.unit.serving.digits_artifacts import held_out, upload_version


@pytest.fixture(scope="module")
def server(s3_server) -> Iterator[str]:
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    s3.create_bucket(Bucket="v2-protocol")
    proc, url = start_server(s3_server, upload_version(s3, "v2-protocol", "digits", "v1"))
    try:
        wait_ready(proc, url)
        yield url
    finally:
        stop(proc)


@pytest.fixture
def client(server) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(url=server.removeprefix("http://"))
    yield client
    client.close()


def test_health_and_metadata_answer_the_triton_client(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("digits") and client.is_model_ready("digits", "v1")
    assert not client.is_model_ready("digits", "v0")
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    meta = client.get_model_metadata("digits")
    assert meta["versions"] == ["v1"] and meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}]
    assert meta["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}]


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_infer_gives_the_same_classes_as_predict(client, server, binary):
    inputs, labels = held_out(64)
    tensor = triton.InferInput("input", [64, 64], "FP32")
    tensor.set_data_from_numpy(np.asarray(inputs, dtype=np.float32), binary_data=binary)
    result = client.infer(
        "digits",
        [tensor],
        model_version="v1",
        request_id="req-7",
        outputs=[triton.InferRequestedOutput("logits", binary_data=binary)],
    )
    logits = result.as_numpy("logits")
    assert logits.shape == (64, 10) and logits.dtype == np.float32
    assert result.get_response()["id"] == "req-7"
    predicted = httpx.post(f"{server}/predict", json={"instances": inputs}).json()["predictions"]
    assert logits.argmax(axis=1).tolist() == predicted
    assert (logits.argmax(axis=1) == np.asarray(labels)).mean() >= 0.9


@pytest.mark.parametrize(
    ("model", "version", "tensor", "message"),
    [
        ("resnet", "", ("input", [1, 64], "FP32"), "unknown model 'resnet'"),
        ("digits", "v9", ("input", [1, 64], "FP32"), "unknown version 'v9'"),
        ("digits", "", ("input", [1, 64], "FP64"), "has datatype 'FP64'; the model expects 'FP32'"),
        ("digits", "", ("input", [1, 63], "FP32"), "has shape [1, 63]; the model expects [-1, 64]"),
        ("digits", "", ("pixels", [1, 64], "FP32"), "unexpected input 'pixels'"),
    ],
)
def test_errors_reach_the_client_as_protocol_errors(client, model, version, tensor, message):
    name, shape, datatype = tensor
    inp = triton.InferInput(name, shape, datatype)
    inp.set_data_from_numpy(np.zeros(shape, dtype=np.float64 if datatype == "FP64" else np.float32))
    with pytest.raises(InferenceServerException, match=message.replace("[", r"\[").replace("]", r"\]")):
        client.infer(model, [inp], model_version=version)


def test_a_plain_http_client_gets_errors_in_the_protocols_shape(server):
    reply = httpx.post(f"{server}/v2/models/digits/infer", content=b"{not json")
    assert reply.status_code == 400 and reply.json()["error"].startswith("request is not valid JSON")
    reply = httpx.post(
        f"{server}/v2/models/digits/infer",
        json={"inputs": [{"name": "input", "shape": [2, 64], "datatype": "FP32", "data": [0.0] * 64}]},
    )
    assert reply.status_code == 400 and reply.json() == {
        "error": "input 'input': 64 values do not fill shape [2, 64]"
    }
    nested = [[0.0] * 64, [1.0] * 64]
    reply = httpx.post(
        f"{server}/v2/models/digits/infer",
        json={"inputs": [{"name": "input", "shape": [2, 64], "datatype": "FP32", "data": nested}]},
    )
    assert reply.status_code == 200
    assert reply.json()["outputs"][0]["shape"] == [2, 10] and len(reply.json()["outputs"][0]["data"]) == 20
