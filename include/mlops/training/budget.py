"""The training run's time budget, watched by a task instead of an Airflow DeadlineAlert.

Why not a ``DeadlineAlert``: on Airflow 3.3 a DAG with a ``DAGRUN_QUEUED_AT`` deadline
cannot be cleared (HTTP 500, apache/airflow#70368), and a DAG-level deadline has one
fixed interval, while each run has its own ``timeout_minutes``. Until the upstream fix is
released and pinned, a sensor in reschedule mode (it holds no worker slot between looks)
watches the run's other tasks:

- budget = the run's ``gpu_wait_minutes`` + ``timeout_minutes`` + ``training_budget_margin_minutes``,
  counted from when the run started or was last cleared (its ``queued_at``): a cleared run
  starts again, and so does its budget;
- past the budget with work still going: Slack on the first look past the deadline, and a
  PagerDuty trigger on every look, whose ``dedup_key`` names the run (PagerDuty keeps one
  incident per key, so a look that the scheduler delayed cannot lose the page);
- when the watched tasks have all finished: the sensor succeeds, and if the budget had
  been passed it resolves the incident and says so on Slack.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import BaseSensorOperator

from mlops.settings import Settings, get_settings

log = logging.getLogger(__name__)

FINISHED = frozenset({"success", "failed", "skipped", "upstream_failed", "removed"})


def budget(params: dict[str, Any], settings: Settings) -> timedelta:
    """How long a run with ``params`` may take before it is alerted on."""
    minutes = (
        int(params.get("timeout_minutes") or 0)
        + int(params.get("gpu_wait_minutes") or 0)
        + settings.training_budget_margin_minutes
    )
    return timedelta(minutes=minutes)


def dedup_key(dag_id: str, run_id: str) -> str:
    return f"airflow-budget/{dag_id}/{run_id}"


class RunBudgetSensor(BaseSensorOperator):
    """Succeeds when every task in ``watched`` has finished; alerts while the run is over budget.

    :param watched: task ids whose end is the end of the run's work.
    """

    template_fields: Sequence[str] = ()

    def __init__(self, *, watched: Sequence[str], poke_interval: float | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("mode", "reschedule")
        kwargs.setdefault("timeout", timedelta(days=8).total_seconds())
        super().__init__(poke_interval=poke_interval or 60, **kwargs)
        self.watched = tuple(watched)
        self._interval_from_settings = poke_interval is None

    def execute(self, context: Any) -> Any:
        if self._interval_from_settings:  # a run-time setting: MLOPS_TRAINING_BUDGET_POLL_SECONDS
            self.poke_interval = get_settings().training_budget_poll_seconds
        return super().execute(context)

    def _states(self, context: Any) -> dict[str, str | None]:
        ti = context["ti"]
        found = ti.get_task_states(dag_id=ti.dag_id, task_ids=list(self.watched), run_ids=[ti.run_id])
        found = found.get(ti.run_id, found)  # keyed by run id
        return {task_id: found.get(task_id) for task_id in self.watched}

    def poke(self, context: Any) -> bool:
        from airflow.sdk import timezone

        dag_run = context["dag_run"]
        # Clearing sets queued_at (and, for a finished run, start_date) anew: the budget restarts.
        anchors = [t for t in (dag_run.start_date, getattr(dag_run, "queued_at", None)) if t]
        started: datetime = max(anchors) if anchors else dag_run.run_after
        deadline = started + budget(context["params"], get_settings())
        now = timezone.utcnow()
        states = self._states(context)
        done = all(state in FINISHED for state in states.values())
        if done:
            if now >= deadline:
                self._resolve(context, states, deadline)
            log.info("the run's work has finished (%s); budget ended %s", states, deadline.isoformat())
            return True
        if now >= deadline:
            # Pokes are at least poke_interval apart: only the first one past the deadline is this close.
            first_look_past = now - deadline < timedelta(seconds=self.poke_interval)
            self._alert(context, states, started, deadline, slack=first_look_past)
        else:
            log.info("within budget until %s; still going: %s", deadline.isoformat(), states)
        return False

    def _alert(
        self, context: Any, states: dict[str, Any], started: datetime, deadline: datetime, *, slack: bool
    ) -> None:
        from mlops.alerting.router import AlertRouter
        from mlops.callbacks import airflow_links

        ti = context["ti"]
        links = airflow_links(ti.dag_id, ti.run_id)
        minutes = (deadline - started).total_seconds() / 60
        title = f"Training run over budget: {ti.dag_id} {ti.run_id} still running after {minutes:g} min"
        details = {
            "dag_id": ti.dag_id,
            "run_id": ti.run_id,
            "started": started.isoformat(),
            "deadline": deadline.isoformat(),
            "tasks": states,
            "run_url": links["run"],
        }
        log.warning("%s (tasks: %s)", title, states)
        router = AlertRouter()
        if slack:
            router.slack(
                title,
                [
                    f"*Run* <{links['run']}|{ti.run_id}>  *Deadline* {deadline.isoformat()}",
                    f"*Tasks* `{states}`",
                ],
                [f"<{links['run']}|Open the run>"],
            )
        router.pagerduty(
            action="trigger",
            dedup_key=dedup_key(ti.dag_id, ti.run_id),
            summary=title,
            severity="error",
            source=f"airflow/{ti.dag_id}",
            component="run-budget",
            group=ti.dag_id,
            custom_details=details,
            links=[{"href": links["run"], "text": "DAG run"}],
        )

    def _resolve(self, context: Any, states: dict[str, Any], deadline: datetime) -> None:
        from mlops.alerting.router import AlertRouter

        ti = context["ti"]
        router = AlertRouter()
        router.pagerduty(action="resolve", dedup_key=dedup_key(ti.dag_id, ti.run_id))
        router.slack(
            f"Training run ended after its budget: {ti.dag_id} {ti.run_id}",
            [
                f"*Tasks* `{states}`  *Budget ended* {deadline.isoformat()}",
                "The budget incident is resolved.",
            ],
        )
