"""The training DAG's form contract: the JSON schema that the UI renders as a form and the
REST API enforces at trigger time (a bad value is a 400 naming the field).

The image allow-list comes from the environment (``MLOPS_TRAINER_IMAGE_ALLOWLIST``,
``MLOPS_TRAINER_IMAGE``) when the DAG file is parsed: no connection or Variable is read.
"""

from __future__ import annotations

import re

from airflow.sdk import Param

from mlops.settings import Settings, get_settings
from mlops.training.profiles import PROFILE_NAMES

# `$(?!\n)`: Python's `$` (the API validates with Python) also matches before a final newline.
MODEL_NAME_PATTERN = r"^[a-z][a-z0-9-]{1,38}[a-z0-9]$(?!\n)"
DATASET_URI_PATTERN = r"^(s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/\S*)?|builtin://[a-z0-9/_-]+)$(?!\n)"
# registry[:port]/path[:tag][@sha256:digest] -- the OCI reference grammar, simplified.
IMAGE_PATTERN = (
    r"^([a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?/)?[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*"
    r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$(?!\n)"
)
EXTRA_ARG_PATTERN = r"^--[a-z0-9][a-z0-9-]*(=[^\s]*)?$(?!\n)"
DEFAULT_IMAGE = Settings().trainer_image
# The trainer's flags that typed form fields set: extra_args may not override them.
TYPED_FLAGS: dict[str, str] = {
    "--epochs": "epochs",
    "--learning-rate": "learning_rate",
    "--batch-size": "batch_size",
    "--seed": "seed",
    "--dataset-uri": "dataset_uri",
    "--nproc-per-node": "gpus",
    "--hyperparameters": "hyperparameters",
    "--image": "image",
}
# Flags for a local run only: a pod writing to its own disk would register nothing.
LOCAL_ONLY_FLAGS = ("--output-dir", "--skip-onnx")
_NOT_TYPED = "(?!(" + "|".join(re.escape(f) for f in (*TYPED_FLAGS, *LOCAL_ONLY_FLAGS)) + ")(=|$))"
FREE_EXTRA_ARG_PATTERN = "^" + _NOT_TYPED + EXTRA_ARG_PATTERN[1:]
TYPED_FIELDS = (
    "model_name",
    "dataset_uri",
    "epochs",
    "learning_rate",
    "batch_size",
    "seed",
    "compute_profile",
    "gpus",
    "image",
    "timeout_minutes",
)
HYPERPARAMETER_KEY_PATTERN = "^(?!(" + "|".join(TYPED_FIELDS) + ")$)[a-z][a-z0-9_]{0,62}$"
# Kubernetes label name and value rules (the run's labels go onto its pod).
LABEL_KEY_PATTERN = r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$"
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][A-Za-z0-9._-]{0,61})?[A-Za-z0-9])?$"


def image_allowlist(settings: Settings) -> list[str]:
    """The allowed registries/namespaces (ending in ``/``) and repositories; see ``Settings``."""
    entries = [e.strip() for e in settings.trainer_image_allowlist.split(",") if e.strip()]
    return entries or [image_repository(settings.trainer_image)]


def image_repository(image: str) -> str:
    """``registry:5000/team/trainer:1.0@sha256:...`` -> ``registry:5000/team/trainer``."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return name[: len(name) - len(last)] + last.split(":", 1)[0]


def image_allowed_pattern(settings: Settings) -> str:
    """A regex that accepts the form's default image and any image reference from the allow-list."""
    prefixes = [
        re.escape(e) if e.endswith("/") else re.escape(e) + "(?=[:@]|$)" for e in image_allowlist(settings)
    ]
    return f"^({re.escape(DEFAULT_IMAGE)}$(?!\\n)|(?=({'|'.join(prefixes)})){IMAGE_PATTERN[1:]})"


def training_params() -> dict[str, Param]:
    """The trigger form / REST ``conf`` contract. Each field has a title and a description."""
    settings = get_settings()
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
            pattern=image_allowed_pattern(settings),
            title="Trainer image",
            description="Container image reference (registry/name:tag or @sha256). The default is the "
            f"project's trainer image; others must come from {', '.join(image_allowlist(settings))} "
            "(MLOPS_TRAINER_IMAGE_ALLOWLIST).",
        ),
        "timeout_minutes": Param(
            240,
            type="integer",
            minimum=1,
            maximum=10080,
            title="Timeout (minutes)",
            description="The pod's active deadline; it is stopped and the run fails after this long.",
        ),
        "gpu_wait_minutes": Param(
            360,
            type="integer",
            minimum=0,
            maximum=10080,
            title="GPU wait (minutes)",
            description="When the namespace's GPU quota is full, wait this long for GPUs to come free "
            "(the task shows as deferred; no retry is spent, no one is paged). 0: fail at once.",
        ),
        "extra_args": Param(
            [],
            type="array",
            items={"type": "string", "pattern": FREE_EXTRA_ARG_PATTERN},
            maxItems=32,
            title="Extra trainer arguments",
            description="Additional --flag or --flag=value arguments passed to the trainer. Flags that a "
            f"field sets ({', '.join(TYPED_FLAGS)}) and the local-run flags ({', '.join(LOCAL_ONLY_FLAGS)}) "
            "are refused.",
        ),
        "seed": Param(
            0,
            type="integer",
            minimum=0,
            maximum=2**32 - 1,
            title="Random seed",
            description="Seeds initialisation, shuffling and the train/test split: the same seed and data "
            "give the same model.",
        ),
        "hyperparameters": Param(
            {},
            type="object",
            propertyNames={"pattern": HYPERPARAMETER_KEY_PATTERN},
            additionalProperties={"type": ["string", "number", "boolean"]},
            maxProperties=64,
            title="Hyperparameters",
            description="A JSON object of name: value (numbers, strings, booleans) passed to the trainer and "
            "recorded in the model card. The reference trainer applies hidden_units, weight_decay and "
            "test_fraction. Fields above (epochs, learning_rate, ...) are set there, not here.",
        ),
        "labels": Param(
            {},
            type="object",
            propertyNames={"pattern": LABEL_KEY_PATTERN},
            additionalProperties={"type": "string", "pattern": LABEL_VALUE_PATTERN},
            maxProperties=16,
            title="Run labels",
            description="Labels for this run (e.g. team, experiment): lowercase keys, Kubernetes label "
            "values. They go onto the pod (as run.mlops.io/KEY) and into the registry's lineage.",
        ),
        "promote": Param(
            None,
            type=["null", "boolean"],
            title="Promote the candidate",
            description="Whether the promotion DAG may promote this candidate once it passes the gates. "
            "Empty: the nightly scheduled run promotes, a manual or API run does not.",
        ),
        "retry_on_training_failure": Param(
            False,
            type="boolean",
            title="Retry training failures",
            description="Also retry when the training code itself fails (non-zero exit). "
            "Off: only infrastructure failures (eviction, preemption, lost node, image pull) are retried.",
        ),
    }
