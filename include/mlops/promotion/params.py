"""The promotion DAG's form contract and the run's request.

- ``promotion_params()``: the UI form / REST ``conf`` contract.
- ``resolve_request()``: the run's model and version (from the params, or from the triggering
  ``model_candidates`` asset event), validated against the registry.
- ``rollback_params()`` / ``resolve_rollback()``: the same for the ``mlops_rollback`` DAG.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk import Param

from mlops.training.params import MODEL_NAME_PATTERN

log = logging.getLogger(__name__)
# `(?!\n)`: Python's `$` also matches before a final newline; ECMA-262 (JSON Schema) reads it the same.
VERSION_PATTERN = r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$(?!\n)"


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
            description="Registered version to promote. Empty on asset-triggered runs (from the event).",
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
    }


def resolve_request(
    params: dict[str, Any], triggering_events: Any, dag_id: str, run_id: str
) -> dict[str, Any]:
    """The run's request: model, version and options, validated against the registry.

    Raises ``ValueError`` naming the missing or unknown model/version.
    """
    from mlops.registry import ModelRegistry

    if params.get("rollback"):
        raise ValueError("rollback: use the mlops_rollback DAG (it does not queue behind promotions)")
    model, version = params.get("model"), params.get("version")
    event_extra = candidate_from_events(triggering_events)
    if not model and not event_extra and _has_events(triggering_events):
        from airflow.sdk.exceptions import AirflowSkipException

        raise AirflowSkipException(
            "every triggering candidate was registered with promote=false (a manual or API training run "
            "that did not ask to be promoted); promote one by hand with the model and version params"
        )
    if not model and event_extra:
        model, version = event_extra.get("model"), version or event_extra.get("version")
    if not model:
        raise ValueError("model: set the model param (or trigger through a model_candidates asset event)")
    request = {
        "model": model,
        "version": version,
        "holder": f"{dag_id}/{run_id}",
        "dry_run": bool(params.get("dry_run")),
        "rollback": False,
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
    if not version:
        raise ValueError("version: set the version param (or trigger through a model_candidates asset event)")
    entry = registry.get(model, version)  # raises VersionNotFoundError naming the version
    request["artifact_uri"] = entry["artifact_uri"]
    request["artifact_sha256"] = entry.get("artifact_sha256")  # None for entries registered before pinning
    request["candidate_accuracy"] = entry["metrics"].get("accuracy")
    return request


def _has_events(triggering_events: Any) -> bool:
    return any(group for group in (triggering_events or {}).values())


def _candidates_by_model(triggering_events: Any) -> dict[str, dict[str, Any]]:
    """The newest candidate per model among the triggering asset events, newest model last.

    Candidates whose training run was registered with ``promote=false`` (a manual or API run that
    did not ask for it; see the training form) are left out: they are promoted only by hand."""
    newest: dict[str, dict[str, Any]] = {}
    events = [e for group in (triggering_events or {}).values() for e in group]
    events.sort(key=lambda e: str(getattr(e, "timestamp", "") or ""))
    for event in events:
        extra = getattr(event, "extra", None) or {}
        if extra.get("promote") is False:  # the training run did not ask to be promoted
            continue
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


def rollback_params() -> dict[str, Param]:
    """The emergency rollback's form: which model, and why (the reason goes to Slack and PagerDuty)."""
    return {
        "model": Param(
            "",
            type="string",
            pattern=MODEL_NAME_PATTERN,
            title="Model",
            description="Registry name of the model to roll back to the version that served before.",
        ),
        "reason": Param(
            "",
            type="string",
            minLength=3,
            maxLength=500,
            title="Reason",
            description="Why (an incident link, an alert). Sent with the Slack summary and PagerDuty event.",
        ),
    }


def resolve_rollback(params: dict[str, Any], dag_id: str, run_id: str) -> dict[str, Any]:
    """The rollback's request: the model, the reason, this run as lease holder, the production version
    and the version it rolls back to (the pointer's ``previous_version``: the one that last served).

    Raises ``ValueError`` when the registry has no previous production version of the model.
    """
    from mlops.registry import ModelRegistry

    model = params.get("model")
    production = ModelRegistry.from_settings().production(model)
    if not production or not production.get("previous_version"):
        raise ValueError(
            f"model: {model!r} has no previous production version in the registry: nothing to roll back to"
        )
    return {
        "model": model,
        "version": None,
        "reason": params.get("reason"),
        "holder": f"{dag_id}/{run_id}",
        "rollback": True,
        "dry_run": False,
        "production_version": production["version"],
        "previous_version": production["previous_version"],
    }
