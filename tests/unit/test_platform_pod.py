"""The KubernetesPodOperator wrapper renders a pod a 1.30 API server accepts, with the platform defaults."""

from __future__ import annotations

import pendulum
import pytest

from mlops.training.operator import PlatformPodOperator


def _pod(monkeypatch, **kwargs) -> dict:
    from airflow.sdk import DAG
    from kubernetes.client import ApiClient

    monkeypatch.setenv("MLOPS_TRAINING_NAMESPACE", "ml-training")
    defaults = dict(
        task_id="train_model",
        image="registry.example.com/trainer:1",
        arguments=["--epochs", "3"],
        compute_profile="gpu-large",
        gpus="4",
        model_name="Digits MLP",
        env_vars={"MODEL_NAME": "digits", "OPTIONAL": ""},
        secret_env={"AWS_ACCESS_KEY_ID": ("mlops-trainer-s3", "aws_access_key_id")},
        active_deadline_seconds="600",
    )
    with DAG("policy_probe", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
        op = PlatformPodOperator(**{**defaults, **kwargs})
    return ApiClient().sanitize_for_serialization(op.build_pod_request_obj(dry_run=True))


def test_rendered_pod_validates_strictly_against_kubernetes_1_30(monkeypatch):
    import kubernetes_validate

    kubernetes_validate.validate(_pod(monkeypatch), "1.30.0", strict=True)


def test_pod_runs_restricted(monkeypatch):
    spec = _pod(monkeypatch)["spec"]
    container = spec["containers"][0]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert mounts == {"/tmp": "tmp", "/scratch": "scratch", "/dev/shm": "dshm"}
    assert all("emptyDir" in volumes[name] for name in mounts.values())
    assert spec["automountServiceAccountToken"] is False
    assert spec["serviceAccountName"] == "mlops-trainer"


def test_gpu_profile_resolves_to_equal_requests_and_limits_and_gpu_placement(monkeypatch):
    spec = _pod(monkeypatch)["spec"]
    resources = spec["containers"][0]["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == "4"
    assert spec["nodeSelector"] == {"mlops.io/pool": "gpu"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert terms[0]["matchExpressions"] == [
        {"key": "mlops.io/gpu-class", "operator": "In", "values": ["large"]}
    ]
    assert spec["priorityClassName"] == "mlops-training"


def test_spot_profile_tolerates_the_spot_taint_at_lower_priority(monkeypatch):
    spec = _pod(monkeypatch, compute_profile="gpu-spot", gpus=None)["spec"]
    assert {"key": "mlops.io/spot", "operator": "Equal", "value": "true", "effect": "NoSchedule"} in spec[
        "tolerations"
    ]
    assert spec["priorityClassName"] == "mlops-training-preemptible"
    assert spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_cpu_profile_asks_for_no_gpu(monkeypatch):
    spec = _pod(monkeypatch, compute_profile="cpu", gpus=None)["spec"]
    assert "nvidia.com/gpu" not in spec["containers"][0]["resources"]["limits"]
    assert "tolerations" not in spec or not spec["tolerations"]


def test_too_many_gpus_for_the_profile_is_refused_naming_the_field(monkeypatch):
    with pytest.raises(ValueError, match="^gpus:"):
        _pod(monkeypatch, compute_profile="gpu-small", gpus="8")


def test_credentials_come_only_from_secret_references_and_empty_optional_env_is_dropped(monkeypatch):
    container = _pod(monkeypatch)["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["AWS_ACCESS_KEY_ID"] == {
        "name": "AWS_ACCESS_KEY_ID",
        "valueFrom": {"secretKeyRef": {"name": "mlops-trainer-s3", "key": "aws_access_key_id"}},
    }
    assert "OPTIONAL" not in env
    assert not any("SECRET" in name and "value" in e for name, e in env.items())


def test_pod_is_deadlined_labelled_and_keeps_its_failure_reason(monkeypatch):
    pod = _pod(monkeypatch)
    assert pod["spec"]["activeDeadlineSeconds"] == 600
    assert pod["spec"]["containers"][0]["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert pod["metadata"]["labels"]["mlops.io/model"] == "Digits-MLP"
    assert pod["metadata"]["labels"]["mlops.io/compute-profile"] == "gpu-large"
    assert pod["metadata"]["namespace"] == "ml-training"


def test_pods_are_deleted_by_default_and_killing_the_task_deletes_its_pod(monkeypatch):
    from airflow.sdk import DAG

    monkeypatch.setenv("MLOPS_KEEP_FAILED_PODS", "true")
    with DAG("keep_probe", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
        kept = PlatformPodOperator(task_id="a", image="x/y:1")
    kept.build_pod_request_obj(dry_run=True)
    # Keeping is decided when the pod has ended, from its phase (tests/integration/training).
    assert kept.on_finish_action.value == "delete_pod"
    assert kept.on_kill_action.value == "delete_pod"


def test_the_operator_waits_for_scheduling_and_start_up_as_long_as_the_settings_say(monkeypatch):
    from airflow.sdk import DAG

    monkeypatch.setenv("MLOPS_POD_STARTUP_TIMEOUT_SECONDS", "600")
    with DAG("timeout_probe", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
        default = PlatformPodOperator(task_id="a", image="x/y:1")
        explicit = PlatformPodOperator(
            task_id="b", image="x/y:1", startup_timeout_seconds=300, schedule_timeout_seconds=1800
        )
    default.build_pod_request_obj(dry_run=True)
    # The values KubernetesPodOperator.await_pod_start passes to the pod manager (provider 10.25.0).
    assert (default.schedule_timeout_seconds, default.startup_timeout_seconds) == (600, 600)
    assert (explicit.schedule_timeout_seconds, explicit.startup_timeout_seconds) == (1800, 300)


def test_a_failure_does_not_dump_the_pod_object(monkeypatch):
    spec_pod = _pod(monkeypatch)
    assert spec_pod  # built
    from airflow.sdk import DAG

    with DAG("dump_probe", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
        op = PlatformPodOperator(task_id="a", image="x/y:1")
    assert op.log_pod_spec_on_failure is False
