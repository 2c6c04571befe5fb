"""S3 credentials of the platform's pods from their service account alone (IRSA), or from a Secret.

On EKS a pod whose service account carries ``eks.amazonaws.com/role-arn`` gets a web-identity token and
AWS_ROLE_ARN/AWS_WEB_IDENTITY_TOKEN_FILE from the pod identity webhook; static keys in the environment
would win over it (the AWS SDKs' credential chain reads environment keys first). So with the Secret
setting empty a pod must carry no static keys at all and run as its IRSA-annotated service account.
"""

from __future__ import annotations

import sys

import pytest

from mlops.promotion.manifests import render
from mlops.promotion.manifests.render import ServingSpec
from tests.harness.kubesim import LocalProcess

REAL = "registry.example.com/mlops/trainer:irsa"
STATIC_KEYS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}


def _env_names(pod: dict) -> set[str]:
    return {e["name"] for c in pod["spec"]["containers"] for e in c.get("env") or []}


@pytest.fixture
def training_dag():
    from airflow.dag_processing.dagbag import DagBag

    from tests.conftest import REPO_ROOT

    with pytest.MonkeyPatch.context() as mp:  # the image allow-list is part of the parsed form
        mp.setenv("MLOPS_TRAINER_IMAGE_ALLOWLIST", "registry.example.com/mlops/")
        return DagBag(dag_folder=str(REPO_ROOT / "dags" / "mlops_training.py")).get_dag("mlops_training")


def test_training_with_an_empty_secret_setting_runs_on_its_service_accounts_role(
    training_dag, airflow_db, kube, kube_conn_as_worker, s3_conn, s3_client, alert_conns, monkeypatch
):
    # No mlops-trainer-s3 Secret exists in the namespace: IRSA only.
    kube_conn = kube_conn_as_worker
    bucket = f"artifacts-{kube_conn}"
    s3_client.create_bucket(Bucket=bucket)
    monkeypatch.setenv("MLOPS_ARTIFACTS_BUCKET", bucket)
    monkeypatch.setenv("MLOPS_TRAINER_IMAGE_ALLOWLIST", "registry.example.com/mlops/")  # checked again at run
    monkeypatch.setenv("MLOPS_TRAINER_S3_ENDPOINT", s3_conn)
    monkeypatch.setenv("MLOPS_TRAINER_S3_SECRET", "")
    monkeypatch.setenv("MLOPS_TRAINING_BUDGET_POLL_SECONDS", "0.5")  # dag.test() runs tasks one at a time
    # The local process stands for the pod: its ambient credentials stand for the web identity.
    kube.register_image(REAL, LocalProcess(argv=[sys.executable, "-m", "mlops.trainer"]))

    run = training_dag.test(
        run_conf={"model_name": "digits-irsa", "epochs": 1, "compute_profile": "cpu", "image": REAL}
    )

    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["train_model"] == "success", states
    (pod,) = [r.body for r in kube.requests_matching("POST", rf"/namespaces/{kube_conn}/pods$")]
    assert not STATIC_KEYS & _env_names(pod), "static keys would win over the web identity"
    assert pod["spec"]["serviceAccountName"] == "mlops-trainer"


def _deployment(**kwargs) -> dict:
    spec = ServingSpec("digits", "blue", "v1", "img:1", "s3://b/m", "ml-serving", **kwargs)
    return render.deployment(spec)


def test_serving_pods_run_as_the_irsa_annotated_service_account_without_static_keys(monkeypatch):
    from mlops.promotion.tasks import serving_spec

    monkeypatch.delenv("MLOPS_MODEL_SERVER_S3_SECRET", raising=False)
    request = {"model": "digits", "version": "v1", "artifact_uri": "s3://b/m", "holder": "h"}
    pod = render.deployment(serving_spec(request, "blue", "ml-serving"))["spec"]["template"]
    assert pod["spec"]["serviceAccountName"] == "mlops-model-server"
    assert not STATIC_KEYS & _env_names(pod)


def test_serving_pods_can_still_take_their_keys_from_a_secret():
    pod = _deployment(s3_secret="mlops-model-server-s3", service_account="mlops-model-server")
    template = pod["spec"]["template"]
    refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for c in template["spec"]["containers"]
        for e in c.get("env") or []
        if "valueFrom" in e
    }
    assert refs["AWS_ACCESS_KEY_ID"] == {"name": "mlops-model-server-s3", "key": "aws_access_key_id"}
    assert template["spec"]["serviceAccountName"] == "mlops-model-server"
