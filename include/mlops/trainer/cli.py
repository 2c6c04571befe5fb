"""The trainer's entrypoint: validate, train (resuming if it can), write the outputs.

Exit codes (documented in :mod:`mlops.trainer.exit_codes`): 0 success; 1 training code
(ONNX export failure, or a bug with its traceback); 64 configuration (arguments, environment,
an unusable bucket); 65 data (the data set, an incompatible checkpoint); 75 transient storage
(S3 unreachable or failing: worth a retry); 143 stopped by SIGTERM, after a checkpoint of the
exact position (mid-epoch included) that the retry resumes from. Expected failures print one line,
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


def run(config: TrainerConfig) -> dict | None:
    """Train and write every output for ``config``; return the metrics document.

    In a data-parallel run every rank trains; only rank 0 writes the outputs (others return None).
    """
    from mlops.trainer import loop, outputs
    from mlops.trainer.data import load_dataset
    from mlops.trainer.distributed import ranks_from_env
    from mlops.trainer.stopping import STOP
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

    ranks = ranks_from_env()
    result = loop.train(config, data, ckpt, STOP, ranks)
    if not ranks.main:
        return None

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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the trainer with ``argv`` (default ``sys.argv[1:]``); return the process exit code."""
    from mlops.trainer.distributed import launch, ranks_from_env, under_torchrun
    from mlops.trainer.stopping import STOP, Stopped

    argv = list(sys.argv[1:] if argv is None else argv)
    ranks = ranks_from_env()
    # Rank 0 speaks for the run; the other ranks log only warnings and errors.
    level = logging.INFO if ranks.main else logging.WARNING
    logging.basicConfig(stream=sys.stdout, level=level, format="%(message)s", force=True)
    signal.signal(signal.SIGTERM, STOP)  # the loop checkpoints, then stops (exit 143)
    try:
        config = load_config(argv)
    except ConfigError as exc:  # before importing torch: bad input fails fast
        return _fail(str(exc), exit_codes.CONFIGURATION)
    if config.nproc_per_node > 1 and not under_torchrun():
        return launch(config.nproc_per_node, argv)
    if under_torchrun() and ranks.world != config.nproc_per_node:
        return _fail(
            f"nproc_per_node: {config.nproc_per_node}, but torchrun started {ranks.world}",
            exit_codes.CONFIGURATION,
        )

    from mlops.trainer.checkpoints import CheckpointError
    from mlops.trainer.data import DataError
    from mlops.trainer.outputs import ExportError
    from mlops.trainer.storage import StorageError

    try:
        run(config)
    except Stopped as exc:
        where = (
            f"resume from {exc.checkpoint}" if exc.checkpoint else "no progress since the newest checkpoint"
        )
        log.info("stopped by SIGTERM: %s", where)
        return exit_codes.SIGTERM
    except ConfigError as exc:
        return _fail(str(exc), exit_codes.CONFIGURATION)
    except (DataError, CheckpointError) as exc:
        return _fail(str(exc), exit_codes.DATA)
    except StorageError as exc:
        return _fail(str(exc), exit_codes.TRANSIENT_STORAGE if exc.transient else exit_codes.CONFIGURATION)
    except ExportError as exc:
        return _fail(str(exc), exit_codes.TRAINING_CODE)
    return 0
