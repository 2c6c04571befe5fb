"""The training pod's shape for every compute profile and GPU count: resources per GPU, QoS, /dev/shm,
and the grace period that lets the trainer checkpoint on SIGTERM."""

from __future__ import annotations

import pendulum
import pytest

from mlops.training.profiles import PROFILES

VALID = {
    "model_name": "digits-mlp",
    "dataset_uri": "builtin://sklearn/digits",
    "epochs": 3,
    "learning_rate": 0.01,
    "batch_size": 840,  # divisible by every GPU count 1-8
    "compute_profile": "gpu-small",
    "gpus": None,
    "timeout_minutes": 30,
    "extra_args": [],
}
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def _bytes(quantity: str) -> int:
    for suffix, factor in _BINARY.items():
        if quantity.endswith(suffix):
            return int(quantity[: -len(suffix)]) * factor
    return int(quantity)


def qos_class(pod: dict) -> str:
    """The QoS class Kubernetes gives ``pod`` (pkg/apis/core/v1/helper/qos/qos.go, GetPodQOS):
    Guaranteed when every container sets CPU and memory limits and its requests equal them;
    BestEffort when no container sets any; Burstable otherwise."""
    containers = pod["spec"]["containers"] + pod["spec"].get("initContainers", [])
    guaranteed, any_set = True, False
    for c in containers:
        res = c.get("resources") or {}
        requests, limits = res.get("requests") or {}, res.get("limits") or {}
        for name in ("cpu", "memory"):
            any_set = any_set or name in requests or name in limits
            if name not in limits or requests.get(name, limits[name]) != limits[name]:
                guaranteed = False
    if guaranteed:
        return "Guaranteed"
    return "Burstable" if any_set else "BestEffort"


def _pod(monkeypatch, profile: str, gpus: int | None) -> dict:
    from airflow.sdk import DAG
    from kubernetes.client import ApiClient

    from mlops.training.operator import TrainingPodOperator

    class _TI:
        def xcom_push(self, key, value):
            pass

    with DAG("shape_probe", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
        op = TrainingPodOperator(task_id="train_model")
    params = {**VALID, "compute_profile": profile, "gpus": gpus}
    op.prepare({"params": params, "run_id": "manual__shape", "logical_date": None, "ti": _TI()})
    return ApiClient().sanitize_for_serialization(op.build_pod_request_obj(dry_run=True))


_CASES = [(name, n) for name, p in PROFILES.items() for n in range(p.min_gpus, p.max_gpus + 1)]


@pytest.mark.parametrize(("profile", "gpus"), _CASES)
def test_cpu_and_memory_scale_with_gpus_and_the_pod_is_guaranteed_qos(monkeypatch, profile, gpus):
    import kubernetes_validate

    pod = _pod(monkeypatch, profile, gpus)
    kubernetes_validate.validate(pod, "1.30.0", strict=True)
    resources = pod["spec"]["containers"][0]["resources"]
    p = PROFILES[profile]
    scale = max(gpus, 1)
    assert resources["requests"] == resources["limits"]
    assert int(resources["limits"]["cpu"]) == int(p.cpu) * scale
    assert _bytes(resources["limits"]["memory"]) == _bytes(p.memory) * scale
    assert resources["limits"].get("nvidia.com/gpu", "0") == str(gpus)
    assert qos_class(pod) == "Guaranteed"


def test_a_one_gpu_large_run_asks_for_an_eighth_of_the_node_not_all_of_it(monkeypatch):
    limits = _pod(monkeypatch, "gpu-large", 1)["spec"]["containers"][0]["resources"]["limits"]
    assert (limits["cpu"], limits["memory"], limits["nvidia.com/gpu"]) == ("4", "30Gi", "1")
    full = _pod(monkeypatch, "gpu-large", 8)["spec"]["containers"][0]["resources"]["limits"]
    assert (full["cpu"], full["memory"]) == ("32", "240Gi")


@pytest.mark.parametrize(
    ("profile", "gpus", "shm"), [("cpu", 0, "1Gi"), ("gpu-small", 2, "8Gi"), ("gpu-large", 8, "64Gi")]
)
def test_dev_shm_is_memory_backed_and_sized_by_the_profile_within_the_memory_limit(
    monkeypatch, profile, gpus, shm
):
    pod = _pod(monkeypatch, profile, gpus)
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in pod["spec"]["containers"][0]["volumeMounts"]}
    assert volumes[mounts["/dev/shm"]]["emptyDir"] == {"medium": "Memory", "sizeLimit": shm}
    # tmpfs pages count against the container's memory limit: /dev/shm must fit inside it.
    memory = pod["spec"]["containers"][0]["resources"]["limits"]["memory"]
    assert _bytes(shm) < _bytes(memory)


def test_the_grace_period_leaves_the_trainer_time_to_checkpoint(monkeypatch):
    monkeypatch.setenv("MLOPS_TRAINING_TERMINATION_GRACE_SECONDS", "300")
    assert _pod(monkeypatch, "gpu-spot", 1)["spec"]["terminationGracePeriodSeconds"] == 300
    monkeypatch.delenv("MLOPS_TRAINING_TERMINATION_GRACE_SECONDS")
    # The default exceeds Kubernetes' 30 s, which a large model's checkpoint upload can outlast.
    assert _pod(monkeypatch, "gpu-small", 1)["spec"]["terminationGracePeriodSeconds"] == 120
