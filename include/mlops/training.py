"""The training DAG's contract and the steps around the training pod.

- ``training_params()``: the JSON-schema contract the UI renders as a form and the
  REST API enforces at trigger time (a bad value is a 400 naming the field).
- ``plan_run()``: cross-field checks the form cannot express (GPU count against the
  compute profile), and the run's identity: model version, artifact and checkpoint URIs,
  the trainer's arguments and environment.
- ``TrainingPodOperator``: the training pod. It plans the run when it starts, inside the
  same task, so a trigger reaches the Kubernetes API after one task start, not two.
- ``register_candidate()``: validates ``metrics.json`` and records the candidate in the registry.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from airflow.sdk import Param

from mlops.compute_profiles import PROFILE_NAMES, get_profile
from mlops.pods import PlatformPodOperator
from mlops.settings import Settings, get_settings

MODEL_NAME_PATTERN = r"^[a-z][a-z0-9-]{1,38}[a-z0-9]$"
DATASET_URI_PATTERN = r"^(s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/\S*)?|builtin://[a-z0-9/_-]+)$"
# registry[:port]/path[:tag][@sha256:digest] -- the OCI reference grammar, simplified.
IMAGE_PATTERN = (
    r"^([a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?/)?[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*"
    r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$"
)
EXTRA_ARG_PATTERN = r"^--[a-z0-9][a-z0-9-]*(=[^\s]*)?$"
DEFAULT_IMAGE = Settings().trainer_image


def training_params() -> dict[str, Param]:
    """The trigger form / REST ``conf`` contract. Each field has a title and a description."""
    return {
        "model_name": Param(
            "digits-mlp",
            type="string",
            pattern=MODEL_NAME_PATTERN,
            title="Model name",
            description="Registry name of the model: lowercase letters, digits and dashes (3-40 chars).",
        ),
        "dataset_uri": Param(
            "builtin://sklearn/digits",
            type="string",
            pattern=DATASET_URI_PATTERN,
            title="Dataset URI",
            description="Training data: s3://bucket/prefix, or builtin://sklearn/digits for the bundled set.",
        ),
        "epochs": Param(
            10,
            type="integer",
            minimum=1,
            maximum=1000,
            title="Epochs",
            description="Passes over the training data (at least 1).",
        ),
        "learning_rate": Param(
            0.001,
            type="number",
            exclusiveMinimum=0,
            maximum=10,
            title="Learning rate",
            description="Optimizer step size; must be greater than 0.",
        ),
        "batch_size": Param(
            64,
            type="integer",
            minimum=1,
            maximum=65536,
            title="Batch size",
            description="Samples per optimizer step.",
        ),
        "compute_profile": Param(
            "gpu-small",
            type="string",
            enum=list(PROFILE_NAMES),
            title="Compute profile",
            description="Node pool and resources: cpu (no GPU), gpu-small (1-2 GPUs), gpu-large (1-8), "
            "gpu-spot (1-4, preemptible, resumes from checkpoints).",
        ),
        "gpus": Param(
            None,
            type=["null", "integer"],
            minimum=0,
            maximum=8,
            title="GPU count",
            description="GPUs for the pod (0-8). Empty takes the profile's default; it must fit the profile.",
        ),
        "image": Param(
            DEFAULT_IMAGE,
            type="string",
            pattern=IMAGE_PATTERN,
            title="Trainer image",
            description="Container image reference (registry/name:tag or @sha256). "
            "The default is the project's trainer image.",
        ),
        "timeout_minutes": Param(
            240,
            type="integer",
            minimum=1,
            maximum=10080,
            title="Timeout (minutes)",
            description="The pod's active deadline; it is stopped and the run fails after this long.",
        ),
        "extra_args": Param(
            [],
            type="array",
            items={"type": "string", "pattern": EXTRA_ARG_PATTERN},
            maxItems=32,
            title="Extra trainer arguments",
            description="Additional --flag or --flag=value arguments passed to the trainer.",
        ),
        "retry_on_training_failure": Param(
            False,
            type="boolean",
            title="Retry training failures",
            description="Also retry when the training code itself fails (non-zero exit). "
            "Off: only infrastructure failures (eviction, preemption, lost node, image pull) are retried.",
        ),
    }


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


def register_candidate(plan: dict[str, Any], lineage: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Validate the run's ``metrics.json`` and register the candidate; returns the registry entry.

    A missing or malformed ``metrics.json`` raises ``ValueError`` with the object's URI.
    """
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    from mlops.registry import ModelRegistry, validate_metrics

    s3 = S3Hook(aws_conn_id=settings.aws_conn_id).get_conn()
    key = plan["artifact_uri"].removeprefix(f"s3://{settings.artifacts_bucket}/") + "metrics.json"
    uri = f"s3://{settings.artifacts_bucket}/{key}"
    try:
        raw = s3.get_object(Bucket=settings.artifacts_bucket, Key=key)["Body"].read()
    except s3.exceptions.NoSuchKey:
        raise ValueError(
            f"metrics.json missing at {uri}: the trainer did not finish writing its outputs"
        ) from None
    try:
        metrics = validate_metrics(raw)
    except ValueError as exc:
        raise ValueError(f"metrics.json at {uri} is malformed: {exc}") from exc
    registry = ModelRegistry(s3, settings.artifacts_bucket)
    return registry.register_candidate(
        plan["model_name"], plan["model_version"], metrics, lineage, plan["artifact_uri"]
    )


class TrainingPodOperator(PlatformPodOperator):
    """The trainer's pod, shaped by the run's params (see :func:`training_params`).

    The plan is pushed to XCom under the key ``plan`` for the registration step. A plan
    that cannot be made (e.g. too many GPUs for the profile) fails the task at once,
    naming the parameter, without spending retries and before any pod exists.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(image=DEFAULT_IMAGE, **kwargs)

    def prepare(self, context: Any) -> None:
        from airflow.sdk.exceptions import AirflowFailException

        settings = get_settings()
        params = context["params"]
        try:
            plan = plan_run(params, context["run_id"], context.get("logical_date"), settings)
        except ValueError as exc:
            raise AirflowFailException(str(exc)) from exc
        self.image = plan.image
        self.arguments = plan.arguments
        self.compute_profile = plan.compute_profile
        self.gpus = plan.gpus
        self.model_name = plan.model_name
        self.active_deadline_seconds = plan.active_deadline_seconds
        self.retry_application_failures = bool(params.get("retry_on_training_failure"))
        self.add_env(
            {
                "RUN_ID": context["run_id"],
                "MODEL_NAME": plan.model_name,
                "MODEL_VERSION": plan.model_version,
                "ARTIFACT_URI": plan.artifact_uri,
                "CHECKPOINT_URI": plan.checkpoint_uri,
                "TRAINER_IMAGE": plan.image,
                "AWS_ENDPOINT_URL": plan.s3_endpoint,
            }
        )
        self.secret_env = {
            "AWS_ACCESS_KEY_ID": (plan.s3_secret, "aws_access_key_id"),
            "AWS_SECRET_ACCESS_KEY": (plan.s3_secret, "aws_secret_access_key"),
        }
        context["ti"].xcom_push(key="plan", value=plan.as_dict())
