"""SNAPSHOT of the trigger form as an operator reads it: every field's title and help text, in order.

These strings are the form's documentation (the UI shows them next to each field, and the REST API's
users read them in the DAG's params): a change to one is a change to this table, made on purpose. The
help texts that state a rule (a range, the allowed images, the refused flags) must say what the
contract enforces, which the last tests check against the schema itself.
"""

from __future__ import annotations

import pytest

from mlops.training.params import LOCAL_ONLY_FLAGS, TYPED_FLAGS, training_params
from mlops.training.profiles import PROFILES

FORM = {
    "model_name": (
        "Model name",
        "Registry name of the model: lowercase letters, digits and dashes (3-40 chars).",
    ),
    "dataset_uri": (
        "Dataset URI",
        "Training data: s3://bucket/prefix, or builtin://sklearn/digits for the bundled set.",
    ),
    "epochs": ("Epochs", "Passes over the training data (at least 1)."),
    "learning_rate": ("Learning rate", "Optimizer step size; must be greater than 0."),
    "batch_size": ("Batch size", "Samples per optimizer step."),
    "compute_profile": (
        "Compute profile",
        "Node pool and resources: cpu (no GPU), gpu-small (1-2 GPUs), gpu-large (1-8), "
        "gpu-spot (1-4, preemptible, resumes from checkpoints).",
    ),
    "gpus": (
        "GPU count",
        "GPUs for the pod (0-8). Empty takes the profile's default; it must fit the profile.",
    ),
    "image": (
        "Trainer image",
        "Container image reference (registry/name:tag or @sha256). The default is the project's trainer "
        "image; others must come from ghcr.io/team/, registry.internal/ml/trainer "
        "(MLOPS_TRAINER_IMAGE_ALLOWLIST).",
    ),
    "timeout_minutes": (
        "Timeout (minutes)",
        "The pod's active deadline; it is stopped and the run fails after this long.",
    ),
    "gpu_wait_minutes": (
        "GPU wait (minutes)",
        "When the namespace's GPU quota is full, wait this long for GPUs to come free (the task shows as "
        "deferred; no retry is spent, no one is paged). 0: fail at once.",
    ),
    "extra_args": (
        "Extra trainer arguments",
        "Additional --flag or --flag=value arguments passed to the trainer. Flags that a field sets "
        "(--epochs, --learning-rate, --batch-size, --seed, --dataset-uri, --nproc-per-node, "
        "--hyperparameters, --image) and the local-run flags (--output-dir, --skip-onnx) are refused.",
    ),
    "seed": (
        "Random seed",
        "Seeds initialisation, shuffling and the train/test split: the same seed and data give the same "
        "model.",
    ),
    "hyperparameters": (
        "Hyperparameters",
        "A JSON object of name: value (numbers, strings, booleans) passed to the trainer and recorded in "
        "the model card. The reference trainer applies hidden_units, weight_decay and test_fraction. "
        "Fields above (epochs, learning_rate, ...) are set there, not here.",
    ),
    "labels": (
        "Run labels",
        "Labels for this run (e.g. team, experiment): lowercase keys, Kubernetes label values. They go "
        "onto the pod (as run.mlops.io/KEY) and into the registry's lineage.",
    ),
    "promote": (
        "Promote the candidate",
        "Whether the promotion DAG may promote this candidate once it passes the gates. Empty: the "
        "nightly scheduled run promotes, a manual or API run does not.",
    ),
    "retry_on_training_failure": (
        "Retry training failures",
        "Also retry when the training code itself fails (non-zero exit). Off: only infrastructure "
        "failures (eviction, preemption, lost node, image pull) are retried.",
    ),
}


@pytest.fixture
def form(monkeypatch) -> dict:
    monkeypatch.setenv("MLOPS_TRAINER_IMAGE_ALLOWLIST", "ghcr.io/team/, registry.internal/ml/trainer")
    return training_params()


def test_the_form_shows_these_fields_in_this_order(form):
    assert list(form) == list(FORM)


@pytest.mark.parametrize("field", list(FORM))
def test_each_field_shows_its_title_and_help_text(form, field):
    param = form[field]
    assert (param.schema["title"], param.description) == FORM[field]


def test_the_gpu_help_text_states_the_enforced_range(form):
    schema = form["gpus"].schema
    assert f"({schema['minimum']}-{schema['maximum']})" in form["gpus"].description


def test_the_profile_help_text_states_each_profiles_gpu_range(form):
    text = form["compute_profile"].description
    assert form["compute_profile"].schema["enum"] == list(PROFILES)
    for name, profile in PROFILES.items():
        if profile.max_gpus:
            assert f"{name} ({profile.min_gpus}-{profile.max_gpus}" in text, name
        else:
            assert f"{name} (no GPU)" in text


def test_the_extra_args_help_text_names_every_flag_the_contract_refuses(form):
    # Before: it named 5 of the 10 refused flags (not --nproc-per-node, --hyperparameters, --image,
    # --output-dir, --skip-onnx), so an operator learnt of them only from the refusal.
    text = form["extra_args"].description
    assert [flag for flag in (*TYPED_FLAGS, *LOCAL_ONLY_FLAGS) if flag not in text] == []
