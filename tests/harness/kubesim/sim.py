"""``KubeSim``: the simulated cluster's public face, and the thread that serves it."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from .behaviours import Behaviour, ImageRegistry
from .controllers import Controllers
from .defaults import prepare_for_create
from .errors import ApiError, not_found
from .events import EventRecorder
from .faults import Faults, RecordedRequest, RequestLog
from .kubelet import Kubelet
from .processes import kill_all_groups
from .quota import admit_pod, refresh_status
from .rbac import ADMIN_TOKEN, Authorizer, Tokens, User, service_account_user
from .resources import Resource, resource_for
from .selectors import LabelSelector, parse_label_selector, selector_from_spec
from .server import ApiServer
from .store import Store, WatchEvent

log = logging.getLogger(__name__)
PODS, NAMESPACES = resource_for("Pod"), resource_for("Namespace")


class KubeSim:
    """A stateful Kubernetes API over real HTTP, with a simulated scheduler, kubelet and controllers.

    The constructor does no I/O; ``start()`` serves on ``127.0.0.1`` from a background thread with its own
    event loop. All ``sim.*`` methods are safe to call from any other thread.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.host, self.port = host, port
        self.store = Store()
        self.events = EventRecorder(self.store)
        self.images = ImageRegistry()
        self.faults = Faults()
        self.request_log = RequestLog()
        self.kubelet = Kubelet(self)
        self.tokens = Tokens()
        self.authorizer = Authorizer(self.store)
        self.controllers = Controllers(self)
        self.kubeconfig: str | None = None
        self.paused = False
        # Timings, scaled down from Kubernetes' defaults so tests stay fast.
        self.controller_delay = 0.05  # spec change -> controller/kubelet reaction
        self.probe_period = 0.2  # cap on readinessProbe.periodSeconds
        self.pull_backoff = 0.5  # ErrImagePull -> ImagePullBackOff retry interval
        self.crash_backoff = 0.5  # first CrashLoopBackOff delay (doubles, capped at 5 s)
        self.max_grace_seconds = 2.0  # cap on terminationGracePeriodSeconds
        self._lock = threading.Lock()
        self._admission = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._server: ApiServer | None = None
        self._unsubscribe: Callable[[], None] | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (only meaningful once started)."""
        return f"http://{self.host}:{self.port}"

    @property
    def service_url_template(self) -> str:
        """``MLOPS_SERVING_DIRECT_URL`` for code that reaches Services as a pod would (by DNS, no API
        credentials): the simulated cluster network (server.py ``_network``)."""
        return f"{self.url}/_network/{{namespace}}/{{service}}:{{port}}"

    def start(self) -> KubeSim:
        """Start serving (idempotent); returns self."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return self
            ready = threading.Event()
            failure: list[BaseException] = []
            self._thread = threading.Thread(
                target=self._serve, args=(ready, failure), name="kubesim", daemon=True
            )
            self._thread.start()
            if not ready.wait(30):
                raise RuntimeError("kubesim did not start within 30 s")
            if failure:
                raise RuntimeError("kubesim failed to start") from failure[0]
            return self

    def _serve(self, ready: threading.Event, failure: list[BaseException]) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            loop.run_until_complete(self._startup())
        except BaseException as exc:  # noqa: B036 - reported to the starting thread
            failure.append(exc)
            ready.set()
            loop.close()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            self._loop = None

    async def _startup(self) -> None:
        self._server = ApiServer(self)
        self._runner = web.AppRunner(
            self._server.app(),
            handle_signals=False,
            shutdown_timeout=0.5,
            access_log=None,
            handler_cancellation=True,  # a client leaving a watch or log follow ends its handler
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        _, self._unsubscribe = self.store.subscribe(self._on_store_event)
        for pod in self.store.list(PODS)[0]:
            self.kubelet.handle(WatchEvent(0, "ADDED", "pods", pod, None))
        self.controllers.resync()

    def _on_store_event(self, event: WatchEvent) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._dispatch_event, event)

    def _dispatch_event(self, event: WatchEvent) -> None:
        for component in (self.kubelet, self.controllers):
            try:
                component.handle(event)
            except Exception:
                log.exception("kubesim: %s failed handling %s", type(component).__name__, event.type)

    def stop(self) -> None:
        """Stop serving and kill every local process this sim started."""
        with self._lock:
            loop, thread = self._loop, self._thread
            if loop is not None and thread is not None and thread.is_alive():
                asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(30)
                loop.call_soon_threadsafe(loop.stop)
                thread.join(10)
            self._thread = None
            kill_all_groups()

    async def _shutdown(self) -> None:
        if self._unsubscribe:
            self._unsubscribe()
        self.controllers.cancel_all()
        await self.kubelet.shutdown()
        if self._server is not None:
            await self._server.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def reset(self) -> None:
        """Wipe objects, nodes, faults, recorded requests and images; kill all pods' processes."""
        if self._running():
            self._call(self._reset_async())
        else:
            self._reset_state()

    async def _reset_async(self) -> None:
        self.controllers.cancel_all()
        await self.kubelet.shutdown()
        self._reset_state()

    def _reset_state(self) -> None:
        self.store.reset()
        self.events.clear()
        self.faults.clear()
        self.request_log.clear()
        self.images.clear()
        self.paused = False

    def _running(self) -> bool:
        return self._loop is not None and self._thread is not None and self._thread.is_alive()

    def _call(self, coro: Coroutine) -> Any:
        if not self._running():
            coro.close()
            raise RuntimeError("kubesim is not running: call start() first")
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("kubesim control methods cannot be called from the server thread")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    def write_kubeconfig(self, path: str | Path, namespace: str = "default", token: str = ADMIN_TOKEN) -> str:
        """Write a kubeconfig whose current context ``kubesim`` points at this server; returns the path.

        The default token is the cluster admin; pass one from ``add_token`` to act as another identity.
        """
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kubesim", "cluster": {"server": self.url}}],
            "users": [{"name": "kubesim", "user": {"token": token}}],
            "contexts": [
                {
                    "name": "kubesim",
                    "context": {"cluster": "kubesim", "user": "kubesim", "namespace": namespace},
                }
            ],
            "current-context": "kubesim",
            "preferences": {},
        }
        Path(path).write_text(yaml.safe_dump(config))
        if self.kubeconfig is None and token == ADMIN_TOKEN:
            self.kubeconfig = str(path)
        return str(path)

    def admin_api_client(self):
        """The official client's ``ApiClient`` as the cluster admin (``self.kubeconfig``): a test's own
        set-up, or what a person or another controller does by hand while the code under test runs
        as the worker service account."""
        from kubernetes import config

        if self.kubeconfig is None:
            raise RuntimeError("write_kubeconfig() with the admin token first")
        return config.new_client_from_config(config_file=self.kubeconfig)

    def add_token(self, token: str, user: User) -> str:
        """Accept ``token`` as a bearer token of ``user`` (RBAC then applies to it); returns the token."""
        self.tokens.add(token, user)
        return token

    def service_account_kubeconfig(
        self, path: str | Path, sa_namespace: str, sa_name: str, namespace: str = "default"
    ) -> str:
        """A kubeconfig that authenticates as ``system:serviceaccount:SA_NAMESPACE:SA_NAME``."""
        token = self.add_token(
            f"kubesim-sa.{sa_namespace}.{sa_name}", service_account_user(sa_namespace, sa_name)
        )
        return self.write_kubeconfig(path, namespace, token)

    # -- objects -------------------------------------------------------------------------------
    def create_object(self, res: Resource, obj: dict) -> dict:
        """Create through the same defaulting, validation and admission as a POST (API and controllers)."""
        obj = prepare_for_create(res, obj)
        if res.kind == "Pod":
            # Two creates must not both squeeze under a quota: admission and the write happen under one lock.
            with self._admission:
                admit_pod(self.store, obj)
                created = self.store.create(res, obj)
            refresh_status(self.store, created["metadata"]["namespace"])
            return created
        created = self.store.create(res, obj)
        if res.kind == "Namespace":
            sa = {"metadata": {"name": "default", "namespace": created["metadata"]["name"]}}
            self.store.create(resource_for("ServiceAccount"), sa)
        return created

    def delete_object(
        self,
        res: Resource,
        namespace: str | None,
        name: str,
        grace: int | None = None,
        preconditions: dict | None = None,
    ) -> dict:
        """Delete like the API: pods gracefully (kubelet finishes), namespaces with contents, else at once."""
        obj = self.store.get(res, namespace, name)
        if obj is None:
            raise not_found(res, name)
        for field in ("uid", "resourceVersion"):
            wanted = (preconditions or {}).get(field)
            if wanted and wanted != obj["metadata"][field]:
                actual = obj["metadata"][field]
                message = f"Precondition failed: {field} in precondition: {wanted}, {field} in object meta: "
                raise ApiError(409, message + actual, "Conflict")
        if res.kind == "Pod":
            if grace is None:
                grace = int(obj["spec"].get("terminationGracePeriodSeconds", 30))
            if grace == 0 or not obj["spec"].get("nodeName"):
                return self.store.remove(res, namespace, name) or obj
            return self.store.mark_deleting(res, namespace, name, grace)
        if res.kind == "Namespace":
            self.store.mark_deleting(res, None, name, 0)

            def terminating(ns: dict) -> dict:
                ns["status"] = {"phase": "Terminating"}
                return ns

            return self.store.mutate(res, None, name, terminating) or obj
        if obj["metadata"].get("finalizers"):
            return self.store.mark_deleting(res, namespace, name, 0)
        return self.store.remove(res, namespace, name) or obj

    def create(self, obj: dict) -> dict:
        """Create any supported object (namespace taken from the object, ``default`` if absent)."""
        res = resource_for(obj["kind"])
        obj = dict(obj, metadata=dict(obj.get("metadata") or {}))
        if res.namespaced:
            obj["metadata"].setdefault("namespace", "default")
        return self.create_object(res, obj)

    def get(self, kind: str, namespace: str | None, name: str) -> dict | None:
        """One object by kind ("Pod", "deployments", "deploy", ...), or ``None``."""
        return self.store.get(resource_for(kind), namespace, name)

    def list(
        self, kind: str, namespace: str | None = None, label_selector: str | dict | None = None
    ) -> list[dict]:
        """Objects of a kind, optionally in one namespace and matching a selector (string or map)."""
        selector: LabelSelector | None = None
        if isinstance(label_selector, dict):
            selector = selector_from_spec(label_selector)
        elif label_selector:
            selector = parse_label_selector(label_selector)
        return self.store.list(resource_for(kind), namespace, selector)[0]

    def delete(self, kind: str, namespace: str | None, name: str, grace: int | None = None) -> dict:
        """Delete as a client would (pods gracefully)."""
        return self.delete_object(resource_for(kind), namespace, name, grace)

    def create_namespace(self, name: str) -> dict:
        """Create a namespace (with its ``default`` ServiceAccount, as Kubernetes does)."""
        return self.create({"kind": "Namespace", "metadata": {"name": name}})

    def add_node(
        self,
        name: str,
        labels: dict[str, str] | None = None,
        allocatable: dict[str, str] | None = None,
        taints: list[dict] | None = None,
    ) -> dict:
        """Register a Ready node; once any node exists, pods schedule only onto fitting nodes."""
        resources = allocatable or {"cpu": "16", "memory": "64Gi", "pods": "110"}
        node = {
            "kind": "Node",
            "metadata": {
                "name": name,
                "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", **(labels or {})},
            },
            "spec": {"taints": list(taints or [])},
            "status": {
                "capacity": dict(resources),
                "allocatable": dict(resources),
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "KubeletReady",
                        "message": "kubelet is posting ready status",
                    }
                ],
                "addresses": [
                    {"type": "InternalIP", "address": "127.0.0.1"},
                    {"type": "Hostname", "address": name},
                ],
                # Every field the API marks required: the official client refuses a NodeInfo without them.
                "nodeInfo": {
                    "machineID": f"kubesim-{name}",
                    "systemUUID": f"kubesim-{name}",
                    "bootID": f"kubesim-{name}",
                    "kernelVersion": "6.1.0-kubesim",
                    "osImage": "kubesim",
                    "containerRuntimeVersion": "kubesim://1.0",
                    "kubeletVersion": "v1.32.0-kubesim",
                    "kubeProxyVersion": "v1.32.0-kubesim",
                    "operatingSystem": "linux",
                    "architecture": "amd64",
                },
            },
        }
        return self.create(node)

    def wait_for(
        self,
        kind: str,
        namespace: str | None,
        name: str,
        predicate: Callable[[dict], bool],
        timeout: float = 10.0,
    ) -> dict:
        """Poll until the object exists and ``predicate(obj)`` holds; returns it, or raises TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            obj = self.get(kind, namespace, name)
            if obj is not None and predicate(obj):
                return obj
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{kind} {namespace}/{name} did not reach the expected state in {timeout}s: {obj}"
                )
            time.sleep(0.05)

    # -- images ----------------------------------------------------------------------------------
    def register_image(self, image: str, behaviour: Behaviour) -> None:
        """Say what containers of ``image`` do (exact reference first, then ignoring tag)."""
        self.images.register(image, behaviour)

    # -- requests --------------------------------------------------------------------------------
    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far (method, path, query, content_type, body, status)."""
        return self.request_log.snapshot()

    def requests_matching(
        self, method: str | None = None, path_regex: str | None = None
    ) -> list[RecordedRequest]:
        """Recorded requests filtered by method and a regex searched in the path."""
        return self.request_log.matching(method, path_regex)

    # -- test controls ---------------------------------------------------------------------------
    def logs(self, namespace: str, pod: str, container: str | None = None) -> list[str]:
        """The current log lines of a pod's container."""

        async def read() -> list[str]:
            obj = self.store.get(PODS, namespace, pod)
            if obj is None:
                raise not_found(PODS, pod)
            return [line for _, line in self.kubelet.log_buffer(obj, container).lines]

        return self._call(read())

    def evict_pod(
        self, namespace: str, name: str, message: str = "The node was low on resource: memory."
    ) -> None:
        """Kubelet-style eviction: phase Failed, reason Evicted, process killed, Evicted event."""
        condition = {"type": "DisruptionTarget", "reason": "TerminationByKubelet", "message": message}
        self._call(self._force_end(namespace, name, "Evicted", message, "Failed", condition))

    def lose_node(self, namespace: str, name: str, phase: str = "Failed") -> None:
        """The pod's node vanished: phase ``phase`` (Failed or Unknown), reason NodeLost, process gone."""
        pod = self.store.get(PODS, namespace, name) or {"spec": {}}
        node = pod["spec"].get("nodeName", "kubesim-node")
        message = f"Node {node} which was running pod {name} is unresponsive"
        condition = {"type": "DisruptionTarget", "reason": "DeletionByPodGC", "message": message}
        self._call(self._force_end(namespace, name, "NodeLost", message, phase, condition))

    def reboot_node(self, namespace: str, name: str) -> None:
        """The node running the pod rebooted: its containers are gone without SIGTERM.

        What the kubelet reports afterwards (pkg/kubelet/kubelet_pods.go, convertToAPIContainerStatuses): each
        container that was running is terminated with reason ContainerStatusUnknown, exit 137, "The container
        could not be located when the pod was terminated"; a restartPolicy Never pod is Failed with no pod
        reason, message or DisruptionTarget condition.
        """
        self._call(self._force_end(namespace, name, None, None, "Failed", None, grace=0))

    def oom_kill(self, namespace: str, name: str, container: str | None = None) -> None:
        """The kernel's OOM killer kills the pod's running container at its memory limit.

        kubernetes.io "Assign Memory Resources to Containers": the container is terminated with reason
        OOMKilled and exit code 137 (128 + SIGKILL); with restartPolicy Never the pod is Failed, with no
        pod-level reason.
        """

        async def kill() -> None:
            pod = self.store.get(PODS, namespace, name)
            runtime = self.kubelet.runtime(pod) if pod else None
            if runtime is None or not self.kubelet.oom_kill(runtime, container):
                raise RuntimeError(f"pod {namespace}/{name} has no running container to OOM-kill")

        self._call(kill())

    def preempt_pod(self, namespace: str, name: str, preemptor: str = "high-priority") -> None:
        """The scheduler preempts the pod for a higher-priority one: DisruptionTarget, then graceful deletion.

        Followed: pkg/scheduler/framework/preemption/preemption.go (prepareCandidate): the victim gets the
        condition DisruptionTarget=True, reason PreemptionByScheduler, message "<scheduler>: preempting to
        accommodate a higher priority pod", a "Preempted" event, and is then deleted with its own
        terminationGracePeriodSeconds (kubernetes.io "Pod Priority and Preemption", "Disruptions").
        """

        async def preempt() -> None:
            pod = self.store.get(PODS, namespace, name)
            if pod is None:
                raise not_found(PODS, name)
            scheduler = pod["spec"].get("schedulerName", "default-scheduler")
            message = f"{scheduler}: preempting to accommodate a higher priority pod"
            self.disrupt(pod, "PreemptionByScheduler", message)
            node = pod["spec"].get("nodeName") or "kubesim-node"
            self.events.emit(
                pod, "Preempted", f"Preempted by {namespace}/{preemptor} on node {node}", component=scheduler
            )
            self.delete_object(PODS, namespace, name)

        self._call(preempt())

    def disrupt(self, pod: dict, reason: str, message: str) -> None:
        """Set ``DisruptionTarget=True`` with ``reason`` on a pod about to be deleted (server thread only)."""
        runtime = self.kubelet.runtime(pod)
        if runtime is not None:
            self.kubelet.mark_disruption(runtime, reason, message)
            return
        condition = {"type": "DisruptionTarget", "status": "True", "reason": reason, "message": message}

        def apply(obj: dict) -> dict:
            conditions = [c for c in obj["status"].get("conditions") or [] if c["type"] != "DisruptionTarget"]
            obj["status"]["conditions"] = [*conditions, condition]
            return obj

        self.store.mutate(PODS, pod["metadata"]["namespace"], pod["metadata"]["name"], apply)

    def add_node_after(self, seconds: float, name: str, **kwargs: Any) -> threading.Timer:
        """Register a node ``seconds`` from now (a node pool scaling up); returns the started timer."""
        timer = threading.Timer(seconds, self.add_node, args=(name,), kwargs=kwargs)
        timer.daemon = True
        timer.start()
        return timer

    async def _force_end(
        self,
        namespace: str,
        name: str,
        reason: str | None,
        message: str | None,
        phase: str,
        condition: dict | None,
        grace: float | None = None,
    ) -> None:
        pod = self.store.get(PODS, namespace, name)
        if pod is None:
            raise not_found(PODS, name)
        runtime = self.kubelet.runtime(pod)
        if runtime is not None:
            await self.kubelet.fail(runtime, reason, message, phase, condition, grace=grace)
            return

        def apply(obj: dict) -> dict:
            obj["status"]["phase"] = phase
            if reason:
                obj["status"].update(reason=reason, message=message)
            return obj

        self.store.mutate(PODS, namespace, name, apply)

    def delete_pod_now(self, namespace: str, name: str) -> None:
        """The object disappears at once (404 afterwards) and its processes die, like a force delete."""

        async def remove() -> None:
            pod = self.store.get(PODS, namespace, name)
            if pod is None:
                raise not_found(PODS, name)
            runtime = self.kubelet.pods.pop(pod["metadata"]["uid"], None)
            self.store.remove(PODS, namespace, name)
            if runtime is not None:
                await self.kubelet.kill_and_reap(runtime)

        self._call(remove())

    def pause_controllers(self) -> None:
        """Freeze kubelet's status writes and the Deployment/ReplicaSet controllers (status goes stale)."""
        self.paused = True

    def resume_controllers(self) -> None:
        """Unfreeze; held-back status and reconciles happen now."""
        self.paused = False
        if self._running():

            async def catch_up() -> None:
                self.kubelet.republish()
                self.controllers.resync()

            self._call(catch_up())
