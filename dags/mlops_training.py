"""
# mlops_training

Trains a model in a Kubernetes pod on the GPU node pools and registers the result
as a **candidate** in the S3 model registry. Each registered candidate emits an
event on the `model_candidates` asset, which schedules `mlops_promotion`.

**Owner:** mlops platform team (#mlops-platform).

## Triggers
- Nightly at 02:00 UTC with the default parameters (no catchup).
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
2. `register_candidate`: validates `metrics.json` and records the candidate.

## Alerts
Task failures go to Slack and PagerDuty; a run not finished 8 h after it was queued raises a
deadline alert through the same routing (the run itself keeps going until `dagrun_timeout`).

## Triage
- `train_model` failed before any pod: the message names the parameter; trigger again with a valid value.
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

import pendulum
from airflow.sdk import dag, get_current_context, task

from mlops import tags
from mlops.assets import MODEL_CANDIDATES
from mlops.callbacks import deadline_alert, failure_callbacks
from mlops.training.operator import TrainingPodOperator
from mlops.training.params import training_params


@dag(
    schedule="0 2 * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=4,
    dagrun_timeout=timedelta(days=7, hours=1),
    # The run budget: a default run (4 h pod deadline) plus retries fits; a run still going
    # after 8 h pages through the same routing as failures, while it keeps running.
    deadline=deadline_alert(timedelta(hours=8), name="training_run_budget"),
    params=training_params(),
    tags=[tags.TRAINING, tags.GPU, tags.KUBERNETES, tags.SCHEDULED, tags.API_TRIGGERED],
    doc_md=__doc__,
    default_args={
        "owner": "mlops-platform",
        "retries": 2,
        "retry_delay": timedelta(seconds=30),
        "on_failure_callback": failure_callbacks(),
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
    )

    @task(outlets=[MODEL_CANDIDATES])
    def register_candidate() -> dict:
        """Validate metrics.json, register the candidate and announce it on the asset."""
        from airflow.sdk.exceptions import AirflowFailException

        from mlops.settings import get_settings
        from mlops.training.tasks import register_candidate as register

        ctx = get_current_context()
        plan = ctx["ti"].xcom_pull(task_ids="train_model", key="plan")
        lineage = {
            "dag_id": ctx["dag"].dag_id,
            "run_id": ctx["run_id"],
            "image": plan["image"],
            "compute_profile": plan["compute_profile"],
            "gpus": plan["gpus"],
        }
        try:
            entry = register(plan, lineage, get_settings())
        except ValueError as exc:  # missing or malformed metrics.json: a retry cannot fix it
            raise AirflowFailException(str(exc)) from exc
        ctx["outlet_events"][MODEL_CANDIDATES].extra = {
            "model": plan["model_name"],
            "version": plan["model_version"],
            "accuracy": entry["metrics"].get("accuracy"),
            "artifact_uri": plan["artifact_uri"],
        }
        return entry

    train >> register_candidate()


mlops_training()
