"""Why a training pod failed, and whether the task retries: the real PlatformPodOperator against kubesim.

Each test drives the provider's unmodified KubernetesPodOperator code (through the project's
wrapper) over HTTP. ``AirflowFailException`` is what fails a task without spending retries;
any other exception spends one.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field

import pendulum
import pytest
from airflow.sdk.exceptions import AirflowFailException

from mlops.trainer import exit_codes
from tests.harness.kubesim import KubeSim, ScriptedContainer

IMAGE = "registry.example.com/mlops/trainer:1"
S3_SECRET = {"AWS_ACCESS_KEY_ID": ("mlops-trainer-s3", "aws_access_key_id")}


@dataclass
class FakeTaskInstance:
    """The task-instance fields KubernetesPodOperator reads (pod labels) and writes (XCom)."""

    dag_id: str
    task_id: str = "train_model"
    map_index: int = -1
    try_number: int = 1
    xcoms: dict = field(default_factory=dict)

    def xcom_push(self, key: str, value) -> None:
        self.xcoms[key] = value


def make_operator(image: str = IMAGE, **kwargs):
    from airflow.sdk import DAG

    from mlops.training.operator import PlatformPodOperator

    dag_id = f"probe_{uuid.uuid4().hex[:8]}"
    with DAG(dag_id, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
        return PlatformPodOperator(task_id="train_model", image=image, **{"compute_profile": "cpu", **kwargs})


def run(op) -> BaseException | None:
    """Execute the operator as a task would; the exception it ends with (``None`` on success)."""
    context = {"ti": FakeTaskInstance(op.dag_id), "run_id": "manual__probe", "dag": op.dag, "task": op}
    try:
        op.execute(context)
    except Exception as exc:
        return exc
    return None


def not_retried(error: BaseException | None) -> str:
    assert isinstance(error, AirflowFailException), f"expected a failure without retry, got {error!r}"
    return str(error)


def retried(error: BaseException | None) -> str:
    assert error is not None, "expected a failure"
    assert not isinstance(error, AirflowFailException), f"expected a retry, got {error!r}"
    return str(error)


def pods(kube, namespace: str) -> list[dict]:
    return kube.list("Pod", namespace)


def no_pods_left(kube, namespace: str, timeout: float = 10) -> bool:
    """Deletion is graceful (SIGTERM, then the kubelet removes the pod): wait for it to finish."""
    deadline = time.monotonic() + timeout
    while pods(kube, namespace) and time.monotonic() < deadline:
        time.sleep(0.1)
    return pods(kube, namespace) == []


@pytest.fixture
def ns(kube, kube_conn, airflow_db) -> str:
    """A namespace with the trainer's S3 Secret, reached through the ``kubernetes_default`` connection."""
    kube.create(
        {
            "kind": "Secret",
            "metadata": {"name": "mlops-trainer-s3", "namespace": kube_conn},
            "stringData": {"aws_access_key_id": "mlops-dev"},
        }
    )
    return kube_conn


def wait_for_pod(kube, namespace: str, predicate, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pod in pods(kube, namespace):
            if predicate(pod):
                return pod
        time.sleep(0.1)
    raise AssertionError("no pod reached the expected state")


def in_background(op) -> tuple[threading.Thread, list]:
    result: list = []
    worker = threading.Thread(target=lambda: result.append(run(op)), daemon=True)
    worker.start()
    return worker, result


def running(pod: dict) -> bool:
    statuses = pod.get("status", {}).get("containerStatuses") or []
    return bool(statuses and "running" in statuses[0]["state"])


# -- bug 1: the scheduling timeout follows the settings ------------------------------------------------
@pytest.fixture
def gpu_cluster(tmp_path, monkeypatch, airflow_db):
    """A private cluster with only a CPU node (nodes are cluster-wide), reached through kubernetes_default."""
    private = KubeSim().start()
    private.create_namespace("ml")
    private.add_node("cpu-1", labels={"mlops.io/pool": "cpu"})
    config = private.write_kubeconfig(tmp_path / "kubeconfig", namespace="ml")
    conn = {"conn_type": "kubernetes", "extra": {"kube_config_path": config, "namespace": "ml"}}
    monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", json.dumps(conn))
    monkeypatch.setenv("MLOPS_TRAINING_NAMESPACE", "ml")
    private.register_image(IMAGE, ScriptedContainer(logs=["epoch 1"], run_seconds=0.3))
    yield private
    private.stop()


GPU_NODE = {
    "labels": {"mlops.io/pool": "gpu", "mlops.io/gpu-class": "small"},
    "allocatable": {"cpu": "16", "memory": "64Gi", "nvidia.com/gpu": "1"},
    "taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}],
}


def test_a_gpu_pool_that_does_not_scale_up_fails_after_the_configured_schedule_timeout(
    gpu_cluster, monkeypatch
):
    monkeypatch.setenv("MLOPS_POD_STARTUP_TIMEOUT_SECONDS", "3")
    op = make_operator(compute_profile="gpu-small")
    started = time.monotonic()
    worker, result = in_background(op)
    worker.join(40)  # the provider's own 120 s default would still be waiting
    assert not worker.is_alive(), "the pod waited past the configured 3 s scheduling timeout"
    assert time.monotonic() - started < 30
    message = retried(result[0])  # no GPU node yet: capacity, worth a retry
    assert "not scheduled within 3 s" in message and "0/1 nodes are available" in message
    assert no_pods_left(gpu_cluster, "ml")


def test_a_gpu_pool_scaling_up_within_the_timeout_runs_the_pod(gpu_cluster, monkeypatch):
    monkeypatch.setenv("MLOPS_POD_STARTUP_TIMEOUT_SECONDS", "20")
    op = make_operator(compute_profile="gpu-small")
    gpu_cluster.add_node_after(3.0, "gpu-1", **GPU_NODE)
    assert run(op) is None
    assert op.schedule_timeout_seconds == op.startup_timeout_seconds == 20


# -- bug 2: configuration errors at start-up are not retried ------------------------------------------
def test_a_missing_secret_fails_at_once_without_retry_naming_the_secret(kube, kube_conn, airflow_db):
    kube.register_image(IMAGE, ScriptedContainer(run_seconds=0.2))
    started = time.monotonic()
    message = not_retried(run(make_operator(secret_env=S3_SECRET)))
    assert time.monotonic() - started < 20  # not the 30 s startup timeout
    assert 'secret "mlops-trainer-s3" not found' in message and "CreateContainerConfigError" in message
    assert no_pods_left(kube, kube_conn)


def test_a_missing_secret_key_fails_without_retry_naming_the_key(kube, ns):
    kube.register_image(IMAGE, ScriptedContainer(run_seconds=0.2))
    secret_env = {"AWS_SECRET_ACCESS_KEY": ("mlops-trainer-s3", "aws_secret_access_key")}
    message = not_retried(run(make_operator(secret_env=secret_env)))
    assert f"couldn't find key aws_secret_access_key in Secret {ns}/mlops-trainer-s3" in message


MISSING_TAG = "registry.example.com/mlops/trainer:no-such-tag"


def test_a_tag_that_does_not_exist_fails_without_retry_naming_the_image(kube, ns):
    image = MISSING_TAG
    kube.register_image(image, ScriptedContainer(pull_error="ErrImagePull"))  # the registry: not found
    message = not_retried(run(make_operator(image=image, secret_env=S3_SECRET)))
    assert f'image "{image}"' in message and "not found" in message
    assert no_pods_left(kube, ns)


def test_an_invalid_image_name_fails_without_retry(kube, ns):
    message = not_retried(run(make_operator(image="registry.example.com/MLOps/Trainer:1")))
    assert "InvalidImageName" in message and "registry.example.com/MLOps/Trainer:1" in message


def test_a_registry_outage_is_retried(kube, ns, monkeypatch):
    monkeypatch.setenv("MLOPS_POD_STARTUP_TIMEOUT_SECONDS", "3")
    kube.register_image(
        IMAGE, ScriptedContainer(pull_error="ErrImagePull", pull_message="503 Service Unavailable")
    )
    message = retried(run(make_operator()))
    assert "503 Service Unavailable" in message
    assert no_pods_left(kube, ns)


def test_a_quota_refusal_names_the_quota_instead_of_a_lost_pod(kube, ns):
    kube.create(
        {
            "kind": "ResourceQuota",
            "metadata": {"name": "gpu-quota", "namespace": ns},
            "spec": {"hard": {"requests.nvidia.com/gpu": "0"}},
        }
    )
    message = retried(run(make_operator(compute_profile="gpu-small")))
    assert message.startswith("capacity failure: the namespace's ResourceQuota refused the pod (HTTP 403)")
    assert "exceeded quota: gpu-quota" in message and "disappeared" not in message
    assert pods(kube, ns) == []  # refused at admission: no pod was ever created


# -- bug 3: the pod's own verdict: disruptions, node loss, the trainer's exit codes, OOM ----------------
@pytest.mark.parametrize(
    ("code", "kind", "is_retried"),
    [
        (exit_codes.TRANSIENT_STORAGE, "transient storage", True),
        (exit_codes.CONFIGURATION, "configuration", False),
        (exit_codes.DATA, "data", False),
        (exit_codes.TRAINING_CODE, "training code", False),
    ],
)
def test_the_trainer_exit_code_decides_the_retry(kube, ns, code, kind, is_retried):
    kube.register_image(IMAGE, ScriptedContainer(logs=[f"trainer: error: {kind}"], exit_code=code))
    error = run(make_operator())
    message = retried(error) if is_retried else not_retried(error)
    assert f"exit code {code}" in message and kind in message


def test_an_oom_kill_is_not_retried_and_suggests_a_larger_profile_or_smaller_batch(kube, ns):
    kube.register_image(IMAGE, ScriptedContainer(logs=["allocating"], oom_killed=True))
    message = not_retried(run(make_operator(compute_profile="gpu-small")))
    assert "OOMKilled" in message and "larger compute_profile" in message and "smaller batch_size" in message


def test_a_node_reboot_is_retried(kube, ns):
    kube.register_image(IMAGE, ScriptedContainer(logs=["epoch 1"], run_seconds=30))
    op = make_operator()
    worker, result = in_background(op)
    pod = wait_for_pod(kube, ns, running)
    kube.reboot_node(ns, pod["metadata"]["name"])
    worker.join(30)
    message = retried(result[0])
    assert "ContainerStatusUnknown" in message and "exit code 137" in message


@pytest.mark.parametrize("how", ["preemption", "eviction"])
def test_preemption_and_api_eviction_are_retried(kube, ns, how):
    kube.register_image(IMAGE, ScriptedContainer(logs=["epoch 1"], run_seconds=30))
    op = make_operator()
    worker, result = in_background(op)
    pod = wait_for_pod(kube, ns, running)
    name = pod["metadata"]["name"]
    if how == "preemption":
        kube.preempt_pod(ns, name)
    else:
        from kubernetes import client

        core = client.CoreV1Api(kube.admin_api_client())
        core.create_namespaced_pod_eviction(name, ns, {"metadata": {"name": name, "namespace": ns}})
    worker.join(30)
    retried(result[0])
    assert no_pods_left(kube, ns)


def test_a_deadline_exceeded_pod_is_not_retried(kube, ns):
    kube.register_image(IMAGE, ScriptedContainer(logs=["epoch 1"], run_seconds=30))
    message = not_retried(run(make_operator(active_deadline_seconds=1)))
    assert "DeadlineExceeded" in message


def test_the_failure_names_phase_reason_exit_code_and_message_without_dumping_the_pod(kube, ns):
    kube.register_image(IMAGE, ScriptedContainer(logs=["Traceback: boom"], exit_code=1))
    error = run(make_operator())
    message = not_retried(error)
    assert "phase Failed" in message and "exit code 1" in message and "Traceback: boom" in message
    chain = []
    while error is not None:
        chain.append(str(error))
        error = error.__cause__ or error.__context__
    assert not any("remote_pod" in text or "'api_version'" in text for text in chain)
    assert sum(len(text) for text in chain) < 4000


# -- bug 4: only a Failed pod is kept ----------------------------------------------------------------
def test_keeping_failed_pods_keeps_a_failed_pod(kube, ns, monkeypatch):
    monkeypatch.setenv("MLOPS_KEEP_FAILED_PODS", "true")
    kube.register_image(IMAGE, ScriptedContainer(logs=["Traceback: boom"], exit_code=1))
    not_retried(run(make_operator()))
    assert [p["status"]["phase"] for p in pods(kube, ns)] == ["Failed"]


def test_keeping_failed_pods_deletes_a_pod_that_never_started(kube, ns, monkeypatch):
    monkeypatch.setenv("MLOPS_KEEP_FAILED_PODS", "true")
    kube.register_image(MISSING_TAG, ScriptedContainer(pull_error="ErrImagePull"))
    not_retried(run(make_operator(image=MISSING_TAG)))
    assert no_pods_left(kube, ns)  # a Pending pod would hold its node (and a GPU) for nothing


def test_keeping_failed_pods_deletes_a_pod_still_waiting_for_a_node(gpu_cluster, monkeypatch):
    monkeypatch.setenv("MLOPS_KEEP_FAILED_PODS", "true")
    monkeypatch.setenv("MLOPS_POD_STARTUP_TIMEOUT_SECONDS", "2")
    retried(run(make_operator(compute_profile="gpu-small")))
    # Kept, it would start when the pool scales up, beside the retry's pod and on its checkpoint.
    assert no_pods_left(gpu_cluster, "ml")


# -- bug 13: no usable cluster is a configuration error ---------------------------------------------
def test_a_missing_kube_config_fails_at_once_saying_how_to_fix_it(kube, ns, monkeypatch, tmp_path):
    conn = {"conn_type": "kubernetes", "extra": {"kube_config_path": str(tmp_path / "missing")}}
    monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", json.dumps(conn))
    message = not_retried(run(make_operator()))
    assert "Kubernetes configuration" in message and "kubernetes_default" in message


def test_an_unreachable_api_server_fails_at_once(ns, monkeypatch, tmp_path):
    config = tmp_path / "kubeconfig"
    config.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:9"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    conn = {"conn_type": "kubernetes", "extra": {"kube_config_path": str(config)}}
    monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", json.dumps(conn))
    started = time.monotonic()
    message = not_retried(run(make_operator()))
    assert "unreachable" in message and "http://127.0.0.1:9" in message
    assert time.monotonic() - started < 60


@pytest.mark.parametrize(
    ("status", "words"),
    [(401, "credentials were refused"), (403, "not allowed")],
)
def test_refused_credentials_or_permissions_fail_at_once(kube, ns, status, words):
    kube.faults.add(method="POST", path=rf"/namespaces/{ns}/pods$", status=status, times=None)
    message = not_retried(run(make_operator()))
    assert f"HTTP {status}" in message and words in message
