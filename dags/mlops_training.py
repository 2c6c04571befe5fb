"""
# mlops_training

Trains a model in a Kubernetes pod on the GPU node pools and registers the result
as a **candidate** in the S3 model registry. Each registered candidate emits an
event on the `model_candidates` asset, which schedules `mlops_promotion`.

**Owner:** mlops platform team (#mlops-platform).

## Triggers
- Nightly at 02:00 UTC with the default parameters (no catchup; unpausing does not start a run
  at once, the first is at the next 02:00).
- The UI trigger form: every field is documented there.
- The REST API: `POST /api/v2/dags/mlops_training/dagRuns` with `{"logical_date": null, "conf": {...}}`.
  A bad value is refused with HTTP 400 naming the field; no run is created.

## Tasks
1. `train_model`: plans the run first (cross-field checks such as GPU count vs compute
   profile; model version; S3 URIs), then runs the trainer pod (restricted security context,
   Secret-only credentials, logs streamed here). Infrastructure failures (eviction,
   preemption, lost node, image pull) are retried with exponential backoff and resume from
   the newest checkpoint; a non-zero exit of the training code fails at once unless
   `retry_on_training_failure`.
2. `register_candidate`: validates `metrics.json` and records the candidate with its lineage
   (image digest from the finished pod, seed, labels, hyperparameters). The `model_candidates`
   event's extra carries `promote`: true for the nightly run (or a run that set `promote`),
   false otherwise; the promotion DAG promotes only candidates with `promote: true`.
3. `watch_run_budget`: the run-time budget alert (see Alerts).

## Alerts
- Task failures go to Slack and PagerDuty, except a run whose parameters were refused before
  any pod existed (a user's mistake): Slack only.
- `watch_run_budget` alerts (Slack once, PagerDuty) when the run is still going after its
  `gpu_wait_minutes` + `timeout_minutes` + a margin (`MLOPS_TRAINING_BUDGET_MARGIN_MINUTES`, 30),
  and resolves the incident when the run ends. It replaces a DeadlineAlert, which made runs
  impossible to clear on Airflow 3.3 (apache/airflow#70368).
- A run that does not fit the namespace's GPU quota waits (task state *deferred*, its log says
  for what) for up to `gpu_wait_minutes`; waiting spends no retry and pages no one.

## Triage
- `train_model` failed before any pod: the message names the parameter; trigger again with a valid value.
- `train_model` is *deferred*: it waits for GPUs; its log names the quota and the pods holding them.
- Clear a task or the run to re-run it (a running pod is deleted first).
- `train_model` failed with "application failure": read the trainer's log lines above the
  error (the pod's termination message is included). Fix the code/data, then re-run.
- `train_model` retried: look for `Evicted`/`NodeLost`/`ImagePullBackOff` in the pod events
  logged with the failure; check GPU node capacity (`kubectl get nodes -l mlops.io/pool=gpu`).
- Pods are deleted when the task ends or is killed; set `MLOPS_KEEP_FAILED_PODS=true` to keep
  failed ones for debugging (`kubectl -n ml-training get pods -l dag_id=mlops_training`).
- `register_candidate` failed: `metrics.json` is missing or malformed under the run's
  artifact URI (printed in the error).
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import CronTriggerTimetable, dag, get_current_context, task

from mlops import tags
from mlops.assets import MODEL_CANDIDATES
from mlops.callbacks import failure_callbacks, success_callbacks
from mlops.training.alerts import training_failure_callbacks
from mlops.training.budget import RunBudgetSensor
from mlops.training.operator import TrainingPodOperator
from mlops.training.params import training_params


@dag(
    # No start_date and a zero run_immediately window: unpausing waits for the next 02:00. With a
    # start_date, catchup=False starts the most recent 02:00 run at once, with the default parameters,
    # the moment a newcomer unpauses the DAG; and run_immediately=False, despite its docstring, still
    # runs it if unpaused within 10 % of the interval after 02:00 (2.4 h; CronTriggerTimetable.
    # _calc_first_run, Airflow 3.3.2). timedelta(0) is "never".
    schedule=CronTriggerTimetable("0 2 * * *", timezone="UTC", run_immediately=timedelta(0)),
    catchup=False,
    max_active_runs=4,
    dagrun_timeout=timedelta(days=7, hours=1),
    # No DeadlineAlert: on Airflow 3.3 it makes the run impossible to clear (apache/airflow#70368),
    # and its interval is fixed per DAG; the watch_run_budget task follows each run's own timeout.
    params=training_params(),
    tags=[tags.TRAINING, tags.GPU, tags.KUBERNETES, tags.SCHEDULED, tags.API_TRIGGERED],
    doc_md=__doc__,
    default_args={
        "owner": "mlops-platform",
        "retries": 2,
        "retry_delay": timedelta(seconds=30),
        "on_failure_callback": failure_callbacks(),
        "on_success_callback": success_callbacks(),  # resolves a task's failure incident
    },
)
def mlops_training():
    train = TrainingPodOperator(
        task_id="train_model",
        # Infrastructure failures only (see mlops.training.failures); the backoff spaces out
        # retries while a node pool recovers.
        retries=3,
        retry_exponential_backoff=True,
        max_retry_delay=timedelta(minutes=30),
        execution_timeout=timedelta(days=7),
        # A refused run (the user's mistake) goes to Slack only; other failures page.
        on_failure_callback=training_failure_callbacks(),
    )

    @task(outlets=[MODEL_CANDIDATES])
    def register_candidate() -> dict:
        """Validate metrics.json, register the candidate and announce it on the asset."""
        from airflow.sdk.exceptions import AirflowFailException

        from mlops.settings import get_settings
        from mlops.training.lineage import candidate_event_extra, candidate_lineage
        from mlops.training.tasks import register_candidate as register

        ctx = get_current_context()
        plan = ctx["ti"].xcom_pull(task_ids="train_model", key="plan")
        image_id = ctx["ti"].xcom_pull(task_ids="train_model", key="image_id")
        lineage = candidate_lineage(plan, ctx["dag"].dag_id, ctx["run_id"], image_id)
        try:
            entry = register(plan, lineage, get_settings())
        except ValueError as exc:  # missing or malformed metrics.json: a retry cannot fix it
            raise AirflowFailException(str(exc)) from exc
        ctx["outlet_events"][MODEL_CANDIDATES].extra = candidate_event_extra(plan, entry)
        return entry

    registered = register_candidate()
    train >> registered
    # Alerts when the run outlives gpu_wait_minutes + timeout_minutes + a margin; resolves when it ends.
    RunBudgetSensor(task_id="watch_run_budget", watched=[train.task_id, registered.operator.task_id])


mlops_training()
