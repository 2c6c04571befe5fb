"""
# mlops_promotion

Blue-green promotion of a model version to production serving on Kubernetes, with
analysis gates, optional manual approval and automatic rollback (Argo Rollouts'
blueGreen strategy, as an Airflow DAG). Also rolls back on request.

**Owner:** mlops platform team (#mlops-platform).

## Triggers
- The `model_candidates` asset: every candidate that `mlops_training` registers
  (model and version come from the event's `extra`).
- The UI form: model, version, auto-promote, analysis duration, scale-down delay,
  dry run, rollback.
- The REST API: `POST /api/v2/dags/mlops_promotion/dagRuns`
  `{"logical_date": null, "conf": {"model": "digits-mlp", "version": "v2026...", ...}}`.

## Tasks
1. `resolve_request`: model/version (params or asset event), checked in the registry.
   When several candidates arrived together, this run promotes the newest, and
   `promote_other_candidates` starts one run per other model (queued behind this one).
2. `choose_path`: promotion or rollback.
3. `resolve_active_color`: the active Service's selector; takes the model's lease (a
   second promotion of the same model is refused). A version already active: skip, no change.
4. `deploy_candidate`: the idle color's Deployment/HPA/PDB; the preview Service points at it.
5. `wait_for_rollout`: `observedGeneration >= generation`, updated = ready = available =
   desired; `ProgressDeadlineExceeded` fails.
6. `run_pre_promotion_analysis`: via the preview Service: /ready, /version, smoke
   predictions on held-out samples, accuracy gate (absolute minimum and vs production),
   Prometheus error rate / p95 when `MLOPS_PROMETHEUS_URL` is set.
7. `decide_approval` / `approve_promotion`: with auto-promote off, waits in Required actions.
8. `switch_traffic`: one patch of the active Service's selector, guarded by resourceVersion.
9. `run_post_promotion_analysis`: the live checks through the active Service for the window.
10. `move_registry_pointer`, 11. `scale_down_previous_color` (after the delay; the
    Deployment is kept at 0 replicas), 12. `notify` (Slack summary, PagerDuty change event).
- Rollback path: `rollback_traffic`, `roll_back_registry_pointer`, `scale_down_rolled_back_color`.
- `clean_up` (always runs): before the switch, scales the candidate to 0 (active color untouched);
  after the switch, restores the previous color; releases the lease. `fail_run_if_any_failed`
  keeps the run failed.

## Triage
- `resolve_request` failed: the model/version is not in the registry (message names it).
- `resolve_active_color` "another promotion holds the lease": wait for it, or if its run
  died, the lease expires after `MLOPS_PROMOTION_LEASE_SECONDS` (or remove the annotation
  `mlops.io/promotion-lease` from the Service).
- `wait_for_rollout` failed: `kubectl -n ml-serving describe deploy MODEL-COLOR` and the
  pods' events/logs (image pull, crash, readiness). Production was not touched.
- `run_pre_promotion_analysis` failed: the message lists each gate's verdict.
- `run_post_promotion_analysis` failed: traffic was restored by `clean_up`; check its log.
- "denied 'VERB' on 'RESOURCE'": the Airflow service account lacks that RBAC permission.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import dag, get_current_context, task

from mlops import tags
from mlops.assets import MODEL_CANDIDATES
from mlops.callbacks import failure_callbacks
from mlops.promotion import tasks as steps
from mlops.promotion.params import promotion_params

PROMOTION_TASKS = [
    "resolve_active_color",
    "deploy_candidate",
    "wait_for_rollout",
    "run_pre_promotion_analysis",
    "decide_approval",
    "approve_promotion",
    "switch_traffic",
    "run_post_promotion_analysis",
    "move_registry_pointer",
    "scale_down_previous_color",
]
final = steps.final_verdicts


@dag(
    schedule=[MODEL_CANDIDATES],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,  # one promotion at a time; the Service lease guards other schedulers too
    dagrun_timeout=timedelta(hours=6),
    params=promotion_params(),
    tags=[tags.PROMOTION, tags.KUBERNETES, tags.S3, tags.ALERTING, tags.API_TRIGGERED],
    doc_md=__doc__,
    default_args={
        "owner": "mlops-platform",
        "retries": 1,
        "retry_delay": timedelta(seconds=20),
        "on_failure_callback": failure_callbacks(),
    },
)
def mlops_promotion():
    @task
    @final()
    def resolve_request() -> dict:
        """Model and version from the params or the triggering asset event; checked in the registry."""
        from mlops.promotion.params import resolve_request as resolve

        ctx = get_current_context()
        return resolve(ctx["params"], ctx.get("triggering_asset_events"), ctx["dag"].dag_id, ctx["run_id"])

    @task
    def list_other_candidates() -> list[dict]:
        """Candidates of other models that arrived in the same batch of asset events."""
        from mlops.promotion.params import other_candidates

        return other_candidates(get_current_context().get("triggering_asset_events"))

    # One promotion run each, queued behind this one (max_active_runs=1): no candidate is dropped.
    TriggerDagRunOperator.partial(
        task_id="promote_other_candidates", trigger_dag_id="mlops_promotion", wait_for_completion=False
    ).expand(conf=list_other_candidates())

    @task.branch
    def choose_path(request: dict) -> str:
        return "rollback_traffic" if request["rollback"] else "resolve_active_color"

    resolve_active_color = task(final()(steps.resolve_active_color))
    deploy_candidate = task(final()(steps.deploy_candidate))
    wait_for_rollout = task(final()(steps.wait_for_rollout))

    @task
    @final()
    def run_pre_promotion_analysis(request: dict, rollout: dict) -> dict:
        return steps.run_pre_promotion_analysis(request)

    @task.branch
    def decide_approval(request: dict, report: dict) -> list[str]:
        return steps.approval_branch(request)

    approve_promotion = ApprovalOperator(
        task_id="approve_promotion",
        subject="Promote {{ ti.xcom_pull(task_ids='resolve_request')['model'] }} "
        "{{ ti.xcom_pull(task_ids='resolve_request')['version'] }}?",
        body="Pre-promotion analysis passed:\n\n"
        "```\n{{ ti.xcom_pull(task_ids='run_pre_promotion_analysis') }}\n```"
        "\n\nApprove switches production traffic to the candidate. Reject scales it down.",
        response_timeout=timedelta(hours=4),
        retries=0,
    )

    @task(trigger_rule="none_failed_min_one_success")
    @final()
    def switch_traffic(state: dict) -> dict:
        # Pulled, not passed: an upstream resolve_request must not make a skipped promotion run this.
        request = get_current_context()["ti"].xcom_pull(task_ids="resolve_request")
        return steps.switch_traffic(request, state)

    @task
    @final()
    def run_post_promotion_analysis(request: dict, switched: dict) -> dict:
        return steps.run_post_promotion_analysis(request)

    @task
    @final()
    def move_registry_pointer(request: dict, report: dict) -> dict | None:
        return steps.move_registry_pointer(request)

    @task
    @final()
    def scale_down_previous_color(request: dict, state: dict, pointer: dict | None) -> dict:
        return steps.scale_down_previous_color(request, state)

    rollback_traffic = task(final()(steps.rollback_traffic))

    @task
    @final()
    def roll_back_registry_pointer(request: dict, outcome: dict) -> dict | None:
        return steps.roll_back_registry_pointer(request)

    @task
    @final()
    def scale_down_rolled_back_color(request: dict, outcome: dict, pointer: dict | None) -> dict:
        return steps.scale_down_rolled_back_color(request, outcome)

    @task(trigger_rule="none_failed_min_one_success")
    def notify() -> dict:
        """Slack summary and PagerDuty change event of what happened."""
        ctx = get_current_context()
        return steps.announce(ctx["ti"], ctx["dag"].dag_id, ctx["run_id"])

    @task(trigger_rule="all_done", retries=3)
    def clean_up() -> str:
        """Always runs: undo a failed promotion (before or after the switch) and release the lease."""
        return steps.clean_up(get_current_context()["ti"])

    @task(trigger_rule="one_failed", retries=0)
    def fail_run_if_any_failed() -> None:
        """Cleanup succeeded, but the promotion did not: keep the run failed."""
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException("a promotion step failed; see clean_up for what was undone")

    request = resolve_request()
    path = choose_path(request)
    state = resolve_active_color(request)
    deployed = deploy_candidate(request, state)
    rollout = wait_for_rollout(request, deployed)
    pre = run_pre_promotion_analysis(request, rollout)
    decision = decide_approval(request, pre)
    switched = switch_traffic(state)
    post = run_post_promotion_analysis(request, switched)
    pointer = move_registry_pointer(request, post)
    scaled = scale_down_previous_color(request, state, pointer)
    path >> state
    decision >> [approve_promotion, switched]
    approve_promotion >> switched

    rolled = rollback_traffic(request)
    path >> rolled
    back_pointer = roll_back_registry_pointer(request, rolled)
    rolled_scaled = scale_down_rolled_back_color(request, rolled, back_pointer)

    notified = notify()
    [scaled, rolled_scaled] >> notified

    cleaned = clean_up()
    all_steps = [path, state, deployed, rollout, pre, decision, approve_promotion, switched, post, pointer]
    all_steps += [scaled, rolled, back_pointer, rolled_scaled, notified]
    all_steps >> cleaned
    [*all_steps, request, cleaned] >> fail_run_if_any_failed()


mlops_promotion()
