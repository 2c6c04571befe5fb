"""Every branch of the pod failure classification, on pods shaped as the API returns them."""

from __future__ import annotations

import json

import pytest
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from urllib3.exceptions import MaxRetryError, NewConnectionError

from mlops.trainer import exit_codes
from mlops.training import failures
from mlops.training.failures import classify_pod_failure, describe_pod


def pod(
    phase: str = "Failed",
    reason: str | None = None,
    terminated: dict | None = None,
    waiting: dict | None = None,
    conditions: list[dict] | None = None,
    node: str | None = "gpu-1",
    deleting: bool = False,
) -> dict:
    state = {"terminated": terminated} if terminated else {"waiting": waiting} if waiting else {}
    status: dict = {
        "phase": phase,
        "conditions": conditions or [],
        "containerStatuses": [{"name": "base", "image": "registry.example.com/t:1", "state": state}],
    }
    if reason:
        status.update(reason=reason, message=f"{reason} happened")
    meta = {"name": "train-model-abc", "namespace": "ml"}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    spec = {
        "containers": [
            {"name": "base", "image": "registry.example.com/t:1", "resources": {"limits": {"memory": "60Gi"}}}
        ]
    }
    if node:
        spec["nodeName"] = node
    return {"metadata": meta, "spec": spec, "status": status}


def exited(code: int, reason: str = "Error", message: str = "") -> dict:
    return {"exitCode": code, "reason": reason, "message": message}


def disruption(reason: str, message: str = "") -> list[dict]:
    return [{"type": "DisruptionTarget", "status": "True", "reason": reason, "message": message}]


def api_error(status: int, message: str) -> ApiException:
    error = ApiException(status=status, reason="x")
    error.body = json.dumps({"kind": "Status", "code": status, "message": message})
    return error


# -- disruptions: retried -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "condition",
    ["EvictionByEvictionAPI", "PreemptionByScheduler", "TerminationByKubelet", "DeletionByTaintManager"],
)
def test_a_disruption_target_condition_is_retried_whatever_the_exit_code(condition):
    verdict = classify_pod_failure(pod(terminated=exited(143), conditions=disruption(condition, "why")))
    assert verdict.kind == failures.DISRUPTION and verdict.retryable
    assert condition in verdict.message


@pytest.mark.parametrize("reason", ["Evicted", "NodeLost", "Shutdown"])
def test_a_node_level_pod_reason_is_retried(reason):
    verdict = classify_pod_failure(pod(reason=reason, terminated=exited(137)))
    assert verdict.retryable and f"reason {reason}" in verdict.message


def test_a_node_reboot_container_status_unknown_137_is_retried():
    lost = exited(
        137, "ContainerStatusUnknown", "The container could not be located when the pod was terminated"
    )
    verdict = classify_pod_failure(pod(terminated=lost))
    assert verdict.kind == failures.DISRUPTION and verdict.retryable and verdict.exit_code == 137


def test_a_pod_that_is_gone_or_being_deleted_is_retried():
    assert classify_pod_failure(None, pod_gone=True).retryable
    assert classify_pod_failure(pod(phase="Running", deleting=True)).retryable


# -- the run's own limits: not retried --------------------------------------------------------------
def test_deadline_exceeded_is_not_retried_and_names_the_budget():
    verdict = classify_pod_failure(pod(reason="DeadlineExceeded", terminated=exited(137)))
    assert verdict.kind == failures.DEADLINE and not verdict.retryable
    assert "timeout_minutes" in verdict.message


def test_oom_killed_is_not_retried_and_suggests_a_larger_profile_or_a_smaller_batch():
    verdict = classify_pod_failure(pod(terminated=exited(137, "OOMKilled")))
    assert verdict.kind == failures.OUT_OF_MEMORY and not verdict.retryable
    assert "limit of 60Gi" in verdict.message
    assert "larger compute_profile" in verdict.message and "smaller batch_size" in verdict.message


# -- start-up ---------------------------------------------------------------------------------------
def test_create_container_config_error_is_configuration_naming_the_secret():
    waiting = {"reason": "CreateContainerConfigError", "message": 'secret "mlops-trainer-s3" not found'}
    verdict = classify_pod_failure(pod(phase="Pending", waiting=waiting))
    assert verdict.kind == failures.CONFIGURATION and not verdict.retryable
    assert 'secret "mlops-trainer-s3" not found' in verdict.message


@pytest.mark.parametrize("reason", ["ErrImagePull", "ImagePullBackOff"])
def test_an_image_that_does_not_exist_is_configuration_naming_the_image(reason):
    message = (
        'rpc error: code = NotFound desc = failed to resolve reference "registry.example.com/t:1": not found'
    )
    verdict = classify_pod_failure(pod(phase="Pending", waiting={"reason": reason, "message": message}))
    assert verdict.kind == failures.CONFIGURATION
    assert 'image "registry.example.com/t:1" does not exist' in verdict.message


def test_an_invalid_image_name_is_configuration():
    waiting = {"reason": "InvalidImageName", "message": "invalid reference format"}
    assert classify_pod_failure(pod(phase="Pending", waiting=waiting)).kind == failures.CONFIGURATION


def test_a_registry_outage_is_retried():
    waiting = {"reason": "ErrImagePull", "message": "failed to pull: 503 Service Unavailable"}
    verdict = classify_pod_failure(pod(phase="Pending", waiting=waiting))
    assert verdict.kind == failures.TRANSIENT and verdict.retryable


def test_a_pod_no_node_took_in_time_is_capacity_and_retried():
    scheduled = [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes"}
    ]
    timeout = Exception("Pod took too long to be scheduled on the cluster, giving up. More than 600s.")
    verdict = classify_pod_failure(pod(phase="Pending", conditions=scheduled, node=None), error=timeout)
    assert verdict.kind == failures.CAPACITY and verdict.retryable
    assert "not scheduled within 600 s: 0/3 nodes" in verdict.message


# -- the trainer's exit codes -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("code", "kind", "retryable"),
    [
        (exit_codes.TRANSIENT_STORAGE, failures.TRANSIENT, True),
        (exit_codes.SIGTERM, failures.DISRUPTION, True),
        (exit_codes.CONFIGURATION, failures.CONFIGURATION, False),
        (exit_codes.DATA, failures.DATA, False),
        (exit_codes.TRAINING_CODE, failures.TRAINING_CODE, False),
        (3, failures.TRAINING_CODE, False),  # any code the trainer does not define
    ],
)
def test_the_trainer_exit_code_decides(code, kind, retryable):
    verdict = classify_pod_failure(pod(terminated=exited(code, message="trainer: error: x")))
    assert (verdict.kind, verdict.retryable, verdict.exit_code) == (kind, retryable, code)
    assert f"exit code {code}" in verdict.message and "trainer: error: x" in verdict.message


# -- the API itself ---------------------------------------------------------------------------------
def test_no_kube_config_is_configuration_saying_how_to_fix_it():
    verdict = classify_pod_failure(
        None, error=ConfigException("Invalid kube-config file. No configuration found.")
    )
    assert verdict.kind == failures.CONFIGURATION and "kubernetes_default" in verdict.message


def test_an_unreachable_api_server_is_configuration_naming_it():
    from urllib3 import HTTPConnectionPool

    pool = HTTPConnectionPool("10.0.0.1", 6443)
    error = MaxRetryError(pool, "/api/v1/pods", NewConnectionError(pool, "Connection refused"))
    verdict = classify_pod_failure(None, error=error)
    assert verdict.kind == failures.CONFIGURATION and "http://10.0.0.1:6443 is unreachable" in verdict.message


@pytest.mark.parametrize(
    ("status", "message", "kind"),
    [
        (401, "Unauthorized", failures.CONFIGURATION),
        (403, 'pods is forbidden: User "x" cannot create resource "pods"', failures.CONFIGURATION),
        (
            403,
            'pods "p" is forbidden: exceeded quota: gpu, requested: requests.nvidia.com/gpu=8',
            failures.CAPACITY,
        ),
        (404, 'namespaces "ml-training" not found', failures.CONFIGURATION),
        (422, 'Pod "p" is invalid: spec.containers[0].image: Required value', failures.CONFIGURATION),
        (500, "etcdserver: request timed out", failures.TRANSIENT),
        (429, "too many requests", failures.TRANSIENT),
    ],
)
def test_api_errors_are_classified_by_status_code(status, message, kind):
    verdict = classify_pod_failure(None, error=api_error(status, message))
    assert verdict.kind == kind
    assert message in verdict.message


def test_the_description_names_phase_reason_exit_code_and_message_but_not_the_whole_pod():
    text = describe_pod(pod(reason="Evicted", terminated=exited(137, "Error", "last log line")))
    assert text == (
        "pod train-model-abc: phase Failed, reason Evicted, message 'Evicted happened', "
        "container base: Error, exit code 137, message 'last log line'"
    )
    long = describe_pod(pod(terminated=exited(1, message="x" * 10_000)))
    assert len(long) < 800
