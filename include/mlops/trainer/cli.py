"""The trainer's entrypoint: validate, train (resuming if it can), write the outputs.

Exit codes (documented in :mod:`mlops.trainer.exit_codes`): 0 success; 1 training code
(ONNX export failure, or a bug with its traceback); 64 configuration (arguments, environment,
an unusable bucket); 65 data (the data set, an incompatible checkpoint); 75 transient storage
(S3 unreachable or failing: worth a retry); 143 stopped by SIGTERM (the newest checkpoint is
kept for the retry). Expected failures print one line,
``trainer: error: <field>: <problem>``, to stderr and to the Kubernetes termination
message; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from collections.abc import Sequence

from mlops.trainer import exit_codes
from mlops.trainer.config import ConfigError, TrainerConfig, load_config

log = logging.getLogger("mlops.trainer")
TERMINATION_LOG = "/dev/termination-log"


def run(config: TrainerConfig) -> dict:
    """Train and write every output for ``config``; return the metrics document."""
    from mlops.trainer import loop, outputs
    from mlops.trainer.data import load_dataset
    from mlops.trainer.storage import open_location

    started = time.perf_counter()
    artifacts = open_location(config.artifact_uri, "ARTIFACT_URI")
    ckpt = open_location(config.checkpoint_uri, "CHECKPOINT_URI")
    artifacts.check("ARTIFACT_URI")
    ckpt.check("CHECKPOINT_URI")
    if not config.skip_onnx:
        try:
            import onnx  # noqa: F401 - fail before training, not after it
        except ImportError:
            raise ConfigError(
                "model.onnx: the onnx package is not installed (or pass --skip-onnx with --output-dir)"
            ) from None
    data = load_dataset(config.dataset_uri, config.test_fraction, config.seed)

    result = loop.train(config, data, ckpt)

    if not config.skip_onnx:
        log.info("wrote %s", artifacts.put("model.onnx", outputs.export_onnx(result.model)))
    log.info(
        "wrote %s",
        artifacts.put(
            "samples.json", outputs.dumps(outputs.samples_document(result.model, data)), "application/json"
        ),
    )
    card = outputs.model_card(config, result, data, outputs.now())
    log.info("wrote %s", artifacts.put("model_card.json", outputs.dumps(card), "application/json"))
    metrics = outputs.metrics_document(result, data, time.perf_counter() - started)
    log.info("wrote %s", artifacts.put("metrics.json", outputs.dumps(metrics), "application/json"))
    log.info(
        "done: accuracy=%.4f loss=%.4f epochs=%d device=%s dtype=%s samples_per_second=%.0f "
        "wall_seconds=%.1f",
        metrics["accuracy"],
        metrics["loss"],
        metrics["epochs"],
        metrics["device"],
        metrics["dtype"],
        metrics["samples_per_second"],
        metrics["wall_seconds"],
    )
    return metrics


def _fail(message: str, code: int) -> int:
    line = f"trainer: error: {message}"
    print(line, file=sys.stderr, flush=True)
    try:  # Kubernetes shows this file as the container's termination message
        with open(TERMINATION_LOG, "w") as fh:
            fh.write(line[:4000])
    except OSError:
        pass
    return code


def _on_sigterm(signum, frame) -> None:
    log.info("received SIGTERM: stopping; the newest checkpoint is kept for the retry")
    raise SystemExit(exit_codes.SIGTERM)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the trainer with ``argv`` (default ``sys.argv[1:]``); return the process exit code."""
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s", force=True)
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        config = load_config(sys.argv[1:] if argv is None else argv)
    except ConfigError as exc:  # before importing torch: bad input fails fast
        return _fail(str(exc), exit_codes.CONFIGURATION)

    from mlops.trainer.checkpoints import CheckpointError
    from mlops.trainer.data import DataError
    from mlops.trainer.outputs import ExportError
    from mlops.trainer.storage import StorageError

    try:
        run(config)
    except ConfigError as exc:
        return _fail(str(exc), exit_codes.CONFIGURATION)
    except (DataError, CheckpointError) as exc:
        return _fail(str(exc), exit_codes.DATA)
    except StorageError as exc:
        return _fail(str(exc), exit_codes.TRANSIENT_STORAGE if exc.transient else exit_codes.CONFIGURATION)
    except ExportError as exc:
        return _fail(str(exc), exit_codes.TRAINING_CODE)
    return 0
