"""The training DAG's form contract: the JSON schema that the UI renders as a form and the
REST API enforces at trigger time (a bad value is a 400 naming the field)."""

from __future__ import annotations

from airflow.sdk import Param

from mlops.settings import Settings
from mlops.training.profiles import PROFILE_NAMES

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
