"""The run's outputs: the ONNX model and the JSON documents beside it.

``metrics.json`` is written last: its presence means the other outputs are complete,
which is what the registration step after the pod relies on.
"""

from __future__ import annotations

import copy
import inspect
import io
import json
import warnings
from datetime import UTC, datetime
from typing import Any

import numpy as np
import torch

import mlops
from mlops import samples
from mlops.trainer.config import TrainerConfig
from mlops.trainer.data import CLASSES, FEATURES, PIXEL_MAX, Dataset
from mlops.trainer.loop import TrainResult
from mlops.trainer.model import DigitsMLP

ONNX_OPSET = 17
INPUT_NAME, OUTPUT_NAME = "input", "logits"
# samples.json holds every held-out sample up to this many (~650 bytes each, so at most ~7 MB):
# the promotion's parity gate compares the served predictions with the trainer's on all of them.
SAMPLE_LIMIT = 10_000


class ExportError(RuntimeError):
    """The model could not be exported to ONNX."""


def _classic_exporter() -> dict[str, Any]:
    # torch >= 2.5 has both exporters (and 2.9+ defaults to the new one); older ones only the classic.
    return {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}


def export_onnx(model: DigitsMLP) -> bytes:
    """The model as ONNX bytes: ``input`` float32 [N, 64] -> ``logits`` float32 [N, 10], any batch size N.

    Uses the classic TorchScript exporter (``dynamo=False``), which needs only the
    ``onnx`` package, on a float32 CPU copy of the model.
    """
    cpu = copy.deepcopy(model).to("cpu").float().eval()
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation notices are not for our users
            torch.onnx.export(
                cpu,
                (torch.zeros(1, FEATURES),),
                buffer,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                opset_version=ONNX_OPSET,
                **_classic_exporter(),
            )
    except Exception as exc:  # noqa: BLE001 - exporter failures come in many types; report one line
        hint = " (install onnx, or pass --skip-onnx with --output-dir)" if "onnx" in str(exc).lower() else ""
        raise ExportError(f"model.onnx: export failed: {exc}{hint}") from None
    return buffer.getvalue()


def metrics_document(result: TrainResult, data: Dataset, wall_seconds: float) -> dict[str, Any]:
    """The content of ``metrics.json`` (see ``mlops.registry.METRICS_SCHEMA``)."""
    return {
        "accuracy": round(result.accuracy, 6),
        "loss": round(result.loss, 6),
        "train_loss": round(result.train_loss, 6),
        "epochs": result.epochs,
        "resumed_from_epoch": result.resumed_from_epoch,
        "samples_per_second": round(result.samples_per_second, 1),
        "train_seconds": round(result.train_seconds, 3),
        "wall_seconds": round(wall_seconds, 3),
        "device": result.device,
        "gpu_name": result.gpu_name,
        "dtype": result.dtype,
        "world_size": result.world_size,
        "peak_gpu_memory_bytes": result.peak_gpu_memory_bytes,
        "torch_version": torch.__version__,
        **data.sizes,
    }


def model_card(config: TrainerConfig, result: TrainResult, data: Dataset, created_at: str) -> dict[str, Any]:
    """The content of ``model_card.json``: what was trained, on what, with which code and image."""
    return {
        "model_name": config.model_name,
        "model_version": config.model_version,
        "run_id": config.run_id,
        "created_at": created_at,
        "params": config.hyperparameters(),
        "data": {
            "uri": config.dataset_uri,
            "source": data.source,
            "sha256": data.sha256,
            "sha256_of": "raw X as float64 C-order bytes, then y as int64 bytes",
            **data.sizes,
        },
        "model": {
            "architecture": f"MLP {FEATURES}-{config.hidden_units}-{config.hidden_units}-{CLASSES}, ReLU",
            "parameters": result.model.parameter_count(),
            "format": "onnx",
            "file": "model.onnx",
            "opset": ONNX_OPSET,
            "input": {
                "name": INPUT_NAME,
                "dtype": "float32",
                "shape": ["N", FEATURES],
                "preprocessing": f"8x8 pixel intensities 0..{PIXEL_MAX:g}, row-major, divided by {PIXEL_MAX}",
            },
            "output": {
                "name": OUTPUT_NAME,
                "dtype": "float32",
                "shape": ["N", CLASSES],
                "meaning": "unnormalised class scores for digits 0-9; argmax is the prediction",
            },
        },
        "metrics": {"accuracy": round(result.accuracy, 6), "loss": round(result.loss, 6)},
        "training": {
            "device": result.device,
            "dtype": result.dtype,
            "gpu_name": result.gpu_name,
            "resumed_from_epoch": result.resumed_from_epoch,
            "data_parallel_processes": result.world_size,
        },
        "image": config.image,
        "code": {"package": "mlops-airflow", "version": mlops.__version__, "git_sha": config.git_sha},
        "framework": {"torch": torch.__version__, "numpy": np.__version__},
    }


@torch.no_grad()
def samples_document(model: DigitsMLP, data: Dataset, limit: int = SAMPLE_LIMIT) -> dict[str, Any]:
    """Every held-out input (up to ``limit``) with its label and this model's prediction, for the
    promotion's smoke (accuracy) and parity (same classes as the trainer) gates."""
    count = min(limit, len(data.y_test))
    x = data.x_test[:count]
    cpu = copy.deepcopy(model).to("cpu").float().eval()
    predicted = cpu(torch.from_numpy(x)).argmax(dim=1).tolist()
    return samples.samples_document(
        x.tolist(),
        data.y_test[:count].tolist(),
        predicted,
        input_name=INPUT_NAME,
        output_name=OUTPUT_NAME,
        preprocessing=f"pixels / {PIXEL_MAX}",
    )


def dumps(doc: dict[str, Any]) -> bytes:
    return (json.dumps(doc, indent=2, sort_keys=True, allow_nan=False) + "\n").encode("utf-8")


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
