"""Every pod the project renders meets the Pod Security Standard its namespace enforces ("restricted" in
ml-training and ml-serving; the worker pod template in `airflow` meets it too): the training pod as
KubernetesPodOperator sends it, the model server's Deployment template, and the chart's worker pod
template from the values."""

from __future__ import annotations

import pendulum
import yaml
from kubernetes.client import ApiClient

from mlops.promotion.manifests import render
from mlops.promotion.manifests.render import ServingSpec
from tests.unit.deploy.chart import pod_template_skeleton, rendered_values
from tests.unit.deploy.conftest import FIXTURES, HELM_VALUES
from tests.unit.deploy.pod_security import restricted_violations


def test_the_training_pod_meets_restricted():
    from airflow.sdk import DAG

    from mlops.training.operator import PlatformPodOperator

    with DAG("psa_probe", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
        op = PlatformPodOperator(
            task_id="train_model", image="trainer:1", compute_profile="gpu-small", gpus=1
        )
    pod = ApiClient().sanitize_for_serialization(op.build_pod_request_obj(context=None, dry_run=True))
    assert restricted_violations(pod["spec"]) == []


def test_the_model_server_pods_meet_restricted():
    spec = ServingSpec("digits", "blue", "v1", "img:1", "s3://b/m", "ml-serving")
    assert restricted_violations(render.deployment(spec)["spec"]["template"]["spec"]) == []


def test_the_chart_worker_pod_template_meets_restricted():
    for overlay in ("dev", "staging", "prod"):
        values = rendered_values(HELM_VALUES / "values.yaml", HELM_VALUES / f"values-{overlay}.yaml")
        assert restricted_violations(pod_template_skeleton(values)["spec"]) == [], overlay


def test_the_check_rejects_a_privileged_root_pod_on_the_host_network():
    (pod,) = [d for d in yaml.safe_load_all((FIXTURES / "checkov" / "privileged-pod.yaml").read_text()) if d]
    problems = "\n".join(restricted_violations(pod["spec"]))
    for check in ("hostNamespaces", "privileged", "runAsNonRoot", "runAsUser", "allowPrivilegeEscalation"):
        assert check in problems, check
