"""Prediction parity: a real model-server process must answer the trainer's own predictions in samples.json.

The candidate's artifacts are real ONNX models on (moto) S3; ``samples.json`` carries every held-out
sample with the prediction of the model that the trainer exported, as the trainer writes it.
"""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest

from mlops.promotion import gates
from mlops.registry import ModelRegistry
from mlops.samples import samples_document
from tests.integration.serving.test_model_server_process import start_server, wait_ready
from tests.unit.serving.digits_artifacts import held_out, onnx_bytes, register_version, upload_version

HELD_OUT = 397  # every held-out sample of the test artifacts' split


def predict_offline(model: bytes, inputs: list[list[float]]) -> list[int]:
    """What onnxruntime, the server's own runtime, predicts for ``inputs``."""
    import onnxruntime as ort

    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"input": np.asarray(inputs, dtype=np.float32)})
    return logits.argmax(axis=1).tolist()


@functools.cache
def other_run_model() -> bytes:
    """A decent digits model from another run (other data and regularisation): same shapes, other answers."""
    from onnx import TensorProto, helper, numpy_helper
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    data = load_digits()
    clf = LogisticRegression(C=0.01, max_iter=300).fit(data.data[:1000] / 16.0, data.target[:1000])
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["input", "W", "B"], ["logits"])],
        "digits",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        [
            numpy_helper.from_array(clf.coef_.T.astype(np.float32), "W"),
            numpy_helper.from_array(clf.intercept_.astype(np.float32), "B"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def write_trainer_samples(s3_client, uri: str, inputs, labels, predicted) -> None:
    """Overwrite the version's samples.json with the trainer's document (predictions included)."""
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    doc = samples_document(inputs, labels, predicted)
    s3_client.put_object(Bucket=bucket, Key=prefix + "samples.json", Body=json.dumps(doc).encode())


@pytest.fixture
def serve(s3_server):
    """Start real model-server processes for artifact URIs; yields a starter, stops them after."""
    started = []

    def start(uri: str, version: str) -> gates.ServiceClient:
        proc, url = start_server(s3_server, uri, version=version)
        started.append(proc)
        wait_ready(proc, url)
        return gates.DirectServiceClient(url)

    yield start
    for proc in started:
        proc.terminate()
        proc.wait(10)


def test_a_candidate_serving_another_model_than_the_trainers_fails_parity_though_accurate_enough(
    serve, s3_client, s3_bucket
):
    inputs, labels = held_out(HELD_OUT)
    trainers = predict_offline(onnx_bytes("good"), inputs)
    uri = upload_version(s3_client, s3_bucket, "digits", "v2")
    write_trainer_samples(s3_client, uri, inputs, labels, trainers)
    # The artifact was replaced by another run's model after the trainer wrote samples.json.
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    s3_client.put_object(Bucket=bucket, Key=prefix + "model.onnx", Body=other_run_model())
    served = predict_offline(other_run_model(), inputs)
    differ = [i for i, (a, b) in enumerate(zip(served, trainers, strict=True)) if a != b]
    assert 5 <= len(differ) <= HELD_OUT * 0.1  # close enough to pass on accuracy alone

    client = serve(uri, "v2")
    samples = gates.load_samples(s3_client, uri)
    report = gates.pre_promotion(client, "digits", "v2", samples, 0.96, 0.96, gates.Gates())

    verdicts = {c.name: c for c in report.checks}
    assert verdicts["smoke"].ok and f"{HELD_OUT} held-out samples" in verdicts["smoke"].detail
    first = ", ".join(str(i) for i in differ[:5])
    assert verdicts["parity"].detail == (
        f"{len(differ)} of {HELD_OUT} served predictions differ from the trainer's; first at indices {first}"
    )
    with pytest.raises(gates.GateFailed, match=r"pre-promotion analysis failed: parity: \d+ of 397"):
        report.raise_if_failed()

    # The post-promotion analysis compares every sample at every round too.
    window = gates.analysis_window(
        client, "digits", "v2", samples, gates.Gates(failure_limit=2), 0, interval_seconds=0.05
    )
    assert not window.ok and window.rounds == 2
    parity = next(c for c in window.checks if c.name == "parity")
    assert parity.detail.startswith("failed in rounds 1, 2 of 2 consecutive failed rounds 1-2")


def test_a_lying_candidate_passes_the_reported_quality_but_fails_smoke_and_parity(
    serve, s3_client, s3_bucket
):
    inputs, labels = held_out(HELD_OUT)
    uri = register_version(s3_client, s3_bucket, "digits", "v3", quality="bad", reported_accuracy=0.97)
    # samples.json holds what the trained (good) model predicted; the artifact predicts scrambled classes.
    write_trainer_samples(s3_client, uri, inputs, labels, predict_offline(onnx_bytes("good"), inputs))
    claimed = ModelRegistry(s3_client, s3_bucket).get("digits", "v3")["metrics"]["accuracy"]

    report = gates.pre_promotion(
        serve(uri, "v3"), "digits", "v3", gates.load_samples(s3_client, uri), claimed, None, gates.Gates()
    )

    verdicts = {c.name: c for c in report.checks}
    assert verdicts["quality"].ok  # the registry believes the 0.97 it was told
    assert not verdicts["smoke"].ok and "served accuracy" in verdicts["smoke"].detail
    assert (
        not verdicts["parity"].ok and f"of {HELD_OUT} served predictions differ" in verdicts["parity"].detail
    )


def test_every_sample_of_a_large_set_is_compared_in_chunks_the_server_accepts(serve, s3_client, s3_bucket):
    inputs, labels = held_out(HELD_OUT)
    inputs, labels = inputs * 3, labels * 3  # 1191 samples: more than one request may carry (MAX_BATCH 1024)
    trainers = predict_offline(onnx_bytes("good"), inputs)
    trainers[-1] = (trainers[-1] + 1) % 10  # one disagreement, on the very last sample
    uri = upload_version(s3_client, s3_bucket, "digits", "v4")
    write_trainer_samples(s3_client, uri, inputs, labels, trainers)

    report = gates.pre_promotion(
        serve(uri, "v4"), "digits", "v4", gates.load_samples(s3_client, uri), 0.96, None, gates.Gates()
    )

    verdicts = {c.name: c for c in report.checks}
    assert verdicts["smoke"].ok and "1191 held-out samples" in verdicts["smoke"].detail
    assert verdicts["parity"].detail == (
        "1 of 1191 served predictions differ from the trainer's; first at indices 1190"
    )
