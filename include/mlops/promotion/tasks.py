"""The callables that the promotion DAG's tasks call; the DAG file only declares tasks and order.

Each callable takes the plain values that upstream tasks returned (``request``, ``state``, ...)
and returns what its downstream tasks need, so it runs the same under Airflow and in a test.
The glue they share: ``cluster()`` (the serving namespace through ``kubernetes_default``),
``serving_spec()``, ``service_client()``, ``prometheus_gate()``, ``samples_for()`` and
``notify()``; ``final_verdicts()`` turns refusals into failures that Airflow does not retry.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from mlops.promotion import bluegreen, gates
from mlops.promotion.manifests.render import active_service_name, preview_service_name
from mlops.promotion.operators import ANSWER_KEY
from mlops.settings import get_settings

log = logging.getLogger(__name__)


@contextlib.contextmanager
def final_verdicts() -> Iterator[None]:
    """Turn refusals (a failed gate or rollout, a held lease, a missing RBAC grant, an unknown version)
    into task failures that Airflow does not retry: running them again gives the same answer.
    API errors (409/429/5xx, network) were already retried with backoff inside the library."""
    from airflow.sdk.exceptions import AirflowFailException

    from mlops.registry import RegistryError

    try:
        yield
    except (
        gates.GateFailed,
        bluegreen.PromotionError,
        bluegreen.RbacDenied,
        RegistryError,
        ValueError,
    ) as exc:
        raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc


def cluster() -> bluegreen.Cluster:
    """The serving namespace through the ``kubernetes_default`` connection."""
    return bluegreen.Cluster.from_connection()


def s3_endpoint() -> str:
    """Where the server pods reach S3: the setting, else the AWS connection's ``endpoint_url`` (AWS: none)."""
    from airflow.exceptions import AirflowNotFoundException
    from airflow.sdk import BaseHook

    settings = get_settings()
    if settings.model_server_s3_endpoint:
        return settings.model_server_s3_endpoint
    try:
        extra = BaseHook.get_connection(settings.aws_conn_id).extra_dejson
    except AirflowNotFoundException:
        return ""
    return extra.get("endpoint_url") or ""


def serving_spec(request: dict[str, Any], color: str, namespace: str):
    """The candidate color's manifests' inputs, from the request and the settings; the artifact's
    registered digest pins what the pods may load."""
    from mlops.promotion.manifests.render import ServingSpec

    settings = get_settings()
    endpoint = s3_endpoint()
    return ServingSpec(
        model=request["model"],
        color=color,
        version=request["version"],
        image=settings.model_server_image,
        model_uri=request["artifact_uri"],
        namespace=namespace,
        replicas=settings.model_server_replicas,
        max_replicas=max(settings.model_server_max_replicas, settings.model_server_replicas),
        progress_deadline_seconds=settings.model_server_progress_deadline_seconds,
        env={"AWS_ENDPOINT_URL": endpoint} if endpoint else {},
        s3_secret=settings.model_server_s3_secret or None,
        annotations={"mlops.io/promotion": request["holder"]},
        model_sha256=request.get("artifact_sha256"),
    )


def service_client(kube: bluegreen.Cluster, service: str) -> gates.ServiceClient:
    """A client of ``service`` in the serving namespace (through the API server's proxy by default)."""
    return gates.service_client(kube.api_client, kube.namespace, service)


def prometheus_gate() -> gates.PrometheusGate | None:
    """The Prometheus gate when ``MLOPS_PROMETHEUS_URL`` is set."""
    url = get_settings().prometheus_url
    return gates.PrometheusGate(url) if url else None


def samples_for(request: dict[str, Any]):
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    return gates.load_samples(
        S3Hook(aws_conn_id=get_settings().aws_conn_id).get_conn(), request["artifact_uri"]
    )


def notify(request: dict[str, Any], outcome: dict[str, Any], run_url: str = "") -> dict[str, bool]:
    """Post the Slack summary and the PagerDuty change event of a finished promotion or rollback."""
    from mlops.alerting.router import AlertRouter

    model = request["model"]
    if request.get("rollback"):
        title = f"Rolled back {model}: traffic on {outcome.get('to_color')} ({outcome.get('version') or '-'})"
    elif "rejected_by" in outcome:
        title = f"Rejected {model} {request['version']}: not promoted"
    else:
        title = (
            f"Promoted {model} {request['version']} ({outcome.get('from_color') or 'first deployment'} -> "
            f"{outcome.get('to_color')})"
        )
    sections = [f"*{k.replace('_', ' ')}*: {v}" for k, v in outcome.items() if v not in (None, "", [], {})]
    links = [{"href": run_url, "text": "Airflow run"}] if run_url else None
    router = AlertRouter()
    if "rejected_by" in outcome:  # nothing changed in production: no change event
        slack_links = [f"<{run_url}|Airflow run>"] if run_url else None
        return {"slack": router.slack(title, sections, slack_links), "pagerduty": False}
    return {
        "slack": router.slack(title, sections, [f"<{run_url}|Airflow run>"] if run_url else None),
        "pagerduty": router.pagerduty_change(
            title,
            custom_details={"request": _public(request), **outcome},
            links=links,
            source="mlops_promotion",
        ),
    }


def _public(request: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v
        for k, v in request.items()
        if k
        in (
            "model",
            "version",
            "holder",
            "production_version",
            "candidate_accuracy",
            "dry_run",
            "rollback",
            "reason",
        )
    }


# -- the DAG's steps ---------------------------------------------------------------------------------
APPROVAL_TIMEOUT = timedelta(hours=4)
# The lease must outlive the approval wait: renewed for the wait plus this margin before it starts.
APPROVAL_LEASE_MARGIN = timedelta(minutes=30)


def renew(request: dict[str, Any], seconds: float | None = None) -> None:
    """Renew this run's lease (for ``seconds``, default ``MLOPS_PROMOTION_LEASE_SECONDS``) at the start
    of a step; raises ``LeaseLost`` when the run lost it (pre-empted by ``mlops_rollback``, or taken
    over after it expired): the step then changes nothing."""
    if request["dry_run"]:
        return
    lease_seconds = int(seconds or get_settings().promotion_lease_seconds)
    bluegreen.renew_lease(cluster(), request["model"], request["holder"], lease_seconds)


def take_lease(request: dict[str, Any]) -> Any:
    """Take the model's lease; while another run of the same model holds it, wait (a reschedule-mode
    sensor: no worker slot) instead of failing. Runs of other models never wait for this one."""
    from airflow.sdk import PokeReturnValue

    if request["dry_run"]:
        return PokeReturnValue(is_done=True, xcom_value={"holder": request["holder"], "dry_run": True})
    try:
        bluegreen.acquire_lease(
            cluster(), request["model"], request["holder"], get_settings().promotion_lease_seconds
        )
    except bluegreen.LeaseLost:
        raise
    except bluegreen.ConcurrentPromotion as exc:
        log.info("waiting for the lease: %s", exc)
        return PokeReturnValue(is_done=False)
    return PokeReturnValue(is_done=True, xcom_value={"holder": request["holder"]})


def reconcile(request: dict[str, Any]) -> dict[str, Any]:
    """Compare the cluster with the registry's production pointer (the truth) under this run's lease,
    and repair what can be repaired safely (a dry run only reports).

    Raises ``PromotionError`` naming each difference and its hand repair when they still disagree,
    unless this run promotes the pointer's own version (re-promoting it is the documented repair).
    """
    from mlops.promotion.reconcile import reconcile as compare_and_repair
    from mlops.registry import ModelRegistry

    s = get_settings()
    report = compare_and_repair(
        cluster(),
        ModelRegistry.from_settings(),
        request["model"],
        request["holder"],
        repair=not request["dry_run"],
        lease_seconds=s.promotion_lease_seconds,
        timeout_seconds=s.promotion_rollout_timeout_seconds,
        poll_seconds=s.promotion_poll_seconds,
    )
    repaired_by_this_run = request["version"] == request["production_version"]
    if not report["consistent"] and not request["dry_run"] and not repaired_by_this_run:
        todo = "; ".join(f"{r['action']}: {r['command']}" for r in report["repairs"] if not r["done"])
        differences = "; ".join(report["differences"])
        raise bluegreen.PromotionError(
            f"{request['model']}: the cluster and the registry disagree ({differences}). "
            f"Repair by hand: {todo or 'see the README'}"
        )
    return report


def resolve_active_color(request: dict[str, Any]) -> dict[str, Any]:
    """The active color from the Service's selector, under this run's lease.

    Raises ``AirflowSkipException`` when the requested version already serves production (and the
    registry's pointer names it).
    """
    from airflow.sdk.exceptions import AirflowSkipException

    from mlops.registry import ModelRegistry

    renew(request)
    state = bluegreen.resolve_active_color(
        cluster(),
        request["model"],
        request["holder"],
        get_settings().promotion_lease_seconds,
        request["dry_run"],
        version=request["version"],
        registry=ModelRegistry.from_settings(),
    )
    if state["already_active"]:
        raise AirflowSkipException(f"{request['model']} {request['version']} already serves production")
    return state


def deploy_candidate(request: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    """Create or patch the idle color's Deployment (and HPA, PDB); point the preview Service at it."""
    renew(request)
    kube = cluster()
    spec = serving_spec(request, state["candidate_color"], kube.namespace)
    return bluegreen.deploy_candidate(kube, spec, request["holder"], request["dry_run"])


def wait_for_rollout(request: dict[str, Any], deployed: dict[str, Any]) -> dict[str, Any]:
    """Complete only when observedGeneration >= generation and updated = ready = available = desired."""
    if request["dry_run"]:
        return {"dry_run": True}
    renew(request)
    s = get_settings()
    return bluegreen.wait_for_rollout(
        cluster(),
        deployed["deployment"],
        request["version"],
        deployed["generation"],
        s.promotion_rollout_timeout_seconds,
        s.promotion_poll_seconds,
    )


def run_pre_promotion_analysis(request: dict[str, Any]) -> dict[str, Any]:
    """Gates through the preview Service: ready, version, smoke predictions, quality, Prometheus."""
    if request["dry_run"]:
        return {"dry_run": True}
    renew(request)
    report = gates.pre_promotion(
        service_client(cluster(), preview_service_name(request["model"])),
        request["model"],
        request["version"],
        samples_for(request),
        request["candidate_accuracy"],
        request["production_accuracy"],
        gates.Gates.from_settings(),
        prometheus_gate(),
    )
    return report.raise_if_failed().as_dict()


def approval_branch(request: dict[str, Any]) -> list[str]:
    """Auto-promote (or a dry run): straight to the switch. Otherwise the switch waits for the approval,
    and the lease is renewed first for the whole wait plus a margin (it would expire during it)."""
    if request["auto_promote"] or request["dry_run"]:
        return ["switch_traffic"]
    renew(request, (APPROVAL_TIMEOUT + APPROVAL_LEASE_MARGIN).total_seconds())
    return ["approve_promotion", "switch_traffic"]


# Slack for the switch and the post-promotion window, plus a margin: the silence ends at clean_up anyway.
SWITCH_SILENCE_MARGIN_SECONDS = 600


def silence_during_switch(request: dict[str, Any]) -> str | None:
    """Silence the model's health checks for the switch and its analysis window (Alertmanager-style
    maintenance); ``clean_up`` ends it. A silence that cannot be stored never blocks the switch."""
    from mlops.health.silences import silence

    if request["dry_run"]:
        return None
    try:
        return silence(
            request["model"],
            request["analysis_duration_seconds"] + SWITCH_SILENCE_MARGIN_SECONDS,
            "mlops_promotion",
            f"blue-green switch of {request['model']} to {request['version']} ({request['holder']})",
        )
    except Exception:  # the health checks then alert as usual; the promotion goes on
        log.warning("could not silence %s's checks during the switch", request["model"], exc_info=True)
        return None


def switch_traffic(request: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    """One patch of the active Service's selector, guarded by resourceVersion and the lease; the
    model's health checks are silenced for the switch (``silence_id`` in the result)."""
    renew(request)
    silence_id = silence_during_switch(request)
    result = bluegreen.switch_traffic(
        cluster(),
        request["model"],
        state["candidate_color"],
        state["active_color"],
        request["version"],
        request["holder"],
        request["dry_run"],
    )
    return {**result, "silence_id": silence_id}


def publish_served_accuracy(request: dict[str, Any], report: gates.AnalysisReport) -> None:
    """The accuracy the post-promotion gate measured on the serving version, for the accuracy alert
    and the dashboard (``mlops_model_accuracy``); a Pushgateway outage is logged, never fatal."""
    from mlops.health.publish import publish_model_accuracy

    smoke = [c for c in report.checks if c.name == "smoke" and c.value is not None]
    if not smoke:
        return
    try:
        publish_model_accuracy(request["model"], request["version"], smoke[-1].value, source="promotion-gate")
    except Exception:
        log.warning(
            "could not publish the accuracy of %s %s", request["model"], request["version"], exc_info=True
        )


def run_post_promotion_analysis(
    request: dict[str, Any], switched: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The live checks through the active Service, for the analysis window; the switch's silence of
    the model's health checks ends with the window, passed or failed."""
    if request["dry_run"]:
        return {"dry_run": True}
    try:
        renew(request)
        report = gates.analysis_window(
            service_client(cluster(), active_service_name(request["model"])),
            request["model"],
            request["version"],
            samples_for(request),
            gates.Gates.from_settings(),
            request["analysis_duration_seconds"],
            interval_seconds=min(5.0, max(0.5, request["analysis_duration_seconds"] / 10)),
            prometheus=prometheus_gate(),
        )
    finally:
        end_silence((switched or {}).get("silence_id"))
    report.raise_if_failed()
    publish_served_accuracy(request, report)
    return report.as_dict()


def move_registry_pointer(request: dict[str, Any]) -> dict[str, Any] | None:
    """Production pointer -> the candidate (compare-and-swap against what was read at the start)."""
    from mlops.registry import ModelRegistry

    if request["dry_run"]:
        return None
    renew(request)
    return ModelRegistry.from_settings().promote(
        request["model"], request["version"], request["production_version"], request["holder"]
    )


def scale_down_previous_color(request: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    """The old color goes to 0 replicas (its Deployment stays); the delay before it was waited already."""
    renew(request)
    return bluegreen.scale_down(
        cluster(), request["model"], state["active_color"], 0, request["dry_run"], holder=request["holder"]
    )


def end_switch_silence(ti: Any) -> None:
    """End the silence that ``switch_traffic`` created, if it is still on (a failed window)."""
    end_silence((ti.xcom_pull(task_ids="switch_traffic") or {}).get("silence_id"))


def end_silence(silence_id: str | None) -> None:
    """End silence ``silence_id`` now (it would expire by itself later); never fails the caller."""
    from mlops.health.silences import expire

    if not silence_id:
        return
    try:
        expire(silence_id)
    except Exception:
        log.warning("could not end silence %s; it expires by itself", silence_id, exc_info=True)


def clean_up(ti: Any) -> str:
    """The promotion's teardown: whatever happened (success, failure, Reject, timeout, a task marked
    failed), leave the model consistent and release the lease; a run that lost the lease (pre-empted
    by ``mlops_rollback``) changes nothing. Reads the run's XComs."""
    from mlops.registry import ModelRegistry

    request = ti.xcom_pull(task_ids="resolve_request")
    if not request or request["dry_run"]:
        return "nothing to clean up"
    end_switch_silence(ti)
    if not ti.xcom_pull(task_ids="take_lease"):
        return "the lease was never taken: nothing to clean up"
    kube = cluster()
    state = ti.xcom_pull(task_ids="resolve_active_color")
    if not state:
        released = bluegreen.release_lease(kube, request["model"], request["holder"])
        return "nothing was deployed; " + ("lease released" if released else "the lease was no longer ours")
    completed = ti.xcom_pull(task_ids="move_registry_pointer") is not None
    s = get_settings()
    return bluegreen.clean_up(
        kube,
        request["model"],
        state["candidate_color"],
        state["active_color"],
        request["holder"],
        completed,
        s.promotion_rollout_timeout_seconds,
        s.promotion_poll_seconds,
        registry=ModelRegistry.from_settings(),
        version=request["version"],
    )


# -- the rollback DAG's steps ------------------------------------------------------------------------
def take_lease_for_rollback(request: dict[str, Any]) -> dict[str, Any]:
    """Pre-empt the model's lease for an emergency rollback, whoever holds it: the pre-empted run's
    next step raises ``LeaseLost`` and its clean-up leaves this rollback's state alone."""
    lease = bluegreen.preempt_lease(
        cluster(), request["model"], request["holder"], get_settings().promotion_lease_seconds
    )
    return {"holder": request["holder"], "transitions": (lease.get("spec") or {}).get("leaseTransitions")}


def rollback_traffic(request: dict[str, Any]) -> dict[str, Any]:
    """Traffic back to the version that last served production (the registry pointer's previous
    version): the idle color scaled back up, or redeployed with that version when it runs another."""
    from mlops.promotion.params import resolve_request

    renew(request)
    s = get_settings()
    kube = cluster()
    dag_id, run_id = request["holder"].split("/", 1)

    def spec_for(color: str, version: str):
        served = resolve_request({"model": request["model"], "version": version}, None, dag_id, run_id)
        return serving_spec(served, color, kube.namespace)

    return bluegreen.rollback(
        kube,
        request["model"],
        request["holder"],
        s.promotion_rollout_timeout_seconds,
        s.promotion_poll_seconds,
        to_version=request["previous_version"],
        spec_for=spec_for,
    )


def roll_back_registry_pointer(request: dict[str, Any]) -> dict[str, Any] | None:
    """Production pointer -> its previous version (a retry by this run does not flip it again)."""
    from mlops.registry import ModelRegistry

    renew(request)
    return ModelRegistry.from_settings().rollback(
        request["model"], request["holder"], expected_current=request["production_version"]
    )


def scale_down_rolled_back_color(request: dict[str, Any], outcome: dict[str, Any]) -> dict[str, Any]:
    """The color that was rolled back from goes to 0 replicas at once (its Deployment stays)."""
    renew(request)
    return bluegreen.scale_down(
        cluster(), request["model"], outcome.get("from_color"), 0, holder=request["holder"]
    )


def release_rollback_lease(ti: Any) -> str:
    """The rollback's teardown: release the lease it took, however the rollback ended."""
    request = ti.xcom_pull(task_ids="resolve_request")
    if not request or not ti.xcom_pull(task_ids="take_lease"):
        return "the lease was never taken"
    released = bluegreen.release_lease(cluster(), request["model"], request["holder"])
    return "lease released" if released else "the lease was no longer ours"


def verdicts(report: dict[str, Any] | None) -> str | None:
    """One line of a gate report: each check's name and ok/FAILED."""
    if not report or report.get("dry_run"):
        return None
    return ", ".join(f"{c['name']} {'ok' if c['ok'] else 'FAILED'}" for c in report.get("checks", []))


def announce(ti: Any, dag_id: str, run_id: str) -> dict[str, bool]:
    """Slack summary and PagerDuty change event of what this run did (read from its XComs).

    A rejected promotion gets a Slack line only (nothing changed in production); a run that
    changed nothing else (the version already served) announces nothing: ``AirflowSkipException``.
    """
    from airflow.sdk.exceptions import AirflowSkipException

    request = ti.xcom_pull(task_ids="resolve_request")
    if request["rollback"]:
        outcome = {**(ti.xcom_pull(task_ids="rollback_traffic") or {}), "reason": request.get("reason")}
    else:
        switched = ti.xcom_pull(task_ids="switch_traffic")
        if switched is None:
            answer = ti.xcom_pull(task_ids="approve_promotion", key=ANSWER_KEY) or {}
            if answer.get("chosen_options") != ["Reject"]:
                raise AirflowSkipException("nothing was promoted: nothing to announce")
            outcome = {
                "rejected_by": answer.get("responded_by") or "-",
                "clean_up": ti.xcom_pull(task_ids="clean_up"),
            }
        else:
            outcome = {
                **switched,
                "pre_promotion": verdicts(ti.xcom_pull(task_ids="run_pre_promotion_analysis")),
                "post_promotion": verdicts(ti.xcom_pull(task_ids="run_post_promotion_analysis")),
            }
    outcome["dry_run"] = request["dry_run"] or None
    run_url = f"{get_settings().airflow_base_url}/dags/{dag_id}/runs/{run_id}"
    return notify(request, outcome, run_url)
