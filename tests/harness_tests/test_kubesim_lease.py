"""kubesim serves coordination.k8s.io/v1 Leases as the API server does (create, get, update, conflicts).

Reference: https://kubernetes.io/docs/reference/kubernetes-api/cluster-resources/lease-v1/ and the
Lease registry strategy (kubernetes pkg/registry/coordination/lease/strategy.go), which forbids
unconditional updates.
"""

from __future__ import annotations

import json
import subprocess

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException


@pytest.fixture
def coordination(api_client) -> client.CoordinationV1Api:
    return client.CoordinationV1Api(api_client)


def lease_body(holder: str, renew: str = "2026-01-01T00:00:00.000000Z") -> dict:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "mlops-promotion-digits"},
        "spec": {
            "holderIdentity": holder,
            "acquireTime": renew,
            "renewTime": renew,
            "leaseDurationSeconds": 60,
            "leaseTransitions": 0,
        },
    }


def read(coordination, ns: str, name: str = "mlops-promotion-digits") -> dict:
    return json.loads(coordination.read_namespaced_lease(name, ns, _preload_content=False).data)


def test_discovery_lists_leases_in_the_coordination_group(api_client):
    groups = {
        g.name: g.preferred_version.version for g in client.ApisApi(api_client).get_api_versions().groups
    }
    assert groups["coordination.k8s.io"] == "v1"
    listed = client.CoordinationV1Api(api_client).get_api_resources()
    (lease,) = [r for r in listed.resources if r.name == "leases"]
    assert lease.kind == "Lease" and lease.namespaced is True


def test_a_lease_is_created_read_and_updated_with_its_resource_version(coordination, ns):
    created = coordination.create_namespaced_lease(ns, lease_body("run-a"))
    assert created.spec.holder_identity == "run-a" and created.metadata.resource_version.isdigit()
    current = read(coordination, ns)
    assert current["spec"]["renewTime"] == "2026-01-01T00:00:00.000000Z"  # MicroTime kept as written
    current["spec"]["renewTime"] = "2026-01-01T00:00:30.000000Z"
    updated = json.loads(
        coordination.replace_namespaced_lease(
            "mlops-promotion-digits", ns, current, _preload_content=False
        ).data
    )
    assert updated["spec"]["renewTime"] == "2026-01-01T00:00:30.000000Z"
    assert int(updated["metadata"]["resourceVersion"]) > int(current["metadata"]["resourceVersion"])


def test_an_update_from_a_stale_read_is_a_409_conflict(coordination, ns):
    coordination.create_namespaced_lease(ns, lease_body("run-a"))
    first, second = read(coordination, ns), read(coordination, ns)
    first["spec"]["holderIdentity"] = "run-b"
    coordination.replace_namespaced_lease("mlops-promotion-digits", ns, first)
    second["spec"]["holderIdentity"] = "run-c"
    with pytest.raises(ApiException) as err:
        coordination.replace_namespaced_lease("mlops-promotion-digits", ns, second)
    assert err.value.status == 409 and json.loads(err.value.body)["reason"] == "Conflict"
    assert read(coordination, ns)["spec"]["holderIdentity"] == "run-b"


def test_an_update_without_a_resource_version_is_refused_as_the_lease_strategy_does(coordination, ns):
    coordination.create_namespaced_lease(ns, lease_body("run-a"))
    blind = lease_body("run-z")
    with pytest.raises(ApiException) as err:
        coordination.replace_namespaced_lease("mlops-promotion-digits", ns, blind)
    assert err.value.status == 422
    assert "metadata.resourceVersion" in json.loads(err.value.body)["message"]
    assert read(coordination, ns)["spec"]["holderIdentity"] == "run-a"


def test_creating_a_lease_that_exists_is_a_409_already_exists(coordination, ns):
    coordination.create_namespaced_lease(ns, lease_body("run-a"))
    with pytest.raises(ApiException) as err:
        coordination.create_namespaced_lease(ns, lease_body("run-b"))
    assert err.value.status == 409 and json.loads(err.value.body)["reason"] == "AlreadyExists"


def test_kubectl_reads_a_lease(coordination, ns, kubectl):
    coordination.create_namespaced_lease(ns, lease_body("run-a"))
    out = kubectl("get", "lease", "mlops-promotion-digits", "-o", "jsonpath={.spec.holderIdentity}")
    assert isinstance(out, subprocess.CompletedProcess) and out.stdout == "run-a"
