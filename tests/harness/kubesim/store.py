"""The thread-safe object store: server-set metadata, resourceVersions, generations and watch history."""

from __future__ import annotations

import json
import random
import threading
import uuid
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from .errors import ApiError, already_exists, bad_request, conflict, invalid, not_found
from .resources import Resource, resource_for
from .selectors import LabelSelector, fields_match

_NAME_SUFFIX_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # the alphabet of Kubernetes' generateName suffixes
DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


def clone(obj):
    """A deep copy of a JSON-like value (faster than ``copy.deepcopy`` for these shapes)."""
    return json.loads(json.dumps(obj))


def now_iso(offset_seconds: float = 0.0) -> str:
    """An RFC 3339 timestamp with second precision, as Kubernetes writes metadata times."""
    moment = datetime.now(UTC) + timedelta(seconds=offset_seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def random_suffix(length: int = 5) -> str:
    return "".join(random.choice(_NAME_SUFFIX_CHARS) for _ in range(length))


@dataclass(frozen=True)
class WatchEvent:
    """One change to one object. ``old`` is the previous version (``None`` for ADDED)."""

    rv: int
    type: str
    key: str
    obj: dict
    old: dict | None


Subscriber = Callable[[WatchEvent], None]


class Store:
    """All objects of all kinds, guarded by one re-entrant lock.

    Stored dicts are never mutated in place: every write stores a new dict, so watch history and
    subscribers can share them. Everything handed out to callers is a copy.
    """

    def __init__(self, history: int = 50_000):
        self.lock = threading.RLock()
        self._objects: dict[str, dict[tuple[str, str], dict]] = defaultdict(dict)
        self._rv = 0
        self._history: deque[WatchEvent] = deque(maxlen=history)
        self._subscribers: list[Subscriber] = []
        self.reset()

    # -- reading ---------------------------------------------------------------------------
    @property
    def resource_version(self) -> str:
        return str(self._rv)

    def get(self, res: Resource, namespace: str | None, name: str) -> dict | None:
        """A copy of one object, or ``None``."""
        with self.lock:
            obj = self._objects[res.key].get(_key(res, namespace, name))
            return clone(obj) if obj is not None else None

    def list(
        self,
        res: Resource,
        namespace: str | None = None,
        labels: LabelSelector | None = None,
        fields: list[tuple[str, str, str]] | None = None,
    ) -> tuple[list[dict], str]:
        """Copies of matching objects sorted by namespace/name, and the list's resourceVersion."""
        with self.lock:
            items = [
                obj
                for (ns, _), obj in sorted(self._objects[res.key].items())
                if (namespace is None or ns == namespace) and matches(obj, labels, fields)
            ]
            return clone(items), self.resource_version

    # -- writing ---------------------------------------------------------------------------
    def create(self, res: Resource, obj: dict) -> dict:
        """Store a new object, setting uid, resourceVersion, generation, creationTimestamp and name."""
        with self.lock:
            obj = clone(obj)
            meta = obj.setdefault("metadata", {})
            if not meta.get("name"):
                if not meta.get("generateName"):
                    raise invalid(
                        res, "", "metadata.name", "Required value: name or generateName is required"
                    )
                meta["name"] = meta["generateName"] + random_suffix()
            namespace = (meta.get("namespace") or "") if res.namespaced else ""
            if res.namespaced:
                self._check_namespace_open(namespace)
                meta["namespace"] = namespace
            else:
                meta.pop("namespace", None)
            if (namespace, meta["name"]) in self._objects[res.key]:
                raise already_exists(res, meta["name"])
            for field in ("deletionTimestamp", "deletionGracePeriodSeconds", "managedFields"):
                meta.pop(field, None)
            meta.update(uid=str(uuid.uuid4()), creationTimestamp=now_iso())
            if "spec" in obj:
                meta["generation"] = 1
            obj["kind"], obj["apiVersion"] = res.kind, res.api_version
            self._write(res, obj, None)
            return clone(obj)

    def update(self, res: Resource, obj: dict, *, mode: str = "spec", check_rv: bool = True) -> dict:
        """Replace an object.

        ``mode="spec"`` is a main-resource write (status preserved for kinds with a status subresource),
        ``"status"`` a status-subresource write (only status taken), ``"internal"`` a controller write
        (everything taken). A non-empty metadata.resourceVersion that is not current is a 409.
        """
        with self.lock:
            new = clone(obj)
            meta = new.setdefault("metadata", {})
            namespace = (meta.get("namespace") or "") if res.namespaced else ""
            current = self._objects[res.key].get(_key(res, namespace, meta.get("name", "")))
            if current is None:
                raise not_found(res, meta.get("name", ""))
            cur_meta = current["metadata"]
            if mode == "spec" and not res.unconditional_update and not meta.get("resourceVersion"):
                # The generic registry's Update (apiserver registry/generic/registry/store.go) for a
                # strategy that forbids unconditional updates.
                raise invalid(
                    res,
                    cur_meta["name"],
                    "metadata.resourceVersion",
                    "Invalid value: 0: must be specified for an update",
                )
            if (
                check_rv
                and meta.get("resourceVersion")
                and meta["resourceVersion"] != cur_meta["resourceVersion"]
            ):
                raise conflict(res, cur_meta["name"])
            if mode == "status":
                status = new.get("status")
                new = clone(current)
                new["status"] = status
            elif mode == "spec" and res.has_status:
                new["status"] = clone(current.get("status"))
            if new.get("status") is None:
                new.pop("status", None)
            meta = new["metadata"]
            for field in (
                "uid",
                "creationTimestamp",
                "namespace",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
            ):
                if field in cur_meta:
                    meta[field] = cur_meta[field]
                else:
                    meta.pop(field, None)
            if "generation" in cur_meta:
                # The scheduler's binding (spec.nodeName) is not a spec change the user made.
                changed = new.get("spec") != current.get("spec") and not (
                    mode == "internal" and res.kind == "Pod"
                )
                meta["generation"] = cur_meta["generation"] + (1 if changed else 0)
            meta["resourceVersion"] = cur_meta["resourceVersion"]
            new["kind"], new["apiVersion"] = res.kind, res.api_version
            if new == current:
                return clone(current)  # a no-op write does not bump resourceVersion, as in Kubernetes
            if meta.get("deletionTimestamp") and cur_meta.get("finalizers") and not meta.get("finalizers"):
                return self.remove(res, namespace, meta["name"]) or {}
            self._write(res, new, current)
            return clone(new)

    def mutate(
        self,
        res: Resource,
        namespace: str | None,
        name: str,
        fn: Callable[[dict], dict | None],
        mode="internal",
    ) -> dict | None:
        """Atomic read-modify-write: ``fn`` gets a copy, returns the new object (``None``: no change).

        Returns the stored result, or ``None`` when the object does not exist.
        """
        with self.lock:
            current = self._objects[res.key].get(_key(res, namespace, name))
            if current is None:
                return None
            new = fn(clone(current))
            if new is None:
                return clone(current)
            return self.update(res, new, mode=mode, check_rv=True)

    def mark_deleting(self, res: Resource, namespace: str | None, name: str, grace_seconds: int) -> dict:
        """Graceful deletion: set deletionTimestamp (and bump generation); the owner removes it later."""
        with self.lock:
            current = self._objects[res.key].get(_key(res, namespace, name))
            if current is None:
                raise not_found(res, name)
            if current["metadata"].get("deletionTimestamp"):
                return clone(current)
            new = clone(current)
            new["metadata"]["deletionTimestamp"] = now_iso(grace_seconds)
            new["metadata"]["deletionGracePeriodSeconds"] = grace_seconds
            if "generation" in new["metadata"]:
                new["metadata"]["generation"] += 1
            self._write(res, new, current)
            return clone(new)

    def remove(self, res: Resource, namespace: str | None, name: str) -> dict | None:
        """Remove an object now; returns it (with the DELETED event's resourceVersion) or ``None``."""
        with self.lock:
            current = self._objects[res.key].pop(_key(res, namespace, name), None)
            if current is None:
                return None
            gone = clone(current)
            self._rv += 1
            gone["metadata"]["resourceVersion"] = str(self._rv)
            self._emit(WatchEvent(self._rv, "DELETED", res.key, gone, current))
            return clone(gone)

    # -- watching --------------------------------------------------------------------------
    def subscribe(
        self, callback: Subscriber, *, replay_key: str | None = None, since_rv: int | None = None
    ) -> tuple[list[WatchEvent], Callable[[], None]]:
        """Register ``callback`` for every future event (called under the lock: it must not block).

        With ``replay_key``, also return the events to replay first: those after ``since_rv`` (410 Gone
        when history no longer reaches back that far), or synthetic ADDED events for the current objects
        when ``since_rv`` is ``None``.
        """
        with self.lock:
            replay: list[WatchEvent] = []
            if replay_key is not None and since_rv is None:
                replay = [
                    WatchEvent(int(o["metadata"]["resourceVersion"]), "ADDED", replay_key, o, None)
                    for _, o in sorted(self._objects[replay_key].items())
                ]
            elif replay_key is not None and since_rv is not None:
                oldest = self._history[0].rv if self._history else self._rv + 1
                if len(self._history) == self._history.maxlen and since_rv < oldest - 1:
                    raise ApiError(410, f"too old resource version: {since_rv} ({oldest - 1})", "Expired")
                replay = [e for e in self._history if e.rv > since_rv and e.key == replay_key]
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self.lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return replay, unsubscribe

    def reset(self) -> None:
        """Forget every object and all history (subscribers stay) and recreate the default namespaces."""
        with self.lock:
            self._objects.clear()
            self._history.clear()
            ns_res = resource_for("Namespace")
            for name in DEFAULT_NAMESPACES:
                self.create(ns_res, {"metadata": {"name": name}, "status": {"phase": "Active"}})

    # -- internals -------------------------------------------------------------------------
    def _check_namespace_open(self, namespace: str) -> None:
        if not namespace:
            raise bad_request("the namespace of the object is missing")
        ns = self._objects["namespaces"].get(("", namespace))
        if ns is None:
            raise ApiError(
                404,
                f'namespaces "{namespace}" not found',
                "NotFound",
                {"name": namespace, "kind": "namespaces"},
            )
        if ns["metadata"].get("deletionTimestamp"):
            message = f"unable to create new content in namespace {namespace} because it is being terminated"
            raise ApiError(403, message, "Forbidden")

    def _write(self, res: Resource, obj: dict, previous: dict | None) -> None:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        self._objects[res.key][_key(res, obj["metadata"].get("namespace"), obj["metadata"]["name"])] = obj
        self._emit(WatchEvent(self._rv, "ADDED" if previous is None else "MODIFIED", res.key, obj, previous))

    def _emit(self, event: WatchEvent) -> None:
        self._history.append(event)
        for callback in list(self._subscribers):
            callback(event)


def _key(res: Resource, namespace: str | None, name: str) -> tuple[str, str]:
    return ((namespace or "") if res.namespaced else "", name)


def matches(obj: dict, labels: LabelSelector | None, fields: list[tuple[str, str, str]] | None) -> bool:
    """Whether an object satisfies a label selector and field requirements (either may be ``None``)."""
    if labels is not None and not labels.matches(obj.get("metadata", {}).get("labels")):
        return False
    return not fields or fields_match(obj, fields)
