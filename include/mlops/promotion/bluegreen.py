"""The blue-green state machine of one served model on Kubernetes.

State lives in the cluster, not in Airflow: the active Service's ``spec.selector.color`` says
which color takes production traffic, and its annotations record the active version, the
previous color/version (for rollback), who switched it, and the promotion lease. Every step
re-reads that state, so each step is idempotent and safe to retry:

    resolve_active_color -> deploy_candidate -> wait_for_rollout -> (analysis, approval)
    -> switch_traffic -> (post analysis) -> scale_down -> release_lease
    failure before the switch: abort_candidate; after it: restore_traffic (both in clean_up)
    a rollback request: rollback (scale the previous color up, wait, switch back)

Writes that depend on what was read carry ``metadata.resourceVersion`` (optimistic
concurrency: the API answers 409 if anything changed in between). 409s, 429s, 5xx and
connection errors are retried with exponential backoff; a 403 raises :class:`RbacDenied`
naming the verb and resource that the service account lacks.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from mlops.promotion.manifests import render
from mlops.promotion.manifests.render import COLORS, NO_COLOR, ServingSpec

log = logging.getLogger(__name__)
T = TypeVar("T")

ANNOTATION_PREFIX = "mlops.io/"
LEASE = "mlops.io/promotion-lease"
ACTIVE_VERSION = "mlops.io/active-version"
PREVIOUS_COLOR = "mlops.io/previous-color"
PREVIOUS_VERSION = "mlops.io/previous-version"
SWITCHED_BY = "mlops.io/switched-by"
SWITCHED_AT = "mlops.io/switched-at"
DEPLOYED_BY = "mlops.io/deployed-by"
DESIRED_REPLICAS = "mlops.io/desired-replicas"
MERGE_PATCH = "application/merge-patch+json"


class PromotionError(RuntimeError):
    """The promotion cannot go on; the message says why and what the cluster looks like."""


class RolloutFailed(PromotionError):
    """The candidate's rollout failed (progress deadline exceeded) or did not finish in time."""


class ConcurrentPromotion(PromotionError):
    """Another promotion holds the model's lease, or changed the Service under this one."""


class RbacDenied(PermissionError):
    """The Kubernetes API answered 403: the message names the verb and resource to grant."""


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 6
    initial_seconds: float = 0.2
    max_seconds: float = 5.0


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def other_color(color: str | None) -> str:
    """The idle color: green when blue is active, blue when green is (and blue on a first deployment)."""
    return "green" if color == "blue" else "blue"


# -- the API, with retries and readable 403s --------------------------------------------------------
class Cluster:
    """The official Kubernetes client for one namespace, with the retry and error policy above."""

    def __init__(self, api_client: Any, namespace: str, retry: RetryPolicy | None = None):
        from kubernetes import client

        self.api_client = api_client
        self.namespace = namespace
        self.apps = client.AppsV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.autoscaling = client.AutoscalingV2Api(api_client)
        self.policy = client.PolicyV1Api(api_client)
        self.retry = retry or RetryPolicy()

    @classmethod
    def from_connection(cls, namespace: str | None = None, conn_id: str | None = None) -> Cluster:
        """Built from the Airflow Kubernetes connection (``settings.kubernetes_conn_id``) at run time."""
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

        from mlops.settings import get_settings

        settings = get_settings()
        hook = KubernetesHook(conn_id=conn_id or settings.kubernetes_conn_id)
        return cls(hook.api_client, namespace or settings.serving_namespace)

    def call(
        self,
        verb: str,
        resource: str,
        fn: Callable[..., T],
        *args: Any,
        retry_conflicts: bool = True,
        **kwargs: Any,
    ) -> T:
        """Run one API call; retry 409 (unless ``retry_conflicts`` is False), 429, 5xx and network errors."""
        import urllib3
        from kubernetes.client.exceptions import ApiException
        from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

        def transient(exc: BaseException) -> bool:
            if isinstance(exc, urllib3.exceptions.HTTPError | ConnectionError):
                return True
            if not isinstance(exc, ApiException):
                return False
            if exc.status == 409:
                return retry_conflicts and _reason(exc) != "AlreadyExists"
            return exc.status == 429 or exc.status >= 500

        def log_retry(state) -> None:
            log.warning(
                "Kubernetes %s %s failed (%s); retry %d of %d",
                verb,
                resource,
                _short(state.outcome.exception()),
                state.attempt_number,
                self.retry.attempts - 1,
            )

        try:
            for attempt in Retrying(
                retry=retry_if_exception(transient),
                stop=stop_after_attempt(self.retry.attempts),
                wait=wait_exponential(multiplier=self.retry.initial_seconds, max=self.retry.max_seconds),
                before_sleep=log_retry,
                reraise=True,
            ):
                with attempt:
                    return fn(*args, **kwargs)
        except ApiException as exc:
            if exc.status == 403:
                group, plural = resource.split("/", 1) if "/" in resource else ("", resource)
                raise RbacDenied(
                    f"Kubernetes API denied '{verb}' on '{plural}' (apiGroup '{group}') in namespace "
                    f"'{self.namespace}' (403 Forbidden: {_message(exc)}). Grant the Airflow service account "
                    f"the RBAC verb '{verb}' on resource '{plural}' in that namespace (helm-values/ RBAC)."
                ) from exc
            raise
        raise AssertionError("unreachable")  # pragma: no cover

    # kind -> (RBAC resource "group/plural", client attribute, method suffix) for every kind touched.
    _KINDS: dict[str, tuple[str, str, str]] = {
        "Deployment": ("apps/deployments", "apps", "deployment"),
        "Service": ("services", "core", "service"),
        "HorizontalPodAutoscaler": (
            "autoscaling/horizontalpodautoscalers",
            "autoscaling",
            "horizontal_pod_autoscaler",
        ),
        "PodDisruptionBudget": ("policy/poddisruptionbudgets", "policy", "pod_disruption_budget"),
    }

    def _method(self, kind: str, verb: str) -> tuple[str, Callable[..., Any]]:
        """The RBAC resource and the client method for ``verb`` ("read", "create", ...) on ``kind``."""
        resource, api, suffix = self._KINDS[kind]
        return resource, getattr(getattr(self, api), f"{verb}_namespaced_{suffix}")

    # Reads return plain dicts (the JSON the API sent), which the logic below compares directly.
    def read(self, kind: str, name: str) -> dict | None:
        """The object, or ``None`` when it does not exist."""
        from kubernetes.client.exceptions import ApiException

        resource, fn = self._method(kind, "read")
        try:
            response = self.call("get", resource, fn, name, self.namespace, _preload_content=False)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return json.loads(response.data)

    def create(self, doc: dict) -> dict:
        resource, fn = self._method(doc["kind"], "create")
        response = self.call("create", resource, fn, self.namespace, doc, _preload_content=False)
        return json.loads(response.data)

    def replace(self, doc: dict) -> dict:
        name = doc["metadata"]["name"]
        resource, fn = self._method(doc["kind"], "replace")
        response = self.call(
            "update", resource, fn, name, self.namespace, doc, retry_conflicts=False, _preload_content=False
        )
        return json.loads(response.data)

    def patch(self, kind: str, name: str, body: dict, *, guarded: bool) -> dict:
        """JSON merge patch; ``guarded`` patches carry a resourceVersion, so a 409 is not retried here."""
        resource, fn = self._method(kind, "patch")
        response = self.call(
            "patch",
            resource,
            fn,
            name,
            self.namespace,
            body,
            retry_conflicts=not guarded,
            _content_type=MERGE_PATCH,
            _preload_content=False,
        )
        return json.loads(response.data)

    def guarded(self, what: str, fn: Callable[[], T]) -> T:
        """Run a read-check-write ``fn`` again (re-reading) when its guarded write meets a 409."""
        from kubernetes.client.exceptions import ApiException

        delay = self.retry.initial_seconds
        for attempt in range(1, self.retry.attempts + 1):
            try:
                return fn()
            except ApiException as exc:
                if exc.status != 409 or _reason(exc) == "AlreadyExists" or attempt == self.retry.attempts:
                    raise
                log.warning("%s: conflict (%s); re-reading and retrying in %.1f s", what, _short(exc), delay)
                time.sleep(delay)
                delay = min(delay * 2, self.retry.max_seconds)
        raise AssertionError("unreachable")  # pragma: no cover


def _reason(exc: Any) -> str:
    try:
        return json.loads(exc.body or "{}").get("reason", "")
    except (TypeError, ValueError):
        return ""


def _message(exc: Any) -> str:
    try:
        return json.loads(exc.body or "{}").get("message", "") or str(exc.reason)
    except (TypeError, ValueError):
        return str(getattr(exc, "reason", exc))


def _short(exc: BaseException | None) -> str:
    status = getattr(exc, "status", None)
    return f"{status} {_message(exc)}" if status else f"{type(exc).__name__}: {exc}"


# -- reading the state ------------------------------------------------------------------------------
def service_color(service: dict | None) -> str | None:
    """The color an active Service sends traffic to (``None``: no Service, or never switched)."""
    if service is None:
        return None
    color = ((service.get("spec") or {}).get("selector") or {}).get("color")
    return color if color in COLORS else None


def _annotations(obj: dict | None) -> dict[str, str]:
    return dict(((obj or {}).get("metadata") or {}).get("annotations") or {})


def lease_of(service: dict | None) -> dict | None:
    """The promotion lease on an active Service (``holder``, ``expires``), or ``None``."""
    raw = _annotations(service).get(LEASE)
    if not raw:
        return None
    try:
        lease = json.loads(raw)
    except ValueError:
        return None
    return lease if isinstance(lease, dict) else None


def _lease_blocks(lease: dict | None, holder: str) -> bool:
    if not lease or lease.get("holder") == holder:
        return False
    try:
        expires = datetime.fromisoformat(str(lease.get("expires")).replace("Z", "+00:00"))
    except ValueError:
        return False
    return expires > _now()


def rollout_status(deployment: dict) -> tuple[str, str]:
    """Classify a Deployment's rollout: ("complete" | "progressing" | "failed", explanation).

    Complete only when the status describes the current spec (``observedGeneration >=
    generation``) and updated = ready = available = desired replicas, with no old pods left.
    Failed when the controller reports ``ProgressDeadlineExceeded`` for the current spec.
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


def _template_version(deployment: dict) -> str | None:
    return (
        (((deployment.get("spec") or {}).get("template") or {}).get("metadata") or {})
        .get("labels", {})
        .get("version")
    )


# -- the steps ---------------------------------------------------------------------------------------
def _annotate_lease(cluster: Cluster, service: dict[str, Any], value: str | None) -> None:
    """Set (``None``: remove) the lease annotation, guarded by the Service's resourceVersion."""
    cluster.patch(
        "Service",
        service["metadata"]["name"],
        {
            "metadata": {
                "resourceVersion": service["metadata"]["resourceVersion"],
                "annotations": {LEASE: value},
            }
        },
        guarded=True,
    )


def resolve_active_color(
    cluster: Cluster,
    model: str,
    holder: str,
    lease_seconds: int = 3600,
    dry_run: bool = False,
    version: str | None = None,
) -> dict:
    """Read the active color and take the model's promotion lease; returns the plan's starting state.

    ``{"active_color", "active_version", "candidate_color", "first_deployment", "already_active"}``.
    On a first deployment the active Service is created selecting no pod, so the lease has a home.
    Raises :class:`ConcurrentPromotion` while another holder's lease is live. When ``version`` is
    already the active one, nothing is written (``already_active``). A dry run only reads.
    """
    name = render.active_service_name(model)

    def attempt() -> dict:
        service = cluster.read("Service", name)
        lease = lease_of(service)
        if _lease_blocks(lease, holder):
            raise ConcurrentPromotion(
                f"{model}: another promotion holds the lease on Service {cluster.namespace}/{name} "
                f"({lease.get('holder')}, until {lease.get('expires')}); refusing to start a second one"
            )
        state = {
            "active_color": service_color(service),
            "active_version": _annotations(service).get(ACTIVE_VERSION),
            "first_deployment": service_color(service) is None,
        }
        state["candidate_color"] = other_color(state["active_color"])
        state["already_active"] = (
            version is not None and state["active_color"] is not None and (state["active_version"] == version)
        )
        if state["already_active"]:
            log.info(
                "%s: version %s already takes traffic on %s: nothing to do",
                model,
                version,
                state["active_color"],
            )
            return state
        if dry_run:
            log.info("dry run: would take the lease on Service %s/%s", cluster.namespace, name)
            return state
        new_lease = json.dumps({"holder": holder, "expires": _iso(_now() + timedelta(seconds=lease_seconds))})
        if service is None:
            cluster.create(render.service(model, cluster.namespace, "active", NO_COLOR, {LEASE: new_lease}))
        else:
            _annotate_lease(cluster, service, new_lease)
        log.info(
            "%s: active color %s (version %s); lease taken by %s",
            model,
            state["active_color"],
            state["active_version"],
            holder,
        )
        return state

    return cluster.guarded(f"take the lease of {model}", attempt)


def deploy_candidate(cluster: Cluster, spec: ServingSpec, holder: str, dry_run: bool = False) -> dict:
    """Create or update the candidate color's Deployment, HPA and PDB, and point the preview Service at it.

    Refuses to touch the color that takes traffic. Returns ``{"deployment", "generation", "changed"}``;
    ``generation`` is what :func:`wait_for_rollout` must see observed.
    """
    active = cluster.read("Service", render.active_service_name(spec.model))
    if service_color(active) == spec.color:
        raise PromotionError(f"{spec.model}: {spec.color} is the active color; refusing to deploy over it")
    desired = render.deployment(spec)
    desired["metadata"]["annotations"].update({DEPLOYED_BY: holder, DESIRED_REPLICAS: str(spec.replicas)})
    name = desired["metadata"]["name"]
    if dry_run:
        current = cluster.read("Deployment", name)
        log.info(
            "dry run: would %s Deployment %s/%s at version %s; manifests:\n%s",
            "update" if current else "create",
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
        updated = {
            **desired,
            "metadata": {**desired["metadata"], "resourceVersion": current["metadata"]["resourceVersion"]},
        }
        return cluster.replace(updated)

    before = cluster.read("Deployment", name)
    result = cluster.guarded(f"apply Deployment {name}", apply_deployment)
    for doc in (render.hpa(spec), render.pdb(spec)):
        _apply_simple(cluster, doc)
    _point_preview(cluster, spec.model, spec.color)
    generation = result["metadata"]["generation"]
    changed = before is None or before["metadata"].get("generation") != generation
    log.info(
        "%s: Deployment %s at version %s, generation %s (%s)",
        spec.model,
        name,
        spec.version,
        generation,
        "changed" if changed else "unchanged",
    )
    return {"deployment": name, "generation": generation, "changed": changed}


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
                },
            },
            "spec": {"selector": {"color": color}},
        },
        guarded=True,
    )
    return switched_at


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
    selects ``expected_from``; ``to_color``'s rollout of ``version`` is complete right now. Switching
    to where the Service already points (same version) changes nothing. Returns ``{"switched",
    "from_color", "to_color", "switched_at"}``.
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
        lease = lease_of(service)
        if not lease or lease.get("holder") != holder:
            raise ConcurrentPromotion(
                f"{model}: the lease on Service {name} is held by "
                f"{(lease or {}).get('holder')!r}, not this promotion ({holder}); not switching"
            )
        if current != expected_from:
            raise ConcurrentPromotion(
                f"{model}: Service {name} selects {current!r}, expected {expected_from!r}: "
                "someone else switched it; not switching"
            )
        deployment = cluster.read("Deployment", render.deployment_name(model, to_color))
        if deployment is None:
            raise PromotionError(f"Deployment {render.deployment_name(model, to_color)} does not exist")
        state, message = rollout_status(deployment)
        if state != "complete" or _template_version(deployment) != version:
            raise PromotionError(
                f"{model}: {to_color} is not a complete rollout of {version} right now "
                f"({message}; template version {_template_version(deployment)!r}); not switching"
            )
        switched_at = _select_color(cluster, service, to_color, version, holder)
        log.info("%s: traffic switched from %s to %s (version %s)", model, current, to_color, version)
        return {"switched": True, "from_color": current, "to_color": to_color, "switched_at": switched_at}

    return cluster.guarded(f"switch {name} to {to_color}", attempt)


def scale(cluster: Cluster, model: str, color: str, replicas: int, dry_run: bool = False) -> dict:
    """Set a color's replica count, refusing to scale the active color to zero. Keeps the Deployment.

    A dry run only logs what it would do (the switch it would follow did not happen either).
    """
    name = render.deployment_name(model, color)

    def attempt() -> dict:
        if dry_run:
            log.info("dry run: would scale %s to %d", name, replicas)
            return {"deployment": name, "replicas": replicas, "dry_run": True}
        if (
            replicas == 0
            and service_color(cluster.read("Service", render.active_service_name(model))) == color
        ):
            raise PromotionError(f"{model}: {color} takes traffic; refusing to scale it to zero")
        current = cluster.read("Deployment", name)
        if current is None:
            return {"deployment": name, "replicas": None}
        if (current.get("spec") or {}).get("replicas") == replicas:
            return {"deployment": name, "replicas": replicas, "generation": current["metadata"]["generation"]}
        # The HPA of a Deployment at 0 replicas stays idle ("scaling is disabled"), so it can stay too.
        updated = cluster.patch(
            "Deployment",
            name,
            {
                "metadata": {"resourceVersion": current["metadata"]["resourceVersion"]},
                "spec": {"replicas": replicas},
            },
            guarded=True,
        )
        log.info("scaled %s to %d replicas", name, replicas)
        return {"deployment": name, "replicas": replicas, "generation": updated["metadata"]["generation"]}

    return cluster.guarded(f"scale {name} to {replicas}", attempt)


def scale_down(
    cluster: Cluster, model: str, color: str | None, delay_seconds: float = 30, dry_run: bool = False
) -> dict:
    """After ``delay_seconds`` (Argo Rollouts' scaleDownDelaySeconds), scale the old color to zero."""
    if color is None:
        return {"deployment": None, "replicas": None}
    if delay_seconds > 0 and not dry_run:
        log.info("keeping %s up for %.0f s for an instant rollback", color, delay_seconds)
        time.sleep(delay_seconds)
    return scale(cluster, model, color, 0, dry_run=dry_run)


def _desired_replicas(deployment: dict) -> int:
    try:
        return max(1, int(_annotations(deployment).get(DESIRED_REPLICAS, "1")))
    except ValueError:
        return 1


def restore_traffic(
    cluster: Cluster,
    model: str,
    to_color: str | None,
    holder: str,
    timeout_seconds: float = 600,
    poll_seconds: float = 2.0,
    dry_run: bool = False,
) -> dict:
    """Send traffic back to ``to_color``: scale it up if needed, wait, switch in one guarded patch.

    ``to_color=None`` (a failed first deployment) points the active Service at no pod. The
    ``expected_from`` check is relaxed to "whatever is active now"; the lease must still be ours.
    """
    name = render.active_service_name(model)
    if to_color is not None:
        deployment = cluster.read("Deployment", render.deployment_name(model, to_color))
        if deployment is None:
            raise PromotionError(f"{model}: cannot restore {to_color}: its Deployment is gone")
        version = _template_version(deployment) or ""
        if (deployment.get("spec") or {}).get("replicas", 0) == 0:
            scaled = scale(cluster, model, to_color, _desired_replicas(deployment), dry_run=dry_run)
            if not dry_run:
                wait_for_rollout(
                    cluster,
                    scaled["deployment"],
                    version,
                    scaled.get("generation"),
                    timeout_seconds,
                    poll_seconds,
                )
    else:
        version = ""

    def attempt() -> dict:
        service = cluster.read("Service", name)
        if service is None:
            raise PromotionError(f"Service {cluster.namespace}/{name} does not exist")
        lease = lease_of(service)
        if _lease_blocks(lease, holder):
            raise ConcurrentPromotion(f"{model}: lease held by {lease.get('holder')}; not restoring traffic")
        current = service_color(service)
        if current == to_color:
            return {"switched": False, "to_color": to_color}
        if dry_run:
            log.info("dry run: would switch %s from %s back to %s", name, current, to_color)
            return {"switched": False, "to_color": to_color, "dry_run": True}
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
) -> dict:
    """A rollback request: send traffic back to the previous color recorded on the active Service."""
    service = cluster.read("Service", render.active_service_name(model))
    current = service_color(service)
    previous = _annotations(service).get(PREVIOUS_COLOR) or None
    if current is None or previous not in COLORS or previous == current:
        raise PromotionError(f"{model}: nothing to roll back to (active {current!r}, previous {previous!r})")
    result = restore_traffic(cluster, model, previous, holder, timeout_seconds, poll_seconds, dry_run)
    return {**result, "from_color": current, "to_color": previous}


def release_lease(cluster: Cluster, model: str, holder: str, dry_run: bool = False) -> bool:
    """Remove this holder's lease from the active Service; returns whether there was one to remove."""
    name = render.active_service_name(model)

    def attempt() -> bool:
        service = cluster.read("Service", name)
        lease = lease_of(service)
        if not lease or lease.get("holder") != holder:
            return False
        if dry_run:
            return False
        _annotate_lease(cluster, service, None)
        return True

    return cluster.guarded(f"release the lease of {model}", attempt)


def clean_up(
    cluster: Cluster,
    model: str,
    candidate_color: str,
    previous_color: str | None,
    holder: str,
    completed: bool,
    timeout_seconds: float = 600,
    poll_seconds: float = 2.0,
) -> str:
    """Leave the model in a consistent state after a promotion ended, however it ended; release the lease.

    - completed: nothing to undo;
    - failed after this run switched traffic: restore the previous color (none on a first
      deployment), then scale the candidate down;
    - failed before the switch: the active color and Service are untouched; scale the candidate down.

    Returns what it did, in words.
    """
    service = cluster.read("Service", render.active_service_name(model))
    switched_here = (
        service_color(service) == candidate_color and _annotations(service).get(SWITCHED_BY) == holder
    )
    try:
        if completed:
            outcome = "completed: nothing to undo"
        elif switched_here:
            restore_traffic(cluster, model, previous_color, holder, timeout_seconds, poll_seconds)
            scale(cluster, model, candidate_color, 0)
            restored = previous_color or "no color"
            outcome = f"rolled back: traffic restored to {restored}, {candidate_color} scaled to 0"
        elif service_color(service) == candidate_color:
            outcome = f"{candidate_color} is active by another hand; left as is"
        else:
            scale(cluster, model, candidate_color, 0)
            outcome = (
                f"aborted before the switch: {previous_color or 'no color'} still active, "
                f"candidate {candidate_color} scaled to 0"
            )
    finally:
        release_lease(cluster, model, holder)
    log.warning("%s: %s", model, outcome)
    return outcome
