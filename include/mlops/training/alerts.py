"""Where a training failure is announced: a user's mistake goes to Slack only; anything else pages.

A run whose parameters the plan refuses (a GPU count the profile does not allow, an
image outside the allow-list, a flag that overrides a field) failed before any pod
existed and nothing is broken: the person who triggered it needs to know, the on-call
engineer does not. Every other failure goes through the project's failure callback
(Slack and PagerDuty).
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk import BaseNotifier
from airflow.sdk.exceptions import AirflowFailException

from mlops.callbacks import TaskFailureAlert

log = logging.getLogger(__name__)


class RunRefused(AirflowFailException):
    """The run's parameters were refused before any pod was created (no retry, no page)."""


def is_user_mistake(error: BaseException | None) -> bool:
    """Whether ``error`` (or an exception it was raised from) is a refused run."""
    seen = 0
    while error is not None and seen < 5:
        if isinstance(error, RunRefused):
            return True
        error, seen = error.__cause__ or error.__context__, seen + 1
    return False


class TrainingFailureAlert(TaskFailureAlert):
    """``on_failure_callback`` of the training task: Slack only for a refused run, else the default."""

    def notify(self, context: dict[str, Any]) -> None:
        error = context.get("exception")
        if not is_user_mistake(error):
            super().notify(context)
            return
        try:
            self._refused(context, error)
        except Exception:  # a broken alert must never replace the task's own error
            log.exception("refused-run alert could not be built or sent")

    @staticmethod
    def _refused(context: dict[str, Any], error: BaseException | None) -> None:
        from mlops.alerting.router import AlertRouter
        from mlops.callbacks import airflow_links

        ti = context.get("ti") or context.get("task_instance")
        dag_id = getattr(ti, "dag_id", None) or getattr(context.get("dag"), "dag_id", "?")
        run_id = getattr(ti, "run_id", None) or context.get("run_id", "?")
        links = airflow_links(dag_id, run_id, getattr(ti, "task_id", None), getattr(ti, "try_number", None))
        title = f"Training run refused: {dag_id} {run_id}"
        lines = [
            f"*Run* <{links['run']}|{run_id}>: its parameters were refused before any pod was started.",
            f"*Problem* ```{error}```",
            "Trigger it again with a corrected value. Nothing ran, nothing to clean up; no page was sent.",
        ]
        log.info("refused run: Slack only, no PagerDuty page (%s)", error)
        AlertRouter().slack(title, lines, [f"<{links['log'] or links['run']}|Task log>"], context)


def training_failure_callbacks(severity: str = "error") -> list[BaseNotifier]:
    """The training task's ``on_failure_callback`` list (replaces the DAG default for that task)."""
    return [TrainingFailureAlert(severity=severity)]
