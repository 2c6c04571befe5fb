"""The Training section: running and queued training runs, and GPU-hours per model over 7 days.

Read from Airflow's REST API as the user: a training run's profile, GPU count and model are its
``conf`` (the trigger form's params), its elapsed time is Airflow's own start and end.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

TRAINING_DAG = "mlops_training"
WINDOW = timedelta(days=7)


def _when(stamp: str | None) -> datetime | None:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")) if stamp else None


def _gpus(conf: dict[str, Any]) -> int:
    return 0 if conf.get("compute_profile", "cpu") == "cpu" else int(conf.get("gpus") or 0)


def summarize(runs: list[dict[str, Any]], now: datetime | None = None) -> dict[str, Any]:
    """Active runs (profile, GPUs, elapsed, state) and GPU-hours per model from ``runs`` (REST dagRuns)."""
    now = now or datetime.now(UTC)
    active, gpu_hours, last = [], {}, {}
    for run in runs:
        conf = run.get("conf") or {}
        model = conf.get("model_name") or "(default params)"
        start, end = _when(run.get("start_date")), _when(run.get("end_date"))
        if run.get("state") in ("running", "queued"):
            active.append(
                {
                    "run_id": run["dag_run_id"],
                    "model": model,
                    "profile": conf.get("compute_profile"),
                    "gpus": _gpus(conf),
                    "state": run["state"],
                    "elapsed_seconds": (now - start).total_seconds() if start else None,
                }
            )
        if start and now - start <= WINDOW:
            hours = ((end or now) - start).total_seconds() / 3600 * _gpus(conf)
            gpu_hours[model] = gpu_hours.get(model, 0.0) + hours
        if conf and model not in last:
            last[model] = {"run_id": run["dag_run_id"], "conf": conf, "state": run.get("state")}
    return {
        "active": active,
        "gpu_hours_7d": {m: round(h, 3) for m, h in sorted(gpu_hours.items())},
        "last_runs": last,
    }


async def training_state(api: Any) -> dict[str, Any]:
    """The section's data, read through ``api`` (:class:`~mlops_platform_ui.airflow_api.AirflowApi`)."""
    since = (datetime.now(UTC) - WINDOW).isoformat()
    answer = await api.call(
        "GET",
        f"/dags/{TRAINING_DAG}/dagRuns",
        params={"run_after_gte": since, "order_by": "-run_after", "limit": 100},
    )
    queued = await api.call(
        "GET", f"/dags/{TRAINING_DAG}/dagRuns", params={"state": ["queued", "running"], "limit": 100}
    )
    seen = {r["dag_run_id"] for r in answer["dag_runs"]}
    runs = answer["dag_runs"] + [r for r in queued["dag_runs"] if r["dag_run_id"] not in seen]
    return summarize(runs)
