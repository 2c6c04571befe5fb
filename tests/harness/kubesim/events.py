"""core/v1 Events, recorded the way kubelet and controllers do (repeats aggregate into ``count``)."""

from __future__ import annotations

import threading
import time

from .errors import ApiError
from .resources import resource_for
from .store import Store, now_iso

EVENTS = resource_for("Event")


class EventRecorder:
    """Writes Events about objects into the store."""

    def __init__(self, store: Store):
        self.store = store
        self._lock = threading.Lock()
        self._seen: dict[tuple, str] = {}

    def emit(
        self,
        obj: dict,
        reason: str,
        message: str,
        *,
        type: str = "Normal",
        component: str = "kubelet",
        field_path: str | None = None,
    ) -> None:
        """Record an Event whose involvedObject is ``obj``; a repeat bumps count and lastTimestamp."""
        meta = obj["metadata"]
        namespace = meta.get("namespace") or "default"
        key = (meta.get("uid"), reason, message, field_path)
        now = now_iso()
        with self._lock:
            existing = self._seen.get(key)
            if existing:

                def bump(event: dict) -> dict:
                    event["count"] = event.get("count", 1) + 1
                    event["lastTimestamp"] = now
                    return event

                if self.store.mutate(EVENTS, namespace, existing, bump) is not None:
                    return
            involved = {
                "kind": obj.get("kind"),
                "apiVersion": obj.get("apiVersion"),
                "name": meta["name"],
                "namespace": meta.get("namespace"),
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            }
            if field_path:
                involved["fieldPath"] = field_path
            # Like the real recorder: a hex timestamp suffix, so names sort chronologically.
            name = f"{meta['name']}.{time.time_ns():x}"
            event = {
                "metadata": {"name": name, "namespace": namespace},
                "involvedObject": {k: v for k, v in involved.items() if v is not None},
                "reason": reason,
                "message": message,
                "type": type,
                "source": {"component": component, "host": "kubesim-node"}
                if component == "kubelet"
                else {"component": component},
                "firstTimestamp": now,
                "lastTimestamp": now,
                "count": 1,
                "reportingComponent": component,
                "reportingInstance": "kubesim-node" if component == "kubelet" else "",
            }
            try:
                self.store.create(EVENTS, event)
            except ApiError:
                return  # the namespace is gone (being deleted): nowhere to record it
            self._seen[key] = name

    def clear(self) -> None:
        with self._lock:
            self._seen.clear()
