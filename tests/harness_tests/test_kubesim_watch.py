"""Watch streams: history replay from a resourceVersion, timeoutSeconds, selectors, live delivery."""

from __future__ import annotations

import json
import threading
import time
import urllib.request

import pytest
from kubernetes import watch

from tests.harness.kubesim.errors import ApiError
from tests.harness.kubesim.resources import resource_for
from tests.harness.kubesim.store import Store


def stream(core, ns, **kwargs) -> list[tuple[str, str]]:
    events = watch.Watch().stream(core.list_namespaced_config_map, ns, timeout_seconds=1, **kwargs)
    return [(e["type"], e["object"].metadata.name) for e in events]


def test_watch_from_resource_version_replays_later_changes_in_order(core, ns):
    start = core.list_namespaced_config_map(ns).metadata.resource_version
    core.create_namespaced_config_map(ns, {"metadata": {"name": "a"}})
    core.patch_namespaced_config_map("a", ns, {"data": {"k": "v"}})
    core.create_namespaced_config_map(ns, {"metadata": {"name": "b"}})
    core.delete_namespaced_config_map("a", ns)
    assert stream(core, ns, resource_version=start) == [
        ("ADDED", "a"),
        ("MODIFIED", "a"),
        ("ADDED", "b"),
        ("DELETED", "a"),
    ]


def test_watch_without_resource_version_starts_with_current_objects(core, ns):
    core.create_namespaced_config_map(ns, {"metadata": {"name": "x"}})
    core.create_namespaced_config_map(ns, {"metadata": {"name": "y"}})
    assert stream(core, ns) == [("ADDED", "x"), ("ADDED", "y")]


def test_timeout_seconds_ends_the_stream(sim, ns):
    started = time.monotonic()
    url = f"{sim.url}/api/v1/namespaces/{ns}/configmaps?watch=true&timeoutSeconds=1"
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("application/json")
        body = resp.read()
    assert body == b"" and 0.9 < time.monotonic() - started < 3


def test_watch_delivers_live_events_as_json_lines(sim, core, ns, eventually):
    rv = core.list_namespaced_config_map(ns).metadata.resource_version
    url = f"{sim.url}/api/v1/namespaces/{ns}/configmaps?watch=1&resourceVersion={rv}&timeoutSeconds=2"
    lines: list[bytes] = []

    def read() -> None:
        with urllib.request.urlopen(url, timeout=10) as resp:
            lines.append(resp.readline())

    reader = threading.Thread(target=read)
    reader.start()
    # The watch has reached the API (it starts at rv, so nothing created after this can be missed).
    eventually(
        lambda: any(
            r.query.get("watch") == "1" for r in sim.requests_matching("GET", f"/namespaces/{ns}/configmaps$")
        )
    )
    core.create_namespaced_config_map(ns, {"metadata": {"name": "live"}})
    reader.join(5)
    event = json.loads(lines[0])
    assert event["type"] == "ADDED" and event["object"]["metadata"]["name"] == "live"
    assert event["object"]["kind"] == "ConfigMap"


def test_label_selected_watch_sees_objects_enter_and_leave_the_selection(core, ns):
    start = core.list_namespaced_config_map(ns).metadata.resource_version
    core.create_namespaced_config_map(ns, {"metadata": {"name": "c", "labels": {"tier": "web"}}})
    core.create_namespaced_config_map(ns, {"metadata": {"name": "other"}})
    core.patch_namespaced_config_map("c", ns, {"metadata": {"labels": {"tier": "db"}}})
    core.patch_namespaced_config_map("c", ns, {"metadata": {"labels": {"tier": "web"}}})
    assert stream(core, ns, resource_version=start, label_selector="tier=web") == [
        ("ADDED", "c"),
        ("DELETED", "c"),
        ("ADDED", "c"),
    ]


def test_field_selected_watch_follows_one_object(core, ns):
    start = core.list_namespaced_config_map(ns).metadata.resource_version
    core.create_namespaced_config_map(ns, {"metadata": {"name": "one"}})
    core.create_namespaced_config_map(ns, {"metadata": {"name": "two"}})
    core.patch_namespaced_config_map("one", ns, {"data": {"a": "b"}})
    got = stream(core, ns, resource_version=start, field_selector="metadata.name=one")
    assert got == [("ADDED", "one"), ("MODIFIED", "one")]


def test_too_old_resource_version_is_410_gone():
    store = Store(history=5)
    res = resource_for("ConfigMap")
    for n in range(10):
        store.create(res, {"metadata": {"name": f"c{n}", "namespace": "default"}})
    with pytest.raises(ApiError) as err:
        store.subscribe(lambda e: None, replay_key=res.key, since_rv=1)
    assert err.value.code == 410 and err.value.reason == "Expired"
