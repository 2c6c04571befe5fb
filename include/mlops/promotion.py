"""The promotion DAG's contract and the glue of its tasks (the DAG file only wires them).

- ``promotion_params()``: the UI form / REST ``conf`` contract.
- ``resolve_request()``: the run's model and version (from the params, or from the triggering
  ``model_candidates`` asset event), validated against the registry.
- ``serving_spec()``, ``cluster()``, ``preview_client()``/``active_client()``: what the
  blue-green steps (``mlops.bluegreen``) and the gates (``mlops.analysis``) need.
- ``notify()``: the Slack summary and the PagerDuty change event.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from airflow.sdk import Param

from mlops.training import MODEL_NAME_PATTERN

log = logging.getLogger(__name__)
VERSION_PATTERN = r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$"


def promotion_params() -> dict[str, Param]:
    """The trigger form / REST ``conf`` contract; asset-triggered runs take model/version from the event."""
    return {
        "model": Param(
            None,
            type=["null", "string"],
            pattern=MODEL_NAME_PATTERN,
            title="Model",
            description="Registry name of the model. Empty on asset-triggered runs (taken from the event).",
        ),
        "version": Param(
            None,
            type=["null", "string"],
            pattern=VERSION_PATTERN,
            title="Version",
            description="Registered version to promote. Empty on asset-triggered runs; unused by a rollback.",
        ),
        "auto_promote": Param(
            True,
            type="boolean",
            title="Auto-promote",
            description="Switch traffic as soon as the pre-promotion gates pass. Off: wait for an approval "
            "in the UI (Required actions) before switching.",
        ),
        "analysis_duration_seconds": Param(
            60,
            type="integer",
            minimum=0,
            maximum=3600,
            title="Post-promotion analysis (s)",
            description="How long the new color is checked after the switch before the promotion counts.",
        ),
        "scale_down_delay_seconds": Param(
            30,
            type="integer",
            minimum=0,
            maximum=3600,
            title="Scale-down delay (s)",
            description="How long the old color keeps running after the switch, for an instant rollback "
            "(Argo Rollouts' scaleDownDelaySeconds).",
        ),
        "dry_run": Param(
            False,
            type="boolean",
            title="Dry run",
            description="Read the cluster and the registry, log every change it would make, change nothing.",
        ),
        "rollback": Param(
            False,
            type="boolean",
            title="Roll back",
            description="Instead of promoting: send traffic back to the previous color and move the "
            "registry's production pointer back.",
        ),
    }


def resolve_request(
    params: dict[str, Any], triggering_events: Any, dag_id: str, run_id: str
) -> dict[str, Any]:
    """The run's request: model, version and options, validated against the registry.

    Raises ``ValueError`` naming the missing or unknown model/version.
    """
    from mlops.registry import ModelRegistry

    model, version = params.get("model"), params.get("version")
    event_extra = candidate_from_events(triggering_events)
    if not model and event_extra:
        model, version = event_extra.get("model"), version or event_extra.get("version")
    if not model:
        raise ValueError("model: set the model param (or trigger through a model_candidates asset event)")
    request = {
        "model": model,
        "version": version,
        "holder": f"{dag_id}/{run_id}",
        "dry_run": bool(params.get("dry_run")),
        "rollback": bool(params.get("rollback")),
        "auto_promote": bool(params.get("auto_promote", True)),
        "analysis_duration_seconds": int(params.get("analysis_duration_seconds", 60)),
        "scale_down_delay_seconds": int(params.get("scale_down_delay_seconds", 30)),
    }
    registry = ModelRegistry.from_settings()
    production = registry.production(model)
    request["production_version"] = production["version"] if production else None
    request["production_accuracy"] = None
    if production:
        request["production_accuracy"] = registry.get(model, production["version"])["metrics"].get("accuracy")
    if request["rollback"]:
        return request
    if not version:
        raise ValueError("version: set the version param (or trigger through a model_candidates asset event)")
    entry = registry.get(model, version)  # raises VersionNotFoundError naming the version
    request["artifact_uri"] = entry["artifact_uri"]
    request["candidate_accuracy"] = entry["metrics"].get("accuracy")
    return request


def _candidates_by_model(triggering_events: Any) -> dict[str, dict[str, Any]]:
    """The newest candidate per model among the triggering asset events, newest model last."""
    newest: dict[str, dict[str, Any]] = {}
    events = [e for group in (triggering_events or {}).values() for e in group]
    events.sort(key=lambda e: str(getattr(e, "timestamp", "") or ""))
    for event in events:
        extra = getattr(event, "extra", None) or {}
        if extra.get("model"):
            newest.pop(extra["model"], None)  # re-insert: dict order follows the newest event
            newest[extra["model"]] = dict(extra)
    return newest


def candidate_from_events(triggering_events: Any) -> dict[str, Any]:
    """The ``extra`` of the newest triggering asset event (``{}`` for manual/API runs).

    A run may be triggered by several events (candidates registered while the previous
    promotion ran): this run promotes the newest; :func:`other_candidates` hands the newest
    candidate of every other model to a run of its own, so none is dropped.
    """
    candidates = _candidates_by_model(triggering_events)
    return list(candidates.values())[-1] if candidates else {}


def other_candidates(triggering_events: Any) -> list[dict[str, Any]]:
    """``conf`` for one promotion run per other model in the batch (older candidates of the same
    model are superseded by its newest, as a newer registration of that model would be)."""
    candidates = list(_candidates_by_model(triggering_events).values())[:-1]
    return [{"model": c["model"], "version": c["version"]} for c in candidates]


@contextlib.contextmanager
def final_verdicts() -> Iterator[None]:
    """Turn refusals (a failed gate or rollout, a held lease, a missing RBAC grant, an unknown version)
    into task failures that Airflow does not retry: running them again gives the same answer.
    API errors (409/429/5xx, network) were already retried with backoff inside the library."""
    from airflow.sdk.exceptions import AirflowFailException

    from mlops.analysis import GateFailed
    from mlops.bluegreen import PromotionError, RbacDenied
    from mlops.registry import RegistryError

    try:
        yield
    except (GateFailed, PromotionError, RbacDenied, RegistryError, ValueError) as exc:
        raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc


def cluster():
    """The serving namespace through the ``kubernetes_default`` connection."""
    from mlops.bluegreen import Cluster

    return Cluster.from_connection()


def s3_endpoint() -> str:
    """Where the server pods reach S3: the setting, else the AWS connection's ``endpoint_url`` (AWS: none)."""
    from airflow.exceptions import AirflowNotFoundException
    from airflow.sdk import BaseHook

    from mlops.settings import get_settings

    settings = get_settings()
    if settings.model_server_s3_endpoint:
        return settings.model_server_s3_endpoint
    try:
        extra = BaseHook.get_connection(settings.aws_conn_id).extra_dejson
    except AirflowNotFoundException:
        return ""
    return extra.get("endpoint_url") or ""


def serving_spec(request: dict[str, Any], color: str, namespace: str):
    """The candidate color's manifests' inputs, from the request and the settings."""
    from mlops.manifests.render import ServingSpec
    from mlops.settings import get_settings

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
    )


def service_client(kube, service: str):
    from mlops.analysis import service_client as make

    return make(kube.api_client, kube.namespace, service)


def prometheus_gate():
    from mlops.analysis import PrometheusGate
    from mlops.settings import get_settings

    url = get_settings().prometheus_url
    return PrometheusGate(url) if url else None


def samples_for(request: dict[str, Any]):
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    from mlops.analysis import load_samples
    from mlops.settings import get_settings

    return load_samples(S3Hook(aws_conn_id=get_settings().aws_conn_id).get_conn(), request["artifact_uri"])


def notify(request: dict[str, Any], outcome: dict[str, Any], run_url: str = "") -> dict[str, bool]:
    """Post the Slack summary and the PagerDuty change event of a finished promotion or rollback."""
    from mlops.alerting.router import AlertRouter

    model = request["model"]
    if request.get("rollback"):
        title = f"Rolled back {model}: traffic on {outcome.get('to_color')} ({outcome.get('version') or '-'})"
    else:
        title = (
            f"Promoted {model} {request['version']} ({outcome.get('from_color') or 'first deployment'} -> "
            f"{outcome.get('to_color')})"
        )
    sections = [f"*{k.replace('_', ' ')}*: {v}" for k, v in outcome.items() if v not in (None, "", [], {})]
    links = [{"href": run_url, "text": "Airflow run"}] if run_url else None
    router = AlertRouter()
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
        in ("model", "version", "holder", "production_version", "candidate_accuracy", "dry_run", "rollback")
    }
