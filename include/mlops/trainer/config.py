"""The trainer's configuration: command-line arguments plus the run context from the environment.

The pod gets ``RUN_ID``, ``MODEL_NAME``, ``MODEL_VERSION``, ``ARTIFACT_URI`` and
``CHECKPOINT_URI`` (plus ``TRAINER_IMAGE`` and ``GIT_SHA`` for the model card, and the
standard ``AWS_*`` variables for S3). With ``--output-dir`` the outputs go to a local
folder instead, and the run context is optional. Every problem is reported as a
:class:`ConfigError` whose message starts with the offending field.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from mlops.registry import validate_name

BUILTIN_DIGITS = "builtin://sklearn/digits"
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_SAFE_KEY = re.compile(r"^[A-Za-z0-9!_.*'()/=+-]*$")
CONTEXT_ENV = ("RUN_ID", "MODEL_NAME", "MODEL_VERSION", "ARTIFACT_URI", "CHECKPOINT_URI")


class ConfigError(ValueError):
    """Bad input: the message names the field and what is wrong with it."""


@dataclass(frozen=True)
class TrainerConfig:
    """One training run's fully validated configuration."""

    epochs: int
    learning_rate: float
    batch_size: int
    seed: int
    checkpoint_every: int
    keep_checkpoints: int
    hidden_units: int
    weight_decay: float
    test_fraction: float
    device: str
    precision: str
    dataset_uri: str
    skip_onnx: bool
    output_dir: str | None
    artifact_uri: str
    checkpoint_uri: str
    run_id: str
    model_name: str
    model_version: str
    image: str | None
    git_sha: str | None
    nproc_per_node: int = 1
    extra_hyperparameters: dict[str, Any] | None = None

    def hyperparameters(self) -> dict[str, Any]:
        """The parameters that shape the model, for the model card and checkpoint compatibility."""
        keep = (
            "epochs",
            "learning_rate",
            "batch_size",
            "seed",
            "hidden_units",
            "weight_decay",
            "test_fraction",
            "precision",
            "dataset_uri",
            "checkpoint_every",
        )
        params = {k: v for k, v in asdict(self).items() if k in keep}
        if self.extra_hyperparameters:
            params["hyperparameters"] = dict(self.extra_hyperparameters)
        return params


def split_s3_uri(uri: str, field: str) -> tuple[str, str]:
    """``s3://bucket/prefix/`` -> ``(bucket, "prefix/")``; raises :class:`ConfigError` naming ``field``."""
    if not isinstance(uri, str) or not uri.startswith("s3://"):
        raise ConfigError(f"{field}: expected s3://bucket/prefix/, got {uri!r}")
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise ConfigError(f"{field}: {bucket!r} is not a valid S3 bucket name (in {uri!r})")
    if not _SAFE_KEY.match(prefix) or "//" in prefix or prefix.startswith("/") or ".." in prefix.split("/"):
        raise ConfigError(f"{field}: {prefix!r} is not a safe S3 key prefix (in {uri!r})")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return bucket, prefix


def _int(low: int, high: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {value}")
        return value

    return parse


def _float(low: float, high: float, *, low_open: bool = False):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if (value <= low if low_open else value < low) or value > high:
            bound = f"greater than {low}" if low_open else f"at least {low}"
            raise argparse.ArgumentTypeError(f"must be {bound} and at most {high}, got {value:g}")
        return value

    return parse


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # "argument --epochs: must be ..." -> "epochs: must be ..."
        match = re.match(r"argument (?:--)?([\w-]+)(?:/[^:]*)?: (.*)", message)
        if match:
            raise ConfigError(f"{match.group(1).replace('-', '_')}: {match.group(2)}")
        raise ConfigError(message)


def build_parser() -> argparse.ArgumentParser:
    """The trainer's command line (``python -m mlops.trainer --help``)."""
    p = _Parser(
        prog="python -m mlops.trainer",
        description="Train the reference digits MLP and write model.onnx, metrics.json, model_card.json "
        "and samples.json to ARTIFACT_URI (or --output-dir), checkpointing to CHECKPOINT_URI.",
        allow_abbrev=False,
    )
    p.add_argument("--epochs", type=_int(1, 100_000), default=10, help="total epochs (>= 1)")
    p.add_argument(
        "--learning-rate", type=_float(0.0, 10.0, low_open=True), default=1e-3, help="Adam step (> 0)"
    )
    p.add_argument("--batch-size", type=_int(1, 65_536), default=64)
    p.add_argument("--seed", type=_int(0, 2**32 - 1), default=0)
    p.add_argument(
        "--checkpoint-every",
        type=_int(0, 100_000),
        default=1,
        help="write a checkpoint every N epochs (0: only at the end)",
    )
    p.add_argument("--keep-checkpoints", type=_int(1, 1000), default=3, help="newest checkpoints to keep")
    p.add_argument("--hidden-units", type=_int(1, 65_536), default=128, help="width of the two hidden layers")
    p.add_argument("--weight-decay", type=_float(0.0, 1.0), default=0.0)
    p.add_argument(
        "--test-fraction",
        type=_float(0.0, 0.9, low_open=True),
        default=0.2,
        help="held-out share of the data, per class",
    )
    p.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="auto: CUDA when available, else the CPU",
    )
    p.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        default="auto",
        help="auto: bf16 autocast on CUDA when supported, fp32 otherwise",
    )
    p.add_argument(
        "--dataset-uri",
        default=BUILTIN_DIGITS,
        help=f"{BUILTIN_DIGITS} (bundled), s3://bucket/key.npz, s3://bucket/prefix/ (reads its "
        "dataset.npz) or, with --output-dir, a local .npz; an .npz holds X [N,64] in 0..16 and y [N]",
    )
    p.add_argument(
        "--output-dir",
        default=None,
        help="write the outputs to this local folder instead of ARTIFACT_URI (no S3 needed)",
    )
    p.add_argument("--skip-onnx", action="store_true", help="do not export model.onnx (local mode only)")
    p.add_argument(
        "--image", default=None, help="image reference for the model card (default: $TRAINER_IMAGE)"
    )
    p.add_argument(
        "--nproc-per-node",
        type=_int(1, 64),
        default=1,
        help="data-parallel processes (one per GPU): above 1 the trainer relaunches itself under torchrun",
    )
    p.add_argument(
        "--hyperparameters",
        default=None,
        help="a JSON object recorded in the model card; its keys "
        + ", ".join(APPLIED_HYPERPARAMETERS)
        + " set those options (not also as flags)",
    )
    return p


# Hyperparameters the reference trainer applies, with the parsers of their flags.
APPLIED_HYPERPARAMETERS = {
    "hidden_units": _int(1, 65_536),
    "weight_decay": _float(0.0, 1.0),
    "test_fraction": _float(0.0, 0.9, low_open=True),
}


def _apply_hyperparameters(args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
    if args.hyperparameters is None:
        return {}
    try:
        values = json.loads(args.hyperparameters)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"hyperparameters: not valid JSON ({exc.msg})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"hyperparameters: expected a JSON object, got {type(values).__name__}")
    for key, parse in APPLIED_HYPERPARAMETERS.items():
        if key not in values:
            continue
        flag = "--" + key.replace("_", "-")
        if any(a == flag or a.startswith(flag + "=") for a in argv):
            raise ConfigError(f"hyperparameters.{key}: also given as {flag}; give it once")
        if isinstance(values[key], bool):
            raise ConfigError(f"hyperparameters.{key}: expected a number, got {values[key]!r}")
        try:
            setattr(args, key, parse(str(values[key])))
        except argparse.ArgumentTypeError as exc:
            raise ConfigError(f"hyperparameters.{key}: {exc}") from None
    return values


def load_config(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> TrainerConfig:
    """Parse ``argv`` and the run context in ``environ``; raise :class:`ConfigError` on any bad input."""
    env = os.environ if environ is None else environ
    argv = list(sys.argv[1:] if argv is None else argv)
    args, unknown = build_parser().parse_known_args(argv)
    if unknown:
        raise ConfigError(f"arguments: unknown {' '.join(unknown)} (see --help)")
    extra_hyperparameters = _apply_hyperparameters(args, argv)

    local = args.output_dir is not None
    if local and not args.output_dir.strip():
        raise ConfigError("output_dir: must not be empty")
    if args.skip_onnx and not local:
        raise ConfigError("skip_onnx: only allowed with --output-dir; a registered model needs model.onnx")

    def context(name: str, default: str) -> str:
        value = env.get(name, "").strip()
        if value:
            return value
        if local:
            return default
        raise ConfigError(f"{name}: environment variable is not set (required unless --output-dir is given)")

    run_id = context("RUN_ID", "local")
    model_name = context("MODEL_NAME", "digits-mlp")
    model_version = context("MODEL_VERSION", "dev")
    try:
        validate_name(model_name, "MODEL_NAME")
        validate_name(model_version, "MODEL_VERSION")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None

    if local:
        artifact_uri = os.path.abspath(args.output_dir)
        checkpoint_uri = env.get("CHECKPOINT_URI", "").strip() or os.path.join(artifact_uri, "checkpoints")
    else:
        artifact_uri = context("ARTIFACT_URI", "")
        checkpoint_uri = context("CHECKPOINT_URI", "")
        split_s3_uri(artifact_uri, "ARTIFACT_URI")
    if checkpoint_uri.startswith("s3://") or not local:
        split_s3_uri(checkpoint_uri, "CHECKPOINT_URI")

    dataset_uri = args.dataset_uri.strip()
    if dataset_uri.startswith("s3://"):
        split_s3_uri(dataset_uri, "dataset_uri")
    elif dataset_uri.startswith("builtin://"):
        if dataset_uri != BUILTIN_DIGITS:
            raise ConfigError(
                f"dataset_uri: the only bundled dataset is {BUILTIN_DIGITS}, got {dataset_uri!r}"
            )
    elif not (local and dataset_uri.endswith(".npz")):
        raise ConfigError(f"dataset_uri: expected {BUILTIN_DIGITS} or an s3:// URI, got {dataset_uri!r}")

    return TrainerConfig(
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        keep_checkpoints=args.keep_checkpoints,
        hidden_units=args.hidden_units,
        weight_decay=args.weight_decay,
        test_fraction=args.test_fraction,
        device=args.device,
        precision=args.precision,
        dataset_uri=dataset_uri,
        skip_onnx=args.skip_onnx,
        output_dir=artifact_uri if local else None,
        artifact_uri=artifact_uri,
        checkpoint_uri=checkpoint_uri,
        run_id=run_id,
        model_name=model_name,
        model_version=model_version,
        image=(args.image or env.get("TRAINER_IMAGE", "").strip() or None),
        git_sha=env.get("GIT_SHA", "").strip() or None,
        nproc_per_node=args.nproc_per_node,
        extra_hyperparameters=extra_hyperparameters,
    )
