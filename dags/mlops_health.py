"""
### mlops_health: health checks of model serving and the platform, with deduplicated alerts

Every 5 minutes (`MLOPS_HEALTH_SCHEDULE`) this DAG runs every check declared in
`include/mlops/health/checks.yaml` (`MLOPS_HEALTH_CHECKS_PATH` to use another file)
concurrently, each under its own timeout: model-server endpoints, Kubernetes
Deployments/pods/HPAs/GPU nodes, the platform Postgres, the S3 buckets, backup
freshness, Airflow's own components and, with `MLOPS_PROMETHEUS_URL` set,
Prometheus queries.

- `run_checks` records every result (a failing check does not fail the task).
- `evaluate_alerts` advances the alert state kept in
  `s3://<health_state_bucket>/<health_state_key>`: an alert fires after N
  consecutive failures, pages PagerDuty once with a stable `dedup_key`
  (`mlops-health/<check>/<target>`), posts to Slack when it fires and when it
  resolves, and sends one resolve on recovery.
- `send_daily_digest` posts the still-firing alerts once a day, after
  `MLOPS_HEALTH_DIGEST_HOUR_UTC`.
- Every finished sweep pushes its heartbeat
  (`mlops_health_last_sweep_timestamp_seconds`, and a ping to `MLOPS_HEALTH_HEARTBEAT_URL`
  when set): the dead-man's switch. **When the whole of Airflow is down** (scheduler,
  metadata DB, this DAG paused, failing to import or starved) nothing here can run;
  what pages then is Prometheus' `HealthSweepStale`/`HealthSweepAbsent` rule
  (helm-values/monitoring/prometheus-rules.yaml), routed by the cluster's
  Alertmanager, and/or the heartbeat service's own alert when pings stop.

Owner: platform team (#mlops-platform).

#### Triage
- **`run_checks` failed**: the configuration is invalid (the log names the check
  and field) or the worker could not start the sweep. Checks that fail or hang
  never fail this task.
- **`evaluate_alerts` failed with AlertDeliveryError**: a channel was down and the
  outage could not be reported through the other one either. Each delivery has a
  deadline (`MLOPS_ALERT_DELIVERY_DEADLINE_SECONDS`) and the channels are delivered
  independently; what did not get out stays pending and goes out next run. A single
  channel down is reported once through the other (`mlops-health/alert-channel/...`)
  and does not fail the task. Meanwhile the task log lists every failing check.
- A task failure of this DAG pages once per task (`airflow/mlops_health/<task>`),
  resolved when that task next succeeds.
- **StateConflictError**: another process wrote the alert state; look for a second
  deployment or a manual `airflow dags test` of this DAG.
- To silence a check, group or target for a while:
  `python -m mlops.health.silences create <check|target> --minutes 60 --author you --comment why`
  (`list`, `expire <id>`); for good, raise its `failures_before_alert` or set `page: false`
  in the checks file. To see the current alerts, read the state object in S3.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import dag, get_current_context, task

from mlops import tags
from mlops.callbacks import failure_callbacks, success_callbacks
from mlops.settings import get_settings


@dag(
    dag_id="mlops_health",
    doc_md=__doc__,
    # The schedule is a parse-time property; it comes from the environment only (no network, no DB).
    schedule=get_settings().health_schedule,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,  # runs share one alert state; overlapping runs would race on it
    dagrun_timeout=timedelta(minutes=4),  # finish well within the 5-minute interval
    tags=[tags.HEALTH, tags.ALERTING, tags.KUBERNETES, tags.S3, tags.POSTGRES, tags.SCHEDULED],
    default_args={
        "owner": "platform",
        "retries": 1,
        "retry_delay": timedelta(seconds=20),
        "on_failure_callback": failure_callbacks(),
        "on_success_callback": success_callbacks(),  # resolves a task's failure incident
    },
)
def mlops_health():
    @task(execution_timeout=timedelta(minutes=2))
    def run_checks() -> dict:
        from mlops.health.tasks import sweep

        return sweep()

    @task(execution_timeout=timedelta(minutes=1), retries=2)
    def evaluate_alerts(report: dict) -> dict:
        from mlops.health.tasks import evaluate_and_alert

        context = get_current_context()
        return evaluate_and_alert(report, dag_id=context["dag"].dag_id, run_id=context["run_id"])

    @task(execution_timeout=timedelta(minutes=1))
    def send_daily_digest() -> bool:
        from mlops.health.tasks import send_daily_digest as send

        context = get_current_context()
        return send(dag_id=context["dag"].dag_id, run_id=context["run_id"])

    evaluate_alerts(run_checks()) >> send_daily_digest()


mlops_health()
