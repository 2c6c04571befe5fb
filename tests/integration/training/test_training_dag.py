"""The training DAG run by Airflow (`dag.test()`) against the simulated Kubernetes API and moto S3.

The pods go through the provider's unmodified KubernetesPodOperator over real HTTP; the
trainer either runs for real as a local process (LocalProcess) or is a scripted container.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import types
from datetime import timedelta

import pytest

from tests.harness.kubesim import LocalProcess, ScriptedContainer

DAG_ID = "mlops_training"
SCRIPTED = "registry.example.com/mlops/trainer:scripted"
REAL = "registry.example.com/mlops/trainer:real"


@pytest.fixture(scope="module")
def training_dag():
    from airflow.dag_processing.dagbag import DagBag

    from tests.conftest import REPO_ROOT

    # The test images' registry is allowed when the DAG is parsed (the form) and when runs are planned.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLOPS_TRAINER_IMAGE_ALLOWLIST", "registry.example.com/mlops/")
        dag = DagBag(dag_folder=str(REPO_ROOT / "dags" / "mlops_training.py")).get_dag(DAG_ID)
        mp.setenv("MLOPS_TRAINING_BUDGET_POLL_SECONDS", "0.5")  # dag.test() runs tasks one at a time
        yield dag


@pytest.fixture
def cluster(airflow_db, kube, kube_conn, s3_conn, s3_client, alert_conns, monkeypatch):
    """A namespace with the trainer's S3 Secret, and the artifacts bucket on the S3 server."""
    kube.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "mlops-trainer-s3", "namespace": kube_conn},
            "stringData": {"aws_access_key_id": "mlops-dev", "aws_secret_access_key": "mlops-dev-secret"},
        }
    )
    bucket = f"artifacts-{kube_conn}"
    s3_client.create_bucket(Bucket=bucket)
    monkeypatch.setenv("MLOPS_ARTIFACTS_BUCKET", bucket)
    monkeypatch.setenv("MLOPS_TRAINER_S3_ENDPOINT", s3_conn)
    return {"namespace": kube_conn, "bucket": bucket}


def _run(dag, conf: dict, retry_delay: float = 0.5):
    train = dag.get_task("train_model")
    train.retry_delay = timedelta(seconds=retry_delay)
    train.retry_exponential_backoff = False
    from mlops.training.params import training_params

    # dag.test() keeps the previous run's conf in the DAG's params: start every run from the defaults.
    defaults = {name: param.value for name, param in training_params().items()}
    dr = dag.test(run_conf={**defaults, **conf})
    return dr, {ti.task_id: ti for ti in dr.get_task_instances()}


def _pods_posted(kube, namespace: str) -> list[dict]:
    return [r.body for r in kube.requests_matching("POST", rf"/namespaces/{namespace}/pods$")]


def test_pod_success_streams_logs_into_the_task_log_registers_the_candidate_and_emits_the_asset(
    training_dag, cluster, kube, s3_client, capfd
):
    kube.register_image(REAL, LocalProcess(argv=[sys.executable, "-m", "mlops.trainer"]))
    dr, tis = _run(
        training_dag,
        {
            "model_name": "digits-int",
            "epochs": 2,
            "compute_profile": "cpu",
            "image": REAL,
            "batch_size": 64,
            "learning_rate": 0.01,
            "labels": {"team": "vision"},
        },
    )

    assert dr.state == "success", {k: t.state for k, t in tis.items()}
    out = capfd.readouterr()
    assert "epoch" in (out.out + out.err).lower()  # trainer lines streamed into the task log
    plan = tis["train_model"].xcom_pull(task_ids="train_model", key="plan")
    entry = json.loads(
        s3_client.get_object(
            Bucket=cluster["bucket"], Key=f"registry/digits-int/versions/{plan['model_version']}.json"
        )["Body"].read()
    )
    assert entry["status"] == "candidate"
    assert entry["lineage"]["run_id"] == dr.run_id and entry["lineage"]["image"] == REAL
    # The image that really ran, from the finished pod's containerStatuses[].imageID.
    from tests.harness.kubesim.kubelet import image_id

    assert entry["lineage"]["image_id"] == image_id(REAL)
    assert entry["lineage"]["image_digest"] == image_id(REAL).split("@", 1)[1]
    assert entry["lineage"]["promote"] is False  # a manual run does not promote unless asked
    assert entry["lineage"]["seed"] == 0 and entry["lineage"]["labels"] == {"team": "vision"}

    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session

    with create_session() as session:
        events = session.query(AssetEvent).filter(AssetEvent.source_run_id == dr.run_id).all()
        assert [e.extra["version"] for e in events] == [plan["model_version"]]
        # The promotion DAG reads this field: a candidate that did not ask is not promoted.
        assert [e.extra["promote"] for e in events] == [False]
    # No pod is left behind once the task is done.
    assert kube.list("Pod", cluster["namespace"]) == []


def test_training_code_failure_fails_the_task_without_spending_retries(training_dag, cluster, kube):
    kube.register_image(SCRIPTED, ScriptedContainer(logs=["loading data", "Traceback: boom"], exit_code=3))
    dr, tis = _run(training_dag, {"model_name": "digits-fail", "compute_profile": "cpu", "image": SCRIPTED})

    assert dr.state == "failed"
    assert tis["train_model"].state == "failed"
    assert tis["train_model"].try_number == 1
    assert len(_pods_posted(kube, cluster["namespace"])) == 1
    assert kube.list("Pod", cluster["namespace"]) == []


def test_training_failure_is_retried_when_the_run_asks_for_it(training_dag, cluster, kube):
    kube.register_image(SCRIPTED, ScriptedContainer(logs=["flaky"], exit_code=1))
    dr, tis = _run(
        training_dag,
        {
            "model_name": "digits-flaky",
            "compute_profile": "cpu",
            "image": SCRIPTED,
            "retry_on_training_failure": True,
        },
    )
    assert dr.state == "failed"
    assert tis["train_model"].try_number == 4  # 1 + 3 retries
    assert len(_pods_posted(kube, cluster["namespace"])) == 4


def test_a_503_on_the_first_pod_read_is_survived(training_dag, cluster, kube):
    kube.register_image(SCRIPTED, ScriptedContainer(logs=["ok"], exit_code=0))
    kube.faults.add(
        method="GET", path=rf"/namespaces/{cluster['namespace']}/pods/[^/]+$", status=503, times=1
    )
    dr, tis = _run(training_dag, {"model_name": "digits-503", "compute_profile": "cpu", "image": SCRIPTED})
    # The pod ran to success despite the 503; registration then fails: a scripted trainer writes no metrics.
    assert tis["train_model"].state == "success"
    assert any(r.status == 503 for r in kube.requests)
    assert tis["register_candidate"].state == "failed"
    assert tis["register_candidate"].try_number == 1  # a missing metrics.json is not retried


def test_eviction_mid_run_retries_and_resumes_from_the_checkpoint(training_dag, cluster, kube, capfd):
    kube.register_image(REAL, LocalProcess(argv=[sys.executable, "-m", "mlops.trainer"]))
    ns = cluster["namespace"]

    def evict_after_first_checkpoint():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for pod in kube.list("Pod", ns):
                if pod.get("status", {}).get("phase") == "Running":
                    logs = "\n".join(kube.logs(ns, pod["metadata"]["name"]))
                    if "checkpoint s3://" in logs:
                        kube.evict_pod(ns, pod["metadata"]["name"], message="node drained")
                        return
            time.sleep(0.1)

    evictor = threading.Thread(target=evict_after_first_checkpoint, daemon=True)
    evictor.start()
    dr, tis = _run(
        training_dag,
        {
            "model_name": "digits-evict",
            "epochs": 6,
            "compute_profile": "gpu-spot",
            "image": REAL,
            "extra_args": ["--checkpoint-every=1"],
        },
    )
    evictor.join(timeout=5)

    assert dr.state == "success", {k: t.state for k, t in tis.items()}
    assert tis["train_model"].try_number == 2
    assert len(_pods_posted(kube, ns)) == 2
    out = capfd.readouterr()
    assert "resumed from epoch" in (out.out + out.err).lower()


def test_killing_the_task_deletes_its_pod(cluster, kube):
    """What Airflow calls when a task is marked failed, cleared or times out: on_kill deletes the pod."""
    import pendulum
    from airflow.sdk import DAG

    from mlops.training.operator import PlatformPodOperator

    ns = cluster["namespace"]
    kube.register_image(SCRIPTED, ScriptedContainer(logs=["training ..."], run_seconds=60))
    with DAG("kill_probe", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
        op = PlatformPodOperator(task_id="train_model", image=SCRIPTED, compute_profile="gpu-small")
    # Stand-in for the runtime task instance: only the fields KPO reads for pod labels.
    ti = types.SimpleNamespace(dag_id="kill_probe", task_id="train_model", map_index=-1, try_number=1)
    context = {"ti": ti, "run_id": "manual__kill", "dag": op.dag, "task": op}
    errors: list[BaseException] = []

    def run():
        try:
            op.execute(context)
        except BaseException as exc:  # the killed task's execute ends with an error
            errors.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(
        p.get("status", {}).get("phase") == "Running" for p in kube.list("Pod", ns)
    ):
        time.sleep(0.1)
    assert kube.list("Pod", ns), "the pod never started"
    op.on_kill()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and kube.list("Pod", ns):
        time.sleep(0.1)
    assert kube.list("Pod", ns) == []
    assert kube.requests_matching("DELETE", rf"/namespaces/{ns}/pods/")


def test_a_timed_out_task_deletes_its_pod(training_dag, cluster, kube):
    ns = cluster["namespace"]
    kube.register_image(SCRIPTED, ScriptedContainer(logs=["training ..."], run_seconds=120))
    train = training_dag.get_task("train_model")
    original = train.execution_timeout
    train.execution_timeout = timedelta(seconds=4)
    train.retries = 0
    try:
        dr, tis = _run(
            training_dag, {"model_name": "digits-timeout", "compute_profile": "cpu", "image": SCRIPTED}
        )
    finally:
        train.execution_timeout, train.retries = original, 3
    assert tis["train_model"].state == "failed"
    assert len(_pods_posted(kube, ns)) == 1
    assert kube.list("Pod", ns) == []


def test_a_gpu_count_that_does_not_fit_the_profile_fails_before_any_pod_without_retries_or_a_page(
    training_dag, cluster, kube, slack, pagerduty
):
    dr, tis = _run(training_dag, {"model_name": "digits-gpus", "compute_profile": "cpu", "gpus": 2})
    assert tis["train_model"].state == "failed"
    assert tis["train_model"].try_number == 1
    assert _pods_posted(kube, cluster["namespace"]) == []
    # A user's mistake: the person who triggered it hears about it on Slack; nobody is paged.
    (message,) = slack.bodies()
    assert "refused" in message["text"].lower() and "gpus: profile 'cpu' allows 0..0" in str(message)
    assert pagerduty.bodies("/v2/enqueue") == []


def test_a_dataset_the_trainer_does_not_have_is_refused_before_any_pod(
    training_dag, cluster, kube, pagerduty
):
    """builtin://anything passes the form's pattern; the plan asks the trainer's own parser."""
    dr, tis = _run(
        training_dag,
        {"model_name": "digits-args", "compute_profile": "cpu", "dataset_uri": "builtin://anything"},
    )
    assert tis["train_model"].state == "failed" and tis["train_model"].try_number == 1
    assert _pods_posted(kube, cluster["namespace"]) == []
    assert pagerduty.bodies("/v2/enqueue") == []


def test_a_full_gpu_quota_waits_deferred_without_retries_or_pages_until_gpus_come_free(
    training_dag, cluster, kube, pagerduty, monkeypatch, capfd
):
    """Two runs hold the namespace's GPUs; the next waits (deferred) instead of failing and paging."""
    ns = cluster["namespace"]
    monkeypatch.setenv("MLOPS_TRAINING_GPU_WAIT_POLL_SECONDS", "1")
    kube.create(
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "mlops-training-gpus", "namespace": ns},
            "spec": {"hard": {"requests.nvidia.com/gpu": "2"}},
        }
    )
    holder = "registry.example.com/mlops/holder:1"
    kube.register_image(holder, ScriptedContainer(logs=["holding the GPUs"], run_seconds=120))
    kube.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "other-run", "namespace": ns},
            "spec": {
                "restartPolicy": "Never",
                "containers": [
                    {
                        "name": "base",
                        "image": holder,
                        "resources": {"requests": {"nvidia.com/gpu": "2"}, "limits": {"nvidia.com/gpu": "2"}},
                    }
                ],
            },
        }
    )
    kube.register_image(SCRIPTED, ScriptedContainer(logs=["trained"], exit_code=0))

    def finish_the_other_run_once_we_have_looked_twice():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if len(kube.requests_matching("GET", rf"/namespaces/{ns}/resourcequotas")) >= 2:
                kube.delete("Pod", ns, "other-run")
                return
            time.sleep(0.1)

    finisher = threading.Thread(target=finish_the_other_run_once_we_have_looked_twice, daemon=True)
    finisher.start()
    dr, tis = _run(
        training_dag,
        {"model_name": "digits-wait", "compute_profile": "gpu-small", "gpus": 1, "image": SCRIPTED},
    )
    finisher.join(timeout=5)

    assert tis["train_model"].state == "success"
    assert tis["train_model"].try_number == 1  # waiting spent no retry
    assert len(_pods_posted(kube, ns)) == 1  # our pod, created only once the GPUs were free
    log = "".join(capfd.readouterr())
    assert "waiting for 1 GPU(s): quota mlops-training-gpus" in log
    assert "other-run (2)" in log  # the log says who holds the GPUs
    # (A scripted trainer writes no metrics.json, so registration fails and pages: not this test's point.)
    assert [e for e in pagerduty.bodies("/v2/enqueue") if "train_model" in e["dedup_key"]] == []


def test_a_quota_403_at_pod_create_waits_instead_of_burning_retries(
    training_dag, cluster, kube, pagerduty, monkeypatch, capfd
):
    """Another run took the GPUs between our look at the quota and our create: the API refuses the
    pod with 403 "exceeded quota" (no pod exists). The task waits and creates it later, on try 1."""
    ns = cluster["namespace"]
    monkeypatch.setenv("MLOPS_TRAINING_GPU_WAIT_POLL_SECONDS", "1")
    refusal = {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": 'pods "train-model" is forbidden: exceeded quota: mlops-training-gpus, requested: '
        "requests.nvidia.com/gpu=1, used: requests.nvidia.com/gpu=2, limited: requests.nvidia.com/gpu=2",
        "reason": "Forbidden",
        "code": 403,
    }
    kube.faults.add(method="POST", path=rf"/namespaces/{ns}/pods$", status=403, times=2, body=refusal)
    kube.register_image(SCRIPTED, ScriptedContainer(logs=["trained"], exit_code=0))

    dr, tis = _run(
        training_dag, {"model_name": "digits-race", "compute_profile": "gpu-small", "image": SCRIPTED}
    )

    assert tis["train_model"].state == "success"
    assert tis["train_model"].try_number == 1  # the two refusals spent no retry
    posts = kube.requests_matching("POST", rf"/namespaces/{ns}/pods$")
    assert [r.status for r in posts] == [403, 403, 201]
    assert "waiting for 1 GPU(s): the pod was refused" in "".join(capfd.readouterr())
    assert [e for e in pagerduty.bodies("/v2/enqueue") if "train_model" in e["dedup_key"]] == []


def test_a_run_that_waits_past_its_gpu_budget_fails_naming_the_quota(
    training_dag, cluster, kube, monkeypatch
):
    ns = cluster["namespace"]
    kube.create(
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "tiny", "namespace": ns},
            "spec": {"hard": {"requests.nvidia.com/gpu": "0"}},
        }
    )
    dr, tis = _run(
        training_dag,
        {
            "model_name": "digits-nogpu",
            "compute_profile": "gpu-small",
            "image": SCRIPTED,
            "gpu_wait_minutes": 0,
        },
    )
    assert tis["train_model"].state == "failed" and tis["train_model"].try_number == 1
    assert _pods_posted(kube, ns) == []
