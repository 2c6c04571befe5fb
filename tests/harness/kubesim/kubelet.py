"""The simulated scheduler + kubelet: binds pods to nodes and runs their containers through real phases."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import aiohttp

from mlops.dev.ports import free_port

from .behaviours import Behaviour, LocalProcess, ScriptedContainer
from .containers import ConfigError, build_argv, expand, resolve_env, valid_image_reference
from .errors import bad_request
from .logs import LogBuffer
from .processes import ContainerProcess
from .resources import resource_for
from .selectors import node_selector_term_matches
from .store import WatchEvent, now_iso

if TYPE_CHECKING:
    from .sim import KubeSim

log = logging.getLogger(__name__)
PODS, NODES = resource_for("Pod"), resource_for("Node")
IMPLICIT_NODE = "kubesim-node"
TERMINAL = ("Succeeded", "Failed")


def image_id(image: str) -> str:
    """The ``imageID`` a containerd kubelet reports: the repository and the digest it pulled
    (``docker.io/library/nginx@sha256:...``; CRI ``ContainerStatus.image_ref``). The digest is
    derived from the reference, so one image always reports the same digest."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    if ":" in name[slash + 1 :]:
        name = name[: name.rindex(":")]
    return f"{name}@sha256:{hashlib.sha256(image.encode()).hexdigest()}"


@dataclass
class ContainerRuntime:
    """Kubelet-side state of one container; the pod's containerStatuses are rendered from it."""

    spec: dict
    init: bool = False
    state: dict = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: dict = field(default_factory=dict)
    ready: bool = False
    started: bool = False
    restarts: int = 0
    container_id: str = ""
    logs: LogBuffer | None = None
    previous_logs: LogBuffer | None = None
    process: ContainerProcess | None = None
    ports: dict[int, int] = field(default_factory=dict)
    kill_reason: str | None = None  # set when the node kills the running container (OOMKilled)

    @property
    def name(self) -> str:
        return self.spec["name"]

    def status(self) -> dict:
        out = {
            "name": self.name,
            "image": self.spec["image"],
            "imageID": image_id(self.spec["image"]) if self.container_id else "",
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restarts,
            "state": self.state,
            "lastState": self.last_state,
        }
        if self.container_id:
            out["containerID"] = self.container_id
        return out


@dataclass
class PodRuntime:
    uid: str
    namespace: str
    name: str
    spec: dict
    containers: dict[str, ContainerRuntime] = field(default_factory=dict)
    tasks: set[asyncio.Task] = field(default_factory=set)
    node: str | None = None
    start_time: str | None = None
    initialized: bool = False
    conditions: dict[str, dict] = field(default_factory=dict)
    outcome: dict | None = None  # phase/reason/message forced by eviction, deadline or node loss
    terminating: bool = False
    dirty: bool = False

    def main_containers(self) -> list[ContainerRuntime]:
        return [c for c in self.containers.values() if not c.init]


def _tolerates(tolerations: list[dict], taint: dict) -> bool:
    for tol in tolerations:
        if tol.get("effect") and tol["effect"] != taint.get("effect"):
            continue
        if tol.get("operator") == "Exists":
            if not tol.get("key") or tol["key"] == taint.get("key"):
                return True
        elif tol.get("key") == taint.get("key") and tol.get("value", "") == taint.get("value", ""):
            return True
    return False


def _gpus(spec: dict) -> int:
    total = 0
    for c in spec.get("containers") or []:
        res = c.get("resources") or {}
        total += int(
            (res.get("requests") or {}).get("nvidia.com/gpu")
            or (res.get("limits") or {}).get("nvidia.com/gpu")
            or 0
        )
    return total


class Kubelet:
    """Runs every pod in the store. All methods run on the server's event loop."""

    def __init__(self, sim: KubeSim):
        self.sim = sim
        self.store = sim.store
        self.events = sim.events
        self.pods: dict[str, PodRuntime] = {}
        self._session: aiohttp.ClientSession | None = None

    # -- event intake ------------------------------------------------------------------------
    def handle(self, event: WatchEvent) -> None:
        """React to a pod change: start new pods, terminate deleting ones, drop removed ones."""
        if event.key != "pods":
            return
        meta = event.obj["metadata"]
        runtime = self.pods.get(meta["uid"])
        if event.type == "DELETED":
            if runtime is not None:
                self.pods.pop(meta["uid"])
                self.kill(runtime)
            return
        if meta.get("deletionTimestamp"):
            if runtime is None:
                self.store.remove(PODS, meta["namespace"], meta["name"])
            elif not runtime.terminating:
                runtime.terminating = True
                asyncio.get_running_loop().create_task(self._terminate(runtime, event.obj))
            return
        if (
            runtime is None
            and event.type == "ADDED"
            and event.obj.get("status", {}).get("phase") not in TERMINAL
        ):
            runtime = PodRuntime(meta["uid"], meta["namespace"], meta["name"], event.obj["spec"])
            for c in event.obj["spec"].get("initContainers") or []:
                runtime.containers[c["name"]] = ContainerRuntime(c, init=True)
            for c in event.obj["spec"]["containers"]:
                runtime.containers[c["name"]] = ContainerRuntime(c)
            self.pods[runtime.uid] = runtime
            self._spawn(runtime, self._run(runtime))

    def _spawn(self, runtime: PodRuntime, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        runtime.tasks.add(task)
        task.add_done_callback(runtime.tasks.discard)
        return task

    # -- lifecycle ---------------------------------------------------------------------------
    async def _run(self, rt: PodRuntime) -> None:
        try:
            await asyncio.sleep(self.sim.controller_delay)
            while self.sim.paused:
                await asyncio.sleep(0.05)
            if not await self._schedule(rt):
                return  # the pod is already gone
            rt.start_time = now_iso()
            deadline = rt.spec.get("activeDeadlineSeconds")
            if deadline is not None:
                self._spawn(rt, self._deadline(rt, float(deadline)))
            self._publish(rt)
            for c in rt.spec.get("initContainers") or []:
                if await self._run_container(rt, rt.containers[c["name"]]) != 0:
                    return
            rt.initialized = True
            await asyncio.gather(*(self._run_container(rt, c) for c in rt.main_containers()))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("kubesim kubelet failed running pod %s/%s", rt.namespace, rt.name)

    async def _schedule(self, rt: PodRuntime) -> bool:
        warned = False
        while True:
            pod = self.store.get(PODS, rt.namespace, rt.name)
            if pod is None or pod["metadata"]["uid"] != rt.uid:
                return False
            node, why = self._pick_node(pod)
            if node is not None:
                break
            if not warned:
                warned = True
                self._condition(rt, "PodScheduled", "False", "Unschedulable", why)
                self._publish(rt)
                self.events.emit(pod, "FailedScheduling", why, type="Warning", component="default-scheduler")
            await asyncio.sleep(0.2)
        rt.node = node
        self._condition(rt, "PodScheduled", "True")
        self._publish(rt)
        message = f"Successfully assigned {rt.namespace}/{rt.name} to {node}"
        self.events.emit(pod, "Scheduled", message, component="default-scheduler")
        return True

    def _pick_node(self, pod: dict) -> tuple[str | None, str]:
        nodes, _ = self.store.list(NODES)
        if not nodes:
            return IMPLICIT_NODE, ""
        spec = pod["spec"]
        if spec.get("nodeName"):
            return spec["nodeName"], ""
        wanted, reasons = _gpus(spec), Counter()
        selector = spec.get("nodeSelector") or {}
        affinity = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
            "requiredDuringSchedulingIgnoredDuringExecution"
        )
        pods, _ = self.store.list(PODS)
        for node in nodes:
            labels = node["metadata"].get("labels") or {}
            taints = [
                t
                for t in (node.get("spec") or {}).get("taints") or []
                if t.get("effect") in ("NoSchedule", "NoExecute")
            ]
            untolerated = [t for t in taints if not _tolerates(spec.get("tolerations") or [], t)]
            used = sum(
                _gpus(p["spec"])
                for p in pods
                if p["spec"].get("nodeName") == node["metadata"]["name"]
                and p.get("status", {}).get("phase") not in TERMINAL
            )
            allocatable = int(((node.get("status") or {}).get("allocatable") or {}).get("nvidia.com/gpu", 0))
            if (node.get("spec") or {}).get("unschedulable"):
                reasons["node(s) were unschedulable"] += 1
            elif any(labels.get(k) != v for k, v in selector.items()) or (
                affinity
                and not any(
                    node_selector_term_matches(t, labels) for t in affinity.get("nodeSelectorTerms") or []
                )
            ):
                reasons["node(s) didn't match Pod's node affinity/selector"] += 1
            elif untolerated:
                t = untolerated[0]
                reasons[f"node(s) had untolerated taint {{{t.get('key')}: {t.get('value', '')}}}"] += 1
            elif wanted and used + wanted > allocatable:
                reasons["Insufficient nvidia.com/gpu"] += 1
            else:
                return node["metadata"]["name"], ""
        detail = ", ".join(f"{n} {r}" for r, n in sorted(reasons.items()))
        return None, f"0/{len(nodes)} nodes are available: {detail}."

    async def _run_container(self, rt: PodRuntime, cr: ContainerRuntime) -> int:
        policy = rt.spec.get("restartPolicy", "Always")
        while True:
            behaviour = await self._pull(rt, cr)
            env = await self._resolve_env(rt, cr)
            if isinstance(behaviour, ScriptedContainer) and behaviour.start_delay:
                await asyncio.sleep(behaviour.start_delay)
            code = await self._execute(rt, cr, behaviour, env)
            restart = (policy == "Always" and not cr.init) or (policy != "Never" and code != 0)
            if not restart:
                return code
            cr.restarts += 1
            cr.last_state = cr.state
            backoff = min(self.sim.crash_backoff * 2 ** (cr.restarts - 1), 5.0)
            pod_ref = f"{rt.name}_{rt.namespace}({rt.uid})"
            message = f"back-off {backoff:g}s restarting failed container={cr.name} pod={pod_ref}"
            cr.state = {"waiting": {"reason": "CrashLoopBackOff", "message": message}}
            self._publish(rt)
            self._event(rt, cr, "BackOff", "Back-off restarting failed container", "Warning")
            await asyncio.sleep(backoff)

    async def _pull(self, rt: PodRuntime, cr: ContainerRuntime) -> Behaviour:
        image = cr.spec["image"]
        if not valid_image_reference(image):
            await self._invalid_image(rt, cr, image)
        self._event(rt, cr, "Pulling", f'Pulling image "{image}"')
        behaviour = self.sim.images.resolve(image)
        pull_error = behaviour.pull_error if isinstance(behaviour, ScriptedContainer) else None
        if behaviour is None or pull_error:
            reason = pull_error or "ErrImagePull"
            detail = (behaviour.pull_message if isinstance(behaviour, ScriptedContainer) else None) or (
                f"{image}: not found"
            )
            # containerd's answer, as the kubelet's image manager reports it (pkg/kubelet/images).
            message = (
                f'rpc error: code = NotFound desc = failed to pull and unpack image "{image}": '
                f'failed to resolve reference "{image}": {detail}'
                if detail.endswith("not found")
                else f'rpc error: code = Unknown desc = failed to pull and unpack image "{image}": {detail}'
            )
            cr.state = {"waiting": {"reason": reason, "message": message}}
            self._publish(rt)
            self._event(rt, cr, "Failed", f'Failed to pull image "{image}": {message}', "Warning")
            self._event(rt, cr, "Failed", f"Error: {reason}", "Warning")
            while True:
                await asyncio.sleep(self.sim.pull_backoff)
                behaviour = self.sim.images.resolve(image)
                if isinstance(behaviour, LocalProcess) or (
                    behaviour is not None and not behaviour.pull_error
                ):
                    break
                if reason in ("ErrImagePull", "ImagePullBackOff"):
                    # Since Kubernetes 1.32 the back-off message carries the last pull error
                    # (kubernetes/kubernetes#127918, pkg/kubelet/images/image_manager.go).
                    backoff = f'Back-off pulling image "{image}"'
                    waiting = {"reason": "ImagePullBackOff", "message": f"{backoff}: ErrImagePull: {message}"}
                    cr.state = {"waiting": waiting}
                    self._publish(rt)
                    self._event(rt, cr, "BackOff", backoff)
                    self._event(rt, cr, "Failed", "Error: ImagePullBackOff", "Warning")
        self._event(rt, cr, "Pulled", f'Successfully pulled image "{image}" in 12ms (12ms including waiting)')
        return behaviour

    async def _invalid_image(self, rt: PodRuntime, cr: ContainerRuntime, image: str) -> None:
        """An unparsable reference never starts (pkg/kubelet/images ErrInvalidImageName): Pending for good."""
        message = (
            f'Failed to apply default image tag "{image}": couldn\'t parse image name "{image}": '
            "invalid reference format"
        )
        cr.state = {"waiting": {"reason": "InvalidImageName", "message": message}}
        self._publish(rt)
        while True:
            self._event(rt, cr, "InspectFailed", message, "Warning")
            self._event(rt, cr, "Failed", "Error: InvalidImageName", "Warning")
            await asyncio.sleep(self.sim.pull_backoff)

    async def _resolve_env(self, rt: PodRuntime, cr: ContainerRuntime) -> dict[str, str]:
        while True:
            pod = self.store.get(PODS, rt.namespace, rt.name) or {"metadata": {}, "spec": rt.spec}
            try:
                return resolve_env(self.store, pod, cr.spec)
            except ConfigError as exc:
                if cr.state.get("waiting", {}).get("message") != str(exc):
                    cr.state = {"waiting": {"reason": "CreateContainerConfigError", "message": str(exc)}}
                    self._publish(rt)
                self._event(rt, cr, "Failed", f"Error: {exc}", "Warning")
                await asyncio.sleep(self.sim.pull_backoff)

    async def _execute(
        self, rt: PodRuntime, cr: ContainerRuntime, behaviour: Behaviour, env: dict[str, str]
    ) -> int:
        cr.previous_logs, cr.logs = cr.logs, LogBuffer()
        cr.container_id = f"containerd://{uuid.uuid4().hex}"
        self._event(rt, cr, "Created", f"Created container: {cr.name}")
        started_at = now_iso()
        if isinstance(behaviour, LocalProcess):
            process = await self._start_process(rt, cr, behaviour, env)
            if process is None:
                return 128
            cr.process = process
        cr.state, cr.started = {"running": {"startedAt": started_at}}, True
        probe = cr.spec.get("readinessProbe")
        cr.ready = not (probe and isinstance(behaviour, LocalProcess)) and not cr.init
        self._publish(rt)
        self._event(rt, cr, "Started", f"Started container {cr.name}")
        prober = self._spawn(rt, self._probe(rt, cr, probe)) if probe and cr.process else None
        try:
            code = await (cr.process.wait() if cr.process else self._script(cr, behaviour))
        finally:
            if prober is not None:
                prober.cancel()
        cr.process = None
        oom = cr.kill_reason == "OOMKilled" or (
            isinstance(behaviour, ScriptedContainer) and behaviour.oom_killed and cr.kill_reason is None
        )
        if oom:
            code = 137  # SIGKILL from the kernel's OOM killer, reported by the runtime as OOMKilled
        cr.kill_reason = None
        terminated = {
            "exitCode": code,
            "reason": "OOMKilled" if oom else "Completed" if code == 0 else "Error",
            "startedAt": started_at,
            "finishedAt": now_iso(),
            "containerID": cr.container_id,
        }
        if code != 0 and cr.spec.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            terminated["message"] = "\n".join(cr.logs.tail(80))[-2048:]
        cr.state, cr.ready, cr.started = {"terminated": terminated}, False, False
        self._publish(rt)  # status first: a log follower that sees the end must find the container terminated
        cr.logs.close()
        return code

    async def _start_process(
        self, rt: PodRuntime, cr: ContainerRuntime, behaviour: LocalProcess, env: dict[str, str]
    ) -> ContainerProcess | None:
        ports = {}
        for port in cr.spec.get("ports") or []:
            ports[int(port["containerPort"])] = free_port() if behaviour.ports else int(port["containerPort"])
        cr.ports = ports
        port_env = {f"KUBESIM_PORT_{p}": str(local) for p, local in ports.items()}
        if ports:
            port_env["PORT"] = str(next(iter(ports.values())))
        full_env = {**os.environ, **(behaviour.env or {}), "HOSTNAME": rt.name, **env, **port_env}
        argv = [
            expand(a, full_env)
            for a in build_argv(behaviour.argv, cr.spec.get("command"), cr.spec.get("args"))
        ]
        process = ContainerProcess(argv, full_env, behaviour.cwd, cr.logs.append)
        try:
            if not argv:
                raise OSError(2, "no command specified")
            await process.start()
        except OSError as exc:
            message = (
                "failed to create containerd task: OCI runtime create failed: unable to start container "
                f'process: exec: "{argv[0] if argv else ""}": {exc.strerror}'
            )
            cr.state = {"terminated": {"exitCode": 128, "reason": "StartError", "message": message}}
            cr.ready = False
            self._publish(rt)
            self._event(rt, cr, "Failed", f"Error: {message}", "Warning")
            cr.logs.close()
            return None
        return process

    async def _script(self, cr: ContainerRuntime, behaviour: ScriptedContainer) -> int:
        lines = [part for entry in behaviour.logs for part in str(entry).split("\n")]
        step = behaviour.run_seconds / (len(lines) + 1)
        for line in lines:
            await asyncio.sleep(step)
            if cr.kill_reason:
                return 137
            cr.logs.append(line)
        await asyncio.sleep(step)
        return 137 if cr.kill_reason else behaviour.exit_code

    async def _probe(self, rt: PodRuntime, cr: ContainerRuntime, probe: dict) -> None:
        period = min(float(probe.get("periodSeconds", 10)), self.sim.probe_period)
        await asyncio.sleep(min(float(probe.get("initialDelaySeconds", 0)), period))
        failures, threshold = 0, int(probe.get("failureThreshold", 3))
        while True:
            ok, detail = await self._probe_once(cr, probe)
            failures = 0 if ok else failures + 1
            ready = ok or (cr.ready and failures < threshold)
            if not ok:
                self._event(rt, cr, "Unhealthy", f"Readiness probe failed: {detail}", "Warning")
            if ready != cr.ready:
                cr.ready = ready
                self._publish(rt)
            await asyncio.sleep(period)

    async def _probe_once(self, cr: ContainerRuntime, probe: dict) -> tuple[bool, str]:
        action = probe.get("httpGet") or probe.get("tcpSocket")
        if action is None:
            return True, ""  # exec/grpc probes are not simulated: they pass
        port = action.get("port")
        if isinstance(port, str) and not port.isdigit():
            port = next((p["containerPort"] for p in cr.spec.get("ports") or [] if p.get("name") == port), 0)
        local = cr.ports.get(int(port), int(port))
        timeout = float(probe.get("timeoutSeconds", 1))
        try:
            if "tcpSocket" in probe:
                _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", local), timeout)
                writer.close()
                return True, ""
            if self._session is None:
                self._session = aiohttp.ClientSession()
            headers = {h["name"]: h["value"] for h in action.get("httpHeaders") or []}
            url = f"http://127.0.0.1:{local}{action.get('path', '/')}"
            async with self._session.get(
                url, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as resp:
                if 200 <= resp.status < 400:
                    return True, ""
                return False, f"HTTP probe failed with statuscode: {resp.status}"
        except (TimeoutError, OSError, aiohttp.ClientError) as exc:
            return False, f'Get "http://127.0.0.1:{local}": {exc or type(exc).__name__}'

    async def _deadline(self, rt: PodRuntime, seconds: float) -> None:
        await asyncio.sleep(seconds)
        message = "Pod was active on the node longer than the specified deadline"
        await self.fail(rt, "DeadlineExceeded", message)

    # -- forced endings (deadline, eviction, node loss, deletion) -------------------------------
    async def fail(
        self,
        rt: PodRuntime,
        reason: str | None,
        message: str | None,
        phase: str = "Failed",
        condition: dict | None = None,
        grace: float | None = None,
    ) -> None:
        """End the pod with ``phase``/``reason`` as kubelet or the node controller would; kills processes.

        ``grace`` is the SIGTERM-to-SIGKILL wait (default: the sim's cap); ``0`` is a node that lost power.
        """
        current = asyncio.current_task()
        for task in list(rt.tasks):
            if task is not current:
                task.cancel()
        grace = self.sim.max_grace_seconds if grace is None else grace
        await asyncio.gather(*(c.process.terminate(grace) for c in rt.containers.values() if c.process))
        for cr in rt.containers.values():
            if "terminated" not in cr.state:
                was_running = "running" in cr.state and grace > 0
                cr.state = {
                    "terminated": {
                        "exitCode": 137,
                        "reason": "Error" if was_running else "ContainerStatusUnknown",
                        "message": ""
                        if was_running
                        else "The container could not be located when the pod was terminated",
                        "startedAt": cr.state.get("running", {}).get("startedAt"),
                        "finishedAt": now_iso(),
                    }
                }
            cr.ready, cr.started, cr.process = False, False, None
        rt.outcome = {"phase": phase, "reason": reason, "message": message}
        if condition:
            self._condition(rt, condition["type"], "True", condition.get("reason"), condition.get("message"))
        self._publish(rt, force=True)
        for cr in rt.containers.values():
            if cr.logs:
                cr.logs.close()
        pod = self.store.get(PODS, rt.namespace, rt.name)
        if pod is not None and reason:
            self.events.emit(pod, reason, message or "", type="Warning")

    def oom_kill(self, rt: PodRuntime, container: str | None = None) -> bool:
        """The kernel's OOM killer ends a running container (SIGKILL; reported as OOMKilled, exit 137)."""
        for cr in rt.main_containers():
            if (container is None or cr.name == container) and "running" in cr.state:
                cr.kill_reason = "OOMKilled"
                if cr.process:
                    cr.process.kill()
                return True
        return False

    def mark_disruption(self, rt: PodRuntime, reason: str, message: str) -> None:
        """Add the ``DisruptionTarget`` condition a pod gets before it is evicted or preempted."""
        self._condition(rt, "DisruptionTarget", "True", reason, message)
        self._publish(rt, force=True)

    async def _terminate(self, rt: PodRuntime, pod: dict) -> None:
        """Graceful deletion: SIGTERM, SIGKILL after the grace period, final status, then removal.

        Followed: kubernetes.io "Pod Lifecycle" (Termination of Pods) and, since 1.27, the kubelet writing
        a terminal phase before the pod object goes (pkg/kubelet/status/status_manager.go TerminatePod: a
        container with no exit status becomes ContainerStatusUnknown, exit 137).
        """
        for task in list(rt.tasks):
            task.cancel()
        grace = min(float(pod["metadata"].get("deletionGracePeriodSeconds") or 0), self.sim.max_grace_seconds)
        running = [cr for cr in rt.containers.values() if "running" in cr.state]
        for cr in running:
            self._event(rt, cr, "Killing", f"Stopping container {cr.name}")
        codes = await asyncio.gather(*(self._stop(cr, grace) for cr in running))
        for cr, code in zip(running, codes, strict=True):
            terminated = {
                "exitCode": code,
                "reason": "Completed" if code == 0 else "Error",
                "startedAt": cr.state["running"].get("startedAt"),
                "finishedAt": now_iso(),
                "containerID": cr.container_id,
            }
            cr.state, cr.ready, cr.started, cr.process = {"terminated": terminated}, False, False, None
        for cr in rt.containers.values():
            if "terminated" not in cr.state:
                cr.state = {
                    "terminated": {
                        "exitCode": 137,
                        "reason": "ContainerStatusUnknown",
                        "message": "The container could not be located when the pod was terminated",
                    }
                }
                cr.ready = cr.started = False
        if rt.node is not None and rt.outcome is None:
            codes = [c.state["terminated"]["exitCode"] for c in rt.main_containers()]
            rt.outcome = {"phase": "Failed" if any(codes) else "Succeeded", "reason": None, "message": None}
            self._publish(rt, force=True)
        self.kill(rt)
        self.store.remove(PODS, rt.namespace, rt.name)

    async def _stop(self, cr: ContainerRuntime, grace: float) -> int:
        if cr.process is not None:
            code = await cr.process.terminate(grace)
            return 137 if code is None else code
        return 143  # a scripted container dies of SIGTERM at once (no handler)

    def kill(self, rt: PodRuntime) -> list[ContainerProcess]:
        """Stop everything of a pod right away (SIGKILL); returns the killed processes (to reap)."""
        rt.terminating = True
        for task in list(rt.tasks):
            task.cancel()
        killed = []
        for cr in rt.containers.values():
            if cr.process:
                cr.process.kill()
                killed.append(cr.process)
            if cr.logs:
                cr.logs.close()
        return killed

    async def kill_and_reap(self, rt: PodRuntime) -> None:
        """``kill``, then wait until the processes are really gone."""
        await asyncio.gather(*(p.reap() for p in self.kill(rt)))

    async def shutdown(self) -> None:
        """Kill every pod's processes (waiting until they are reaped) and forget all runtimes."""
        await asyncio.gather(*(self.kill_and_reap(rt) for rt in self.pods.values()))
        self.pods.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- status ------------------------------------------------------------------------------
    def republish(self) -> None:
        """Write out status changes held back while controllers were paused."""
        for rt in self.pods.values():
            if rt.dirty:
                self._publish(rt)

    def _condition(
        self, rt: PodRuntime, kind: str, status: str, reason: str | None = None, message: str | None = None
    ) -> None:
        old = rt.conditions.get(kind)
        if old and old["status"] == status and old.get("reason") == reason:
            return
        cond = {"type": kind, "status": status, "lastProbeTime": None, "lastTransitionTime": now_iso()}
        if reason:
            cond["reason"] = reason
        if message:
            cond["message"] = message
        rt.conditions[kind] = cond

    def _phase(self, rt: PodRuntime) -> str:
        if rt.outcome:
            return rt.outcome["phase"]
        main = rt.main_containers()
        if rt.node is None:
            return "Pending"
        policy = rt.spec.get("restartPolicy", "Always")
        codes = [c.state["terminated"]["exitCode"] for c in main if "terminated" in c.state]
        failed_init = any(
            c.init and "terminated" in c.state and c.state["terminated"]["exitCode"] != 0
            for c in rt.containers.values()
        )
        if failed_init and policy == "Never":
            return "Failed"
        if len(codes) == len(main) and (policy == "Never" or (policy == "OnFailure" and not any(codes))):
            return "Succeeded" if not any(codes) else "Failed"
        if any(c.started or c.restarts or "terminated" in c.state for c in main):
            return "Running"
        return "Pending"

    def _publish(self, rt: PodRuntime, force: bool = False) -> None:
        if self.sim.paused and not force:
            rt.dirty = True
            return
        rt.dirty = False
        phase = self._phase(rt)
        main = rt.main_containers()
        not_ready = [c.name for c in main if not c.ready]
        if rt.node:
            self._condition(
                rt,
                "Initialized",
                "True" if rt.initialized or phase in TERMINAL else "False",
                None if rt.initialized else "ContainersNotInitialized",
            )
            if phase == "Succeeded":
                self._condition(rt, "ContainersReady", "False", "PodCompleted")
                self._condition(rt, "Ready", "False", "PodCompleted")
            elif not_ready:
                message = f"containers with unready status: [{' '.join(not_ready)}]"
                self._condition(rt, "ContainersReady", "False", "ContainersNotReady", message)
                self._condition(rt, "Ready", "False", "ContainersNotReady", message)
            else:
                self._condition(rt, "ContainersReady", "True")
                self._condition(rt, "Ready", "True")
        order = [
            "PodReadyToStartContainers",
            "Initialized",
            "Ready",
            "ContainersReady",
            "PodScheduled",
            "DisruptionTarget",
        ]
        status: dict = {
            "phase": phase,
            "conditions": [rt.conditions[k] for k in order if k in rt.conditions],
        }
        if rt.outcome:
            status.update({k: rt.outcome[k] for k in ("reason", "message") if rt.outcome.get(k)})
        if rt.node:
            status.update(
                hostIP="127.0.0.1",
                hostIPs=[{"ip": "127.0.0.1"}],
                podIP="127.0.0.1",
                podIPs=[{"ip": "127.0.0.1"}],
                startTime=rt.start_time,
                containerStatuses=[c.status() for c in main],
            )
            if rt.spec.get("initContainers"):
                status["initContainerStatuses"] = [c.status() for c in rt.containers.values() if c.init]

        def apply(pod: dict) -> dict | None:
            if pod["metadata"]["uid"] != rt.uid:
                return None
            status["qosClass"] = pod.get("status", {}).get("qosClass", "BestEffort")
            pod["status"] = status
            if rt.node:
                pod["spec"]["nodeName"] = rt.node
            return pod

        self.store.mutate(PODS, rt.namespace, rt.name, apply)

    def _event(
        self, rt: PodRuntime, cr: ContainerRuntime, reason: str, message: str, type: str = "Normal"
    ) -> None:
        pod = self.store.get(PODS, rt.namespace, rt.name)
        if pod is not None:
            kind = "initContainers" if cr.init else "containers"
            self.events.emit(pod, reason, message, type=type, field_path=f"spec.{kind}{{{cr.name}}}")

    # -- lookups for the API server --------------------------------------------------------------
    def runtime(self, pod: dict) -> PodRuntime | None:
        return self.pods.get(pod["metadata"]["uid"])

    def log_buffer(self, pod: dict, container: str | None, previous: bool = False) -> LogBuffer:
        """The log of one container, or the 400 error the real API gives for that situation."""
        name = pod["metadata"]["name"]
        names = [c["name"] for c in pod["spec"]["containers"]]
        all_names = names + [c["name"] for c in pod["spec"].get("initContainers") or []]
        if container is None:
            if len(names) != 1:
                raise bad_request(
                    f"a container name must be specified for pod {name}, choose one of: [{' '.join(names)}]"
                )
            container = names[0]
        if container not in all_names:
            raise bad_request(f"container {container} is not valid for pod {name}")
        rt = self.runtime(pod)
        cr = rt.containers.get(container) if rt else None
        buffer = (cr.previous_logs if previous else cr.logs) if cr else None
        if buffer is None:
            if previous:
                raise bad_request(f'previous terminated container "{container}" in pod "{name}" not found')
            reason = (
                (cr.state.get("waiting") or {}).get("reason", "ContainerCreating")
                if cr
                else "ContainerCreating"
            )
            raise bad_request(f'container "{container}" in pod "{name}" is waiting to start: {reason}')
        return buffer

    def local_port(self, pod: dict, container_port: int) -> int | None:
        """The local TCP port a LocalProcess container's ``container_port`` is served on."""
        rt = self.runtime(pod)
        for cr in rt.containers.values() if rt else []:
            if container_port in cr.ports and cr.process is not None:
                return cr.ports[container_port]
        return None
