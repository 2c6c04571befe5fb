"""Real model artifacts for tests: a softmax regression on scikit-learn's bundled digits, as ONNX.

The files follow the trainer's contract (``models/{model}/versions/{version}/``): ``model.onnx``
(input "input" float32 [N, 64] in [0, 1], output "logits" [N, 10]), ``metrics.json``,
``model_card.json`` and ``samples.json`` (held-out inputs with labels).
"""

from __future__ import annotations

import functools
import json

import numpy as np

from mlops.samples import samples_document


@functools.cache
def _digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int64)
    rng = np.random.default_rng(7)
    order = rng.permutation(len(x))
    train, test = order[:1400], order[1400:]
    return x[train], y[train], x[test], y[test]


@functools.cache
def _weights(quality: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.linear_model import LogisticRegression

    x, y, _, _ = _digits()
    clf = LogisticRegression(max_iter=300).fit(x, y)
    w, b = clf.coef_.T.astype(np.float32), clf.intercept_.astype(np.float32)
    if quality == "bad":  # same shapes, scrambled classes: serves fine, predicts badly
        w, b = np.roll(w, 3, axis=1), np.roll(b, 3)
    return w, b


def onnx_bytes(quality: str = "good") -> bytes:
    """A serialized ONNX model (``logits = input @ W + b``); ``quality="bad"`` scrambles the classes."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w, b = _weights(quality)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["input", "W", "B"], ["logits"])],
        "digits",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def slow_onnx_bytes(width: int = 1024, layers: int = 40) -> bytes:
    """A model under the same contract that costs milliseconds per batch in onnxruntime (an MLP of
    ``layers`` hidden ``width x width`` layers sharing one weight), to make inference time visible."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    weights = {
        "W_in": rng.normal(0, 0.1, (64, width)),
        "W_hidden": rng.normal(0, 1 / np.sqrt(width), (width, width)),
        "W_out": rng.normal(0, 0.1, (width, 10)),
    }
    nodes = [helper.make_node("MatMul", ["input", "W_in"], ["h0"])]
    for i in range(layers):
        nodes.append(helper.make_node("MatMul", [f"h{i}", "W_hidden"], [f"m{i}"]))
        nodes.append(helper.make_node("Relu", [f"m{i}"], [f"h{i + 1}"]))
    nodes.append(helper.make_node("MatMul", [f"h{layers}", "W_out"], ["logits"]))
    graph = helper.make_graph(
        nodes,
        "digits-slow",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(w.astype(np.float32), name) for name, w in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def held_out(n: int = 64) -> tuple[list[list[float]], list[int]]:
    _, _, x, y = _digits()
    return x[:n].tolist(), y[:n].tolist()


def accuracy(quality: str) -> float:
    w, b = _weights(quality)
    _, _, x, y = _digits()
    return float(((x @ w + b).argmax(axis=1) == y).mean())


def metrics(acc: float) -> dict:
    """A ``metrics.json`` document that satisfies the registry's schema."""
    return {
        "accuracy": acc,
        "loss": 0.1,
        "epochs": 1,
        "samples_per_second": 1000.0,
        "device": "cpu",
        "dtype": "float32",
        "wall_seconds": 1.0,
        "train_size": 1400,
        "test_size": 397,
    }


def register_version(
    s3_client,
    bucket: str,
    model: str,
    version: str,
    quality: str = "good",
    reported_accuracy: float | None = None,
) -> str:
    """Upload the artifacts and register the version as a candidate; returns its artifact URI."""
    from mlops.registry import ModelRegistry

    uri = upload_version(s3_client, bucket, model, version, quality, reported_accuracy)
    acc = accuracy(quality) if reported_accuracy is None else reported_accuracy
    ModelRegistry(s3_client, bucket).register_candidate(
        model,
        version,
        metrics(acc),
        {"dag_id": "mlops_training", "run_id": f"run-{version}", "image": "trainer:test"},
        uri,
    )
    return uri


def upload_version(
    s3_client,
    bucket: str,
    model: str,
    version: str,
    quality: str = "good",
    reported_accuracy: float | None = None,
    model_bytes: bytes | None = None,
) -> str:
    """Write one version's artifacts (``model_bytes``: another ONNX file); returns its directory URI."""
    prefix = f"models/{model}/versions/{version}/"
    acc = accuracy(quality) if reported_accuracy is None else reported_accuracy
    inputs, labels = held_out()
    files = {
        "model.onnx": onnx_bytes(quality) if model_bytes is None else model_bytes,
        "metrics.json": json.dumps(metrics(acc)).encode(),
        "model_card.json": json.dumps({"model": model, "version": version, "framework": "onnx"}).encode(),
        "samples.json": json.dumps(samples_document(inputs, labels)).encode(),
    }
    for name, body in files.items():
        s3_client.put_object(Bucket=bucket, Key=prefix + name, Body=body)
    return f"s3://{bucket}/{prefix}"
