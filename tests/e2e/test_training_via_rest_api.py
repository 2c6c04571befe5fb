"""The training DAG driven the way another system would: the REST API, through the official client."""

from __future__ import annotations

import json
import sys
import time

import pytest

from tests.e2e.conftest import E2E_NAMESPACE, wait_for_dag

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


def test_rest_trigger_runs_a_training_pod_shaped_by_the_conf_and_registers_the_candidate(
    api, kube, s3_client
):
    import airflow_client.client as ac

    from tests.harness.kubesim import LocalProcess

    wait_for_dag(api, DAG_ID)
    kube.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "mlops-trainer-s3", "namespace": E2E_NAMESPACE},
            "stringData": {"aws_access_key_id": "mlops-dev", "aws_secret_access_key": "mlops-dev-secret"},
        }
    )
    image = "registry.example.com/mlops/trainer:e2e"
    kube.register_image(image, LocalProcess(argv=[sys.executable, "-m", "mlops.trainer"]))
    conf = {
        "model_name": "digits-e2e",
        "epochs": 3,
        "batch_size": 32,
        "learning_rate": 0.01,
        "compute_profile": "gpu-small",
        "gpus": 2,
        "image": image,
        "extra_args": ["--seed=7"],
    }

    started = time.monotonic()
    run = ac.DagRunApi(api).trigger_dag_run(DAG_ID, ac.TriggerDAGRunPostBody(logical_date=None, conf=conf))
    pod_post = None
    while pod_post is None and time.monotonic() - started < 60:
        posts = kube.requests_matching("POST", rf"/namespaces/{E2E_NAMESPACE}/pods$")
        # Unpausing also starts the nightly schedule's run: pick this trigger's pod by its RUN_ID.
        pod_post = next(
            (
                p
                for p in posts
                if {"name": "RUN_ID", "value": run.dag_run_id} in p.body["spec"]["containers"][0]["env"]
            ),
            None,
        )
        time.sleep(0.05)
    latency = time.monotonic() - started
    assert pod_post is not None, "no pod reached the Kubernetes API"
    print(f"\n[figure] REST trigger -> pod POST: {latency:.2f} s")

    pod = pod_post.body
    container = pod["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MODEL_NAME"] == "digits-e2e" and env["RUN_ID"] == run.dag_run_id
    assert env["ARTIFACT_URI"].startswith("s3://mlops-artifacts/models/digits-e2e/versions/")
    assert container["args"][:6] == ["--epochs", "3", "--learning-rate", "0.01", "--batch-size", "32"]
    assert "--seed=7" in container["args"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert container["resources"]["requests"]["nvidia.com/gpu"] == "2"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    secret_refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"] if "valueFrom" in e
    }
    assert secret_refs == {
        "AWS_ACCESS_KEY_ID": "mlops-trainer-s3",
        "AWS_SECRET_ACCESS_KEY": "mlops-trainer-s3",
    }

    deadline = time.monotonic() + 180
    state = None
    while time.monotonic() < deadline:
        state = ac.DagRunApi(api).get_dag_run(DAG_ID, run.dag_run_id).state
        if state in ("success", "failed"):
            break
        time.sleep(1)
    assert state == "success"
    version = env["MODEL_VERSION"]
    entry = json.loads(
        s3_client.get_object(Bucket="mlops-artifacts", Key=f"registry/digits-e2e/versions/{version}.json")[
            "Body"
        ].read()
    )
    assert entry["status"] == "candidate" and entry["lineage"]["run_id"] == run.dag_run_id
