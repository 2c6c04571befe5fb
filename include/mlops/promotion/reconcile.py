"""Make a model's cluster state agree with the registry's production pointer, the source of truth.

Run as the first task of every promotion and rollback run (see :mod:`mlops.promotion.bluegreen` for
why the pointer is the truth). It compares three records of "what serves production":

- the registry pointer's ``version`` (the truth);
- the active Service: the color its selector sends traffic to and its ``mlops.io/active-version``;
- the Deployment of that color: the ``version`` its pod template runs, and whether its rollout is
  complete (a color at 0 replicas serves nothing).

Repairs it makes on its own, holding the model's lease: traffic back on the color that runs the
pointer's version (scaled back up to the count it had, waiting for its rollout), a serving color at
0 replicas scaled back up, and an annotation that names the wrong version. What it will not decide
(no color runs the pointer's version; the pointer is empty while a version serves) it reports with
the exact command that repairs it by hand, since either side could be the one to change.
"""

from __future__ import annotations

import json
import logging
import shlex
from typing import Any

from mlops.promotion import bluegreen
from mlops.promotion.errors import PromotionError
from mlops.promotion.lease import acquire_lease, holder_of, is_live, read_lease
from mlops.promotion.manifests import render

log = logging.getLogger(__name__)


def _observe(cluster: Any, registry: Any, model: str) -> dict:
    pointer = registry.production(model)
    service = cluster.read("Service", render.active_service_name(model))
    deployments = {c: cluster.read("Deployment", render.deployment_name(model, c)) for c in render.COLORS}
    selected = bluegreen.service_color(service)
    return {
        "truth": pointer["version"] if pointer else None,
        "service": service,
        "selected": selected,
        "annotated": ((service or {}).get("metadata") or {})
        .get("annotations", {})
        .get(bluegreen.ACTIVE_VERSION),
        "runs": {c: bluegreen.template_version(d) for c, d in deployments.items()},
        "deployments": deployments,
        "serving": bluegreen.template_version(deployments[selected]) if selected else None,
    }


def _kubectl_switch(namespace: str, model: str, color: str, version: str) -> str:
    patch = {
        "spec": {"selector": {"color": color}},
        "metadata": {"annotations": {bluegreen.ACTIVE_VERSION: version}},
    }
    return (
        f"kubectl -n {namespace} patch service {render.active_service_name(model)} --type merge "
        f"-p {shlex.quote(json.dumps(patch, separators=(',', ':')))}"
    )


def _registry_promote(model: str, version: str | None, expected: str | None) -> str:
    args = ", ".join(
        json.dumps(v) if v is not None else "None" for v in (model, version, expected, "by-hand")
    )
    call = f"from mlops.registry import ModelRegistry; ModelRegistry.from_settings().promote({args})"
    return f"python -c {shlex.quote(call)}"


def _redeploy(model: str, version: str) -> str:
    conf = json.dumps({"model": model, "version": version, "auto_promote": True})
    return f"airflow dags trigger mlops_promotion --conf {shlex.quote(conf)}"


def _plan(cluster: Any, model: str, seen: dict) -> tuple[list[str], list[dict]]:
    """The differences found, and for each one the repair: ``{"action", "safe", "command", "do"}``."""
    ns, truth, selected, serving = cluster.namespace, seen["truth"], seen["selected"], seen["serving"]
    differences: list[str] = []
    repairs: list[dict] = []
    if truth is None:
        if selected is not None:
            differences.append(
                f"the registry has no production version of {model}, but the active Service sends traffic "
                f"to {selected} (version {serving!r}): a first promotion that never committed"
            )
            repairs.append(
                {
                    "action": f"either commit {serving} in the registry, or take traffic off {selected}",
                    "safe": False,
                    "command": f"{_registry_promote(model, serving, None)}  # or: "
                    + _kubectl_switch(ns, model, render.NO_COLOR, ""),
                }
            )
        return differences, repairs
    if selected is not None and serving == truth:
        deployment = seen["deployments"][selected]
        state, why = bluegreen.rollout_status(deployment)
        if state != "complete":
            differences.append(f"{selected} runs {truth} but is not a complete rollout: {why}")
            count = bluegreen.restore_count(deployment)
            repairs.append(
                {
                    "action": f"scale {selected} back up to {count} replicas and wait for its rollout",
                    "safe": True,
                    "command": f"kubectl -n {ns} scale deployment {render.deployment_name(model, selected)} "
                    f"--replicas={count}",
                    "do": ("bring_up", selected),
                }
            )
        if seen["annotated"] != truth:
            differences.append(
                f"the active Service's {bluegreen.ACTIVE_VERSION} says {seen['annotated']!r}, but {selected} "
                f"runs {truth}, the registry's production version"
            )
            repairs.append(
                {
                    "action": f"set {bluegreen.ACTIVE_VERSION} to {truth}",
                    "safe": True,
                    "command": _kubectl_switch(ns, model, selected, truth),
                    "do": ("annotate", selected),
                }
            )
        return differences, repairs
    differences.append(
        f"the registry says {truth} serves production, but traffic goes to {selected or 'no color'} "
        f"(which runs {serving!r})"
    )
    home = next((c for c in render.COLORS if c != selected and seen["runs"][c] == truth), None)
    if home is not None:
        count = bluegreen.restore_count(seen["deployments"][home])
        repairs.append(
            {
                "action": f"bring {home} ({truth}) up and switch traffic back to it",
                "safe": True,
                "command": f"kubectl -n {ns} scale deployment {render.deployment_name(model, home)} "
                f"--replicas={count} && kubectl -n {ns} rollout status deployment "
                f"{render.deployment_name(model, home)} && {_kubectl_switch(ns, model, home, truth)}",
                "do": ("switch", home),
            }
        )
    else:
        repairs.append(
            {
                "action": f"no color runs {truth}: redeploy it, or (if {serving!r} is meant to serve) "
                "move the registry pointer to it",
                "safe": False,
                "command": f"{_redeploy(model, truth)}  # or: {_registry_promote(model, serving, truth)}",
            }
        )
    return differences, repairs


def _apply(
    cluster: Any, model: str, holder: str, seen: dict, repair: dict, timeout: float, poll: float
) -> None:
    kind, color = repair["do"]
    truth = seen["truth"]
    if kind == "bring_up":
        bluegreen.bring_up(cluster, model, color, truth, holder, timeout, poll)
    elif kind == "switch":
        bluegreen.restore_traffic(cluster, model, color, holder, timeout, poll, expected_version=truth)
    elif kind == "annotate":

        def attempt() -> None:
            service = cluster.read("Service", render.active_service_name(model))
            if bluegreen.service_color(service) != color:
                raise PromotionError(f"{model}: the active Service changed while reconciling it")
            cluster.patch(
                "Service",
                service["metadata"]["name"],
                {
                    "metadata": {
                        "resourceVersion": service["metadata"]["resourceVersion"],
                        "annotations": {bluegreen.ACTIVE_VERSION: truth},
                    }
                },
                guarded=True,
            )

        cluster.guarded(f"annotate {model}'s active Service", attempt)


def reconcile(
    cluster: Any,
    registry: Any,
    model: str,
    holder: str,
    repair: bool = True,
    *,
    lease_seconds: int = 3600,
    timeout_seconds: float = 600,
    poll_seconds: float = 2.0,
) -> dict:
    """Detect, and with ``repair`` fix, a disagreement between the cluster and the registry's pointer.

    Returns ``{"consistent", "differences", "repairs"}``: ``consistent`` is whether the cluster
    agrees with the pointer when this returns; ``differences`` says, in words, what disagreed;
    ``repairs`` has one ``{"action", "done", "command"}`` per difference: what was (or must be)
    done, and the exact command that does it by hand.

    To repair, it takes the model's lease for ``holder`` (and keeps it: the run's next steps hold
    it; its clean-up releases it), so it raises :class:`~mlops.promotion.errors.ConcurrentPromotion`
    while another run holds it. With ``repair=False`` it only reads, and says when a live lease of
    another run means the differences may be that run's work in progress.
    """
    seen = _observe(cluster, registry, model)
    differences, planned = _plan(cluster, model, seen)
    lease = read_lease(cluster, model)
    if not repair and holder_of(lease) not in (None, holder) and is_live(lease):
        differences.append(
            f"a promotion holds the lease ({holder_of(lease)}): this may be its work in progress"
        )
    repairs: list[dict] = []
    if planned and repair and any(r["safe"] for r in planned):
        acquire_lease(cluster, model, holder, lease_seconds)
    for item in planned:
        done = False
        if repair and item["safe"]:
            _apply(cluster, model, holder, seen, item, timeout_seconds, poll_seconds)
            done = True
            log.warning("%s: reconciled: %s", model, item["action"])
        repairs.append({"action": item["action"], "done": done, "command": item["command"]})
    remaining = _plan(cluster, model, _observe(cluster, registry, model))[0] if planned else []
    for line in differences:
        log.warning("%s: cluster and registry disagree: %s", model, line)
    for item in repairs:
        if not item["done"]:
            log.error("%s: repair by hand: %s: %s", model, item["action"], item["command"])
    return {"consistent": not remaining, "differences": differences, "repairs": repairs}
