"""Failure (and recovery) callbacks attached to the project's DAGs.

Each task failure goes to Slack and PagerDuty with links to the DAG, the run
and the task's log. The page is one incident per DAG and task
(``airflow/<dag_id>/<task_id>``): however many runs fail, PagerDuty shows one
incident, and :func:`success_callbacks` resolves it when that task next succeeds.
Delivery problems are logged and swallowed: the task's own error is what the run
reports. A failed task of a training DAG also counts in
``mlops_training_failures_total`` on the Pushgateway.
"""

from __future__ import annotations

import logging
from datetime import timedelta
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
    links = airflow_links(dag_id, run_id, task_id, try_number)
    return {
        "dag_id": dag_id,
        "task_id": task_id,
        "run_id": run_id,
        "try_number": try_number,
        "error": f"{type(error).__name__}: {error}" if error else "unknown error",
        "dag_url": links["dag"],
        "run_url": links["run"],
        "log_url": links["log"] or log_url,
    }


def airflow_links(
    dag_id: str, run_id: str | None = None, task_id: str | None = None, try_number: int | None = None
) -> dict[str, str]:
    """UI links (``settings.airflow_base_url``) to a DAG, one of its runs, and a task's log."""
    from urllib.parse import quote

    from mlops.settings import get_settings

    dag = f"{get_settings().airflow_base_url.rstrip('/')}/dags/{quote(str(dag_id), safe='')}"
    run = f"{dag}/runs/{quote(str(run_id), safe='')}" if run_id else ""
    log_url = f"{run}/tasks/{quote(str(task_id), safe='')}" if run and task_id and task_id != "?" else ""
    if log_url and try_number:
        log_url += f"?try_number={try_number}"
    return {"dag": dag, "run": run, "log": log_url}


class TaskFailureAlert(BaseNotifier):
    """Notifier sending a task failure to Slack and PagerDuty (one incident per DAG and task).

    When the task already paged its own, more specific incident for this error
    (``mlops.alerting.router.mark_paged``, e.g. a failed backup verification), the
    page is inhibited: Slack still gets the failure, naming that incident.
    """

    def __init__(self, severity: str = "error") -> None:
        super().__init__()
        self.severity = severity

    def notify(self, context: dict[str, Any]) -> None:
        try:
            self._send(context)
        except Exception:  # a broken alert must never replace the task's own error
            log.exception("failure alert could not be built or sent")

    def _send(self, context: dict[str, Any]) -> None:
        from mlops.alerting.incidents import task_incident_key
        from mlops.alerting.router import AlertRouter, paged_as
        from mlops.alerting.slack import escape

        d = _failure_details(context)
        _count_training_failure(d["dag_id"])
        specific = paged_as(context.get("exception"))
        title = f"Airflow task failed: {d['dag_id']}.{d['task_id']}"
        lines = [
            f"*DAG* <{d['dag_url']}|{d['dag_id']}>  *Task* `{d['task_id']}`  *Try* {d['try_number']}",
            f"*Run* <{d['run_url']}|{d['run_id']}>" if d["run_url"] else f"*Run* `{d['run_id']}`",
            f"*Error* ```{escape(d['error'])}```",
        ]
        if specific:
            lines.append(f"*Paged as* `{specific}` (this failure's own incident; no second page)")
        links = [
            {"href": href, "text": text}
            for href, text in ((d["log_url"], "Task log"), (d["run_url"], "DAG run"), (d["dag_url"], "DAG"))
            if href
        ]
        router = AlertRouter()
        footer = " · ".join(f"<{link['href']}|{link['text']}>" for link in links)
        router.slack(title, lines, [footer], context)
        if specific:
            log.info("PagerDuty page inhibited: the failure already pages as %s", specific)
            return
        incident = task_incident_key(d["dag_id"], d["task_id"])
        paged = router.pagerduty(
            action="trigger",
            dedup_key=incident,
            summary=f"{title}: {d['error']}",
            severity=self.severity,
            source=f"airflow/{d['dag_id']}",
            component=d["task_id"],
            group=d["dag_id"],
            custom_details=d,
            links=links,
        )
        _record_incident(incident, d, paged)


def _record_incident(incident: str, details: dict[str, Any], paged: bool) -> None:
    from mlops.alerting.incidents import IncidentLedger
    from mlops.settings import get_settings

    ledger = IncidentLedger(get_settings())
    if not ledger.available():
        return
    try:
        # Recorded even when the page did not get out: the success must still clear the Slack side.
        ledger.open(incident, {"run_id": details["run_id"], "paged": paged})
    except Exception:
        log.warning("could not record open incident %s; its resolve will be manual", incident, exc_info=True)


def _count_training_failure(dag_id: str) -> None:
    """``mlops_training_failures_total{dag_id}`` +1 on the Pushgateway, for a training DAG's failure."""
    if "train" not in str(dag_id):  # mlops_training and teams' own training DAGs
        return
    try:
        from mlops.health.publish import count_training_failure

        count_training_failure(dag_id)
    except Exception:
        log.warning("could not count the training failure of %s", dag_id, exc_info=True)


def _stamp_training_success(dag_id: str) -> None:
    if "train" not in str(dag_id):
        return
    try:
        from mlops.health.publish import stamp_training_success

        stamp_training_success(dag_id)
    except Exception:
        log.warning("could not stamp the training success of %s", dag_id, exc_info=True)


class TaskRecoveryResolve(BaseNotifier):
    """Notifier resolving a task's failure incident when the task succeeds again.

    Does nothing (one S3 ``HEAD``) unless an incident of this DAG and task is open.
    """

    def notify(self, context: dict[str, Any]) -> None:
        try:
            self._resolve(context)
        except Exception:  # a broken resolve must never fail a task that succeeded
            log.exception("task recovery could not be checked or sent")

    def _resolve(self, context: dict[str, Any]) -> None:
        from mlops.alerting.incidents import IncidentLedger, task_incident_key
        from mlops.alerting.router import AlertRouter
        from mlops.settings import get_settings

        ti = context.get("ti") or context.get("task_instance")
        dag_id = getattr(ti, "dag_id", None) or getattr(context.get("dag"), "dag_id", "?")
        task_id = getattr(ti, "task_id", "?")
        _stamp_training_success(dag_id)
        settings = get_settings()
        ledger = IncidentLedger(settings)
        incident = task_incident_key(dag_id, task_id)
        if not ledger.available() or not ledger.is_open(incident):
            return
        router = AlertRouter(settings)
        run_id = getattr(ti, "run_id", None) or context.get("run_id")
        links = airflow_links(dag_id, run_id, task_id)
        resolved = router.pagerduty(
            action="resolve", dedup_key=incident, summary=f"{dag_id}.{task_id} succeeded again"
        ) or not router.configured("pagerduty")
        router.slack(
            f"Airflow task recovered: {dag_id}.{task_id}",
            [f"*Run* <{links['run']}|{run_id}> succeeded; the failure incident `{incident}` is resolved."],
        )
        if resolved:
            ledger.close(incident)


def failure_callbacks(severity: str = "error") -> list[BaseNotifier]:
    """The ``on_failure_callback`` list every DAG's ``default_args`` uses."""
    return [TaskFailureAlert(severity=severity)]


def success_callbacks() -> list[BaseNotifier]:
    """The ``on_success_callback`` list: resolves the task's failure incident once it succeeds again.

    Add beside ``failure_callbacks()`` in a DAG's ``default_args``:
    ``"on_success_callback": success_callbacks()``.
    """
    return [TaskRecoveryResolve()]


async def notify_deadline_missed(
    context: dict[str, Any] | None = None, severity: str = "error", budget_seconds: float | None = None
) -> None:
    """Deadline Alert callback: a DAG run is still unfinished past its budget.

    Runs in the triggerer (an ``AsyncCallback``); ``context`` is what Airflow passes
    there: ``{"dag_run": <DAGRunResponse JSON>, "deadline": {"id", "deadline_time"}}``.
    The blocking router runs in a thread; it never raises.
    """
    import asyncio

    from mlops.alerting.router import AlertRouter

    dag_run = (context or {}).get("dag_run") or {}
    deadline = (context or {}).get("deadline") or {}
    dag_id, run_id = dag_run.get("dag_id", "?"), dag_run.get("dag_run_id") or dag_run.get("run_id", "?")
    links = airflow_links(dag_id, run_id)
    budget = f"{budget_seconds / 60:g} min" if budget_seconds else "its budget"
    title = f"Deadline missed: {dag_id} run not finished within {budget}"
    details = {
        "dag_id": dag_id,
        "run_id": run_id,
        "state": dag_run.get("state"),
        "queued_at": dag_run.get("queued_at"),
        "start_date": dag_run.get("start_date"),
        "deadline_time": str(deadline.get("deadline_time")),
        "run_url": links["run"],
    }
    lines = [
        f"*DAG* <{links['dag']}|{dag_id}>  *Run* <{links['run']}|{run_id}>  *State* `{details['state']}`",
        f"*Queued* {details['queued_at']}  *Started* {details['start_date']}",
        f"*Deadline* {details['deadline_time']}",
    ]
    pd_links = [{"href": links["run"], "text": "DAG run"}, {"href": links["dag"], "text": "DAG"}]

    def send() -> None:
        router = AlertRouter()
        router.slack(title, lines, [f"<{links['run']}|Open the run>"])
        router.pagerduty(
            action="trigger",
            dedup_key=f"airflow-deadline/{dag_id}/{run_id}",
            summary=title,
            severity=severity,
            source=f"airflow/{dag_id}",
            component="deadline",
            group=dag_id,
            custom_details=details,
            links=pd_links,
        )

    await asyncio.to_thread(send)


def deadline_alert(
    interval: timedelta, *, severity: str = "error", reference: Any = None, name: str | None = None
) -> Any:
    """An Airflow 3 ``DeadlineAlert``: a run not finished ``interval`` after it was queued pages.

    Routed like the failure callbacks (Slack and PagerDuty through ``AlertRouter``), by
    :func:`notify_deadline_missed` in the triggerer. Pass as ``@dag(deadline=...)``.
    """
    from airflow.sdk import AsyncCallback, DeadlineAlert, DeadlineReference

    return DeadlineAlert(
        reference=reference or DeadlineReference.DAGRUN_QUEUED_AT,
        interval=interval,
        callback=AsyncCallback(
            notify_deadline_missed,
            kwargs={"severity": severity, "budget_seconds": interval.total_seconds()},
        ),
        name=name,
    )
