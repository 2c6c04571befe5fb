"""The blue-green state machine of one served model on Kubernetes.

**The source of truth for "what serves production" is the registry's production pointer**
(``registry/{model}/production.json``, :mod:`mlops.registry`). Moving it is the commit point of a
promotion or a rollback; the cluster follows it:

- before the commit, a run that holds the model's lease may run a candidate and even switch traffic
  to it (the post-promotion window), but that state is tentative: a failed run's clean-up, or the
  next run's :func:`mlops.promotion.reconcile.reconcile`, puts traffic back on the pointer's version;
- after the commit, nothing undoes it: the clean-up of a committed run changes nothing, and a run
  that finds traffic elsewhere switches it back to the pointer's version (reconcile).

What the cluster records, and reconcile compares with the pointer: the active Service's
``spec.selector.color`` (where traffic goes), each color's Deployment template label ``version``
(what that color runs), and the Service's annotations (``mlops.io/active-version``, the previous
color and version, who switched it and when). The lease is a ``coordination.k8s.io/v1`` Lease
(:mod:`mlops.promotion.lease`); every step that changes traffic or replicas checks it right before
its write.

Every step is idempotent with respect to that truth: a retried step that finds its work done
succeeds without writing, so a run can be retried from any task:

    reconcile -> resolve_active_color (takes the lease) -> deploy_candidate -> wait_for_rollout
    -> (analysis, approval) -> switch_traffic -> (post analysis) -> registry.promote (the commit)
    -> scale_down -> release_lease
    failure before the commit: clean_up (candidate to 0; traffic back to the previous color)
    a rollback request: rollback (only to the version that last served production) -> registry.rollback

Writes that depend on what was read carry ``metadata.resourceVersion`` (see :mod:`.kube`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from mlops.promotion.errors import (
    ConcurrentPromotion,
    LeaseLost,
    PromotionError,
    RbacDenied,
    RolloutFailed,
)
from mlops.promotion.kube import MERGE_PATCH, Cluster, RetryPolicy
from mlops.promotion.lease import (
    acquire_lease,
    holder_of,
    is_live,
    preempt_lease,
    read_lease,
    release_lease,
    renew_lease,
    require_lease,
)
from mlops.promotion.manifests import render
from mlops.promotion.manifests.render import COLORS, NO_COLOR, ServingSpec

__all__ = [
    "ConcurrentPromotion",
    "Cluster",
    "LeaseLost",
    "MERGE_PATCH",
    "PromotionError",
    "RbacDenied",
    "RetryPolicy",
    "RolloutFailed",
    "acquire_lease",
    "preempt_lease",
    "release_lease",
    "renew_lease",
]

log = logging.getLogger(__name__)

ANNOTATION_PREFIX = "mlops.io/"
LEGACY_LEASE = "mlops.io/promotion-lease"  # the annotation lease of earlier releases: removed on a switch
ACTIVE_VERSION = "mlops.io/active-version"
PREVIOUS_COLOR = "mlops.io/previous-color"
PREVIOUS_VERSION = "mlops.io/previous-version"
SWITCHED_BY = "mlops.io/switched-by"
SWITCHED_AT = "mlops.io/switched-at"
DEPLOYED_BY = "mlops.io/deployed-by"
DESIRED_REPLICAS = "mlops.io/desired-replicas"  # the configured minimum of a color
SCALED_DOWN_FROM = "mlops.io/scaled-down-from"  # the count a color had when it was scaled to zero
SpecFor = Callable[[str, str], ServingSpec]  # (color, version) -> the manifests' inputs


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def other_color(color: str | None) -> str:
    """The idle color: green when blue is active, blue when green is (and blue on a first deployment)."""
    return "green" if color == "blue" else "blue"


# -- reading the state ------------------------------------------------------------------------------
def service_color(service: dict | None) -> str | None:
    """The color an active Service sends traffic to (``None``: no Service, or never switched)."""
    if service is None:
        return None
    color = ((service.get("spec") or {}).get("selector") or {}).get("color")
    return color if color in COLORS else None


def _annotations(obj: dict | None) -> dict[str, str]:
    return dict(((obj or {}).get("metadata") or {}).get("annotations") or {})


def rollout_status(deployment: dict) -> tuple[str, str]:
    """Classify a Deployment's rollout: ("complete" | "progressing" | "failed", explanation).

    Complete only when the status describes the current spec (``observedGeneration >=
    generation``), at least one replica is desired, and updated = ready = available = desired
    replicas, with no old pods left. A color at 0 desired or 0 available replicas is never complete:
    traffic sent there would meet no pod. Failed when the controller reports
    ``ProgressDeadlineExceeded`` for the current spec.
    """
    meta, spec, status = deployment["metadata"], deployment.get("spec") or {}, deployment.get("status") or {}
    generation, observed = meta.get("generation", 0), status.get("observedGeneration", 0)
    if observed < generation:
        return "progressing", f"status is stale: observedGeneration {observed} < generation {generation}"
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Progressing" and condition.get("reason") == "ProgressDeadlineExceeded":
            return "failed", (
                f"progress deadline ({spec.get('progressDeadlineSeconds', 600)} s) exceeded: "
                f"{condition.get('message', '')}"
            )
    desired = spec.get("replicas", 1)
    counts = {
        k: status.get(k, 0) or 0
        for k in ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas")
    }
    if desired < 1:
        return "progressing", f"desired {desired} replicas: a color at zero replicas serves nothing"
    if (
        counts["updatedReplicas"]
        == counts["readyReplicas"]
        == counts["availableReplicas"]
        == desired
        == counts["replicas"]
    ):
        return "complete", f"{desired}/{desired} replicas updated, ready and available"
    return "progressing", (
        f"desired {desired}, updated {counts['updatedReplicas']}, ready {counts['readyReplicas']}, "
        f"available {counts['availableReplicas']}, total {counts['replicas']}"
    )


def template_version(deployment: dict | None) -> str | None:
    """The version a Deployment's pod template runs (its ``version`` label), ``None`` without one."""
    return (
        ((((deployment or {}).get("spec") or {}).get("template") or {}).get("metadata") or {})
        .get("labels", {})
        .get("version")
    )


_template_version = template_version


def replicas_of(deployment: dict | None) -> int:
    """A Deployment's ``spec.replicas`` (0 when it does not exist)."""
    return int(((deployment or {}).get("spec") or {}).get("replicas", 0) or 0)


def current_replicas(cluster: Cluster, model: str, color: str | None) -> int:
    """How many replicas ``color`` runs now: its Deployment's ``spec.replicas`` or its HPA's
    ``status.currentReplicas``, whichever is larger (0 for no color)."""
    if color is None:
        return 0
    name = render.deployment_name(model, color)
    hpa = cluster.read("HorizontalPodAutoscaler", name)
    from_hpa = int(((hpa or {}).get("status") or {}).get("currentReplicas", 0) or 0)
    return max(replicas_of(cluster.read("Deployment", name)), from_hpa)


def restore_count(deployment: dict) -> int:
    """The count to scale a color back up to: what it had when scaled down, at least its minimum."""
    annotations = _annotations(deployment)
    counts = []
    for key in (SCALED_DOWN_FROM, DESIRED_REPLICAS):
        try:
            counts.append(int(annotations.get(key, "0")))
        except ValueError:
            continue
    return max([1, *counts])


# -- the steps ---------------------------------------------------------------------------------------
def resolve_active_color(
    cluster: Cluster,
    model: str,
    holder: str,
    lease_seconds: int = 3600,
    dry_run: bool = False,
    version: str | None = None,
    *,
    registry: Any = None,
) -> dict:
    """Take the model's promotion lease and read the active color; returns the plan's starting state.

    ``{"active_color", "active_version", "candidate_color", "first_deployment", "already_active",
    "already_switched"}``. On a first deployment the active Service is created selecting no pod.
    Raises :class:`ConcurrentPromotion` while another holder's lease is live (see
    :func:`~mlops.promotion.lease.acquire_lease`). A dry run, and a version that is already active,
    only read: the lease is not taken when there is nothing to do.

    ``already_active``: ``version`` runs on the color that takes traffic and, when ``registry`` is
    given, the production pointer (the truth) names it too. When the cluster serves ``version`` but
    the pointer names another one (a run that switched and never committed), the state resumes that
    promotion instead of skipping it: the pointer's color is ``active_color``, the serving color is
    ``candidate_color`` and ``already_switched`` is true, so the following steps find their work done
    and the run ends by moving the pointer.
    """
    name = render.active_service_name(model)
    lease = read_lease(cluster, model)
    if holder_of(lease) not in (None, holder) and is_live(lease):
        acquire_lease(cluster, model, holder, lease_seconds)  # raises ConcurrentPromotion, naming the holder
    service = cluster.read("Service", name)
    selected = service_color(service)
    serving = (
        template_version(cluster.read("Deployment", render.deployment_name(model, selected)))
        if (selected)
        else None
    )
    state = {
        "active_color": selected,
        "active_version": _annotations(service).get(ACTIVE_VERSION) or serving,
        "first_deployment": selected is None,
        "candidate_color": other_color(selected),
        "already_active": False,
        "already_switched": False,
    }
    if version is not None and selected is not None and serving == version:
        pointer = registry.production(model) if registry is not None else None
        production = pointer["version"] if pointer else None
        if registry is None or production == version:
            state["already_active"] = True
            log.info("%s: version %s already takes traffic on %s: nothing to do", model, version, selected)
            return state
        idle = other_color(selected)
        idle_runs = template_version(cluster.read("Deployment", render.deployment_name(model, idle)))
        state.update(
            active_color=idle if production is not None and idle_runs == production else None,
            active_version=production,
            candidate_color=selected,
            first_deployment=production is None,
            already_switched=True,
        )
        log.warning(
            "%s: %s already takes traffic on %s but the registry names %s: resuming that promotion",
            model,
            version,
            selected,
            production,
        )
    if not dry_run:
        acquire_lease(cluster, model, holder, lease_seconds)
    if service is None and not dry_run:
        cluster.create(render.service(model, cluster.namespace, "active", NO_COLOR))
    log.info(
        "%s: active color %s (version %s); lease held by %s",
        model,
        state["active_color"],
        state["active_version"],
        holder,
    )
    return state


def deploy_candidate(cluster: Cluster, spec: ServingSpec, holder: str, dry_run: bool = False) -> dict:
    """Create or update the candidate color's Deployment, HPA and PDB, and point the preview Service at it.

    The candidate starts at the active color's current replica count (its Deployment's or its HPA's,
    as Argo Rollouts does), never below ``spec.replicas`` (the configured minimum, also the HPA's
    ``minReplicas``). Refuses to change the color that takes traffic (an unchanged re-apply of the
    version it already runs is a no-op). Returns ``{"deployment", "generation", "changed",
    "replicas"}``; ``generation`` is what :func:`wait_for_rollout` must see observed.
    """
    active = cluster.read("Service", render.active_service_name(spec.model))
    active_color = service_color(active)
    desired = render.deployment(spec)
    desired["metadata"]["annotations"].update({DEPLOYED_BY: holder, DESIRED_REPLICAS: str(spec.replicas)})
    name = desired["metadata"]["name"]
    live = cluster.read("Deployment", name)
    if live is not None and template_version(live) == spec.version and replicas_of(live) > 0:
        desired["spec"]["replicas"] = replicas_of(live)  # a retry: the HPA may have scaled it since
    elif active_color != spec.color:
        desired["spec"]["replicas"] = max(spec.replicas, current_replicas(cluster, spec.model, active_color))
    if active_color == spec.color and not (live is not None and _contains(live.get("spec"), desired["spec"])):
        raise PromotionError(f"{spec.model}: {spec.color} is the active color; refusing to deploy over it")
    if dry_run:
        log.info(
            "dry run: would %s Deployment %s/%s at version %s; manifests:\n%s",
            "update" if live else "create",
            cluster.namespace,
            name,
            spec.version,
            json.dumps(render.render_all(spec), indent=1),
        )
        return {"deployment": name, "generation": None, "changed": False, "dry_run": True}

    def apply_deployment() -> dict:
        current = cluster.read("Deployment", name)
        if current is None:
            return cluster.create(desired)
        if _same_spec(current, desired):
            return current
        if service_color(cluster.read("Service", render.active_service_name(spec.model))) == spec.color:
            if _contains(current.get("spec"), desired["spec"]):
                return current  # it already runs this spec; only who deployed it differs
            raise PromotionError(f"{spec.model}: {spec.color} became the active color; not deploying over it")
        updated = {
            **desired,
            "metadata": {**desired["metadata"], "resourceVersion": current["metadata"]["resourceVersion"]},
        }
        return cluster.replace(updated)

    result = cluster.guarded(f"apply Deployment {name}", apply_deployment)
    for doc in (render.hpa(spec), render.pdb(spec)):
        _apply_simple(cluster, doc)
    _point_preview(cluster, spec.model, spec.color)
    generation = result["metadata"]["generation"]
    changed = live is None or live["metadata"].get("generation") != generation
    log.info(
        "%s: Deployment %s at version %s, generation %s, %s replicas (%s)",
        spec.model,
        name,
        spec.version,
        generation,
        desired["spec"]["replicas"],
        "changed" if changed else "unchanged",
    )
    return {
        "deployment": name,
        "generation": generation,
        "changed": changed,
        "replicas": desired["spec"]["replicas"],
    }


def _same_spec(current: dict, desired: dict) -> bool:
    """Whether the live spec already contains every field we render (the API adds defaults)."""
    return _contains(current.get("spec") or {}, desired["spec"]) and _contains(
        _annotations(current), desired["metadata"]["annotations"]
    )


def _contains(live: Any, wanted: Any) -> bool:
    if isinstance(wanted, dict):
        return isinstance(live, dict) and all(_contains(live.get(k), v) for k, v in wanted.items())
    if isinstance(wanted, list):
        return (
            isinstance(live, list)
            and len(live) == len(wanted)
            and all(_contains(a, b) for a, b in zip(live, wanted, strict=True))
        )
    return live == wanted


def _apply_simple(cluster: Cluster, doc: dict) -> None:
    def attempt() -> None:
        current = cluster.read(doc["kind"], doc["metadata"]["name"])
        if current is None:
            cluster.create(doc)
        elif not _contains(current.get("spec"), doc["spec"]):
            cluster.replace(
                {
                    **doc,
                    "metadata": {
                        **doc["metadata"],
                        "resourceVersion": current["metadata"]["resourceVersion"],
                    },
                }
            )

    cluster.guarded(f"apply {doc['kind']} {doc['metadata']['name']}", attempt)


def _point_preview(cluster: Cluster, model: str, color: str) -> None:
    name = render.preview_service_name(model)

    def attempt() -> None:
        current = cluster.read("Service", name)
        if current is None:
            cluster.create(render.service(model, cluster.namespace, "preview", color))
        elif service_color(current) != color:
            cluster.patch(
                "Service",
                name,
                {
                    "metadata": {"resourceVersion": current["metadata"]["resourceVersion"]},
                    "spec": {"selector": {"color": color}},
                },
                guarded=True,
            )

    cluster.guarded(f"point Service {name} at {color}", attempt)


def wait_for_rollout(
    cluster: Cluster,
    deployment: str,
    version: str,
    min_generation: int | None = None,
    timeout_seconds: float = 900,
    poll_seconds: float = 2.0,
) -> dict:
    """Poll until the Deployment's rollout of ``version`` is complete (see :func:`rollout_status`).

    Raises :class:`RolloutFailed` on ``ProgressDeadlineExceeded``, when the Deployment's template is
    no longer ``version`` (changed under us), or when ``timeout_seconds`` pass first (e.g. a status
    that stays stale). Returns ``{"deployment", "generation", "ready_at"}`` (``ready_at``: epoch s).
    """
    deadline = time.monotonic() + timeout_seconds
    message = "not read yet"
    while True:
        current = cluster.read("Deployment", deployment)
        if current is None:
            raise RolloutFailed(f"Deployment {cluster.namespace}/{deployment} does not exist")
        if _template_version(current) != version:
            raise RolloutFailed(
                f"Deployment {deployment} now runs version {_template_version(current)!r}, "
                f"not {version!r}: another change replaced the candidate"
            )
        generation = current["metadata"].get("generation", 0)
        if min_generation is not None and generation < min_generation:
            raise RolloutFailed(
                f"Deployment {deployment} generation {generation} < {min_generation}: recreated?"
            )
        state, message = rollout_status(current)
        if state == "complete":
            log.info("rollout of %s (version %s) complete: %s", deployment, version, message)
            return {"deployment": deployment, "generation": generation, "ready_at": time.time()}
        if state == "failed":
            raise RolloutFailed(f"rollout of {deployment} (version {version}) failed: {message}")
        if time.monotonic() >= deadline:
            raise RolloutFailed(
                f"rollout of {deployment} (version {version}) not complete after "
                f"{timeout_seconds:.0f} s: {message}"
            )
        log.info("waiting for %s: %s", deployment, message)
        time.sleep(poll_seconds)


def _select_color(cluster: Cluster, service: dict, color: str, version: str | None, holder: str) -> str:
    """Point ``service`` at ``color`` in one patch guarded by the resourceVersion just read, recording
    the version (None removes the annotation), the color and version it replaces, who switched it and
    when. Returns the switch time."""
    annotations = _annotations(service)
    switched_at = _iso(_now())
    cluster.patch(
        "Service",
        service["metadata"]["name"],
        {
            "metadata": {
                "resourceVersion": service["metadata"]["resourceVersion"],
                "annotations": {
                    ACTIVE_VERSION: version,
                    PREVIOUS_COLOR: service_color(service) or "",
                    PREVIOUS_VERSION: annotations.get(ACTIVE_VERSION, ""),
                    SWITCHED_BY: holder,
                    SWITCHED_AT: switched_at,
                    LEGACY_LEASE: None,
                },
            },
            "spec": {"selector": {"color": color}},
        },
        guarded=True,
    )
    return switched_at


def _require_serving(cluster: Cluster, model: str, color: str, version: str, why: str) -> None:
    """Raise unless ``color`` is a complete rollout of ``version`` right now (read fresh)."""
    name = render.deployment_name(model, color)
    deployment = cluster.read("Deployment", name)
    if deployment is None:
        raise PromotionError(f"{model}: Deployment {name} does not exist; {why}")
    state, message = rollout_status(deployment)
    if state != "complete" or template_version(deployment) != version:
        raise PromotionError(
            f"{model}: {color} is not a complete rollout of {version} right now "
            f"({message}; template version {template_version(deployment)!r}); {why}"
        )


def switch_traffic(
    cluster: Cluster,
    model: str,
    to_color: str,
    expected_from: str | None,
    version: str,
    holder: str,
    dry_run: bool = False,
) -> dict:
    """Point the active Service at ``to_color`` in ONE patch guarded by its resourceVersion.

    Checked at switch time, against a fresh read: this run still holds the lease; the Service still
    selects ``expected_from``; ``to_color`` is a complete rollout of ``version`` right now (at least
    one replica, all available). Switching to where the Service already points (same version)
    changes nothing. Returns ``{"switched", "from_color", "to_color", "switched_at"}``.
    """
    name = render.active_service_name(model)

    def attempt() -> dict:
        service = cluster.read("Service", name)
        if service is None:
            raise PromotionError(
                f"Service {cluster.namespace}/{name} does not exist; resolve the active color first"
            )
        annotations = _annotations(service)
        current = service_color(service)
        if current == to_color and annotations.get(ACTIVE_VERSION) == version:
            log.info(
                "%s already sends traffic to %s (version %s): nothing to switch", name, to_color, version
            )
            return {
                "switched": False,
                "from_color": expected_from,
                "to_color": to_color,
                "switched_at": annotations.get(SWITCHED_AT),
            }
        if dry_run:
            log.info(
                "dry run: would switch Service %s from %s to %s (version %s)",
                name,
                current,
                to_color,
                version,
            )
            return {"switched": False, "from_color": current, "to_color": to_color, "dry_run": True}
        # Read after the Service: a pre-emptor that switches it first makes our patch a 409, and the
        # retry of this attempt then finds the lease gone.
        require_lease(cluster, model, holder)
        if current != expected_from:
            raise ConcurrentPromotion(
                f"{model}: Service {name} selects {current!r}, expected {expected_from!r}: "
                "someone else switched it; not switching"
            )
        _require_serving(cluster, model, to_color, version, "not switching")
        switched_at = _select_color(cluster, service, to_color, version, holder)
        log.info("%s: traffic switched from %s to %s (version %s)", model, current, to_color, version)
        return {"switched": True, "from_color": current, "to_color": to_color, "switched_at": switched_at}

    return cluster.guarded(f"switch {name} to {to_color}", attempt)


def scale(
    cluster: Cluster, model: str, color: str, replicas: int, dry_run: bool = False, *, holder: str
) -> dict:
    """Set a color's replica count as the lease's ``holder``; keeps the Deployment.

    Raises :class:`LeaseLost` unless ``holder`` holds the model's lease (checked between reading the
    Deployment and the patch guarded by its resourceVersion). Refuses to scale the active color to
    zero. Scaling to zero records the count it had (``mlops.io/scaled-down-from``), which a rollback
    or a restore scales back up to. A dry run only logs what it would do.
    """
    name = render.deployment_name(model, color)

    def attempt() -> dict:
        if dry_run:
            log.info("dry run: would scale %s to %d", name, replicas)
            return {"deployment": name, "replicas": replicas, "dry_run": True}
        current = cluster.read("Deployment", name)
        if current is None:
            return {"deployment": name, "replicas": None}
        require_lease(cluster, model, holder)
        if (
            replicas == 0
            and service_color(cluster.read("Service", render.active_service_name(model))) == color
        ):
            raise PromotionError(f"{model}: {color} takes traffic; refusing to scale it to zero")
        had = replicas_of(current)
        if had == replicas:
            return {"deployment": name, "replicas": replicas, "generation": current["metadata"]["generation"]}
        meta: dict[str, Any] = {"resourceVersion": current["metadata"]["resourceVersion"]}
        if replicas == 0:
            # The HPA of a Deployment at 0 replicas stays idle ("scaling is disabled"), so it can stay too.
            meta["annotations"] = {SCALED_DOWN_FROM: str(had)}
        updated = cluster.patch(
            "Deployment", name, {"metadata": meta, "spec": {"replicas": replicas}}, guarded=True
        )
        log.info("scaled %s from %d to %d replicas", name, had, replicas)
        return {
            "deployment": name,
            "replicas": replicas,
            "previous_replicas": had,
            "generation": updated["metadata"]["generation"],
        }

    return cluster.guarded(f"scale {name} to {replicas}", attempt)


def scale_down(
    cluster: Cluster,
    model: str,
    color: str | None,
    delay_seconds: float = 30,
    dry_run: bool = False,
    *,
    holder: str,
) -> dict:
    """After ``delay_seconds`` (Argo Rollouts' scaleDownDelaySeconds), scale the old color to zero,
    as the lease's ``holder`` (see :func:`scale`)."""
    if color is None:
        return {"deployment": None, "replicas": None}
    if delay_seconds > 0 and not dry_run:
        log.info("keeping %s up for %.0f s for an instant rollback", color, delay_seconds)
        time.sleep(delay_seconds)
    return scale(cluster, model, color, 0, dry_run=dry_run, holder=holder)


def bring_up(
    cluster: Cluster,
    model: str,
    color: str,
    version: str,
    holder: str,
    timeout_seconds: float = 600,
    poll_seconds: float = 2.0,
    dry_run: bool = False,
) -> dict:
    """Make ``color`` a complete rollout of ``version`` again: scale it back to the count it had when
    it was scaled down (at least its minimum) and wait. Raises :class:`PromotionError` when the color
    runs another version."""
    name = render.deployment_name(model, color)
    deployment = cluster.read("Deployment", name)
    if deployment is None:
        raise PromotionError(f"{model}: Deployment {name} is gone; cannot bring {version} back on {color}")
    if template_version(deployment) != version:
        raise PromotionError(
            f"{model}: {color} runs {template_version(deployment)!r}, not {version!r}; not bringing it up"
        )
    if replicas_of(deployment) > 0 or dry_run:
        scaled = {"deployment": name, "generation": deployment["metadata"].get("generation")}
    else:
        scaled = scale(cluster, model, color, restore_count(deployment), holder=holder)
    if not dry_run:
        wait_for_rollout(cluster, name, version, scaled.get("generation"), timeout_seconds, poll_seconds)
    return scaled


def restore_traffic(
    cluster: Cluster,
    model: str,
    to_color: str | None,
    holder: str,
    timeout_seconds: float = 600,
    poll_seconds: float = 2.0,
    dry_run: bool = False,
    *,
    expected_version: str | None = None,
) -> dict:
    """Send traffic back to ``to_color``: scale it up if needed, wait, switch in one guarded patch.

    ``expected_version`` (the version that served before this run's switch) must be what
    ``to_color`` runs, or nothing is switched: traffic never goes to a version that was not promoted.
    ``to_color=None`` (a failed first deployment) points the active Service at no pod. The
    ``expected_from`` check is relaxed to "whatever is active now"; the lease must still be ours.
    """
    name = render.active_service_name(model)
    version = ""
    if to_color is not None:
        deployment = cluster.read("Deployment", render.deployment_name(model, to_color))
        version = template_version(deployment) or ""
        if expected_version and version != expected_version:
            raise PromotionError(
                f"{model}: refusing to restore traffic to {to_color}: it runs {version or None!r}, not "
                f"{expected_version!r}, the version that served production before"
            )
        bring_up(cluster, model, to_color, version, holder, timeout_seconds, poll_seconds, dry_run)

    def attempt() -> dict:
        service = cluster.read("Service", name)
        if service is None:
            raise PromotionError(f"Service {cluster.namespace}/{name} does not exist")
        current = service_color(service)
        if current == to_color:
            return {"switched": False, "to_color": to_color, "version": version or None}
        if dry_run:
            log.info("dry run: would switch %s from %s back to %s", name, current, to_color)
            return {"switched": False, "to_color": to_color, "dry_run": True}
        require_lease(cluster, model, holder)
        if to_color is not None:
            _require_serving(cluster, model, to_color, version, "not restoring traffic")
        _select_color(cluster, service, to_color or NO_COLOR, version or None, holder)
        log.warning(
            "%s: traffic restored from %s to %s (version %s)", model, current, to_color, version or "-"
        )
        return {"switched": True, "from_color": current, "to_color": to_color, "version": version}

    return cluster.guarded(f"restore {name} to {to_color}", attempt)


def rollback(
    cluster: Cluster,
    model: str,
    holder: str,
    timeout_seconds: float = 600,
    poll_seconds: float = 2.0,
    dry_run: bool = False,
    *,
    to_version: str | None = None,
    spec_for: SpecFor | None = None,
) -> dict:
    """A rollback request: send traffic back to the version that last served production.

    ``to_version`` is that version: the registry pointer's ``previous_version`` (the truth); without
    it, the ``mlops.io/previous-version`` the last switch recorded on the active Service. Traffic goes
    only to a color whose template runs exactly that version: the idle color when it still does
    (scaled back up to the count it had), else, when ``spec_for(color, version)`` is given, the idle
    color redeployed with it (waiting for its rollout); otherwise :class:`PromotionError` refuses,
    naming what the idle color runs now (say a rejected candidate). Never a version that was not
    promoted.

    Idempotent: when the active color already runs ``to_version``, or this ``holder`` already
    switched the Service (a retried task), nothing changes. The caller holds the lease (taken by
    :func:`resolve_active_color`, or pre-empted for an emergency). Returns ``{"switched",
    "from_color", "to_color", "version"}``.
    """
    service = cluster.read("Service", render.active_service_name(model))
    annotations = _annotations(service)
    current = service_color(service)
    serving = (
        template_version(cluster.read("Deployment", render.deployment_name(model, current)))
        if (current)
        else None
    )
    target = to_version or annotations.get(PREVIOUS_VERSION) or None
    if current is not None and (
        serving == to_version or (annotations.get(SWITCHED_BY) == holder and not to_version)
    ):
        log.info("%s: %s already serves %s: the rollback is done", model, current, serving)
        return {
            "switched": False,
            "from_color": annotations.get(PREVIOUS_COLOR) or None,
            "to_color": current,
            "version": serving,
        }
    if current is None or not target:
        raise PromotionError(
            f"{model}: nothing to roll back to (active color {current!r}, previous version {target!r})"
        )
    idle = other_color(current)
    idle_deployment = cluster.read("Deployment", render.deployment_name(model, idle))
    idle_runs = template_version(idle_deployment)
    if not dry_run:
        require_lease(cluster, model, holder)
    if idle_runs == target:
        bring_up(cluster, model, idle, target, holder, timeout_seconds, poll_seconds, dry_run)
    elif spec_for is not None:
        log.warning(
            "%s: %s runs %r, not %s (the version that last served production): redeploying %s there",
            model,
            idle,
            idle_runs,
            target,
            target,
        )
        deployed = deploy_candidate(cluster, spec_for(idle, target), holder, dry_run)
        if not dry_run:
            wait_for_rollout(
                cluster, deployed["deployment"], target, deployed["generation"], timeout_seconds, poll_seconds
            )
    else:
        raise PromotionError(
            f"{model}: refusing to roll back to {idle}: it runs {idle_runs!r}, not {target!r}, the version "
            f"that last served production ({idle_runs!r} was never promoted there after it). Redeploy "
            f"{target} (run mlops_promotion with version={target}), then roll back again"
        )
    result = switch_traffic(cluster, model, idle, current, target, holder, dry_run)
    return {**result, "from_color": current, "to_color": idle, "version": target}


def clean_up(
    cluster: Cluster,
    model: str,
    candidate_color: str,
    previous_color: str | None,
    holder: str,
    completed: bool,
    timeout_seconds: float = 600,
    poll_seconds: float = 2.0,
    *,
    registry: Any = None,
    version: str | None = None,
) -> str:
    """Leave the model in a consistent state after a promotion ended, however it ended; release the lease.

    - this run no longer holds the lease (pre-empted by an emergency rollback, or taken after it
      expired): nothing is changed, not traffic, not replicas; says so;
    - committed (``completed``, or the registry's pointer already names ``version``: the pointer
      move landed even if its response was lost): nothing to undo;
    - failed after the switch: restore the previous color, but only if it still runs the version
      that served before (none on a first deployment), then scale the candidate down;
    - failed before the switch: the active color and Service are untouched; scale the candidate down.

    Returns what it did, in words.
    """
    lease = read_lease(cluster, model)
    if holder_of(lease) != holder:
        outcome = (
            f"this run ({holder}) no longer holds the lease (holder now: {holder_of(lease)!r}): "
            "traffic and replicas left as they are"
        )
        log.warning("%s: %s", model, outcome)
        return outcome
    service = cluster.read("Service", render.active_service_name(model))
    annotations = _annotations(service)
    pointer = registry.production(model) if registry is not None and version else None
    committed = completed or (pointer is not None and pointer.get("version") == version)
    on_candidate = service_color(service) == candidate_color
    switched_here = on_candidate and (
        annotations.get(SWITCHED_BY) == holder or (registry is not None and version is not None)
    )
    try:
        if committed:
            outcome = "completed: nothing to undo"
        elif switched_here:
            expected = annotations.get(PREVIOUS_VERSION) or None if previous_color else None
            restore_traffic(
                cluster,
                model,
                previous_color,
                holder,
                timeout_seconds,
                poll_seconds,
                expected_version=expected,
            )
            scale(cluster, model, candidate_color, 0, holder=holder)
            restored = previous_color or "no color"
            outcome = f"rolled back: traffic restored to {restored}, {candidate_color} scaled to 0"
        elif on_candidate:
            outcome = f"{candidate_color} is active by another hand; left as is"
        else:
            scale(cluster, model, candidate_color, 0, holder=holder)
            outcome = (
                f"aborted before the switch: {previous_color or 'no color'} still active, "
                f"candidate {candidate_color} scaled to 0"
            )
    finally:
        release_lease(cluster, model, holder)
    log.warning("%s: %s", model, outcome)
    return outcome
