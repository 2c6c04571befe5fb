"""The promotion lease on the simulated cluster's coordination.k8s.io Lease: who may take it, and when."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from mlops.promotion import bluegreen
from mlops.promotion import lease as leases
from mlops.promotion.errors import ConcurrentPromotion, LeaseLost

MODEL = "digits"
NAME = "mlops-promotion-digits"


@pytest.fixture
def cluster(kube, kube_conn) -> bluegreen.Cluster:
    cluster = bluegreen.Cluster.from_connection()
    cluster.retry = bluegreen.RetryPolicy(attempts=5, initial_seconds=0.05, max_seconds=0.5)
    return cluster


def stored(kube, cluster) -> dict:
    return kube.get("Lease", cluster.namespace, NAME)


def set_spec(kube, cluster, **spec) -> None:
    """Rewrite the stored Lease's spec (another holder's write, or time having passed)."""
    current = stored(kube, cluster)
    current["spec"].update(spec)
    leases._write(cluster, MODEL, current["spec"], current)


def test_the_first_run_takes_a_free_lease_as_leader_election_writes_it(kube, cluster):
    before = datetime.now(UTC)
    leases.acquire_lease(cluster, MODEL, "run-a", 600)
    lease = stored(kube, cluster)
    spec = lease["spec"]
    assert (spec["holderIdentity"], spec["leaseDurationSeconds"], spec["leaseTransitions"]) == (
        "run-a",
        600,
        0,
    )
    assert spec["acquireTime"] == spec["renewTime"]
    assert (
        before - timedelta(seconds=1)
        <= leases.expires_at(lease) - timedelta(seconds=600)
        <= datetime.now(UTC)
    )
    assert lease["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "mlops-airflow", "model": MODEL}


def test_a_second_run_is_refused_while_the_holder_is_live_naming_the_holder(kube, cluster):
    leases.acquire_lease(cluster, MODEL, "run-a", 600)
    with pytest.raises(ConcurrentPromotion, match=rf"/{NAME} \(run-a, until 20\d\d-") as refused:
        leases.acquire_lease(cluster, MODEL, "run-b", 600)
    assert f"{cluster.namespace}/{NAME}" in str(refused.value) and "refusing to start a second one" in str(
        refused.value
    )
    assert stored(kube, cluster)["spec"]["holderIdentity"] == "run-a"


def test_the_holder_renews_keeping_its_acquire_time_and_transitions(kube, cluster):
    leases.acquire_lease(cluster, MODEL, "run-a", 600)
    first = stored(kube, cluster)["spec"]
    set_spec(kube, cluster, renewTime="2020-01-01T00:00:00.000000Z")
    leases.acquire_lease(cluster, MODEL, "run-a", 900)
    spec = stored(kube, cluster)["spec"]
    assert spec["acquireTime"] == first["acquireTime"] and spec["leaseTransitions"] == 0
    assert spec["leaseDurationSeconds"] == 900 and spec["renewTime"] > first["renewTime"]


def test_an_expired_lease_is_taken_over_and_counts_a_transition(kube, cluster):
    leases.acquire_lease(cluster, MODEL, "run-a", 60)
    set_spec(
        kube, cluster, renewTime="2020-01-01T00:00:00.000000Z", acquireTime="2020-01-01T00:00:00.000000Z"
    )
    leases.acquire_lease(cluster, MODEL, "run-b", 60)
    spec = stored(kube, cluster)["spec"]
    assert spec["holderIdentity"] == "run-b" and spec["leaseTransitions"] == 1
    assert spec["acquireTime"] != "2020-01-01T00:00:00.000000Z"


def test_a_preempted_run_can_neither_take_back_nor_use_the_lease(kube, cluster):
    leases.acquire_lease(cluster, MODEL, "run-a", 600)
    leases.preempt_lease(cluster, MODEL, "rollback-1", 600)
    records = json.loads(stored(kube, cluster)["metadata"]["annotations"][leases.PREEMPTED])
    assert [(r["holder"], r["by"]) for r in records] == [("run-a", "rollback-1")]
    leases.release_lease(cluster, MODEL, "rollback-1")
    with pytest.raises(
        LeaseLost, match=r"this run \(run-a\) no longer holds .* \(pre-empted by 'rollback-1' at 20"
    ):
        leases.acquire_lease(cluster, MODEL, "run-a", 600)
    with pytest.raises(LeaseLost, match="pre-empted by 'rollback-1'"):
        leases.require_lease(cluster, MODEL, "run-a")


def test_require_lease_names_who_holds_it_or_that_nobody_does(kube, cluster):
    with pytest.raises(LeaseLost, match=r"\(the lease was released or never taken\); leaving"):
        leases.require_lease(cluster, MODEL, "run-a")
    leases.acquire_lease(cluster, MODEL, "run-b", 600)
    with pytest.raises(
        LeaseLost,
        match=rf"^{MODEL}: this run \(run-a\) no longer holds the promotion lease {NAME} "
        r"\(the lease is held by 'run-b'\); leaving the model's serving state alone$",
    ):
        leases.require_lease(cluster, MODEL, "run-a")
    assert leases.require_lease(cluster, MODEL, "run-b")["spec"]["holderIdentity"] == "run-b"


# -- the pure reading rules ---------------------------------------------------------------------------
def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_expiry_counts_from_the_renew_time_else_the_acquire_time():
    spec = {"holderIdentity": "a", "acquireTime": "2026-01-01T00:00:00.000000Z", "leaseDurationSeconds": 60}
    assert leases.expires_at({"spec": spec}) == at("2026-01-01T00:01:00")
    spec["renewTime"] = "2026-01-01T00:10:00.000000Z"
    assert leases.expires_at({"spec": spec}) == at("2026-01-01T00:11:00")
    assert leases.expires_at({"spec": {**spec, "leaseDurationSeconds": None}}) == at("2026-01-01T00:10:00")
    assert leases.expires_at({"spec": {**spec, "renewTime": "garbage", "acquireTime": None}}) is None
    assert leases.expires_at({"spec": {**spec, "holderIdentity": ""}}) is None


def test_a_lease_expiring_exactly_now_is_no_longer_live():
    spec = {"holderIdentity": "a", "renewTime": "2026-01-01T00:00:00.000000Z", "leaseDurationSeconds": 60}
    assert leases.is_live({"spec": spec}, at("2026-01-01T00:00:59"))
    assert not leases.is_live({"spec": spec}, at("2026-01-01T00:01:00"))


@pytest.mark.parametrize(
    "raw", ["not json", json.dumps({"holder": "a"}), json.dumps(["x", 1]), json.dumps(5)]
)
def test_unreadable_preemption_records_are_ignored(raw):
    assert leases.preempted_records({"metadata": {"annotations": {leases.PREEMPTED: raw}}}) == []


def test_the_newest_preemption_of_a_holder_is_the_one_reported():
    records = [{"holder": "a", "by": "r1", "at": "t1"}, "junk", {"holder": "a", "by": "r2", "at": "t2"}]
    lease = {"metadata": {"annotations": {leases.PREEMPTED: json.dumps(records)}}, "spec": {}}
    assert leases.preempted_records(lease) == [records[0], records[2]]
    assert leases._preemption_of(lease, "a") == records[2]
    assert leases._preemption_of(lease, "b") is None
