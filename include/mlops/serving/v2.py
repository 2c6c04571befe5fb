"""The Open Inference Protocol (KServe V2, Triton's HTTP/REST API): the tensor codec of ``/v2/.../infer``.

A request names each input with its ``shape`` and ``datatype`` and gives its ``data`` row-major
(flat or nested JSON), or, with Triton's binary tensor data extension, as raw little-endian bytes
after a JSON header whose length is in the ``Inference-Header-Content-Length`` HTTP header
(``parameters.binary_data_size`` per input). Outputs come back the same way: JSON ``data`` by
default, raw bytes for outputs asked with ``parameters.binary_data: true``. Errors are
``{"error": "<message>"}`` with a 4xx/5xx status, as the protocol specifies.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlops.serving.model import OnnxModel, TensorSpec

BINARY_HEADER = "inference-header-content-length"
EXTENSIONS = ["binary_tensor_data"]
_NUMPY = {
    "BOOL": "?",
    "UINT8": "u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "INT8": "i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}


class ProtocolError(ValueError):
    """The request breaks the protocol or the model's inputs; the message says how (HTTP 400)."""


@dataclass
class InferRequest:
    """A decoded inference request: the input arrays and the outputs asked for (name, as binary)."""

    id: str | None
    feeds: dict[str, np.ndarray]
    outputs: list[tuple[str, bool]]


def model_metadata(name: str, version: str, model: OnnxModel) -> dict[str, Any]:
    """``GET /v2/models/{name}``: versions, platform and the input and output tensors."""
    return {
        "name": name,
        "versions": [version],
        "platform": "onnxruntime_onnx",
        "inputs": [t.as_dict() for t in model.inputs],
        "outputs": [t.as_dict() for t in model.outputs],
    }


def parse_request(body: bytes, json_length: int | None, model: OnnxModel, max_batch: int) -> InferRequest:
    """Decode an infer request for ``model``; raises :class:`ProtocolError` naming the problem."""
    if json_length is not None and not 0 < json_length <= len(body):
        raise ProtocolError(
            f"Inference-Header-Content-Length {json_length} does not fit the {len(body)}-byte body"
        )
    header, binary = (body, b"") if json_length is None else (body[:json_length], body[json_length:])
    try:
        request = json.loads(header)
    except ValueError as exc:
        raise ProtocolError(f"request is not valid JSON: {exc}") from None
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list) or not request["inputs"]:
        raise ProtocolError('request must be a JSON object with a non-empty "inputs" list')
    specs = {t.name: t for t in model.inputs}
    feeds: dict[str, np.ndarray] = {}
    offset = 0
    for i, tensor in enumerate(request["inputs"]):
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            raise ProtocolError(f'inputs[{i}] must be an object with a "name"')
        spec = specs.get(tensor["name"])
        if spec is None:
            raise ProtocolError(
                f"unexpected input {tensor['name']!r}: the model's inputs are {sorted(specs)}"
            )
        if tensor["name"] in feeds:
            raise ProtocolError(f"input {spec.name!r} is given twice")
        shape = _shape(tensor, spec, max_batch)
        if tensor.get("datatype") != spec.datatype:
            raise ProtocolError(
                f"input {spec.name!r} has datatype {tensor.get('datatype')!r}; "
                f"the model expects {spec.datatype!r}"
            )
        size = (tensor.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise ProtocolError(f"input {spec.name!r}: binary_data_size {size!r} runs past the body")
            array = _from_bytes(binary[offset : offset + size], spec, shape)
            offset += size
        elif "data" in tensor:
            array = _from_json(tensor["data"], spec, shape)
        else:
            raise ProtocolError(f'input {spec.name!r} has neither "data" nor parameters.binary_data_size')
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise ProtocolError(f"input {spec.name!r} contains a value that is not a finite number")
        feeds[spec.name] = array
    if missing := sorted(set(specs) - set(feeds)):
        raise ProtocolError(f"missing inputs {missing}")
    return InferRequest(request.get("id"), feeds, _requested_outputs(request, model))


def _shape(tensor: dict[str, Any], spec: TensorSpec, max_batch: int) -> tuple[int, ...]:
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise ProtocolError(
            f"input {spec.name!r}: shape must be a list of non-negative integers, got {shape!r}"
        )
    if len(shape) != len(spec.shape) or any(w not in (-1, d) for w, d in zip(spec.shape, shape, strict=True)):
        raise ProtocolError(f"input {spec.name!r} has shape {shape}; the model expects {list(spec.shape)}")
    if shape and shape[0] > max_batch:
        raise ProtocolError(f"input {spec.name!r} has a batch of {shape[0]}; at most {max_batch} per request")
    return tuple(shape)


def _from_json(data: Any, spec: TensorSpec, shape: tuple[int, ...]) -> np.ndarray:
    try:
        array = np.asarray(data, dtype=_NUMPY[spec.datatype])
    except (ValueError, TypeError):
        raise ProtocolError(
            f"input {spec.name!r}: data must be {spec.datatype} numbers (flat or nested lists)"
        ) from None
    if array.size != math.prod(shape):
        raise ProtocolError(f"input {spec.name!r}: {array.size} values do not fill shape {list(shape)}")
    return array.reshape(shape)


def _from_bytes(raw: bytes, spec: TensorSpec, shape: tuple[int, ...]) -> np.ndarray:
    dtype = np.dtype(_NUMPY[spec.datatype])
    if len(raw) != math.prod(shape) * dtype.itemsize:
        raise ProtocolError(
            f"input {spec.name!r}: {len(raw)} bytes of binary data do not fill "
            f"shape {list(shape)} of {spec.datatype}"
        )
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def _requested_outputs(request: dict[str, Any], model: OnnxModel) -> list[tuple[str, bool]]:
    names = [t.name for t in model.outputs]
    binary_default = bool((request.get("parameters") or {}).get("binary_data_output", False))
    asked = request.get("outputs")
    if asked is None:
        return [(name, binary_default) for name in names]
    if not isinstance(asked, list):
        raise ProtocolError('"outputs" must be a list of objects with a "name"')
    outputs = []
    for i, out in enumerate(asked):
        if not isinstance(out, dict) or out.get("name") not in names:
            raise ProtocolError(f"outputs[{i}]: unknown output; the model's outputs are {names}")
        outputs.append((out["name"], bool((out.get("parameters") or {}).get("binary_data", binary_default))))
    return outputs


def encode_response(
    name: str, version: str, request: InferRequest, arrays: list[np.ndarray], model: OnnxModel
) -> tuple[bytes, dict[str, str]]:
    """The response body and its extra headers (binary outputs follow the JSON header)."""
    datatypes = {t.name: t.datatype for t in model.outputs}
    outputs, blobs = [], []
    for (out, binary), array in zip(request.outputs, arrays, strict=True):
        entry: dict[str, Any] = {"name": out, "datatype": datatypes[out], "shape": list(array.shape)}
        if binary:
            blob = np.ascontiguousarray(array, dtype=np.dtype(_NUMPY[datatypes[out]])).tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = array.ravel().tolist()
        outputs.append(entry)
    response: dict[str, Any] = {"model_name": name, "model_version": version, "outputs": outputs}
    if request.id is not None:
        response["id"] = request.id
    header = json.dumps(response, separators=(",", ":")).encode()
    if not blobs:
        return header, {"content-type": "application/json"}
    return header + b"".join(blobs), {
        "content-type": "application/octet-stream",
        BINARY_HEADER: str(len(header)),
    }
