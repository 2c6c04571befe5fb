"""The Training section's arithmetic: active runs and GPU-hours per model over the last 7 days."""

from __future__ import annotations

import sys
from datetime import UTC, datetime

from tests.conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "plugins"))

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def _run(run_id, state, start, end=None, **conf):
    return {"dag_run_id": run_id, "state": state, "start_date": start, "end_date": end, "conf": conf}


def test_gpu_hours_count_gpus_times_hours_in_the_window_and_cpu_runs_count_none():
    from mlops_platform_ui.training import summarize

    runs = [
        _run(
            "a", "running", "2026-11-28T11:00:00Z", None, model_name="m1", compute_profile="gpu-small", gpus=2
        ),
        _run(
            "b",
            "success",
            "2026-11-27T10:00:00Z",
            "2026-11-27T13:00:00Z",
            model_name="m1",
            compute_profile="gpu-large",
            gpus=4,
        ),
        _run(
            "c",
            "success",
            "2026-11-20T10:00:00Z",
            "2026-11-20T12:00:00Z",
            model_name="m1",
            compute_profile="gpu-large",
            gpus=8,
        ),  # older than 7 days
        _run("d", "queued", None, None, model_name="m2", compute_profile="cpu", gpus=4),
    ]
    summary = summarize(runs, NOW)
    assert summary["gpu_hours_7d"] == {"m1": 2 * 1 + 4 * 3}
    assert [(r["run_id"], r["gpus"], r["state"], r["elapsed_seconds"]) for r in summary["active"]] == [
        ("a", 2, "running", 3600.0),
        ("d", 0, "queued", None),
    ]
    assert summary["last_runs"]["m1"]["run_id"] == "a"
