"""The run plan: cross-field checks the form cannot express (GPU count against the compute
profile), and the run's identity: model version, artifact and checkpoint URIs, the trainer's
arguments and environment.

The plan also checks what the trainer itself would refuse (an unknown ``builtin://`` dataset,
an unknown or out-of-range flag), by parsing the exact arguments with the trainer's own
parser, so a mistake fails in seconds instead of after a GPU pod was scheduled.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from mlops.settings import Settings
from mlops.training.params import (
    DEFAULT_IMAGE,
    EXTRA_ARG_PATTERN,
    HYPERPARAMETER_KEY_PATTERN,
    LABEL_KEY_PATTERN,
    LABEL_VALUE_PATTERN,
    LOCAL_ONLY_FLAGS,
    MODEL_NAME_PATTERN,
    TYPED_FIELDS,
    TYPED_FLAGS,
    image_allowed_pattern,
    image_allowlist,
)
from mlops.training.profiles import get_profile

SCHEDULED = "scheduled"


class PlanRefused(ValueError):
    """The run's parameters cannot make a plan: a user's mistake, never an incident.

    The message starts with the offending field.
    """


@dataclass(frozen=True)
class RunPlan:
    """Everything the training pod and the registration step need, fixed once per run."""

    model_name: str
    model_version: str
    image: str
    compute_profile: str
    gpus: int
    artifact_uri: str
    checkpoint_uri: str
    arguments: list[str]
    active_deadline_seconds: int
    s3_secret: str
    s3_endpoint: str
    seed: int = 0
    promote: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    timeout_minutes: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_extra_args(extra_args: list[Any]) -> list[str]:
    args = [str(a) for a in extra_args or []]
    for arg in args:
        if not re.match(EXTRA_ARG_PATTERN, arg):
            raise PlanRefused(f"extra_args: {arg!r} is not a --flag or --flag=value argument")
        flag = arg.split("=", 1)[0]
        if flag in TYPED_FLAGS:
            name = TYPED_FLAGS[flag]
            raise PlanRefused(f"extra_args: {flag} would override the {name} field; set {name} instead")
        if flag in LOCAL_ONLY_FLAGS:
            raise PlanRefused(f"extra_args: {flag} is for local runs only; a pod's outputs go to S3")
    return args


def _check_hyperparameters(value: Any) -> dict[str, Any]:
    if value in (None, ""):
        return {}
    if not isinstance(value, dict):
        raise PlanRefused(f"hyperparameters: expected a JSON object, got {type(value).__name__}")
    for key, item in value.items():
        if key in TYPED_FIELDS:
            raise PlanRefused(f"hyperparameters.{key}: set it with the {key} field, not as a hyperparameter")
        if not re.match(HYPERPARAMETER_KEY_PATTERN, str(key)):
            raise PlanRefused(f"hyperparameters.{key}: names are lowercase letters, digits and _")
        if not isinstance(item, str | int | float | bool):
            raise PlanRefused(f"hyperparameters.{key}: values are numbers, strings or booleans")
    return dict(value)


def _check_labels(value: Any) -> dict[str, str]:
    if value in (None, ""):
        return {}
    if not isinstance(value, dict):
        raise PlanRefused(f"labels: expected a JSON object, got {type(value).__name__}")
    for key, item in value.items():
        if not re.match(LABEL_KEY_PATTERN, str(key)):
            raise PlanRefused(f"labels.{key}: not a valid label name")
        if not isinstance(item, str) or not re.match(LABEL_VALUE_PATTERN, item):
            raise PlanRefused(f"labels.{key}: {item!r} is not a valid Kubernetes label value")
    return dict(value)


def _check_with_trainer(arguments: list[str], artifact_uri: str, checkpoint_uri: str) -> None:
    """Parse ``arguments`` with the trainer's own parser, as the pod will (no torch import)."""
    from mlops.trainer.config import ConfigError, load_config

    environ = {
        "RUN_ID": "plan",
        "MODEL_NAME": "plan-check",
        "MODEL_VERSION": "plan",
        "ARTIFACT_URI": artifact_uri,
        "CHECKPOINT_URI": checkpoint_uri,
    }
    try:
        load_config(arguments, environ)
    except ConfigError as exc:
        field_name = str(exc).split(":", 1)[0]
        typed = set(TYPED_FLAGS.values())
        # A typed field's problem names that field; anything else came in through extra_args.
        raise PlanRefused(str(exc) if field_name.split(".")[0] in typed else f"extra_args: {exc}") from None


def decide_promote(asked: Any, run_type: str | None, run_id: str) -> bool:
    """``promote`` as asked; unset, only the nightly (scheduled) run promotes."""
    if asked is not None:
        return bool(asked)
    kind = str(run_type or run_id.split("__", 1)[0]).lower().removeprefix("dagruntype.")
    return kind == SCHEDULED


def plan_run(
    params: dict[str, Any],
    run_id: str,
    logical_date: Any,
    settings: Settings,
    *,
    run_type: str | None = None,
) -> RunPlan:
    """Validate what the form cannot (cross-field rules, the trainer's own checks) and fix the
    run's identity.

    Raises :class:`PlanRefused` (a ``ValueError``) whose message starts with the offending field.
    """
    from mlops.registry import version_for_run

    model = str(params["model_name"])
    if not re.match(MODEL_NAME_PATTERN, model):
        raise PlanRefused(f"model_name: {model!r} does not match {MODEL_NAME_PATTERN}")
    try:
        profile = get_profile(str(params["compute_profile"]))
        gpus = profile.validate_gpus(params.get("gpus"))
    except ValueError as exc:
        raise PlanRefused(str(exc)) from None
    extra_args = _check_extra_args(params.get("extra_args") or [])
    hyperparameters = _check_hyperparameters(params.get("hyperparameters"))
    labels = _check_labels(params.get("labels"))
    image = str(params.get("image") or DEFAULT_IMAGE)
    if image == DEFAULT_IMAGE:
        image = settings.trainer_image  # the deployment may override the default image
    if image != settings.trainer_image and not re.match(image_allowed_pattern(settings), image):
        raise PlanRefused(
            f"image: {image!r} is not from an allowed registry or repository "
            f"({', '.join(image_allowlist(settings))}; MLOPS_TRAINER_IMAGE_ALLOWLIST)"
        )
    batch_size = int(params["batch_size"])
    if gpus > 1 and batch_size % gpus:
        raise PlanRefused(
            f"batch_size: {batch_size} cannot be split evenly over {gpus} GPUs; use a multiple of {gpus}"
        )
    seed = int(params.get("seed") or 0)
    version = version_for_run(run_id, logical_date)
    bucket = settings.artifacts_bucket
    artifact_uri = f"s3://{bucket}/models/{model}/versions/{version}/"
    checkpoint_uri = f"s3://{bucket}/models/{model}/checkpoints/{version}/"
    arguments = [
        "--epochs",
        str(int(params["epochs"])),
        "--learning-rate",
        repr(float(params["learning_rate"])),
        "--batch-size",
        str(batch_size),
        "--dataset-uri",
        str(params["dataset_uri"]),
        "--seed",
        str(seed),
    ]
    if gpus > 1:
        arguments += ["--nproc-per-node", str(gpus)]  # data-parallel on every GPU of the pod
    if hyperparameters:
        arguments += ["--hyperparameters", json.dumps(hyperparameters, sort_keys=True)]
    arguments += extra_args
    _check_with_trainer(arguments, artifact_uri, checkpoint_uri)
    timeout_minutes = int(params["timeout_minutes"])
    return RunPlan(
        model_name=model,
        model_version=version,
        image=image,
        compute_profile=profile.name,
        gpus=gpus,
        artifact_uri=artifact_uri,
        checkpoint_uri=checkpoint_uri,
        arguments=arguments,
        active_deadline_seconds=timeout_minutes * 60,
        s3_secret=settings.trainer_s3_secret,
        s3_endpoint=settings.trainer_s3_endpoint,
        seed=seed,
        promote=decide_promote(params.get("promote"), run_type, run_id),
        labels=labels,
        hyperparameters=hyperparameters,
        timeout_minutes=timeout_minutes,
    )
