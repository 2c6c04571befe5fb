"""The simulated kubelet and scheduler: pod phases, container states, logs, events, processes, nodes."""

from __future__ import annotations

import json
import os
import re
import sys
import time

import pytest
from kubernetes import watch
from kubernetes.client.exceptions import ApiException

from tests.harness.kubesim import KubeSim, LocalProcess, ScriptedContainer

SLEEPER = [sys.executable, "-c", "import os, time; print(os.getpid(), flush=True); time.sleep(60)"]


def state(pod, container: str = "base") -> dict:
    statuses = {c.name: c for c in pod.status.container_statuses or []}
    return statuses[container].state.to_dict() if container in statuses else {}


def read_log(core, ns: str, name: str, **kwargs) -> str:
    # Client 36's read_namespaced_pod_log returns str(bytes) when preloading: read the raw body instead.
    return core.read_namespaced_pod_log(name, ns, _preload_content=False, **kwargs).data.decode()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def start_sleeper(core, ns, sim, eventually, pod_manifest):
    """Start a pod running a real sleeping process; returns the process id once it runs."""
    sim.register_image("sleeper:1", LocalProcess(argv=SLEEPER))

    def start(name: str = "sleeper", **spec) -> int:
        manifest = pod_manifest(name, image="sleeper:1")
        manifest["spec"].update(spec)
        core.create_namespaced_pod(ns, manifest)
        eventually(lambda: state(core.read_namespaced_pod(name, ns)).get("running") and sim.logs(ns, name))
        pid = int(sim.logs(ns, name)[0])
        assert alive(pid)
        return pid

    return start


@pytest.fixture
def started_pid(start_sleeper) -> int:
    return start_sleeper()


# -- phases and container states ----------------------------------------------------------------
def test_pod_goes_pending_running_succeeded_with_kubelet_status(core, ns, sim, pod_manifest):
    sim.register_image("job:1", ScriptedContainer(logs=["hi"], run_seconds=0.4))
    core.create_namespaced_pod(ns, pod_manifest("p"))
    phases, running_seen = [], None
    for event in watch.Watch().stream(
        core.list_namespaced_pod, ns, field_selector="metadata.name=p", timeout_seconds=5
    ):
        pod = event["object"]
        if not phases or phases[-1] != pod.status.phase:
            phases.append(pod.status.phase)
        if pod.status.phase == "Running" and state(pod).get("running"):
            running_seen = pod
        if pod.status.phase == "Succeeded":
            break
    assert phases == ["Pending", "Running", "Succeeded"]
    running = running_seen.status
    assert running.pod_ip == "127.0.0.1" and running.host_ip and running.start_time
    assert running.container_statuses[0].ready and running.container_statuses[0].started
    assert {c.type: c.status for c in running.conditions} == {
        "PodScheduled": "True",
        "Initialized": "True",
        "ContainersReady": "True",
        "Ready": "True",
    }
    done = state(pod)["terminated"]
    assert (done["exit_code"], done["reason"]) == (0, "Completed") and done["finished_at"]


def test_failing_container_ends_failed_with_its_exit_code(core, ns, sim, eventually, pod_manifest):
    sim.register_image("bad:1", ScriptedContainer(logs=["boom"], exit_code=3, run_seconds=0.1))
    core.create_namespaced_pod(ns, pod_manifest("p", image="bad:1"))
    eventually(lambda: core.read_namespaced_pod("p", ns).status.phase == "Failed")
    terminated = state(core.read_namespaced_pod("p", ns))["terminated"]
    assert (terminated["exit_code"], terminated["reason"]) == (3, "Error")


def test_fallback_to_logs_on_error_puts_the_log_tail_in_the_termination_message(
    core, ns, sim, eventually, pod_manifest
):
    sim.register_image(
        "bad:2", ScriptedContainer(logs=["step 1", "Traceback: it broke"], exit_code=1, run_seconds=0.1)
    )
    manifest = pod_manifest("p", image="bad:2", terminationMessagePolicy="FallbackToLogsOnError")
    core.create_namespaced_pod(ns, manifest)
    eventually(lambda: core.read_namespaced_pod("p", ns).status.phase == "Failed")
    assert state(core.read_namespaced_pod("p", ns))["terminated"]["message"] == "step 1\nTraceback: it broke"


def test_restart_policy_always_crash_loops_with_restart_count(core, ns, sim, eventually, pod_manifest):
    sim.register_image("crash:1", ScriptedContainer(exit_code=2, run_seconds=0.05))
    core.create_namespaced_pod(ns, pod_manifest("p", image="crash:1", restart_policy="Always"))

    def crash_looping() -> bool:
        pod = core.read_namespaced_pod("p", ns)
        waiting = state(pod).get("waiting") or {}
        return (
            waiting.get("reason") == "CrashLoopBackOff"
            and pod.status.container_statuses[0].restart_count >= 1
        )

    eventually(crash_looping)
    pod = core.read_namespaced_pod("p", ns)
    assert pod.status.phase == "Running"
    assert pod.status.container_statuses[0].last_state.terminated.exit_code == 2
    reasons = {e.reason for e in core.list_namespaced_event(ns, field_selector="involvedObject.name=p").items}
    assert "BackOff" in reasons


def test_unregistered_image_is_err_image_pull_then_image_pull_back_off(core, ns, eventually, pod_manifest):
    core.create_namespaced_pod(ns, pod_manifest("p", image="registry.example.com/missing:1"))
    eventually(
        lambda: (
            (state(core.read_namespaced_pod("p", ns)).get("waiting") or {}).get("reason") == "ErrImagePull"
        )
    )
    eventually(
        lambda: (
            (state(core.read_namespaced_pod("p", ns)).get("waiting") or {}).get("reason")
            == "ImagePullBackOff"
        )
    )
    pod = core.read_namespaced_pod("p", ns)
    assert pod.status.phase == "Pending"
    events = core.list_namespaced_event(ns, field_selector="involvedObject.name=p").items
    warnings = [e.message for e in events if e.type == "Warning"]
    assert "Error: ErrImagePull" in warnings and "Error: ImagePullBackOff" in warnings


def test_scripted_pull_error_and_start_delay(core, ns, sim, eventually, pod_manifest):
    sim.register_image("private:1", ScriptedContainer(pull_error="ErrImagePull"))
    sim.register_image("slow:1", ScriptedContainer(start_delay=0.5, run_seconds=0.05))
    core.create_namespaced_pod(ns, pod_manifest("pull", image="private:1"))
    core.create_namespaced_pod(ns, pod_manifest("slow", image="slow:1"))
    eventually(
        lambda: (
            (state(core.read_namespaced_pod("slow", ns)).get("waiting") or {}).get("reason")
            == "ContainerCreating"
        )
    )
    eventually(lambda: core.read_namespaced_pod("slow", ns).status.phase == "Succeeded")
    assert (state(core.read_namespaced_pod("pull", ns)).get("waiting") or {}).get("reason") in (
        "ErrImagePull",
        "ImagePullBackOff",
    )


def test_image_matching_ignores_the_tag_when_no_exact_match(core, ns, sim, eventually, pod_manifest):
    sim.register_image("ghcr.io/acme/trainer", ScriptedContainer(run_seconds=0.05))
    core.create_namespaced_pod(ns, pod_manifest("p", image="ghcr.io/acme/trainer:2.1"))
    eventually(lambda: core.read_namespaced_pod("p", ns).status.phase == "Succeeded")


def test_init_containers_run_before_the_main_container(core, ns, sim, eventually, pod_manifest):
    sim.register_image("init:1", ScriptedContainer(logs=["migrated"], run_seconds=0.1))
    sim.register_image("job:1", ScriptedContainer(run_seconds=0.1))
    manifest = pod_manifest("p")
    manifest["spec"]["initContainers"] = [{"name": "migrate", "image": "init:1"}]
    core.create_namespaced_pod(ns, manifest)
    eventually(lambda: core.read_namespaced_pod("p", ns).status.phase == "Succeeded")
    pod = core.read_namespaced_pod("p", ns)
    init_done = pod.status.init_container_statuses[0].state.terminated.finished_at
    assert init_done <= pod.status.container_statuses[0].state.terminated.started_at
    assert sim.logs(ns, "p", "migrate") == ["migrated"]


def test_active_deadline_seconds_fails_the_pod_and_kills_its_process(core, ns, eventually, start_sleeper):
    pid = start_sleeper("p", activeDeadlineSeconds=1)
    eventually(lambda: core.read_namespaced_pod("p", ns).status.phase == "Failed", timeout=5)
    pod = core.read_namespaced_pod("p", ns)
    assert pod.status.reason == "DeadlineExceeded"
    eventually(lambda: not alive(pid))


# -- logs ----------------------------------------------------------------------------------------
def test_followed_logs_stream_as_produced_and_end_with_the_container(core, ns, sim, eventually, pod_manifest):
    sim.register_image("talker:1", ScriptedContainer(logs=["one", "two", "three"], run_seconds=1.2))
    core.create_namespaced_pod(ns, pod_manifest("p", image="talker:1"))
    eventually(lambda: state(core.read_namespaced_pod("p", ns)).get("running"))
    resp = core.read_namespaced_pod_log(
        "p", ns, container="base", follow=True, timestamps=True, _preload_content=False
    )
    arrivals = []
    for line in resp.stream():
        arrivals.append((time.monotonic(), line.decode()))
    lines = "".join(text for _, text in arrivals).splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == ["one", "two", "three"]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z \w+", line) for line in lines)
    assert arrivals[-1][0] - arrivals[0][0] > 0.4  # streamed, not delivered at the end
    assert state(core.read_namespaced_pod("p", ns)).get("terminated")  # the stream ended with the container


def test_log_tail_lines_and_since_seconds(core, ns, sim, eventually, pod_manifest):
    sim.register_image("many:1", ScriptedContainer(logs=[f"line {n}" for n in range(5)], run_seconds=0.1))
    core.create_namespaced_pod(ns, pod_manifest("p", image="many:1"))
    eventually(lambda: core.read_namespaced_pod("p", ns).status.phase == "Succeeded")
    assert read_log(core, ns, "p", tail_lines=2) == "line 3\nline 4\n"
    assert read_log(core, ns, "p", since_seconds=60).count("\n") == 5
    time.sleep(1.1)
    assert read_log(core, ns, "p", since_seconds=1) == ""


def test_logs_of_a_waiting_container_or_an_unnamed_one_are_400(core, ns, pod_manifest, eventually):
    core.create_namespaced_pod(ns, pod_manifest("p", image="missing:1"))
    with pytest.raises(ApiException) as err:
        core.read_namespaced_pod_log("p", ns)
    message = json.loads(err.value.body)["message"]
    assert err.value.status == 400 and message.startswith('container "base" in pod "p" is waiting to start: ')
    manifest = pod_manifest("two")
    manifest["spec"]["containers"].append({"name": "side", "image": "missing:1"})
    core.create_namespaced_pod(ns, manifest)
    with pytest.raises(ApiException) as err:
        core.read_namespaced_pod_log("two", ns)
    message = json.loads(err.value.body)["message"]
    assert err.value.status == 400 and message.startswith("a container name must be specified for pod two")
    with pytest.raises(ApiException) as err:
        core.read_namespaced_pod_log("two", ns, container="nope")
    assert err.value.status == 400


# -- local processes -------------------------------------------------------------------------------
def test_local_process_gets_resolved_env_and_kubernetes_argv_rules(core, ns, sim, eventually, pod_manifest):
    core.create_namespaced_secret(
        ns, {"metadata": {"name": "creds"}, "stringData": {"token": "s3cr3t", "user": "bob"}}
    )
    core.create_namespaced_config_map(ns, {"metadata": {"name": "cfg"}, "data": {"LEVEL": "debug"}})
    script = "import os, sys; print(sys.argv[1:]); [print(k, os.environ.get(k)) for k in sys.argv[1:]]"
    sim.register_image(
        "envdump:1", LocalProcess(argv=[sys.executable, "-c", script, "ENTRY"], env={"FROM_IMAGE": "yes"})
    )
    env = [
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
        {"name": "LEVEL2", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "LEVEL"}}},
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
        {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "GREETING", "value": "hello $(POD)"},
    ]
    env_from = [{"secretRef": {"name": "creds"}, "prefix": "CREDS_"}, {"configMapRef": {"name": "cfg"}}]
    keys = [
        "TOKEN",
        "LEVEL2",
        "POD",
        "NS",
        "APP",
        "IP",
        "GREETING",
        "CREDS_user",
        "LEVEL",
        "FROM_IMAGE",
        "VIRTUAL_ENV",
    ]
    # No `command`: the image ENTRYPOINT (argv) runs and `args` replace its CMD.
    manifest = pod_manifest("p", image="envdump:1", env=env, envFrom=env_from, args=keys)
    core.create_namespaced_pod(ns, manifest)
    eventually(lambda: core.read_namespaced_pod("p", ns).status.phase == "Succeeded")
    lines = sim.logs(ns, "p")
    assert lines[0] == repr(["ENTRY", *keys])  # the entrypoint's own arguments stay, args come after
    values = dict(line.split(" ", 1) for line in lines[2:])
    assert values == {
        "TOKEN": "s3cr3t",
        "LEVEL2": "debug",
        "POD": "p",
        "NS": ns,
        "APP": "p",
        "IP": "127.0.0.1",
        "GREETING": "hello p",
        "CREDS_user": "bob",
        "LEVEL": "debug",
        "FROM_IMAGE": "yes",
        "VIRTUAL_ENV": os.environ.get("VIRTUAL_ENV", "None"),
    }


def test_command_replaces_the_entrypoint_and_exit_code_and_stderr_are_kept(
    core, ns, sim, eventually, pod_manifest
):
    sim.register_image("tool:1", LocalProcess(argv=["/bin/false"]))
    script = "import sys; print('to stderr', file=sys.stderr); sys.exit(int(sys.argv[1]))"
    core.create_namespaced_pod(
        ns, pod_manifest("p", image="tool:1", command=[sys.executable, "-c", script], args=["7"])
    )
    eventually(lambda: core.read_namespaced_pod("p", ns).status.phase == "Failed")
    assert state(core.read_namespaced_pod("p", ns))["terminated"]["exit_code"] == 7
    assert sim.logs(ns, "p") == ["to stderr"]


def test_missing_secret_is_create_container_config_error_until_it_exists(
    core, ns, sim, eventually, pod_manifest
):
    sim.register_image("job:1", ScriptedContainer(run_seconds=0.05))
    env = [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "later", "key": "t"}}}]
    core.create_namespaced_pod(ns, pod_manifest("p", env=env))

    def waiting_reason() -> str | None:
        return (state(core.read_namespaced_pod("p", ns)).get("waiting") or {}).get("reason")

    eventually(lambda: waiting_reason() == "CreateContainerConfigError")
    assert 'secret "later" not found' in state(core.read_namespaced_pod("p", ns))["waiting"]["message"]
    core.create_namespaced_secret(ns, {"metadata": {"name": "later"}, "stringData": {"t": "x"}})
    eventually(lambda: core.read_namespaced_pod("p", ns).status.phase == "Succeeded")


# -- endings forced from outside -----------------------------------------------------------------
def test_evict_pod_fails_it_as_evicted_and_kills_the_process(core, ns, sim, eventually, started_pid):
    sim.evict_pod(ns, "sleeper", message="The node was low on resource: memory.")
    pod = core.read_namespaced_pod("sleeper", ns)
    assert (pod.status.phase, pod.status.reason) == ("Failed", "Evicted")
    assert not alive(started_pid)
    events = core.list_namespaced_event(ns, field_selector="involvedObject.name=sleeper").items
    assert any(e.reason == "Evicted" and e.type == "Warning" for e in events)


def test_delete_pod_now_removes_the_object_and_kills_the_process(core, ns, sim, started_pid):
    sim.delete_pod_now(ns, "sleeper")
    with pytest.raises(ApiException) as err:
        core.read_namespaced_pod("sleeper", ns)
    assert err.value.status == 404
    assert not alive(started_pid)


def test_graceful_delete_sets_deletion_timestamp_then_removes_the_pod(core, ns, eventually, started_pid):
    deleting = core.delete_namespaced_pod("sleeper", ns)
    assert deleting.metadata.deletion_timestamp is not None
    eventually(lambda: not core.list_namespaced_pod(ns, field_selector="metadata.name=sleeper").items)
    assert not alive(started_pid)
    reasons = [
        e.reason for e in core.list_namespaced_event(ns, field_selector="involvedObject.name=sleeper").items
    ]
    assert "Killing" in reasons


def test_lose_node_fails_the_pod_with_node_lost(core, ns, sim, started_pid):
    sim.lose_node(ns, "sleeper")
    pod = core.read_namespaced_pod("sleeper", ns)
    assert (pod.status.phase, pod.status.reason) == ("Failed", "NodeLost")
    assert not alive(started_pid)


def test_paused_controllers_leave_status_stale_until_resumed(core, ns, sim, eventually, pod_manifest):
    sim.register_image("job:1", ScriptedContainer(run_seconds=0.05))
    sim.pause_controllers()
    core.create_namespaced_pod(ns, pod_manifest("p"))
    time.sleep(0.5)
    assert core.read_namespaced_pod("p", ns).status.phase == "Pending"
    sim.resume_controllers()
    eventually(lambda: core.read_namespaced_pod("p", ns).status.phase == "Succeeded")


# -- scheduling onto nodes (a private cluster: nodes are cluster-wide) ---------------------------------
@pytest.fixture(scope="module")
def cluster():
    private = KubeSim().start()
    private.create_namespace("ml")
    private.register_image("train:1", ScriptedContainer(run_seconds=0.6))
    yield private
    private.stop()


def gpu_pod(name: str, gpus: int, **spec) -> dict:
    resources = {"limits": {"nvidia.com/gpu": str(gpus)}}
    container = {"name": "base", "image": "train:1", "resources": resources}
    return {
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "ml"},
        "spec": {"restartPolicy": "Never", "containers": [container], **spec},
    }


def test_pods_schedule_only_onto_matching_nodes_with_free_gpus(cluster, eventually):
    cluster.add_node("cpu-1", labels={"pool": "cpu"})
    taint = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
    cluster.add_node("gpu-1", labels={"pool": "gpu"}, allocatable={"nvidia.com/gpu": "2"}, taints=[taint])
    toleration = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    cluster.create(gpu_pod("untolerated", 1, nodeSelector={"pool": "gpu"}))
    cluster.create(gpu_pod("first", 2, nodeSelector={"pool": "gpu"}, tolerations=toleration))
    eventually(lambda: cluster.get("Pod", "ml", "first")["spec"].get("nodeName") == "gpu-1")
    cluster.create(gpu_pod("second", 1, nodeSelector={"pool": "gpu"}, tolerations=toleration))

    def unschedulable(name: str) -> dict | None:
        conditions = cluster.get("Pod", "ml", name)["status"].get("conditions") or []
        return next((c for c in conditions if c["type"] == "PodScheduled" and c["status"] == "False"), None)

    eventually(lambda: unschedulable("second") and unschedulable("untolerated"))
    assert "Insufficient nvidia.com/gpu" in unschedulable("second")["message"]
    assert "untolerated taint" in unschedulable("untolerated")["message"]
    assert unschedulable("second")["reason"] == "Unschedulable"
    events = [e for e in cluster.list("Event", "ml") if e["involvedObject"]["name"] == "second"]
    assert any(e["reason"] == "FailedScheduling" and e["type"] == "Warning" for e in events)
    # When the first pod finishes, its GPUs are free again.
    eventually(lambda: cluster.get("Pod", "ml", "second")["spec"].get("nodeName") == "gpu-1", timeout=5)
    assert cluster.get("Pod", "ml", "untolerated")["status"]["phase"] == "Pending"


def test_stop_and_reset_kill_every_local_process():
    private = KubeSim().start()
    try:
        private.register_image("sleeper:1", LocalProcess(argv=SLEEPER))
        pod = {
            "kind": "Pod",
            "metadata": {"name": "s"},
            "spec": {"containers": [{"name": "c", "image": "sleeper:1"}]},
        }
        pids = []
        for _ in range(2):
            private.register_image("sleeper:1", LocalProcess(argv=SLEEPER))
            private.create(pod)
            private.wait_for("Pod", "default", "s", lambda p: p["status"].get("phase") == "Running")
            deadline = time.monotonic() + 5
            while not private.logs("default", "s") and time.monotonic() < deadline:
                time.sleep(0.05)
            pids.append(int(private.logs("default", "s")[0]))
            if len(pids) == 1:
                private.reset()
                assert private.get("Pod", "default", "s") is None
                assert not alive(pids[0])
    finally:
        private.stop()
    assert not alive(pids[1])


def test_a_started_container_reports_the_repository_and_digest_it_pulled_as_its_image_id():
    from tests.harness.kubesim.kubelet import image_id

    ref = image_id("ghcr.io/mlops-airflow/trainer:0.1.0")
    assert ref.startswith("ghcr.io/mlops-airflow/trainer@sha256:") and len(ref.split("sha256:")[1]) == 64
    assert image_id("localhost:5000/trainer:dev").startswith("localhost:5000/trainer@sha256:")
    assert image_id("trainer") == image_id("trainer")  # stable per image
