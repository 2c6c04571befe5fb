"""Trigger-time validation of the training DAG's parameters, through the REST API and the official client."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import wait_for_dag

pytestmark = pytest.mark.e2e
DAG_ID = "mlops_training"


def _runs(api) -> list:
    import airflow_client.client as ac

    return ac.DagRunApi(api).get_dag_runs(DAG_ID).dag_runs


@pytest.mark.parametrize(
    ("conf", "field"),
    [
        ({"epochs": 0}, "epochs"),
        ({"learning_rate": 0}, "learning_rate"),
        ({"compute_profile": "gpu-huge"}, "compute_profile"),
        ({"gpus": 9}, "gpus"),
        ({"model_name": "Bad Name!"}, "model_name"),
        ({"image": "not an image"}, "image"),
        # Outside MLOPS_TRAINER_IMAGE_ALLOWLIST (here: the e2e trainer's repository) -- issue 13, bug 10.
        ({"image": "docker.io/attacker/miner:latest"}, "image"),
        ({"image": "registry.example.com/mlops/trainer-evil:e2e"}, "image"),
        # A typed field cannot be overridden through extra_args -- issue 13, bug 14.
        ({"extra_args": ["--epochs=500"]}, "extra_args"),
        ({"hyperparameters": {"epochs": 5}}, "hyperparameters"),
    ],
)
def test_invalid_conf_is_refused_with_400_naming_the_field_and_no_run_is_created(api, conf, field):
    import airflow_client.client as ac

    wait_for_dag(api, DAG_ID)
    before = len(_runs(api))
    with pytest.raises(ac.ApiException) as err:
        ac.DagRunApi(api).trigger_dag_run(DAG_ID, ac.TriggerDAGRunPostBody(logical_date=None, conf=conf))
    assert err.value.status == 400
    assert field in err.value.body
    assert len(_runs(api)) == before
