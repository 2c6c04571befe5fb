"""The whole verdict of each pod failure classification branch: kind, exit code and the line a user reads.

test_failures.py proves each branch's kind; these pin the complete verdict, so a changed rule, a wrong
fallback or a garbled hint fails here (tests/mutation/targets.toml runs them against mutants).
"""

from __future__ import annotations

import pytest
from kubernetes.client import (
    V1ContainerState,
    V1ContainerStateTerminated,
    V1ContainerStatus,
    V1ObjectMeta,
    V1Pod,
    V1PodCondition,
    V1PodStatus,
)
from kubernetes.client.exceptions import ApiException

from mlops.training import failures
from mlops.training.failures import PodFailure, classify_api_error, classify_pod_failure, describe_pod
from tests.unit.training.test_failures import api_error, disruption, exited, pod

SUMMARY = "pod train-model-abc: phase"


@pytest.mark.parametrize(
    ("name", "kwargs", "verdict"),
    [
        (
            "preemption by the node (status.reason Preempting)",
            {"pod": pod(reason="Preempting", terminated=exited(143))},
            PodFailure(
                failures.DISRUPTION,
                f"{SUMMARY} Failed, reason Preempting, message 'Preempting happened', container base: Error, "
                "exit code 143; the node ended the pod: retried",
                143,
            ),
        ),
        (
            "eviction through the Eviction API (DisruptionTarget)",
            {
                "pod": pod(
                    terminated=exited(143),
                    conditions=disruption("EvictionByEvictionAPI", "Eviction API: evicting"),
                )
            },
            PodFailure(
                failures.DISRUPTION,
                f"{SUMMARY} Failed, DisruptionTarget EvictionByEvictionAPI: Eviction API: evicting, "
                "container base: Error, exit code 143; the platform ended the pod: retried",
                143,
            ),
        ),
        (
            "node loss (ContainerStatusUnknown)",
            {"pod": pod(terminated=exited(137, "ContainerStatusUnknown", "gone"))},
            PodFailure(
                failures.DISRUPTION,
                f"{SUMMARY} Failed, container base: ContainerStatusUnknown, exit code 137, message 'gone'; "
                "the node lost the container (reboot): retried",
                137,
            ),
        ),
        (
            "deadline exceeded",
            {"pod": pod(reason="DeadlineExceeded", terminated=exited(137))},
            PodFailure(
                failures.DEADLINE,
                f"{SUMMARY} Failed, reason DeadlineExceeded, message 'DeadlineExceeded happened', container "
                "base: Error, exit code 137; the run used its whole time budget (timeout_minutes): not "
                "retried; raise timeout_minutes or shorten the run",
                137,
            ),
        ),
        (
            "deleted while running",
            {"pod": pod(phase="Running", deleting=True)},
            PodFailure(failures.DISRUPTION, f"{SUMMARY} Running; the pod was deleted while it ran: retried"),
        ),
        (
            "gone (404 on read)",
            {"pod": None, "pod_gone": True, "error": api_error(404, 'pods "p" not found')},
            PodFailure(
                failures.DISRUPTION,
                "the pod was deleted while it ran (preempted, evicted or removed): retried",
            ),
        ),
        (
            "vanished without a known cause",
            {"pod": None},
            PodFailure(failures.DISRUPTION, "the pod disappeared before its outcome could be read: retried"),
        ),
        (
            "an image that may never be pulled",
            {"pod": pod(phase="Pending", waiting={"reason": "ErrImageNeverPull", "message": "x"})},
            PodFailure(
                failures.CONFIGURATION,
                f"{SUMMARY} Pending, container base: waiting, ErrImageNeverPull, message 'x'; image "
                '"registry.example.com/t:1" cannot be used (ErrImageNeverPull): not retried; fix the image',
            ),
        ),
        (
            "a missing image",
            {"pod": pod(phase="Pending", waiting={"reason": "ErrImagePull", "message": "manifest unknown"})},
            PodFailure(
                failures.CONFIGURATION,
                f"{SUMMARY} Pending, container base: waiting, ErrImagePull, message 'manifest unknown'; "
                'image "registry.example.com/t:1" does not exist (ErrImagePull, not found): not retried; '
                "check the image name and tag",
            ),
        ),
        (
            "a registry outage",
            {"pod": pod(phase="Pending", waiting={"reason": "ImagePullBackOff", "message": "503"})},
            PodFailure(
                failures.TRANSIENT,
                f"{SUMMARY} Pending, container base: waiting, ImagePullBackOff, message '503'; image "
                '"registry.example.com/t:1" could not be pulled now: retried',
            ),
        ),
        (
            "a missing Secret",
            {
                "pod": pod(
                    phase="Pending",
                    waiting={"reason": "CreateContainerConfigError", "message": 'secret "s" not found'},
                )
            },
            PodFailure(
                failures.CONFIGURATION,
                f"{SUMMARY} Pending, container base: waiting, CreateContainerConfigError, message 'secret "
                '"s" not found\'; the container cannot start: CreateContainerConfigError: secret "s" not '
                "found; not retried; create the Secret (or key) it names in the pod's namespace, or fix the "
                "reference",
            ),
        ),
        (
            "scheduled on a node but slow to start",
            {"pod": pod(phase="Pending"), "error": Exception("Pod took too long to start. More than 120s.")},
            PodFailure(
                failures.TRANSIENT, f"{SUMMARY} Pending; the container did not start in time: retried"
            ),
        ),
        (
            "scheduled on a node, start-up failed for another reason",
            {"pod": pod(phase="Pending"), "error": Exception("something else")},
            PodFailure(failures.TRANSIENT, f"{SUMMARY} Pending; the pod did not start: retried"),
        ),
        (
            "on no node and no PodScheduled condition",
            {"pod": pod(phase="Pending", node=None)},
            PodFailure(
                failures.CAPACITY, f"{SUMMARY} Pending; the pod was not scheduled: no node fits: retried"
            ),
        ),
        (
            "a node assigned but the provider's schedule timeout hit",
            {
                "pod": pod(phase="Pending"),
                "error": Exception(
                    "Pod took too long to be scheduled on the cluster, giving up. More than 9s."
                ),
            },
            PodFailure(
                failures.CAPACITY,
                f"{SUMMARY} Pending; the pod was not scheduled within 9 s: no node fits: retried",
            ),
        ),
        (
            "OOMKilled without a memory limit",
            {"pod": {**pod(terminated=exited(137, "OOMKilled")), "spec": {"containers": [{"name": "base"}]}}},
            PodFailure(
                failures.OUT_OF_MEMORY,
                f"{SUMMARY} Failed, container base: OOMKilled, exit code 137; the container ran out of "
                "memory at its limit: not retried; choose a larger compute_profile (more memory) or a "
                "smaller batch_size",
                137,
            ),
        ),
        (
            "a container that succeeded in a failed pod",
            {"pod": pod(terminated=exited(0, "Completed"))},
            PodFailure(
                failures.TRANSIENT,
                f"{SUMMARY} Failed, container base: Completed, exit code 0; the container succeeded but the "
                "pod did not: retried",
                0,
            ),
        ),
        (
            "no container verdict and no API error",
            {"pod": pod(phase="Failed")},
            PodFailure(failures.TRANSIENT, f"{SUMMARY} Failed; no container verdict: retried"),
        ),
        (
            "no container verdict, the API refused the credentials",
            {"pod": pod(phase="Failed"), "error": api_error(401, "Unauthorized")},
            PodFailure(
                failures.CONFIGURATION,
                "the Kubernetes API server answered HTTP 401: the credentials were refused (Unauthorized); "
                "renew the token or certificate of the kubernetes_default connection",
            ),
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_each_branch_gives_its_whole_verdict(name, kwargs, verdict):
    assert classify_pod_failure(**kwargs) == verdict


@pytest.mark.parametrize(
    ("code", "verdict"),
    [
        (75, (failures.TRANSIENT, "trainer exit code 75 (transient storage): retried")),
        (143, (failures.DISRUPTION, "trainer exit code 143 (stopped by SIGTERM): retried")),
        (
            64,
            (failures.CONFIGURATION, "trainer exit code 64 (configuration): not retried; fix the parameter"),
        ),
        (65, (failures.DATA, "trainer exit code 65 (data): not retried; fix the data")),
        (1, (failures.TRAINING_CODE, "trainer exit code 1 (training code)")),
        (3, (failures.TRAINING_CODE, "trainer exit code 3 (training code)")),
    ],
)
def test_each_trainer_exit_code_gives_its_whole_verdict(code, verdict):
    kind, tail = verdict
    got = classify_pod_failure(pod(terminated=exited(code)))
    assert got == PodFailure(kind, f"{SUMMARY} Failed, container base: Error, exit code {code}; {tail}", code)


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (
            403,
            "pods is forbidden",
            PodFailure(
                failures.CONFIGURATION,
                "the Kubernetes API server answered HTTP 403: this identity is not allowed to run training "
                "pods (pods is forbidden); grant it the mlops-training Role (helm-values/) in the training "
                "namespace",
            ),
        ),
        (
            403,
            "exceeded quota: gpu",
            PodFailure(
                failures.CAPACITY,
                "the namespace's ResourceQuota refused the pod (HTTP 403): exceeded quota: gpu",
            ),
        ),
        (
            404,
            'namespaces "ml" not found',
            PodFailure(
                failures.CONFIGURATION,
                'the training namespace does not exist (HTTP 404: namespaces "ml" not found); create it or '
                "set MLOPS_TRAINING_NAMESPACE",
            ),
        ),
        (
            400,
            "bad",
            PodFailure(failures.CONFIGURATION, "the Kubernetes API refused the pod (HTTP 400): bad"),
        ),
        (503, "down", PodFailure(failures.TRANSIENT, "the Kubernetes API server answered HTTP 503: down")),
        (404, 'pods "p" not found', None),
        (409, "conflict", None),
        (410, "gone", None),
    ],
)
def test_each_api_status_gives_its_whole_verdict(status, body, expected):
    assert classify_api_error(api_error(status, body)) == expected


def test_the_api_message_falls_back_to_the_raw_body_then_to_the_http_reason():
    raw = ApiException(status=503, reason="Service Unavailable")
    raw.body = "upstream connect error"
    assert (
        classify_api_error(raw).message
        == "the Kubernetes API server answered HTTP 503: upstream connect error"
    )
    bare = ApiException(status=503, reason="Service Unavailable")
    assert (
        classify_api_error(bare).message == "the Kubernetes API server answered HTTP 503: Service Unavailable"
    )


def test_an_unreachable_server_without_a_pool_is_named_the_configured_server():
    verdict = classify_api_error(ConnectionError("refused"))
    assert verdict == PodFailure(
        failures.CONFIGURATION,
        "the Kubernetes API server at the configured server is unreachable (ConnectionError): check the "
        "server address in the kubernetes_default connection and the network path from the worker",
    )


def test_anything_else_is_not_an_api_failure():
    assert classify_api_error(ValueError("x")) is None


def test_the_api_error_behind_the_providers_cleanup_error_decides():
    """The provider's clean-up raises while handling the API error: the chain is walked to its root."""
    try:
        try:
            raise api_error(401, "Unauthorized")
        except ApiException as first:
            raise RuntimeError("cleanup failed") from first
    except RuntimeError as wrapped:
        verdict = classify_pod_failure(None, error=wrapped)
    assert verdict.kind == failures.CONFIGURATION and "HTTP 401" in verdict.message
    try:
        try:
            raise api_error(401, "Unauthorized")
        except ApiException:
            raise RuntimeError("during handling") from None  # noqa: B904 - __context__ only
    except RuntimeError as during:
        during.__suppress_context__ = False
        assert classify_pod_failure(None, error=during).kind == failures.CONFIGURATION


def test_the_image_is_read_from_the_spec_when_the_status_does_not_name_it():
    shaped = pod(phase="Pending", waiting={"reason": "InvalidImageName", "message": "bad"})
    del shaped["status"]["containerStatuses"][0]["image"]
    shaped["spec"]["containers"].insert(0, {"name": "sidecar", "image": "other:1"})
    shaped["spec"]["containers"][1]["image"] = "Bad Image"
    assert '"Bad Image" cannot be used' in classify_pod_failure(shaped).message


def test_the_named_container_is_judged_not_the_first_one():
    shaped = pod(terminated=exited(0, "Completed"))
    shaped["status"]["containerStatuses"].insert(
        0, {"name": "sidecar", "state": {"terminated": {"exitCode": 64, "reason": "Error"}}}
    )
    assert classify_pod_failure(shaped).exit_code == 0
    assert classify_pod_failure(shaped, container_name="sidecar").kind == failures.CONFIGURATION


def test_a_message_of_the_limit_is_kept_and_a_longer_one_is_cut_to_the_limit():
    at_limit = describe_pod(pod(terminated=exited(1, message="x" * 600)))
    assert f"message '{'x' * 600}'" in at_limit
    over = describe_pod(pod(terminated=exited(1, message="y" * 601)))
    assert f"message '{'y' * 597}...'" in over
    assert describe_pod(pod(terminated=exited(1, message="a \n  b"))).endswith("message 'a b'")


def test_kubernetes_client_models_are_read_like_dicts():
    """The operator hands V1Pod objects (snake_case attributes), the tests dicts (camelCase keys)."""
    model = V1Pod(
        metadata=V1ObjectMeta(name="train-model-abc"),
        status=V1PodStatus(
            phase="Failed",
            conditions=[
                V1PodCondition(type="DisruptionTarget", status="True", reason="PreemptionByScheduler")
            ],
            container_statuses=[
                V1ContainerStatus(
                    name="base",
                    image="i",
                    image_id="",
                    ready=False,
                    restart_count=0,
                    state=V1ContainerState(
                        terminated=V1ContainerStateTerminated(exit_code=143, reason="Error")
                    ),
                )
            ],
        ),
    )
    assert classify_pod_failure(model) == PodFailure(
        failures.DISRUPTION,
        f"{SUMMARY} Failed, DisruptionTarget PreemptionByScheduler: , container base: Error, exit code 143; "
        "the platform ended the pod: retried",
        143,
    )


def test_a_disruption_target_that_is_not_true_does_not_count():
    cleared = [{"type": "DisruptionTarget", "status": "False", "reason": "EvictionByEvictionAPI"}]
    verdict = classify_pod_failure(pod(terminated=exited(64), conditions=cleared))
    assert verdict.kind == failures.CONFIGURATION
    assert "DisruptionTarget" not in describe_pod(pod(terminated=exited(64), conditions=cleared))
