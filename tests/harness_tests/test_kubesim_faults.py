"""Fault injection (errors, latency) and request recording."""

from __future__ import annotations

import json
import time

import pytest
from kubernetes.client.exceptions import ApiException


def test_injected_503_answers_once_then_the_api_recovers(core, ns, sim):
    core.create_namespaced_config_map(ns, {"metadata": {"name": "c"}})
    fault = sim.faults.add(method="GET", path=rf"/namespaces/{ns}/configmaps/c$", status=503)
    with pytest.raises(ApiException) as err:
        core.read_namespaced_config_map("c", ns)
    body = json.loads(err.value.body)
    assert (err.value.status, body["kind"], body["reason"], body["code"]) == (
        503,
        "Status",
        "ServiceUnavailable",
        503,
    )
    assert core.read_namespaced_config_map("c", ns).metadata.name == "c"
    assert fault.hits == 1


def test_faults_match_method_and_count_times(core, ns, sim):
    sim.faults.add(method="POST", path="/configmaps$", status=500, times=2)
    core.list_namespaced_config_map(ns)  # a GET is not affected
    for _ in range(2):
        with pytest.raises(ApiException) as err:
            core.create_namespaced_config_map(ns, {"metadata": {"name": "c"}})
        assert err.value.status == 500 and json.loads(err.value.body)["reason"] == "InternalError"
    core.create_namespaced_config_map(ns, {"metadata": {"name": "c"}})


def test_forever_faults_last_until_cleared_and_can_carry_a_custom_body(core, ns, sim):
    sim.faults.add(
        method=None, path="/configmaps", status=429, times=None, body={"kind": "Status", "code": 429}
    )
    for _ in range(3):
        with pytest.raises(ApiException) as err:
            core.list_namespaced_config_map(ns)
        assert err.value.status == 429 and json.loads(err.value.body) == {"kind": "Status", "code": 429}
    sim.faults.clear()
    core.list_namespaced_config_map(ns)


def test_latency_only_fault_delays_but_succeeds(core, ns, sim):
    fault = sim.faults.add(method="GET", path="/configmaps$", status=None, delay=0.4)
    started = time.monotonic()
    core.list_namespaced_config_map(ns)
    slow = time.monotonic() - started
    core.list_namespaced_config_map(ns)
    # The second request passed without the (one-shot) fault: counted, not timed, so load cannot flake it.
    assert slow >= 0.4 and fault.hits == 1 and fault.exhausted


def test_requests_are_recorded_with_query_content_type_body_and_status(core, ns, sim):
    sim.faults.add(method="GET", path=rf"/namespaces/{ns}/configmaps/missing$", status=503)
    core.create_namespaced_config_map(ns, {"metadata": {"name": "c", "labels": {"a": "b"}}})
    core.patch_namespaced_config_map("c", ns, {"data": {"k": "v"}})
    core.list_namespaced_config_map(ns, label_selector="a=b,c!=d")
    with pytest.raises(ApiException):
        core.read_namespaced_config_map("missing", ns)
    with pytest.raises(ApiException):
        core.read_namespaced_config_map("missing", ns)

    mine = sim.requests_matching(path_regex=rf"/namespaces/{ns}/configmaps")
    assert [(r.method, r.status) for r in mine] == [
        ("POST", 201),
        ("PATCH", 200),
        ("GET", 200),
        ("GET", 503),
        ("GET", 404),
    ]
    post, patch, listing = mine[:3]
    assert post.content_type == "application/json" and post.body["metadata"]["name"] == "c"
    assert patch.content_type == "application/strategic-merge-patch+json" and patch.body == {
        "data": {"k": "v"}
    }
    assert listing.query == {"labelSelector": "a=b,c!=d"} and listing.body is None
    assert sim.requests_matching("PATCH", rf"/{ns}/configmaps/c$") == [patch]
    assert sim.requests[-1] == mine[-1]
