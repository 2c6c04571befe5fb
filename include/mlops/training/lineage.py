"""What a candidate's lineage records about the run that made it: the image that really ran
(its digest, from the finished pod's ``imageID``), the seed, labels, hyperparameters and whether
it may be promoted."""

from __future__ import annotations

import re
from typing import Any

_DIGEST = re.compile(r"sha256:[a-f0-9]{64}")


def image_id_of(pod: Any, container: str = "base") -> str:
    """``status.containerStatuses[name=container].imageID`` of a V1Pod (``""`` if unknown)."""
    statuses = getattr(getattr(pod, "status", None), "container_statuses", None) or []
    for status in statuses:
        if getattr(status, "name", None) == container:
            return str(getattr(status, "image_id", "") or "")
    return ""


def image_digest(image_id: str) -> str | None:
    """The ``sha256:...`` digest in a kubelet ``imageID`` (``docker-pullable://repo@sha256:...``,
    ``repo@sha256:...`` or a bare ``sha256:...``), or ``None`` when it names none."""
    found = _DIGEST.search(image_id or "")
    return found.group(0) if found else None


def candidate_lineage(plan: dict[str, Any], dag_id: str, run_id: str, image_id: str | None) -> dict[str, Any]:
    """The lineage document the registry stores with the candidate."""
    return {
        "dag_id": dag_id,
        "run_id": run_id,
        "image": plan["image"],
        "image_id": image_id or "",
        "image_digest": image_digest(image_id or ""),
        "compute_profile": plan["compute_profile"],
        "gpus": plan["gpus"],
        "seed": plan.get("seed", 0),
        "hyperparameters": plan.get("hyperparameters") or {},
        "labels": plan.get("labels") or {},
        "promote": bool(plan.get("promote")),
    }


def candidate_event_extra(plan: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    """The ``model_candidates`` asset event's extra. ``promote`` (bool) tells the promotion DAG
    whether it may promote this candidate; a run that did not ask stays a candidate only."""
    return {
        "model": plan["model_name"],
        "version": plan["model_version"],
        "accuracy": (entry.get("metrics") or {}).get("accuracy"),
        "artifact_uri": plan["artifact_uri"],
        "promote": bool(plan.get("promote")),
        "labels": plan.get("labels") or {},
    }
