"""The edges of the training form's contract, as the UI and the REST API enforce it at trigger time:
the defaults a run gets, the first value past each bound (refused naming the field) and the bound itself
(accepted), values of the wrong JSON type, the size limits of lists and objects, and which image
repository the allow-list falls back to when it is left empty."""

from __future__ import annotations

import copy

import pytest
from airflow.sdk.exceptions import ParamValidationError

from mlops.settings import Settings
from mlops.training.params import DEFAULT_IMAGE, image_allowlist, training_params
from mlops.training.plan import PlanRefused, plan_run


def _params():
    from airflow.sdk.definitions.param import ParamsDict

    return ParamsDict(copy.deepcopy(training_params()))


def _validate(conf: dict) -> dict:
    params = _params()
    params.update(conf)
    return params.validate()


def _refused(field: str, value) -> None:
    with pytest.raises(ParamValidationError, match=rf"^Invalid input for param {field}: "):
        _validate({field: value})


def test_a_run_triggered_without_changes_gets_these_defaults():
    assert _validate({}) == {
        "model_name": "digits-mlp",
        "dataset_uri": "builtin://sklearn/digits",
        "epochs": 10,
        "learning_rate": 0.001,
        "batch_size": 64,
        "compute_profile": "gpu-small",
        "gpus": None,
        "image": DEFAULT_IMAGE,
        "timeout_minutes": 240,
        "gpu_wait_minutes": 360,
        "extra_args": [],
        "seed": 0,
        "hyperparameters": {},
        "labels": {},
        "promote": None,
        "retry_on_training_failure": False,
    }


BOUNDS = [
    # field, the last accepted value(s), the first refused value(s)
    ("epochs", [1, 1000], [0, 1001]),
    ("learning_rate", [1e-9, 10], [0, 10.000001]),
    ("batch_size", [1, 65536], [0, 65537]),
    ("gpus", [None, 0, 8], [-1, 9]),
    ("timeout_minutes", [1, 10080], [0, 10081]),
    ("gpu_wait_minutes", [0, 10080], [-1, 10081]),
    ("seed", [0, 2**32 - 1], [-1, 2**32]),
]


@pytest.mark.parametrize(("field", "accepted", "refused"), BOUNDS, ids=[b[0] for b in BOUNDS])
def test_each_bound_is_accepted_and_the_next_value_is_refused_naming_the_field(field, accepted, refused):
    for value in accepted:
        assert _validate({field: value})[field] == value
    for value in refused:
        _refused(field, value)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("model_name", 123),
        ("dataset_uri", 123),
        ("epochs", "10"),
        ("epochs", 2.5),
        ("learning_rate", "0.01"),
        ("batch_size", "64"),
        ("compute_profile", 1),
        ("gpus", "2"),
        ("image", 123),
        ("timeout_minutes", "30"),
        ("gpu_wait_minutes", "30"),
        ("extra_args", "--warmup-steps=3"),
        ("extra_args", [5]),
        ("seed", "7"),
        ("labels", "team=vision"),
        ("labels", {"team": 5}),
        ("retry_on_training_failure", "yes"),
        ("retry_on_training_failure", None),
    ],
)
def test_a_value_of_the_wrong_type_is_refused_naming_the_field(field, value):
    """A pattern or a bound only applies to its own JSON type: without the type, "10" or 123 would pass."""
    _refused(field, value)


@pytest.mark.parametrize(
    ("field", "limit", "item"),
    [
        ("extra_args", 32, lambda i: f"--flag-{i}=1"),
        ("hyperparameters", 64, lambda i: (f"param_{i}", i)),
        ("labels", 16, lambda i: (f"label-{i}", "x")),
    ],
)
def test_lists_and_objects_are_capped_naming_the_field(field, limit, item):
    def value(n):
        items = [item(i) for i in range(n)]
        return items if field == "extra_args" else dict(items)

    assert _validate({field: value(limit)})[field] == value(limit)
    _refused(field, value(limit + 1))


def test_hyperparameter_values_are_numbers_strings_or_booleans():
    accepted = {"hidden_units": 64, "weight_decay": 0.01, "optimizer": "adam", "shuffle": True}
    assert _validate({"hyperparameters": accepted})["hyperparameters"] == accepted
    _refused("hyperparameters", {"layers": [64, 64]})


# -- the image allow-list's fallback: the repository of the deployment's trainer image ---------------
DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("trainer_image", "repository"),
    [
        ("ghcr.io/mlops-airflow/trainer:0.1.0", "ghcr.io/mlops-airflow/trainer"),
        ("registry:5000/team/trainer:1.0", "registry:5000/team/trainer"),
        (f"registry:5000/team/trainer:1.0@{DIGEST}", "registry:5000/team/trainer"),
        (f"registry:5000/team/trainer@{DIGEST}", "registry:5000/team/trainer"),
        ("localhost:5000/trainer", "localhost:5000/trainer"),
        ("trainer:1.0", "trainer"),
        ("trainer", "trainer"),
    ],
)
def test_an_empty_allowlist_allows_the_trainer_images_repository(trainer_image, repository):
    assert image_allowlist(Settings(trainer_image=trainer_image)) == [repository]


def test_an_empty_allowlist_accepts_other_tags_of_a_registry_with_a_port_and_nothing_else():
    settings = Settings(trainer_image="registry:5000/team/trainer:1.0")
    valid = {
        "model_name": "digits-mlp",
        "dataset_uri": "builtin://sklearn/digits",
        "epochs": 3,
        "learning_rate": 0.01,
        "batch_size": 32,
        "compute_profile": "gpu-small",
        "timeout_minutes": 30,
    }
    plan = plan_run({**valid, "image": f"registry:5000/team/trainer@{DIGEST}"}, "r", None, settings)
    assert plan.image == f"registry:5000/team/trainer@{DIGEST}"
    with pytest.raises(PlanRefused, match=r"^image: 'registry:5000/team/other:1\.0' is not from an allowed"):
        plan_run({**valid, "image": "registry:5000/team/other:1.0"}, "r", None, settings)


def test_the_form_accepts_the_allowlisted_entries_it_names(monkeypatch):
    monkeypatch.setenv("MLOPS_TRAINER_IMAGE_ALLOWLIST", "")
    monkeypatch.setenv("MLOPS_TRAINER_IMAGE", "localhost:5000/trainer:1.0")
    assert _validate({"image": "localhost:5000/trainer:2.0"})["image"] == "localhost:5000/trainer:2.0"
    _refused("image", "localhost:5000/other:1.0")
