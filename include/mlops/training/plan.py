"""The run plan: cross-field checks the form cannot express (GPU count against the compute
profile), and the run's identity: model version, artifact and checkpoint URIs, the trainer's
arguments and environment."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from mlops.settings import Settings
from mlops.training.params import DEFAULT_IMAGE, EXTRA_ARG_PATTERN, MODEL_NAME_PATTERN
from mlops.training.profiles import get_profile


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

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_run(params: dict[str, Any], run_id: str, logical_date: Any, settings: Settings) -> RunPlan:
    """Validate what the form cannot (cross-field rules) and fix the run's identity.

    Raises ``ValueError`` whose message starts with the offending field name.
    """
    from mlops.registry import version_for_run

    model = str(params["model_name"])
    if not re.match(MODEL_NAME_PATTERN, model):
        raise ValueError(f"model_name: {model!r} does not match {MODEL_NAME_PATTERN}")
    profile = get_profile(str(params["compute_profile"]))
    gpus = profile.validate_gpus(params.get("gpus"))
    for arg in params.get("extra_args") or []:
        if not re.match(EXTRA_ARG_PATTERN, arg):
            raise ValueError(f"extra_args: {arg!r} is not a --flag or --flag=value argument")
    image = str(params.get("image") or DEFAULT_IMAGE)
    if image == DEFAULT_IMAGE:
        image = settings.trainer_image  # the deployment may override the default image
    version = version_for_run(run_id, logical_date)
    bucket = settings.artifacts_bucket
    arguments = [
        "--epochs",
        str(int(params["epochs"])),
        "--learning-rate",
        repr(float(params["learning_rate"])),
        "--batch-size",
        str(int(params["batch_size"])),
        "--dataset-uri",
        str(params["dataset_uri"]),
        *[str(a) for a in params.get("extra_args") or []],
    ]
    return RunPlan(
        model_name=model,
        model_version=version,
        image=image,
        compute_profile=profile.name,
        gpus=gpus,
        artifact_uri=f"s3://{bucket}/models/{model}/versions/{version}/",
        checkpoint_uri=f"s3://{bucket}/models/{model}/checkpoints/{version}/",
        arguments=arguments,
        active_deadline_seconds=int(params["timeout_minutes"]) * 60,
        s3_secret=settings.trainer_s3_secret,
        s3_endpoint=settings.trainer_s3_endpoint,
    )
