"""
# mlops_rollback

Emergency rollback of a served model to the version that served production before the current
one: traffic first, then the registry's production pointer. It never queues behind a promotion:
it is its own DAG, and it pre-empts the model's lease from a running promotion.

**Owner:** mlops platform team (#mlops-platform).

## Trigger
- The UI: Trigger, model and reason (one screen).
- The REST API: `POST /api/v2/dags/mlops_rollback/dagRuns`
  `{"logical_date": null, "conf": {"model": "digits-mlp", "reason": "INC-1234: p95 doubled"}}`.

## Tasks
1. `resolve_request`: the model must have a production version in the registry.
2. `take_lease` (setup): pre-empts the model's lease. A promotion of this model that was running
   fails at its next step ("lease lost") and its clean-up leaves the rolled-back state alone.
3. `rollback_traffic`: the previous color is scaled up (redeployed with the previous production
   version if its template no longer runs it), waited for, then the active Service is switched.
4. `roll_back_registry_pointer`: production pointer -> the previous version.
5. `scale_down_rolled_back_color`: the bad color goes to 0 replicas at once (Deployment kept).
6. `release_lease` (teardown, always runs). 7. `notify`: Slack summary and PagerDuty change event.

## Which state is the truth
The registry's production pointer says which version *should* serve; the active Service says
which color *does*. A rollback moves traffic first, then the pointer; if it fails between the two,
the next run's `reconcile` task reports and repairs the difference (see the README).

## Triage
- `resolve_request` failed: the model has no production version (nothing to roll back).
- `rollback_traffic` "nothing to roll back to": the Service records no previous color (a first
  deployment). Promote a known-good version with `mlops_promotion` instead.
- `rollback_traffic` timed out waiting for the rollout: `kubectl -n ml-serving describe deploy
  MODEL-COLOR`; traffic was not switched.
- `roll_back_registry_pointer` failed after the switch: traffic is on the previous version while the
  registry still names the bad one. Re-run this DAG (each step is idempotent) or see the README.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import dag, get_current_context, task

from mlops import tags
from mlops.callbacks import failure_callbacks, success_callbacks
from mlops.promotion import tasks as steps
from mlops.promotion.params import rollback_params

final = steps.final_verdicts


@dag(
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=8,  # rollbacks of different models at once; a second one of a model pre-empts the first
    dagrun_timeout=timedelta(hours=1),
    params=rollback_params(),
    tags=[tags.PROMOTION, tags.KUBERNETES, tags.S3, tags.ALERTING, tags.API_TRIGGERED],
    doc_md=__doc__,
    default_args={
        "owner": "mlops-platform",
        "retries": 1,
        "retry_delay": timedelta(seconds=5),
        "on_failure_callback": failure_callbacks(),
        "on_success_callback": success_callbacks(),  # resolves a task's failure incident
    },
)
def mlops_rollback():
    @task
    @final()
    def resolve_request() -> dict:
        """The model (with a production version to roll back from) and the reason."""
        from mlops.promotion.params import resolve_rollback

        ctx = get_current_context()
        return resolve_rollback(ctx["params"], ctx["dag"].dag_id, ctx["run_id"])

    take_lease = task(task_id="take_lease")(final()(steps.take_lease_for_rollback))
    rollback_traffic = task(final()(steps.rollback_traffic))

    @task
    @final()
    def roll_back_registry_pointer(request: dict, outcome: dict) -> dict | None:
        return steps.roll_back_registry_pointer(request)

    @task
    @final()
    def scale_down_rolled_back_color(request: dict, outcome: dict, pointer: dict | None) -> dict:
        return steps.scale_down_rolled_back_color(request, outcome)

    @task(retries=3)
    def release_lease() -> str:
        """Teardown: release the lease this rollback took."""
        return steps.release_rollback_lease(get_current_context()["ti"])

    @task(trigger_rule="none_failed_min_one_success")
    def notify() -> dict:
        """Slack summary and PagerDuty change event of the rollback."""
        ctx = get_current_context()
        return steps.announce(ctx["ti"], ctx["dag"].dag_id, ctx["run_id"])

    request = resolve_request()
    lease = take_lease(request)
    rolled = rollback_traffic(request)
    pointer = roll_back_registry_pointer(request, rolled)
    scaled = scale_down_rolled_back_color(request, rolled, pointer)
    lease >> rolled
    released = release_lease().as_teardown(setups=lease, on_failure_fail_dagrun=True)
    scaled >> released
    [scaled, released] >> notify()


mlops_rollback()
