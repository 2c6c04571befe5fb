"""Failure callbacks attached to every DAG in the project.

Each task failure goes to Slack and PagerDuty with links to the DAG, the run
and the task's log. Delivery problems are logged and swallowed: the task's own
error is what the run reports.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk import BaseNotifier

log = logging.getLogger(__name__)


def _failure_details(context: dict[str, Any]) -> dict[str, Any]:
    ti = context.get("ti") or context.get("task_instance")
    dag_id = getattr(ti, "dag_id", None) or getattr(context.get("dag"), "dag_id", "?")
    task_id = getattr(ti, "task_id", "?")
    run_id = getattr(ti, "run_id", None) or context.get("run_id", "?")
    try_number = getattr(ti, "try_number", None)
    try:
        log_url = ti.log_url if ti is not None else ""
    except Exception:  # the URL is a nicety; never let it break the alert
        log_url = ""
    error = context.get("exception")
    return {
        "dag_id": dag_id,
        "task_id": task_id,
        "run_id": run_id,
        "try_number": try_number,
        "error": f"{type(error).__name__}: {error}" if error else "unknown error",
        "log_url": log_url,
    }


class TaskFailureAlert(BaseNotifier):
    """Notifier sending a task failure to Slack and PagerDuty (one incident per dag/task/run)."""

    def __init__(self, severity: str = "error") -> None:
        super().__init__()
        self.severity = severity

    def notify(self, context: dict[str, Any]) -> None:
        from mlops.alerting.router import AlertRouter

        d = _failure_details(context)
        title = f"Airflow task failed: {d['dag_id']}.{d['task_id']}"
        lines = [
            f"*DAG* `{d['dag_id']}`  *Task* `{d['task_id']}`  *Try* {d['try_number']}",
            f"*Run* `{d['run_id']}`",
            f"*Error* ```{d['error']}```",
        ]
        links = [{"href": d["log_url"], "text": "Task log"}] if d["log_url"] else None
        router = AlertRouter()
        router.slack(title, lines, [f"<{d['log_url']}|Open the task log>"] if d["log_url"] else None, context)
        router.pagerduty(
            action="trigger",
            dedup_key=f"airflow/{d['dag_id']}/{d['task_id']}/{d['run_id']}",
            summary=f"{title}: {d['error']}",
            severity=self.severity,
            source=f"airflow/{d['dag_id']}",
            component=d["task_id"],
            group=d["dag_id"],
            custom_details=d,
            links=links,
        )


def failure_callbacks(severity: str = "error") -> list[BaseNotifier]:
    """The ``on_failure_callback`` list every DAG's ``default_args`` uses."""
    return [TaskFailureAlert(severity=severity)]
