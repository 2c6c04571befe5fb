"""The run plan's decisions one by one: what it refuses (with a message that starts with the field the
user has to fix), the exact trainer arguments it fixes for a run, what it carries to the pod and the
registration step, and whether the run may promote its candidate."""

from __future__ import annotations

import json
import re

import pendulum
import pytest

from mlops.settings import Settings
from mlops.training.plan import PlanRefused, decide_promote, plan_run

VALID = {
    "model_name": "digits-mlp",
    "dataset_uri": "builtin://sklearn/digits",
    "epochs": 3,
    "learning_rate": 0.01,
    "batch_size": 32,
    "compute_profile": "gpu-small",
    "gpus": None,
    "timeout_minutes": 30,
    "extra_args": [],
}
LOCAL_ONLY = "is for local runs only; a pod's outputs go to S3"


def _plan(run_id: str = "manual__2026-11-27T02:00:00+00:00", settings: Settings | None = None, **change):
    return plan_run({**VALID, **change}, run_id, None, settings or Settings())


# -- refusals: each message starts with the field and says what is wrong -----------------------------
@pytest.mark.parametrize(
    ("extra_args", "message"),
    [
        (["-x"], "extra_args: '-x' is not a --flag or --flag=value argument"),
        (["--output-dir=/tmp/model"], f"extra_args: --output-dir {LOCAL_ONLY}"),
        (["--skip-onnx"], f"extra_args: --skip-onnx {LOCAL_ONLY}"),
        # The value may hold "=" itself: the flag is what comes before the first one.
        (
            ["--dataset-uri=s3://bucket/data?version=2"],
            "extra_args: --dataset-uri would override the dataset_uri field; set dataset_uri instead",
        ),
    ],
)
def test_extra_args_the_pod_cannot_use_are_refused_naming_the_argument(extra_args, message):
    with pytest.raises(PlanRefused, match=f"^{re.escape(message)}$"):
        _plan(extra_args=extra_args)


@pytest.mark.parametrize(
    ("hyperparameters", "message"),
    [
        ("not an object", "hyperparameters: expected a JSON object, got str"),
        ([1, 2], "hyperparameters: expected a JSON object, got list"),
        ({"Bad Key": 1}, "hyperparameters.Bad Key: names are lowercase letters, digits and _"),
        ({"nested": {"a": 1}}, "hyperparameters.nested: values are numbers, strings or booleans"),
        ({"layers": None}, "hyperparameters.layers: values are numbers, strings or booleans"),
    ],
)
def test_bad_hyperparameters_are_refused_naming_the_key(hyperparameters, message):
    with pytest.raises(PlanRefused, match=f"^{re.escape(message)}$"):
        _plan(hyperparameters=hyperparameters)


def test_a_hyperparameter_the_trainer_refuses_is_reported_as_a_hyperparameter_not_an_extra_arg():
    with pytest.raises(PlanRefused, match=r"^hyperparameters\.hidden_units: ") as refused:
        _plan(hyperparameters={"hidden_units": 0})
    assert "extra_args" not in str(refused.value)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (["team"], "labels: expected a JSON object, got list"),
        ("team=vision", "labels: expected a JSON object, got str"),
        ({"Team": "vision"}, "labels.Team: not a valid label name"),
        ({"team": "has space"}, "labels.team: 'has space' is not a valid Kubernetes label value"),
        ({"team": "-vision"}, "labels.team: '-vision' is not a valid Kubernetes label value"),
        ({"team": 5}, "labels.team: 5 is not a valid Kubernetes label value"),
    ],
)
def test_bad_labels_are_refused_naming_the_label(labels, message):
    with pytest.raises(PlanRefused, match=f"^{re.escape(message)}$"):
        _plan(labels=labels)


@pytest.mark.parametrize("empty", [None, ""])
def test_empty_hyperparameters_and_labels_mean_none(empty):
    plan = _plan(hyperparameters=empty, labels=empty)
    assert (plan.hyperparameters, plan.labels) == ({}, {})
    assert "--hyperparameters" not in plan.arguments


def test_a_bad_model_name_is_refused_naming_the_field():
    with pytest.raises(PlanRefused, match=r"^model_name: 'Digits MLP' does not match \^"):
        _plan(model_name="Digits MLP")


def test_an_image_outside_the_allowlist_is_refused_listing_every_allowed_source():
    settings = Settings(trainer_image_allowlist="ghcr.io/team/, registry.internal/ml/trainer")
    message = (
        "image: 'docker.io/someone/trainer:1' is not from an allowed registry or repository "
        "(ghcr.io/team/, registry.internal/ml/trainer; MLOPS_TRAINER_IMAGE_ALLOWLIST)"
    )
    with pytest.raises(PlanRefused, match=f"^{re.escape(message)}$"):
        _plan(settings=settings, image="docker.io/someone/trainer:1")


@pytest.mark.parametrize(("gpus", "batch_size"), [(2, 33), (4, 30)])
def test_a_batch_that_does_not_split_evenly_over_the_gpus_is_refused(gpus, batch_size):
    message = f"batch_size: {batch_size} cannot be split evenly over {gpus} GPUs; use a multiple of {gpus}"
    with pytest.raises(PlanRefused, match=f"^{re.escape(message)}$"):
        _plan(compute_profile="gpu-spot", gpus=gpus, batch_size=batch_size)


def test_any_batch_size_fits_one_gpu():
    assert _plan(batch_size=33).gpus == 1


# -- the trainer's exact arguments -----------------------------------------------------------------
def test_a_two_gpu_plan_passes_every_field_and_runs_data_parallel_on_both_gpus():
    plan = _plan(compute_profile="gpu-small", gpus=2)
    assert plan.arguments == [
        "--epochs", "3",
        "--learning-rate", "0.01",
        "--batch-size", "32",
        "--dataset-uri", "builtin://sklearn/digits",
        "--seed", "0",  # no seed given: 0, the form's default
        "--nproc-per-node", "2",
    ]  # fmt: skip


def test_hyperparameters_are_passed_in_a_stable_order_before_the_extra_args():
    """The same hyperparameters give the same arguments whatever order the form or API sent them in."""
    plan = _plan(
        hyperparameters={"weight_decay": 0.01, "hidden_units": 64, "dropout": 0.1},
        extra_args=["--checkpoint-every=2"],
    )
    assert plan.arguments[-3:] == [
        "--hyperparameters",
        '{"dropout": 0.1, "hidden_units": 64, "weight_decay": 0.01}',
        "--checkpoint-every=2",
    ]
    assert plan.hyperparameters == {"weight_decay": 0.01, "hidden_units": 64, "dropout": 0.1}


# -- what the plan carries to the pod and the registration step --------------------------------------
def test_the_plan_carries_the_runs_timeout_credentials_and_hyperparameters():
    settings = Settings(trainer_s3_secret="team-s3-credentials", trainer_s3_endpoint="http://minio:9000")
    plan = _plan(settings=settings, timeout_minutes=45, hyperparameters={"hidden_units": 64})
    recorded = plan.as_dict()
    assert recorded["s3_secret"] == "team-s3-credentials"
    assert recorded["s3_endpoint"] == "http://minio:9000"
    assert recorded["timeout_minutes"] == 45
    assert recorded["active_deadline_seconds"] == 45 * 60
    assert recorded["hyperparameters"] == {"hidden_units": 64}
    assert json.loads(plan.arguments[plan.arguments.index("--hyperparameters") + 1]) == {"hidden_units": 64}


def test_the_model_version_takes_its_time_from_the_logical_date():
    """A REST-triggered run id carries no timestamp: the version is stamped with the logical date."""
    date = pendulum.datetime(2026, 11, 27, 2, 0, tz="UTC")
    dated = plan_run(VALID, "nightly-rerun-7", date, Settings())
    undated = plan_run(VALID, "nightly-rerun-7", None, Settings())
    assert re.fullmatch(r"v20261127t020000-[0-9a-f]{8}", dated.model_version)
    assert re.fullmatch(r"v-[0-9a-f]{8}", undated.model_version)
    assert dated.artifact_uri == f"s3://mlops-artifacts/models/digits-mlp/versions/{dated.model_version}/"


# -- promotion: only the nightly run promotes unless the run says otherwise ----------------------------
@pytest.mark.parametrize(
    ("run_id", "promotes"),
    [
        ("scheduled__2026-11-27T02:00:00+00:00", True),
        ("manual__2026-11-27T02:00:00+00:00", False),
        ("asset_triggered__2026-11-27T02:00:00+00:00", False),
        # Only the part before the first "__" names the run type.
        ("scheduled__2026-11-27T02:00:00+00:00__rerun", True),
        ("manual__scheduled__2026-11-27", False),
        ("scheduled", True),
        ("nightly-from-the-api", False),
    ],
)
def test_without_a_run_type_the_run_id_prefix_decides_promotion(run_id, promotes):
    assert decide_promote(None, None, run_id) is promotes


@pytest.mark.parametrize(
    ("run_type", "promotes"),
    [("DagRunType.SCHEDULED", True), ("SCHEDULED", True), ("DagRunType.MANUAL", False), ("backfill", False)],
)
def test_the_run_type_decides_promotion_over_the_run_id(run_type, promotes):
    assert decide_promote(None, run_type, "manual__2026-11-27T02:00:00+00:00") is promotes
    assert decide_promote(None, run_type, "scheduled__2026-11-27T02:00:00+00:00") is promotes


def test_a_scheduled_run_with_a_custom_run_id_still_promotes():
    assert plan_run(VALID, "nightly-rerun-7", None, Settings(), run_type="scheduled").promote is True
    assert plan_run(VALID, "scheduled__1", None, Settings(), run_type="manual").promote is False


@pytest.mark.parametrize(("asked", "promotes"), [(True, True), (False, False), (1, True), (0, False)])
def test_an_explicit_promote_wins_over_the_run_type(asked, promotes):
    assert decide_promote(asked, "manual", "manual__1") is promotes
    assert decide_promote(asked, "scheduled", "scheduled__1") is promotes
