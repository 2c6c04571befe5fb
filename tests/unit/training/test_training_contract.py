"""The training DAG's parameter contract, run plan, and the pod the wrapper renders."""

from __future__ import annotations

import copy
import json

import pendulum
import pytest
from airflow.sdk.exceptions import ParamValidationError

from mlops.settings import Settings
from mlops.training.params import DEFAULT_IMAGE, training_params
from mlops.training.plan import plan_run

VALID = {
    "model_name": "digits-mlp",
    "dataset_uri": "builtin://sklearn/digits",
    "epochs": 3,
    "learning_rate": 0.01,
    "batch_size": 32,
    "compute_profile": "gpu-small",
    "gpus": None,
    "image": DEFAULT_IMAGE,
    "timeout_minutes": 30,
    "extra_args": [],
    "retry_on_training_failure": False,
}


def _validate(conf: dict) -> dict:
    from airflow.sdk.definitions.param import ParamsDict

    params = ParamsDict(copy.deepcopy(training_params()))
    params.update(conf)
    return params.validate()


def test_every_form_field_has_a_title_and_a_description():
    for name, param in training_params().items():
        assert param.schema.get("title"), name
        assert param.description, name


def test_defaults_are_valid():
    assert _validate({})["compute_profile"] == "gpu-small"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("epochs", 0),
        ("learning_rate", 0),
        ("learning_rate", -1.0),
        ("gpus", 9),
        ("gpus", -1),
        ("compute_profile", "gpu-huge"),
        ("model_name", "Bad Name"),
        ("image", "UPPER/Case:tag"),
        ("dataset_uri", "http://example.com/data"),
        ("extra_args", ["rm -rf /"]),
        ("batch_size", 0),
    ],
)
def test_invalid_values_are_refused_naming_the_field(field, value):
    with pytest.raises(ParamValidationError, match=rf"^Invalid input for param {field}: "):
        _validate({field: value})


@pytest.mark.parametrize(
    "image",
    [
        "ghcr.io/mlops-airflow/trainer:0.1.0",
        "localhost:5000/trainer",
        "trainer@sha256:" + "a" * 64,
        "python:3.11-slim",
    ],
)
def test_image_references_are_accepted(monkeypatch, image):
    monkeypatch.setenv("MLOPS_TRAINER_IMAGE_ALLOWLIST", "ghcr.io/,localhost:5000/,trainer,python")
    assert _validate({"image": image})["image"] == image


def test_gpu_count_must_fit_the_profile():
    with pytest.raises(ValueError, match="^gpus: profile 'cpu' allows 0..0 GPUs, got 1"):
        plan_run({**VALID, "compute_profile": "cpu", "gpus": 1}, "manual__1", None, Settings())


def test_plan_fixes_version_and_uris_per_run_so_a_retry_reuses_them():
    date = pendulum.datetime(2026, 11, 27, tz="UTC")
    first = plan_run(VALID, "manual__2026-11-27T00:00:00+00:00", date, Settings())
    again = plan_run(VALID, "manual__2026-11-27T00:00:00+00:00", date, Settings())
    assert first == again
    assert first.gpus == 1  # the gpu-small default
    assert first.artifact_uri == f"s3://mlops-artifacts/models/digits-mlp/versions/{first.model_version}/"
    assert (
        first.checkpoint_uri == f"s3://mlops-artifacts/models/digits-mlp/checkpoints/{first.model_version}/"
    )
    assert first.active_deadline_seconds == 1800
    assert first.arguments[:6] == ["--epochs", "3", "--learning-rate", "0.01", "--batch-size", "32"]


def test_the_default_image_follows_the_deployment_setting():
    plan = plan_run(VALID, "r", None, Settings(trainer_image="registry.internal/trainer:2.0"))
    assert plan.image == "registry.internal/trainer:2.0"
    settings = Settings(trainer_image="x/y:1", trainer_image_allowlist="other/")
    explicit = plan_run({**VALID, "image": "other/trainer:1"}, "r", None, settings)
    assert explicit.image == "other/trainer:1"


class _TaskInstance:
    """Stands in for Airflow's runtime task instance: records what the operator pushes to XCom."""

    def __init__(self) -> None:
        self.pushed: dict = {}

    def xcom_push(self, key: str, value) -> None:
        self.pushed[key] = value


def _training_pod(monkeypatch, params: dict) -> tuple[dict, dict]:
    from airflow.sdk import DAG
    from kubernetes.client import ApiClient

    from mlops.training.operator import TrainingPodOperator

    monkeypatch.setenv("MLOPS_TRAINER_S3_ENDPOINT", "http://s3.internal:9000")
    with DAG("training_probe", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
        op = TrainingPodOperator(task_id="train_model")
    ti = _TaskInstance()
    op.prepare(
        {"params": params, "run_id": "manual__2026-11-27T02:00:00+00:00", "logical_date": None, "ti": ti}
    )
    return ApiClient().sanitize_for_serialization(op.build_pod_request_obj(dry_run=True)), ti.pushed


def test_the_training_pod_validates_against_kubernetes_1_30_and_carries_the_run_context(monkeypatch):
    import kubernetes_validate

    pod, pushed = _training_pod(monkeypatch, {**VALID, "compute_profile": "gpu-large", "gpus": 4})
    kubernetes_validate.validate(pod, "1.30.0", strict=True)
    container = pod["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    plan = pushed["plan"]
    assert env["RUN_ID"] == "manual__2026-11-27T02:00:00+00:00"
    assert env["MODEL_NAME"] == "digits-mlp" and env["MODEL_VERSION"] == plan["model_version"]
    assert env["ARTIFACT_URI"] == plan["artifact_uri"] and env["CHECKPOINT_URI"] == plan["checkpoint_uri"]
    assert env["AWS_ENDPOINT_URL"] == "http://s3.internal:9000"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert pod["spec"]["activeDeadlineSeconds"] == 1800
    assert pod["spec"]["priorityClassName"] == "mlops-training"
    assert pod["spec"]["serviceAccountName"] == "mlops-trainer"
    assert pod["metadata"]["labels"]["mlops.io/model"] == "digits-mlp"
    assert container["args"] == plan["arguments"]


def test_a_plan_that_cannot_be_made_fails_the_task_without_retries(monkeypatch):
    from airflow.sdk.exceptions import AirflowFailException

    with pytest.raises(AirflowFailException, match="^gpus:"):
        _training_pod(monkeypatch, {**VALID, "compute_profile": "cpu", "gpus": 2})


# -- issue 13: promote, labels, hyperparameters, seed (bug 9) ---------------------------------------
def test_new_run_fields_have_safe_defaults_and_reach_the_plan():
    values = _validate({})
    assert (values["promote"], values["labels"], values["hyperparameters"], values["seed"]) == (
        None,
        {},
        {},
        0,
    )
    plan = plan_run(
        {**VALID, "seed": 7, "labels": {"team": "vision"}, "hyperparameters": {"hidden_units": 64}},
        "manual__1",
        None,
        Settings(),
    )
    assert plan.arguments[plan.arguments.index("--seed") + 1] == "7"
    assert json.loads(plan.arguments[plan.arguments.index("--hyperparameters") + 1]) == {"hidden_units": 64}
    assert plan.labels == {"team": "vision"} and plan.seed == 7


@pytest.mark.parametrize(
    ("run_type", "asked", "promotes"),
    [
        ("scheduled", None, True),
        ("manual", None, False),
        ("manual", True, True),
        ("scheduled", False, False),
        ("asset_triggered", None, False),
    ],
)
def test_only_the_nightly_run_promotes_unless_a_run_says_otherwise(run_type, asked, promotes):
    plan = plan_run({**VALID, "promote": asked}, f"{run_type}__1", None, Settings(), run_type=run_type)
    assert plan.promote is promotes


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("hyperparameters", "not an object"),
        ("hyperparameters", {"Bad Key": 1}),
        ("hyperparameters", {"nested": {"a": 1}}),
        ("labels", {"team": "has space"}),
        ("labels", {"UPPER": "x"}),
        ("seed", -1),
        ("promote", "yes"),
    ],
)
def test_new_fields_refuse_bad_values_naming_the_field(field, value):
    with pytest.raises(ParamValidationError, match=rf"^Invalid input for param {field}: "):
        _validate({field: value})


def test_hyperparameters_cannot_set_a_typed_field():
    with pytest.raises(ParamValidationError, match="^Invalid input for param hyperparameters: "):
        _validate({"hyperparameters": {"epochs": 5}})
    with pytest.raises(ValueError, match=r"^hyperparameters\.epochs: .*the epochs field"):
        plan_run({**VALID, "hyperparameters": {"epochs": 5}}, "r", None, Settings())


# -- issue 13: the image allow-list (bug 10) ---------------------------------------------------------
def _params_with(monkeypatch, allowlist: str, trainer_image: str | None = None) -> dict:
    monkeypatch.setenv("MLOPS_TRAINER_IMAGE_ALLOWLIST", allowlist)
    if trainer_image:
        monkeypatch.setenv("MLOPS_TRAINER_IMAGE", trainer_image)
    from airflow.sdk.definitions.param import ParamsDict

    return ParamsDict(copy.deepcopy(training_params()))


@pytest.mark.parametrize(
    "image",
    [
        "docker.io/attacker/miner:latest",
        "python:3.11-slim",
        "ghcr.io/mlops-airflow/trainer-evil:1",  # a repository that only starts like an allowed one
        "ghcr.io/mlops-airflow.evil.com/trainer:1",
    ],
)
def test_an_image_outside_the_allowlist_is_refused_at_trigger_time_naming_the_field(monkeypatch, image):
    params = _params_with(monkeypatch, "")  # empty: the trainer_image's repository only
    with pytest.raises(ParamValidationError, match="^Invalid input for param image: "):
        params.update({"image": image})  # ParamsDict validates on assignment, as the REST API does
        params.validate()
    with pytest.raises(ValueError, match="^image: .* MLOPS_TRAINER_IMAGE_ALLOWLIST"):
        plan_run({**VALID, "image": image}, "r", None, Settings())


@pytest.mark.parametrize(
    "image",
    [
        DEFAULT_IMAGE,
        "ghcr.io/mlops-airflow/trainer:0.2.0",
        "ghcr.io/mlops-airflow/trainer@sha256:" + "a" * 64,
        "registry.internal/ml/anything:1",
        "registry.internal/ml/team/trainer:2",
    ],
)
def test_images_from_the_allowlist_are_accepted(monkeypatch, image):
    params = _params_with(monkeypatch, "ghcr.io/mlops-airflow/trainer, registry.internal/ml/")
    params.update({"image": image})
    assert params.validate()["image"] == image
    settings = Settings(trainer_image_allowlist="ghcr.io/mlops-airflow/trainer,registry.internal/ml/")
    assert plan_run({**VALID, "image": image}, "r", None, settings).image


def test_the_default_image_stays_valid_when_the_deployment_moves_the_trainer(monkeypatch):
    params = _params_with(monkeypatch, "", trainer_image="registry.internal/ml/trainer:3")
    assert params.validate()["image"] == DEFAULT_IMAGE  # the form default maps to trainer_image
    params.update({"image": "registry.internal/ml/trainer:4"})
    assert params.validate()["image"] == "registry.internal/ml/trainer:4"


# -- issue 13: startup validation before a GPU is bound (bug 14) -------------------------------------
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"dataset_uri": "builtin://anything"}, "^dataset_uri: the only bundled dataset"),
        ({"extra_args": ["--no-such-flag=1"]}, "^extra_args: .*--no-such-flag"),
        ({"extra_args": ["--hidden-units=0"]}, "^extra_args: hidden_units: must be between"),
        ({"compute_profile": "gpu-large", "gpus": 8, "batch_size": 100}, "^batch_size: 100 .* 8 GPUs"),
    ],
)
def test_the_plan_refuses_what_the_trainer_would_refuse(change, message):
    with pytest.raises(ValueError, match=message):
        plan_run({**VALID, **change}, "manual__1", None, Settings())


@pytest.mark.parametrize(
    ("arg", "field"),
    [
        ("--epochs=50", "epochs"),
        ("--learning-rate=1", "learning_rate"),
        ("--batch-size=8", "batch_size"),
        ("--seed=3", "seed"),
        ("--dataset-uri=s3://b/x", "dataset_uri"),
        ("--nproc-per-node=8", "gpus"),
        ("--hyperparameters={}", "hyperparameters"),
    ],
)
def test_extra_args_cannot_override_a_typed_field(arg, field):
    with pytest.raises(ValueError, match=rf"^extra_args: {arg.split('=')[0]} .*the {field} field"):
        plan_run({**VALID, "extra_args": [arg]}, "manual__1", None, Settings())
    with pytest.raises(ParamValidationError, match="^Invalid input for param extra_args: "):
        _validate({"extra_args": [arg]})


def test_a_multi_gpu_plan_runs_the_trainer_data_parallel_on_every_gpu():
    plan = plan_run({**VALID, "compute_profile": "gpu-large", "gpus": 4}, "manual__1", None, Settings())
    assert plan.arguments[plan.arguments.index("--nproc-per-node") + 1] == "4"
    single = plan_run(VALID, "manual__1", None, Settings())
    assert "--nproc-per-node" not in single.arguments
