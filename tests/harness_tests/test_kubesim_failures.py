"""How kubesim fails pods the way a real cluster does: quota admission, start failures, scheduling,
OOM kills, preemption, API eviction, node reboots and graceful termination."""

from __future__ import annotations

import json
import os
import sys
import threading
import time

import pytest
from kubernetes import watch
from kubernetes.client.exceptions import ApiException

from tests.harness.kubesim import KubeSim, LocalProcess, ScriptedContainer

# Handles SIGTERM like a trainer saving its work: prints, then exits 143 within the grace period.
SAVER = [
    sys.executable,
    "-c",
    "import os, signal, sys, time\n"
    "def stop(*_):\n"
    "    print('checkpoint written', flush=True); sys.exit(143)\n"
    "signal.signal(signal.SIGTERM, stop)\n"
    "print(os.getpid(), flush=True)\n"
    "time.sleep(60)\n",
]
# Ignores SIGTERM: only SIGKILL, after the grace period, ends it.
STUBBORN = [
    sys.executable,
    "-c",
    "import os, signal, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print(os.getpid(), flush=True)\n"
    "time.sleep(60)\n",
]


def waiting(core, ns: str, name: str) -> dict:
    statuses = core.read_namespaced_pod(name, ns).status.container_statuses or []
    state = statuses[0].state if statuses else None
    return (state.waiting.to_dict() if state and state.waiting else {}) or {}


def terminated(pod) -> dict:
    state = pod.status.container_statuses[0].state
    return state.terminated.to_dict() if state.terminated else {}


def condition(pod, kind: str):
    return next((c for c in pod.status.conditions or [] if c.type == kind), None)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def gpu_pod(name: str, gpus: int, image: str = "train:1") -> dict:
    resources = {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"nvidia.com/gpu": str(gpus)}}
    resources["limits"].update(resources["requests"])
    return {
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "base", "image": image, "resources": resources}],
        },
    }


def final_states(core, ns: str, name: str, timeout: int = 10) -> list:
    """Every version of the pod a watcher sees until it is deleted."""
    seen = []
    for event in watch.Watch().stream(
        core.list_namespaced_pod, ns, field_selector=f"metadata.name={name}", timeout_seconds=timeout
    ):
        seen.append(event["object"])
        if event["type"] == "DELETED":
            break
    return seen


@pytest.fixture
def start_local(core, ns, sim, eventually, pod_manifest):
    """Start a pod whose container is a real process; returns its pid once it runs."""

    def start(name: str, argv: list[str], **spec) -> int:
        sim.register_image(f"{name}:1", LocalProcess(argv=argv))
        manifest = pod_manifest(name, image=f"{name}:1")
        manifest["spec"].update(spec)
        core.create_namespaced_pod(ns, manifest)
        eventually(lambda: sim.get("Pod", ns, name)["status"]["phase"] == "Running" and sim.logs(ns, name))
        return int(sim.logs(ns, name)[0])

    return start


# -- ResourceQuota admission ------------------------------------------------------------------------
def test_a_pod_over_the_namespace_quota_is_refused_at_create_with_403_and_never_exists(core, ns, sim):
    sim.register_image("train:1", ScriptedContainer(run_seconds=30))
    core.create_namespaced_resource_quota(
        ns, {"metadata": {"name": "gpu-quota"}, "spec": {"hard": {"requests.nvidia.com/gpu": "8"}}}
    )
    core.create_namespaced_pod(ns, gpu_pod("first", 8))

    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod(ns, gpu_pod("second", 1))

    body = json.loads(err.value.body)
    assert err.value.status == 403 and body["reason"] == "Forbidden"
    assert body["message"] == (
        'pods "second" is forbidden: exceeded quota: gpu-quota, requested: requests.nvidia.com/gpu=1, '
        "used: requests.nvidia.com/gpu=8, limited: requests.nvidia.com/gpu=8"
    )
    assert [p.metadata.name for p in core.list_namespaced_pod(ns).items] == ["first"]
    used = core.read_namespaced_resource_quota("gpu-quota", ns).status.used
    assert used == {"requests.nvidia.com/gpu": "8"}


def test_quota_usage_frees_when_a_pod_ends_and_unset_tracked_resources_are_refused(
    core, ns, sim, eventually, pod_manifest
):
    sim.register_image("train:1", ScriptedContainer(run_seconds=0.2))
    core.create_namespaced_resource_quota(
        ns, {"metadata": {"name": "compute"}, "spec": {"hard": {"requests.cpu": "1", "pods": "1"}}}
    )
    core.create_namespaced_pod(ns, gpu_pod("first", 0))
    eventually(lambda: core.read_namespaced_pod("first", ns).status.phase == "Succeeded")
    core.create_namespaced_pod(ns, gpu_pod("second", 0))  # a finished pod uses no quota

    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod(ns, pod_manifest("bare", image="train:1"))
    assert err.value.status == 403
    assert "failed quota: compute: must specify requests.cpu" in json.loads(err.value.body)["message"]


# -- container start failures -----------------------------------------------------------------------
def test_a_missing_secret_key_is_create_container_config_error_naming_the_key(
    core, ns, sim, eventually, pod_manifest
):
    sim.register_image("job:1", ScriptedContainer(run_seconds=0.05))
    core.create_namespaced_secret(ns, {"metadata": {"name": "s3"}, "stringData": {"other": "x"}})
    env = [{"name": "K", "valueFrom": {"secretKeyRef": {"name": "s3", "key": "aws_access_key_id"}}}]
    core.create_namespaced_pod(ns, pod_manifest("p", env=env))

    eventually(lambda: waiting(core, ns, "p").get("reason") == "CreateContainerConfigError")
    assert waiting(core, ns, "p")["message"] == f"couldn't find key aws_access_key_id in Secret {ns}/s3"
    assert core.read_namespaced_pod("p", ns).status.phase == "Pending"


def test_a_tag_that_does_not_exist_is_err_image_pull_then_back_off_carrying_the_pull_error(
    core, ns, eventually, pod_manifest
):
    image = "registry.example.com/mlops/trainer:no-such-tag"
    core.create_namespaced_pod(ns, pod_manifest("p", image=image))

    eventually(lambda: waiting(core, ns, "p").get("reason") == "ErrImagePull")
    assert waiting(core, ns, "p")["message"] == (
        f'rpc error: code = NotFound desc = failed to pull and unpack image "{image}": '
        f'failed to resolve reference "{image}": {image}: not found'
    )
    eventually(lambda: waiting(core, ns, "p").get("reason") == "ImagePullBackOff")
    message = waiting(core, ns, "p")["message"]
    assert message.startswith(f'Back-off pulling image "{image}": ErrImagePull: rpc error: code = NotFound')
    assert core.read_namespaced_pod("p", ns).status.phase == "Pending"


def test_a_registry_outage_is_an_err_image_pull_with_the_registry_s_answer(
    core, ns, sim, eventually, pod_manifest
):
    sim.register_image(
        "flaky:1", ScriptedContainer(pull_error="ErrImagePull", pull_message="503 Service Unavailable")
    )
    core.create_namespaced_pod(ns, pod_manifest("p", image="flaky:1"))
    eventually(lambda: waiting(core, ns, "p").get("reason") == "ErrImagePull")
    assert waiting(core, ns, "p")["message"].endswith("503 Service Unavailable")
    assert "NotFound" not in waiting(core, ns, "p")["message"]


def test_an_unparsable_image_reference_is_invalid_image_name_and_stays_pending(
    core, ns, eventually, pod_manifest
):
    core.create_namespaced_pod(ns, pod_manifest("p", image="registry.example.com/MLOps/Trainer:1"))
    eventually(lambda: waiting(core, ns, "p").get("reason") == "InvalidImageName")
    assert "invalid reference format" in waiting(core, ns, "p")["message"]
    time.sleep(0.6)
    assert waiting(core, ns, "p")["reason"] == "InvalidImageName"
    assert core.read_namespaced_pod("p", ns).status.phase == "Pending"


# -- scheduling -------------------------------------------------------------------------------------
def test_a_pod_asking_for_gpus_no_node_has_is_unschedulable_until_a_gpu_node_joins(eventually):
    private = KubeSim().start()
    try:
        private.create_namespace("ml")
        private.register_image("train:1", ScriptedContainer(run_seconds=0.1))
        private.add_node("cpu-1", labels={"pool": "cpu"})
        private.create({**gpu_pod("p", 2), "kind": "Pod", "metadata": {"name": "p", "namespace": "ml"}})

        def scheduled() -> dict:
            conditions = private.get("Pod", "ml", "p")["status"].get("conditions") or []
            return next((c for c in conditions if c["type"] == "PodScheduled"), {})

        eventually(lambda: scheduled().get("status") == "False")
        assert scheduled()["reason"] == "Unschedulable"
        assert scheduled()["message"] == "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."
        # The GPU node joins 2 s from now: the pod is still waiting when read at once (no sleep to hope on).
        timer = private.add_node_after(2.0, "gpu-1", allocatable={"nvidia.com/gpu": "2"})
        assert private.get("Pod", "ml", "p")["status"]["phase"] == "Pending"  # still waiting
        eventually(lambda: private.get("Pod", "ml", "p")["status"]["phase"] == "Succeeded", timeout=10)
        assert private.get("Pod", "ml", "p")["spec"]["nodeName"] == "gpu-1"
        timer.join()
    finally:
        private.stop()


# -- terminations -----------------------------------------------------------------------------------
def test_a_container_past_its_memory_limit_is_oom_killed_with_exit_137(
    core, ns, sim, eventually, pod_manifest
):
    sim.register_image("hungry:1", ScriptedContainer(logs=["allocating"], oom_killed=True, run_seconds=0.2))
    core.create_namespaced_pod(ns, pod_manifest("p", image="hungry:1"))
    eventually(lambda: core.read_namespaced_pod("p", ns).status.phase == "Failed")
    pod = core.read_namespaced_pod("p", ns)
    assert (terminated(pod)["reason"], terminated(pod)["exit_code"]) == ("OOMKilled", 137)
    assert pod.status.reason is None


def test_oom_kill_of_a_running_process_kills_it_and_reports_oom_killed(
    core, ns, sim, eventually, start_local
):
    pid = start_local("sleeper", STUBBORN)
    sim.oom_kill(ns, "sleeper")
    eventually(lambda: core.read_namespaced_pod("sleeper", ns).status.phase == "Failed")
    pod = core.read_namespaced_pod("sleeper", ns)
    assert (terminated(pod)["reason"], terminated(pod)["exit_code"]) == ("OOMKilled", 137)
    eventually(lambda: not alive(pid))


def test_preemption_marks_the_pod_disruption_target_then_terminates_and_removes_it(
    core, ns, sim, start_local
):
    pid = start_local("victim", SAVER, terminationGracePeriodSeconds=5)
    sim.preempt_pod(ns, "victim", preemptor="nightly-train")
    seen = final_states(core, ns, "victim")

    target = condition(seen[-1], "DisruptionTarget")
    assert (target.status, target.reason) == ("True", "PreemptionByScheduler")
    assert target.message == "default-scheduler: preempting to accommodate a higher priority pod"
    assert seen[-1].metadata.deletion_timestamp is not None
    assert seen[-1].status.phase == "Failed" and terminated(seen[-1])["exit_code"] == 143
    events = core.list_namespaced_event(ns, field_selector="involvedObject.name=victim").items
    assert any(e.reason == "Preempted" and "nightly-train" in e.message for e in events)
    assert not alive(pid)


def test_an_eviction_through_the_api_marks_disruption_target_eviction_by_eviction_api(core, ns, start_local):
    start_local("drained", SAVER)
    core.create_namespaced_pod_eviction("drained", ns, {"metadata": {"name": "drained", "namespace": ns}})
    seen = final_states(core, ns, "drained")
    target = condition(seen[-1], "DisruptionTarget")
    assert (target.reason, target.message) == ("EvictionByEvictionAPI", "Eviction API: evicting")
    assert seen[-1].status.phase == "Failed"


def test_a_node_reboot_leaves_container_status_unknown_exit_137_and_no_pod_reason(core, ns, sim, start_local):
    pid = start_local("rebooted", STUBBORN)
    sim.reboot_node(ns, "rebooted")
    pod = core.read_namespaced_pod("rebooted", ns)
    assert pod.status.phase == "Failed"
    assert (pod.status.reason, pod.status.message) == (None, None)
    assert condition(pod, "DisruptionTarget") is None
    state = terminated(pod)
    assert (state["reason"], state["exit_code"]) == ("ContainerStatusUnknown", 137)
    assert state["message"] == "The container could not be located when the pod was terminated"
    assert not alive(pid)


def test_deletion_sends_sigterm_and_the_process_may_finish_its_work_within_the_grace_period(
    core, ns, start_local
):
    pid = start_local("saver", SAVER, terminationGracePeriodSeconds=5)
    follow = core.read_namespaced_pod_log("saver", ns, follow=True, _preload_content=False)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(c.decode() for c in follow.stream()), daemon=True)
    reader.start()
    core.delete_namespaced_pod("saver", ns)
    seen = final_states(core, ns, "saver")
    reader.join(10)
    assert "checkpoint written" in "".join(lines)  # written after SIGTERM, before the container ended
    assert seen[-1].status.phase == "Failed" and terminated(seen[-1])["exit_code"] == 143
    assert not alive(pid)


def test_a_process_ignoring_sigterm_is_killed_after_the_grace_period(core, ns, start_local):
    pid = start_local("stubborn", STUBBORN, terminationGracePeriodSeconds=1)
    started = time.monotonic()
    core.delete_namespaced_pod("stubborn", ns)
    seen = final_states(core, ns, "stubborn")
    elapsed = time.monotonic() - started
    assert terminated(seen[-1])["exit_code"] == 137  # SIGKILL
    assert 1.0 <= elapsed < 4.0
    assert not alive(pid)
