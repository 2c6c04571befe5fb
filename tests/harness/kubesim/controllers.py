"""Deployment, ReplicaSet, garbage-collector and namespace controllers (simplified, level-triggered)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import time
from typing import TYPE_CHECKING

from .errors import ApiError
from .resources import RESOURCES, resource_for
from .store import WatchEvent, clone, now_iso

if TYPE_CHECKING:
    from .sim import KubeSim

log = logging.getLogger(__name__)
PODS, RS, DEPLOYMENTS = resource_for("Pod"), resource_for("ReplicaSet"), resource_for("Deployment")
NAMESPACES = resource_for("Namespace")
REVISION = "deployment.kubernetes.io/revision"


def _pruned(value):
    if isinstance(value, dict):
        value = {k: _pruned(v) for k, v in value.items()}
        return {k: v for k, v in value.items() if v not in (None, {}, [])}
    if isinstance(value, list):
        return [_pruned(v) for v in value]
    return value


def template_hash(template: dict) -> str:
    """A stable hash of a pod template (the ``pod-template-hash`` label value).

    Nulls and empty maps/lists are ignored, as they are in the Go structs Kubernetes hashes: a template
    that round-tripped through kubectl (``creationTimestamp: null``) keeps its hash.
    """
    digest = hashlib.sha256(json.dumps(_pruned(template), sort_keys=True).encode()).hexdigest()
    return "".join(c for c in digest if c not in "aeiou")[:10]


def owned_by(obj: dict, uid: str) -> bool:
    return any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences") or [])


def _owner_ref(owner: dict) -> dict:
    meta = owner["metadata"]
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def is_active(pod: dict) -> bool:
    return not pod["metadata"].get("deletionTimestamp") and pod.get("status", {}).get("phase") not in (
        "Succeeded",
        "Failed",
    )


def is_ready(pod: dict) -> bool:
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _without_zeros(status: dict) -> dict:
    # The real API omits zero-valued counters (omitempty); clients must cope with them missing.
    return {k: v for k, v in status.items() if v not in (0, None)}


def _max_unavailable(spec: dict, desired: int) -> int:
    strategy = spec.get("strategy") or {}
    if strategy.get("type", "RollingUpdate") != "RollingUpdate" or desired == 0:
        return 0
    value = (strategy.get("rollingUpdate") or {}).get("maxUnavailable", "25%")
    if isinstance(value, str) and value.endswith("%"):
        return math.floor(desired * int(value[:-1]) / 100)
    return int(value)


def _set_condition(conditions: list[dict], kind: str, status: str, reason: str, message: str) -> list[dict]:
    now = now_iso()
    old = next((c for c in conditions if c["type"] == kind), None)
    new = {
        "type": kind,
        "status": status,
        "lastUpdateTime": now,
        "lastTransitionTime": now,
        "reason": reason,
        "message": message,
    }
    if old is not None:
        if old["status"] == status:
            new["lastTransitionTime"] = old.get("lastTransitionTime", now)
        if (old["status"], old.get("reason"), old.get("message")) == (status, reason, message):
            new["lastUpdateTime"] = old.get("lastUpdateTime", now)
    return [c for c in conditions if c["type"] != kind] + [new]


class Controllers:
    """Reconciles Deployments, ReplicaSets, owner references and namespace deletion on the server loop."""

    def __init__(self, sim: KubeSim):
        self.sim = sim
        self.store = sim.store
        self.events = sim.events
        self._pending: dict[tuple[str, str, str], asyncio.TimerHandle] = {}
        self._progress: dict[str, tuple[tuple, float]] = {}
        self._completed: dict[str, tuple] = {}
        self._deadlines: dict[str, asyncio.TimerHandle] = {}

    def handle(self, event: WatchEvent) -> None:
        """Queue the reconciles a change calls for."""
        meta = event.obj["metadata"]
        if event.type == "DELETED" and event.key not in ("events", "pods"):  # pods and events own nothing
            self.schedule("gc", "", meta["uid"])
            self._progress.pop(meta["uid"], None)
            self._completed.pop(meta["uid"], None)
        if event.key == "namespaces" and meta.get("deletionTimestamp"):
            self.schedule("namespace", "", meta["name"])
        elif event.key == "deployments.apps":
            self.schedule("deployment", meta["namespace"], meta["name"])
        elif event.key == "replicasets.apps":
            self.schedule("replicaset", meta["namespace"], meta["name"])
            self._schedule_owners(meta, "Deployment", "deployment")
        elif event.key == "pods":
            for rs_name in self._schedule_owners(meta, "ReplicaSet", "replicaset"):
                rs = self.store.get(RS, meta["namespace"], rs_name)
                if rs is not None:
                    self._schedule_owners(rs["metadata"], "Deployment", "deployment")

    def _schedule_owners(self, meta: dict, owner_kind: str, sync: str) -> list[str]:
        names = [r["name"] for r in meta.get("ownerReferences") or [] if r.get("kind") == owner_kind]
        for name in names:
            self.schedule(sync, meta["namespace"], name)
        return names

    def schedule(self, kind: str, namespace: str, name: str, delay: float | None = None) -> None:
        """Reconcile ``kind`` ``namespace/name`` after ``delay`` (default: the sim's controller_delay)."""
        key = (kind, namespace, name)
        if key in self._pending:
            return
        loop = asyncio.get_running_loop()
        self._pending[key] = loop.call_later(
            self.sim.controller_delay if delay is None else delay, self._run, key
        )

    def resync(self) -> None:
        """Reconcile every Deployment and ReplicaSet (after the controllers were paused)."""
        for res, kind in ((DEPLOYMENTS, "deployment"), (RS, "replicaset")):
            for obj in self.store.list(res)[0]:
                self.schedule(kind, obj["metadata"]["namespace"], obj["metadata"]["name"])

    def cancel_all(self) -> None:
        for handle in [*self._pending.values(), *self._deadlines.values()]:
            handle.cancel()
        self._pending.clear()
        self._deadlines.clear()
        self._progress.clear()
        self._completed.clear()

    def _run(self, key: tuple[str, str, str]) -> None:
        self._pending.pop(key, None)
        kind, namespace, name = key
        if self.sim.paused and kind in ("deployment", "replicaset"):
            return
        try:
            getattr(self, f"_sync_{kind}")(namespace, name)
        except ApiError as exc:
            if exc.code == 409:
                self.schedule(kind, namespace, name)
            elif exc.code not in (403, 404):  # 403/404: the namespace or object is going away
                log.warning("kubesim %s controller: %s", kind, exc.message)
        except Exception:
            log.exception("kubesim %s controller failed on %s/%s", kind, namespace, name)

    # -- garbage collection and namespaces ---------------------------------------------------------
    def _sync_gc(self, _: str, uid: str) -> None:
        for res in RESOURCES:
            if res.kind == "Event":
                continue
            for obj in self.store.list(res)[0]:
                if owned_by(obj, uid):
                    meta = obj["metadata"]
                    try:
                        self.sim.delete_object(res, meta.get("namespace"), meta["name"])
                    except ApiError:
                        pass

    def _sync_namespace(self, _: str, name: str) -> None:
        for res in RESOURCES:
            if res.namespaced:
                for obj in self.store.list(res, name)[0]:
                    self.store.remove(res, name, obj["metadata"]["name"])
        self.store.remove(NAMESPACES, None, name)

    # -- ReplicaSets ---------------------------------------------------------------------------
    def _sync_replicaset(self, namespace: str, name: str) -> None:
        rs = self.store.get(RS, namespace, name)
        if rs is None or rs["metadata"].get("deletionTimestamp"):
            return
        uid = rs["metadata"]["uid"]
        active = [p for p in self.store.list(PODS, namespace)[0] if owned_by(p, uid) and is_active(p)]
        want = int(rs["spec"].get("replicas", 1))
        template = rs["spec"]["template"]
        for _ in range(want - len(active)):
            pod = {
                "metadata": {
                    "generateName": f"{name}-",
                    "namespace": namespace,
                    "labels": clone((template.get("metadata") or {}).get("labels") or {}),
                    "annotations": clone((template.get("metadata") or {}).get("annotations") or {}),
                    "ownerReferences": [_owner_ref(rs)],
                },
                "spec": clone(template["spec"]),
            }
            try:
                created = self.sim.create_object(PODS, pod)
            except ApiError as exc:
                # pkg/controller/replicaset: a refused create (e.g. exceeded quota) is a FailedCreate event.
                if exc.code == 403:
                    message = f"Error creating: {exc.message}"
                    self.events.emit(
                        rs, "FailedCreate", message, type="Warning", component="replicaset-controller"
                    )
                raise
            active.append(created)
            message = f"Created pod: {created['metadata']['name']}"
            self.events.emit(rs, "SuccessfulCreate", message, component="replicaset-controller")
        if len(active) > want:
            # Like the real controller: not-ready pods go first, then the newest.
            active.sort(key=lambda p: (is_ready(p), p["metadata"]["creationTimestamp"]), reverse=False)
            victims, active = active[: len(active) - want], active[len(active) - want :]
            for pod in victims:
                self.sim.delete_object(PODS, namespace, pod["metadata"]["name"])
                message = f"Deleted pod: {pod['metadata']['name']}"
                self.events.emit(rs, "SuccessfulDelete", message, component="replicaset-controller")
        ready = sum(1 for p in active if is_ready(p))
        counts = {"fullyLabeledReplicas": len(active), "readyReplicas": ready, "availableReplicas": ready}
        status = {
            "replicas": len(active),
            **_without_zeros(counts),
            "observedGeneration": rs["metadata"]["generation"],
        }

        def apply(obj: dict) -> dict:
            obj["status"] = status
            return obj

        self.store.mutate(RS, namespace, name, apply)

    # -- Deployments ---------------------------------------------------------------------------
    def _scale(self, deployment: dict, rs: dict, replicas: int) -> None:
        current = int(rs["spec"].get("replicas", 0))
        if current == replicas:
            return

        def apply(obj: dict) -> dict:
            obj["spec"]["replicas"] = replicas
            obj["metadata"].setdefault("annotations", {})["deployment.kubernetes.io/desired-replicas"] = str(
                deployment["spec"].get("replicas", 1)
            )
            return obj

        self.store.mutate(RS, rs["metadata"]["namespace"], rs["metadata"]["name"], apply)
        verb = "up" if replicas > current else "down"
        message = f"Scaled {verb} replica set {rs['metadata']['name']} from {current} to {replicas}"
        self.events.emit(deployment, "ScalingReplicaSet", message, component="deployment-controller")

    def _sync_deployment(self, namespace: str, name: str) -> None:
        d = self.store.get(DEPLOYMENTS, namespace, name)
        if d is None or d["metadata"].get("deletionTimestamp"):
            return
        spec, uid, generation = d["spec"], d["metadata"]["uid"], d["metadata"]["generation"]
        desired = int(spec.get("replicas", 1))
        pod_hash = template_hash(spec["template"])
        owned = [rs for rs in self.store.list(RS, namespace)[0] if owned_by(rs, uid)]
        revisions = [int((rs["metadata"].get("annotations") or {}).get(REVISION, 0)) for rs in owned]
        new_rs = next(
            (rs for rs in owned if rs["metadata"].get("labels", {}).get("pod-template-hash") == pod_hash),
            None,
        )
        created = new_rs is None
        if new_rs is None:
            new_rs = self._create_replicaset(d, pod_hash, max(revisions, default=0) + 1)
        elif int(new_rs["metadata"].get("annotations", {}).get(REVISION, 0)) != max(revisions, default=0):
            # A rollback: the old template becomes the newest revision.
            new_rs = self._annotate(RS, new_rs, REVISION, str(max(revisions) + 1))
        olds = [rs for rs in owned if rs["metadata"]["uid"] != new_rs["metadata"]["uid"]]
        pods = [p for p in self.store.list(PODS, namespace)[0] if is_active(p)]
        new_pods = [p for p in pods if owned_by(p, new_rs["metadata"]["uid"])]
        old_pods = [p for p in pods if any(owned_by(p, rs["metadata"]["uid"]) for rs in olds)]
        if (spec.get("strategy") or {}).get("type") == "Recreate":
            for rs in olds:
                self._scale(d, rs, 0)
            self._scale(d, new_rs, 0 if old_pods else desired)
        else:
            self._scale(d, new_rs, desired)
            if sum(1 for p in new_pods if is_ready(p)) >= desired:
                for rs in olds:
                    self._scale(d, rs, 0)
        revision = new_rs["metadata"].get("annotations", {}).get(REVISION)
        d = self._annotate(DEPLOYMENTS, d, REVISION, revision)
        self._write_status(d, new_rs["metadata"]["name"], created, desired, new_pods, old_pods, generation)

    def _recheck_at_deadline(self, d: dict, delay: float) -> None:
        uid = d["metadata"]["uid"]
        if uid in self._deadlines:
            self._deadlines[uid].cancel()
        loop = asyncio.get_running_loop()
        args = ("deployment", d["metadata"]["namespace"], d["metadata"]["name"], 0.0)
        self._deadlines[uid] = loop.call_later(delay, self.schedule, *args)

    def _annotate(self, res, obj: dict, key: str, value: str) -> dict:
        if (obj["metadata"].get("annotations") or {}).get(key) == value:
            return obj

        def apply(o: dict) -> dict:
            o["metadata"].setdefault("annotations", {})[key] = value
            return o

        meta = obj["metadata"]
        return self.store.mutate(res, meta.get("namespace"), meta["name"], apply) or obj

    def _create_replicaset(self, d: dict, pod_hash: str, revision: int) -> dict:
        spec = d["spec"]
        template = clone(spec["template"])
        template.setdefault("metadata", {}).setdefault("labels", {})["pod-template-hash"] = pod_hash
        selector = clone(spec["selector"])
        selector.setdefault("matchLabels", {})["pod-template-hash"] = pod_hash
        rs = {
            "metadata": {
                "name": f"{d['metadata']['name']}-{pod_hash}",
                "namespace": d["metadata"]["namespace"],
                "labels": clone(template["metadata"]["labels"]),
                "annotations": {
                    REVISION: str(revision),
                    "deployment.kubernetes.io/desired-replicas": str(spec.get("replicas", 1)),
                },
                "ownerReferences": [_owner_ref(d)],
            },
            "spec": {"replicas": 0, "selector": selector, "template": template},
        }
        return self.sim.create_object(RS, rs)

    def _write_status(
        self,
        d: dict,
        rs_name: str,
        created: bool,
        desired: int,
        new_pods: list,
        old_pods: list,
        generation: int,
    ) -> None:
        uid, spec = d["metadata"]["uid"], d["spec"]
        updated = len(new_pods)
        replicas = updated + len(old_pods)
        ready = sum(1 for p in new_pods + old_pods if is_ready(p))
        available = ready
        complete = updated == desired and replicas == desired and available == desired
        now = time.monotonic()
        signature = (generation, rs_name, updated, ready, replicas)
        if self._progress.get(uid, ((), 0.0))[0] != signature:
            self._progress[uid] = (signature, now)
        since = self._progress[uid][1]
        deadline = float(spec.get("progressDeadlineSeconds", 600))
        conditions = clone((d.get("status") or {}).get("conditions") or [])
        minimum = available >= desired - _max_unavailable(spec, desired)
        conditions = _set_condition(
            conditions,
            "Available",
            "True" if minimum else "False",
            "MinimumReplicasAvailable" if minimum else "MinimumReplicasUnavailable",
            "Deployment has minimum availability."
            if minimum
            else "Deployment does not have minimum availability.",
        )
        if complete:
            self._completed[uid] = (generation, rs_name)
            progressing = (
                "True",
                "NewReplicaSetAvailable",
                f'ReplicaSet "{rs_name}" has successfully progressed.',
            )
        elif self._completed.get(uid) == (generation, rs_name):
            progressing = None  # a finished rollout does not time out later, as in Kubernetes
        elif now - since > deadline:
            progressing = (
                "False",
                "ProgressDeadlineExceeded",
                f'ReplicaSet "{rs_name}" has timed out progressing.',
            )
        else:
            if created:
                progressing = ("True", "NewReplicaSetCreated", f'Created new replica set "{rs_name}"')
            else:
                progressing = ("True", "ReplicaSetUpdated", f'ReplicaSet "{rs_name}" is progressing.')
            self._recheck_at_deadline(d, since + deadline - now + 0.05)
        if progressing is not None:
            conditions = _set_condition(conditions, "Progressing", *progressing)
        conditions.sort(key=lambda c: c["type"])
        status = _without_zeros(
            {
                "replicas": replicas,
                "updatedReplicas": updated,
                "readyReplicas": ready,
                "availableReplicas": available,
                "unavailableReplicas": max(desired - available, 0),
            }
        )
        status.update(observedGeneration=generation, conditions=conditions)

        def apply(obj: dict) -> dict | None:
            if obj["metadata"]["generation"] != generation:
                return None  # the spec moved on meanwhile; the next reconcile reports on it
            obj["status"] = status
            return obj

        self.store.mutate(DEPLOYMENTS, d["metadata"]["namespace"], d["metadata"]["name"], apply)
