"""The promotion lease of a model: one ``coordination.k8s.io/v1`` Lease in the serving namespace.

``mlops-promotion-{model}`` carries ``spec.holderIdentity`` (the run that may change the model's
serving state), ``acquireTime``, ``renewTime``, ``leaseDurationSeconds`` and ``leaseTransitions``,
as Kubernetes' own leader election writes them. A holder is live until ``renewTime +
leaseDurationSeconds``; a run that waits longer (an approval) renews it. Every write is a PUT with the
resourceVersion just read, so of two runs racing for the lease exactly one wins (the other gets 409,
re-reads, and finds it taken).

An emergency rollback pre-empts the lease (:func:`preempt_lease`): the pre-empted holder is recorded
in the annotation ``mlops.io/preempted-holders``, so that holder's later steps raise
:class:`LeaseLost` (it can never take the lease back), and its clean-up leaves the new state alone.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from mlops.promotion.errors import ConcurrentPromotion, LeaseLost

log = logging.getLogger(__name__)
T = TypeVar("T")

PREFIX = "mlops-promotion-"
PREEMPTED = "mlops.io/preempted-holders"
_KEEP_PREEMPTED = 20  # a pre-empted run's steps finish within hours; older records can go
_MICRO = "%Y-%m-%dT%H:%M:%S.%fZ"  # metav1.MicroTime


def lease_name(model: str) -> str:
    """The Lease object of ``model``'s promotions: ``mlops-promotion-{model}``."""
    return f"{PREFIX}{model}"


def _now() -> datetime:
    return datetime.now(UTC)


def _micro(moment: datetime) -> str:
    return moment.strftime(_MICRO)


def _parse(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def read_lease(cluster: Any, model: str) -> dict | None:
    """The model's Lease as the API returned it, or ``None`` when none was ever taken."""
    return cluster.read("Lease", lease_name(model))


def holder_of(lease: dict | None) -> str | None:
    """The Lease's ``spec.holderIdentity`` (``None``: free)."""
    return ((lease or {}).get("spec") or {}).get("holderIdentity") or None


def expires_at(lease: dict | None) -> datetime | None:
    """``renewTime + leaseDurationSeconds`` (``None`` when the Lease has no holder or no renew time)."""
    spec = (lease or {}).get("spec") or {}
    renewed = _parse(spec.get("renewTime") or spec.get("acquireTime"))
    if not holder_of(lease) or renewed is None:
        return None
    return renewed + timedelta(seconds=int(spec.get("leaseDurationSeconds") or 0))


def is_live(lease: dict | None, now: datetime | None = None) -> bool:
    """Whether a holder holds the Lease and has renewed it within its duration."""
    expires = expires_at(lease)
    return expires is not None and expires > (now or _now())


def preempted_records(lease: dict | None) -> list[dict]:
    """Who was pre-empted, by whom and when (``[{"holder", "by", "at"}]``, newest last)."""
    raw = (((lease or {}).get("metadata") or {}).get("annotations") or {}).get(PREEMPTED)
    try:
        records = json.loads(raw) if raw else []
    except ValueError:
        return []
    return [r for r in records if isinstance(r, dict)] if isinstance(records, list) else []


def _preemption_of(lease: dict | None, holder: str) -> dict | None:
    return next((r for r in reversed(preempted_records(lease)) if r.get("holder") == holder), None)


def _lost(model: str, holder: str, lease: dict | None) -> LeaseLost:
    record = _preemption_of(lease, holder)
    if record:
        why = f"pre-empted by {record.get('by')!r} at {record.get('at')}"
    elif holder_of(lease):
        why = f"the lease is held by {holder_of(lease)!r}"
    else:
        why = "the lease was released or never taken"
    return LeaseLost(
        f"{model}: this run ({holder}) no longer holds the promotion lease {lease_name(model)} ({why}); "
        "leaving the model's serving state alone"
    )


def require_lease(cluster: Any, model: str, holder: str) -> dict:
    """The Lease, when ``holder`` holds it; raises :class:`LeaseLost` otherwise.

    A holder whose duration ran out still holds the Lease until another run takes it.
    """
    lease = read_lease(cluster, model)
    if holder_of(lease) != holder or _preemption_of(lease, holder):
        raise _lost(model, holder, lease)
    return lease  # type: ignore[return-value]


def _body(model: str, namespace: str, spec: dict, lease: dict | None) -> dict:
    meta: dict[str, Any] = {"name": lease_name(model), "namespace": namespace}
    if lease is not None:
        meta.update(
            resourceVersion=lease["metadata"]["resourceVersion"],
            labels=lease["metadata"].get("labels") or {},
            annotations=lease["metadata"].get("annotations") or {},
        )
    else:
        meta["labels"] = {"app.kubernetes.io/managed-by": "mlops-airflow", "model": model}
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta, "spec": spec}


def _write(cluster: Any, model: str, spec: dict, lease: dict | None) -> dict:
    body = _body(model, cluster.namespace, spec, lease)
    return cluster.create(body) if lease is None else cluster.replace(body)


def _taken_by(holder: str, seconds: int, lease: dict | None, now: datetime) -> dict:
    spec = dict((lease or {}).get("spec") or {})
    transitions = int(spec.get("leaseTransitions") or 0)
    if lease is not None and holder_of(lease) != holder:
        transitions += 1  # as client-go's leader election counts a change of holder
    return {
        **spec,
        "holderIdentity": holder,
        "acquireTime": _micro(now),
        "renewTime": _micro(now),
        "leaseDurationSeconds": int(seconds),
        "leaseTransitions": transitions,
    }


def _retrying(cluster: Any, what: str, attempt: Callable[[], T]) -> T:
    """``cluster.guarded`` (re-read on 409 Conflict), also re-reading when our create lost the race."""
    from kubernetes.client.exceptions import ApiException

    for tries_left in range(2, -1, -1):
        try:
            return cluster.guarded(what, attempt)
        except ApiException as exc:
            created_meanwhile = exc.status == 409 and "AlreadyExists" in (exc.body or "")
            if not created_meanwhile or not tries_left:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def acquire_lease(cluster: Any, model: str, holder: str, seconds: int) -> dict:
    """Take the model's lease for ``seconds`` (or renew it when ``holder`` already holds it).

    Raises :class:`ConcurrentPromotion` while another holder's lease is live, and :class:`LeaseLost`
    when ``holder`` was pre-empted (a pre-empted run never takes the lease back). Returns the Lease.
    """

    def attempt() -> dict:
        lease = read_lease(cluster, model)
        if _preemption_of(lease, holder):
            raise _lost(model, holder, lease)
        current = holder_of(lease)
        now = _now()
        if current == holder:
            spec = {**lease["spec"], "renewTime": _micro(now), "leaseDurationSeconds": int(seconds)}
            return _write(cluster, model, spec, lease)
        if current and is_live(lease, now):
            raise ConcurrentPromotion(
                f"{model}: another promotion holds the lease {cluster.namespace}/{lease_name(model)} "
                f"({current}, until {_micro(expires_at(lease))}); refusing to start a second one"
            )
        taken = _write(cluster, model, _taken_by(holder, seconds, lease, now), lease)
        log.info("%s: lease taken by %s (previous holder %s)", model, holder, current or "none")
        return taken

    return _retrying(cluster, f"take the lease of {model}", attempt)


def renew_lease(cluster: Any, model: str, holder: str, seconds: int) -> dict:
    """Extend ``holder``'s lease to ``seconds`` from now; raises :class:`LeaseLost` if it is not held."""

    def attempt() -> dict:
        lease = require_lease(cluster, model, holder)
        spec = {**lease["spec"], "renewTime": _micro(_now()), "leaseDurationSeconds": int(seconds)}
        return _write(cluster, model, spec, lease)

    return _retrying(cluster, f"renew the lease of {model}", attempt)


def preempt_lease(cluster: Any, model: str, holder: str, seconds: int) -> dict:
    """Take the model's lease whoever holds it (an emergency rollback); returns the Lease.

    The previous holder is recorded as pre-empted: its later steps raise :class:`LeaseLost`, and
    its clean-up changes neither traffic nor replicas.
    """

    def attempt() -> dict:
        lease = read_lease(cluster, model)
        previous = holder_of(lease)
        now = _now()
        body_source = lease
        if previous and previous != holder and lease is not None:
            records = [*preempted_records(lease), {"holder": previous, "by": holder, "at": _micro(now)}]
            annotations = {
                **(lease["metadata"].get("annotations") or {}),
                PREEMPTED: json.dumps(records[-_KEEP_PREEMPTED:]),
            }
            body_source = {**lease, "metadata": {**lease["metadata"], "annotations": annotations}}
        taken = _write(cluster, model, _taken_by(holder, seconds, lease, now), body_source)
        if previous and previous != holder:
            log.warning("%s: lease pre-empted from %s by %s", model, previous, holder)
        return taken

    return _retrying(cluster, f"pre-empt the lease of {model}", attempt)


def release_lease(cluster: Any, model: str, holder: str, dry_run: bool = False) -> bool:
    """Give up ``holder``'s lease (the Lease stays, without a holder); returns whether it held it."""

    def attempt() -> bool:
        lease = read_lease(cluster, model)
        if holder_of(lease) != holder or dry_run:
            return False
        spec = {k: v for k, v in lease["spec"].items() if k != "holderIdentity"}
        spec.update(renewTime=_micro(_now()), leaseDurationSeconds=1)  # as client-go releases
        _write(cluster, model, spec, lease)
        log.info("%s: lease released by %s", model, holder)
        return True

    return _retrying(cluster, f"release the lease of {model}", attempt)
