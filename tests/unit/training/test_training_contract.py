"""The training DAG's parameter contract, run plan, and the pod the wrapper renders."""

from __future__ import annotations

import copy

import pendulum
import pytest

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
    with pytest.raises(Exception, match=field):
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
def test_image_references_are_accepted(image):
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
    explicit = plan_run({**VALID, "image": "other/trainer:1"}, "r", None, Settings(trainer_image="x/y:1"))
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
