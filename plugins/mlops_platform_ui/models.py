"""The Models section: the registry's versions and production pointer, and the cluster's blue-green state.

Read with the library the promotion DAG uses: :class:`mlops.registry.ModelRegistry` for versions and
the pointer, :mod:`mlops.promotion.bluegreen` for colors and replicas, and
``mlops.promotion.reconcile.reconcile(..., repair=False)`` for whether the cluster and the registry
agree (it only reads).
"""

from __future__ import annotations

from typing import Any

PAGE_HOLDER = "mlops-platform-page"  # the lease holder name reconcile() reports against; it never takes one
CANDIDATES_SHOWN = 5


def registry() -> Any:
    """The registry in the configured artifacts bucket, through the DAGs' ``aws_default`` connection."""
    from mlops.registry import ModelRegistry
    from mlops.settings import get_settings
    from mlops_platform_ui import clients

    settings = get_settings()
    return ModelRegistry(clients.s3(settings), settings.artifacts_bucket)


def model_names(reg: Any) -> list[str]:
    """Every model that has a registry entry (``registry/<model>/``)."""
    names = []
    for page in reg.s3.get_paginator("list_objects_v2").paginate(
        Bucket=reg.bucket, Prefix="registry/", Delimiter="/"
    ):
        names += [p["Prefix"].split("/")[1] for p in page.get("CommonPrefixes", [])]
    return sorted(names)


def _version_row(entry: dict[str, Any]) -> dict[str, Any]:
    metrics, lineage = entry.get("metrics") or {}, entry.get("lineage") or {}
    return {
        "version": entry["version"],
        "status": entry["status"],
        "accuracy": metrics.get("accuracy"),
        "loss": metrics.get("loss"),
        "created_at": entry.get("created_at"),
        "dag_id": lineage.get("dag_id"),
        "run_id": lineage.get("run_id"),
    }


def registry_state(model: str, reg: Any | None = None) -> dict[str, Any]:
    """The production pointer and the newest candidates of ``model``, with the runs that made them."""
    reg = reg or registry()
    pointer = reg.production(model)
    versions = reg.list_versions(model)
    rows = {e["version"]: _version_row(e) for e in versions}
    candidates = [rows[e["version"]] for e in reversed(versions) if e["status"] == "candidate"]
    return {
        "model": model,
        "production": {
            "version": pointer["version"],
            "previous_version": pointer.get("previous_version"),
            "updated_at": pointer.get("updated_at"),
            "updated_by": pointer.get("updated_by"),
            "action": pointer.get("action", "promote"),
            "entry": rows.get(pointer["version"]),
        }
        if pointer
        else None,
        "candidates": candidates[:CANDIDATES_SHOWN],
        "candidates_total": len(candidates),
        "versions_total": len(versions),
    }


def _color_row(color: str, deployment: dict | None) -> dict[str, Any]:
    from mlops.promotion import bluegreen

    if deployment is None:
        return {"color": color, "exists": False}
    status = deployment.get("status") or {}
    return {
        "color": color,
        "exists": True,
        "version": bluegreen.template_version(deployment),
        "desired": bluegreen.replicas_of(deployment),
        "ready": int(status.get("readyReplicas", 0) or 0),
        "rollout": bluegreen.rollout_status(deployment)[1],
    }


def cluster_state(model: str, reg: Any | None = None) -> dict[str, Any]:
    """Live and idle colors of ``model`` with their versions and replicas, and the reconcile verdict."""
    from mlops.promotion import bluegreen
    from mlops.promotion.manifests import render
    from mlops.promotion.reconcile import reconcile
    from mlops.settings import get_settings
    from mlops_platform_ui import clients

    reg = reg or registry()
    cluster = clients.cluster(get_settings())
    service = cluster.read("Service", render.active_service_name(model))
    live = bluegreen.service_color(service)
    colors = {
        c: _color_row(c, cluster.read("Deployment", render.deployment_name(model, c))) for c in render.COLORS
    }
    verdict = reconcile(cluster, reg, model, PAGE_HOLDER, repair=False)
    return {
        "namespace": cluster.namespace,
        "service": service is not None,
        "live": colors.get(live) if live else None,
        "idle": colors.get(bluegreen.other_color(live)) if live else None,
        "colors": colors,
        "consistent": verdict["consistent"] and not verdict["differences"],
        "differences": verdict["differences"],
        "repairs": verdict["repairs"],
    }


def find_version_of_run(model: str, run_id: str, reg: Any | None = None) -> dict[str, Any] | None:
    """The registry entry a training run registered (its lineage names the run), or ``None``."""
    reg = reg or registry()
    for entry in reg.list_versions(model):
        if (entry.get("lineage") or {}).get("run_id") == run_id:
            return entry
    return None


def model_card(model: str, version: str, reg: Any | None = None) -> dict[str, Any] | None:
    """The ``model_card.json`` the trainer wrote beside the version's artifacts, or ``None``."""
    import json

    from botocore.exceptions import ClientError

    reg = reg or registry()
    try:
        body = reg.s3.get_object(Bucket=reg.bucket, Key=f"models/{model}/versions/{version}/model_card.json")
    except ClientError:
        return None
    return json.loads(body["Body"].read())
