"""Loading one model version's ONNX artifact and running it with onnxruntime.

The artifact contract (written by the trainer): ``model.onnx`` with one float32 input
``input`` of shape ``[N, 64]`` (8x8 digit pixels scaled to [0, 1]) and one output
``logits`` of shape ``[N, 10]``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import numpy as np

log = logging.getLogger(__name__)

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
N_FEATURES = 64
MODEL_FILE = "model.onnx"


class InvalidInput(ValueError):
    """The request body does not match the model's input contract; the message says how."""


class DigestMismatch(ValueError):
    """The artifact's bytes are not the ones recorded at registration."""


def verify_digest(data: bytes, expected_sha256: str, model_uri: str) -> None:
    """Raise :class:`DigestMismatch` naming both digests unless ``sha256(data)`` is ``expected_sha256``."""
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected_sha256.lower():
        raise DigestMismatch(
            f"artifact digest mismatch for {model_uri}: expected sha256 {expected_sha256.lower()} "
            f"(recorded at registration), got sha256 {actual}; refusing to serve a different artifact"
        )


def artifact_location(model_uri: str) -> tuple[str, str]:
    """Split ``s3://bucket/prefix[/model.onnx]`` into (bucket, key of the ONNX file).

    A URI that does not end in ``.onnx`` names the version's directory.
    """
    parsed = urlparse(model_uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"MODEL_URI must be s3://bucket/path, got {model_uri!r}")
    key = parsed.path.lstrip("/")
    if not key.endswith(".onnx"):
        key = f"{key.rstrip('/')}/{MODEL_FILE}".lstrip("/")
    return parsed.netloc, key


def download_model(model_uri: str) -> bytes:
    """Read the ONNX file from S3.

    The client is configured by the standard AWS environment (credentials, region and
    ``AWS_ENDPOINT_URL``/``AWS_ENDPOINT_URL_S3`` for S3-compatible stores), as in any AWS SDK.
    """
    import boto3

    bucket, key = artifact_location(model_uri)
    body = boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"]
    try:
        return body.read()
    finally:
        body.close()


def download_reported_accuracy(model_uri: str) -> float | None:
    """The ``accuracy`` in ``metrics.json`` beside the model, or ``None`` when absent or unreadable."""
    import json

    import boto3

    bucket, key = artifact_location(model_uri)
    try:
        body = boto3.client("s3").get_object(Bucket=bucket, Key=key.rsplit("/", 1)[0] + "/metrics.json")[
            "Body"
        ]
        accuracy = json.loads(body.read()).get("accuracy")
    except Exception:  # the accuracy gauge is informative; the model itself is what must load
        return None
    return float(accuracy) if isinstance(accuracy, int | float) else None


# onnxruntime's element types and the Open Inference Protocol's tensor datatypes.
ORT_TO_V2 = {
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(float16)": "FP16",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(bool)": "BOOL",
}


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of the model: name, V2 datatype and shape (-1 for a variable dimension)."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    @classmethod
    def of(cls, node: Any) -> TensorSpec:
        shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in node.shape)
        return cls(node.name, ORT_TO_V2.get(node.type, node.type), shape)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass
class Prediction:
    classes: list[int]
    probabilities: list[list[float]]


class OnnxModel:
    """An onnxruntime session for the digits contract, with input validation."""

    def __init__(self, onnx_bytes: bytes, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        # One pod serves one request at a time per core: more intra-op threads only add contention.
        options.intra_op_num_threads = threads or int(os.environ.get("MODEL_THREADS", "1"))
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = {o.name for o in self.session.get_outputs()}
        if INPUT_NAME not in inputs or OUTPUT_NAME not in outputs:
            raise ValueError(
                f"model does not follow the contract: inputs {sorted(inputs)}, outputs {sorted(outputs)}; "
                f"expected input {INPUT_NAME!r} and output {OUTPUT_NAME!r}"
            )
        self.onnxruntime_version = ort.__version__
        self.inputs = [TensorSpec.of(i) for i in self.session.get_inputs()]
        self.outputs = [TensorSpec.of(o) for o in self.session.get_outputs()]

    def run(self, outputs: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The named outputs for validated inputs; sessions allow concurrent runs from several threads."""
        return self.session.run(outputs, feeds)

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """Raw ``[N, 10]`` logits for a validated float32 ``[N, 64]`` batch."""
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]

    def predict(self, batch: np.ndarray) -> Prediction:
        """Classes and softmax probabilities for a validated batch."""
        logits = self.logits(batch).astype(np.float64)
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs = shifted / shifted.sum(axis=1, keepdims=True)
        return Prediction(classes=logits.argmax(axis=1).tolist(), probabilities=np.round(probs, 6).tolist())

    def warm_up(self, iterations: int = 20) -> None:
        """Run a few batches so the first real request does not pay for lazy initialisation."""
        for size in (1, 8, 64):
            batch = np.zeros((size, N_FEATURES), dtype=np.float32)
            for _ in range(max(1, iterations // 3)):
                self.predict(batch)


def parse_instances(payload: Any, max_batch: int) -> np.ndarray:
    """Turn ``{"instances": [[64 numbers], ...]}`` into a float32 ``[N, 64]`` array.

    Raises ``InvalidInput`` with a message that names the problem (and the row, when one row is
    at fault).
    """
    if not isinstance(payload, dict) or "instances" not in payload:
        raise InvalidInput(
            'body must be a JSON object with an "instances" field: a list of rows of 64 numbers'
        )
    rows = payload["instances"]
    if not isinstance(rows, list) or not rows:
        raise InvalidInput('"instances" must be a non-empty list of rows of 64 numbers')
    if len(rows) > max_batch:
        raise InvalidInput(f'"instances" has {len(rows)} rows; at most {max_batch} per request')
    try:
        array = np.asarray(rows)
    except ValueError:
        array = None  # ragged rows: find the culprit below
    if array is None or array.ndim != 2 or array.shape[1] != N_FEATURES or array.dtype.kind not in "iuf":
        raise InvalidInput(_describe_bad_rows(rows))
    batch = array.astype(np.float32, copy=False)
    if not np.isfinite(batch).all():
        row = int(np.argwhere(~np.isfinite(batch))[0][0])
        raise InvalidInput(f"instances[{row}] contains a value that is not a finite number (NaN or Infinity)")
    return batch


def _describe_bad_rows(rows: list[Any]) -> str:
    for i, row in enumerate(rows):
        if not isinstance(row, list):
            return f"instances[{i}] must be a list of {N_FEATURES} numbers, got {type(row).__name__}"
        if len(row) != N_FEATURES:
            return (
                f"instances[{i}] has {len(row)} values; expected {N_FEATURES} (8x8 pixels scaled to [0, 1])"
            )
        for j, value in enumerate(row):
            if isinstance(value, bool) or not isinstance(value, int | float):
                return f"instances[{i}][{j}] must be a number, got {type(value).__name__}"
            if not math.isfinite(value):
                return f"instances[{i}][{j}] is not a finite number"
    return f'"instances" must be a list of rows of {N_FEATURES} numbers'
