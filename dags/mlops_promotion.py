"""
# mlops_promotion

Blue-green promotion of a model version to production serving on Kubernetes, with analysis
gates, optional manual approval and automatic clean-up (Argo Rollouts' blueGreen strategy, as an
Airflow DAG). Emergency rollback is the separate `mlops_rollback` DAG.

**Owner:** mlops platform team (#mlops-platform).

## Triggers
- The `model_candidates` asset: every candidate that `mlops_training` registers
  (model and version come from the event's `extra`).
- The UI form: model, version, auto-promote, analysis duration, scale-down delay, dry run.
- The REST API: `POST /api/v2/dags/mlops_promotion/dagRuns`
  `{"logical_date": null, "conf": {"model": "digits-mlp", "version": "v2026...", ...}}`.

## Concurrency
Runs of different models proceed in parallel. Runs of the same model take turns: each holds the
model's lease from `take_lease` to `clean_up`; a second run waits in `take_lease` (a
reschedule-mode sensor, no worker slot). `mlops_rollback` does not wait: it pre-empts the lease,
and the pre-empted run fails at its next step without touching what the rollback did.

## Tasks
1. `resolve_request`: model/version (params or asset event), checked in the registry. Other
   models' candidates that arrived in the same batch get a run each (`promote_other_candidates`).
2. `take_lease` (setup): the model's `coordination.k8s.io` Lease `mlops-promotion-MODEL`; waits
   while another run of this model holds it. Every later step renews it (before the approval: for
   the whole 4 h wait plus 30 min); a step of a run that lost it fails with "lease lost".
3. `reconcile`: compares the cluster with the registry and repairs what it safely can (below).
4. `resolve_active_color`: the active Service's selector. A version already serving: skip.
5. `deploy_candidate`, 6. `wait_for_rollout` (`observedGeneration >= generation`, all counts equal).
7. `run_pre_promotion_analysis`: /ready, /version, smoke predictions, accuracy, Prometheus.
8. `decide_approval` / `approve_promotion`: with auto-promote off, waits up to 4 h in
   Required actions. **Approve** switches traffic. **Reject** ends the run **successful** (the
   decision was carried out; nothing is promoted): the switch and later steps show skipped,
   `clean_up` scales the candidate to 0 and releases the lease, `notify` posts "rejected".
9. `switch_traffic`, 10. `run_post_promotion_analysis`, 11. `move_registry_pointer`.
12. `wait_before_scale_down` (in the triggerer, no worker slot), 13. `scale_down_previous_color`.
14. `clean_up` (teardown: runs after success, failure, skip, Reject, timeout, mark-failed):
    before the switch it scales the candidate to 0; after a failed switch it restores the previous
    color; it releases the lease. A failed step still fails the run. 15. `notify`: Slack/PagerDuty.

## Which state is the truth
The registry's production pointer says which version serves production; the active Service's
selector, the color's Deployment template and its `mlops.io/active-version` annotation must agree
with it. `reconcile` repairs a disagreement it can repair safely and fails the run naming the exact
hand repair otherwise (the README's promotion section says how).

## Triage
- `reconcile` failed "the cluster and the registry disagree": run the repair its message names.
- `take_lease` keeps waiting: another run of this model holds the lease (its holder is in the log).
  If that run died, the lease expires after `MLOPS_PROMOTION_LEASE_SECONDS`.
- `resolve_request` failed: the model/version is not in the registry (message names it).
- `wait_for_rollout` failed: `kubectl -n ml-serving describe deploy MODEL-COLOR` and the pods'
  events/logs (image pull, crash, readiness). Production was not touched.
- `run_pre_promotion_analysis` / `run_post_promotion_analysis` failed: the message lists each
  gate's verdict; after the switch, `clean_up` restored traffic (see its log).
- `approve_promotion` has a second try: an answer given within a second of the request was kept
  across apache/airflow#72716 (see `mlops.promotion.operators`); nothing to do.
- A step failed with "lease lost": `mlops_rollback` (or an expired lease) took the model over.
  The rollback's state stands; `clean_up` left it alone.
- "denied 'VERB' on 'RESOURCE'": the Airflow service account lacks that RBAC permission.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import dag, get_current_context, task

from mlops import tags
from mlops.assets import MODEL_CANDIDATES
from mlops.callbacks import failure_callbacks, success_callbacks
from mlops.promotion import tasks as steps
from mlops.promotion.operators import DeferredDelay, PromotionApproval
from mlops.promotion.params import promotion_params

final = steps.final_verdicts
REQUEST = "ti.xcom_pull(task_ids='resolve_request')"


@dag(
    schedule=[MODEL_CANDIDATES],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=16,  # runs of different models in parallel; the model's lease serializes one model
    dagrun_timeout=timedelta(hours=6),
    params=promotion_params(),
    tags=[tags.PROMOTION, tags.KUBERNETES, tags.S3, tags.ALERTING, tags.API_TRIGGERED],
    doc_md=__doc__,
    default_args={
        "owner": "mlops-platform",
        "retries": 1,
        "retry_delay": timedelta(seconds=20),
        "on_failure_callback": failure_callbacks(),
        "on_success_callback": success_callbacks(),  # resolves a task's failure incident
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

    TriggerDagRunOperator.partial(
        task_id="promote_other_candidates", trigger_dag_id="mlops_promotion", wait_for_completion=False
    ).expand(conf=list_other_candidates())

    take_lease = task.sensor(poke_interval=10, timeout=6 * 3600, mode="reschedule")(final()(steps.take_lease))
    reconcile = task(final()(steps.reconcile))
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

    approve_promotion = PromotionApproval(
        task_id="approve_promotion",
        subject=f"Promote {{{{ {REQUEST}['model'] }}}} {{{{ {REQUEST}['version'] }}}}?",
        body="Pre-promotion analysis passed:\n\n"
        "```\n{{ ti.xcom_pull(task_ids='run_pre_promotion_analysis') }}\n```"
        "\n\nApprove switches production traffic to the candidate. Reject scales it down.",
        response_timeout=steps.APPROVAL_TIMEOUT,
        retries=2,  # an answer that races its own resume is kept (PromotionApproval)
        retry_delay=timedelta(seconds=3),
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
        return steps.run_post_promotion_analysis(request, switched)

    @task
    @final()
    def move_registry_pointer(request: dict, report: dict) -> dict | None:
        return steps.move_registry_pointer(request)

    wait_before_scale_down = DeferredDelay(
        task_id="wait_before_scale_down",
        delay_seconds=f"{{{{ {REQUEST}['scale_down_delay_seconds'] if not {REQUEST}['dry_run'] else 0 }}}}",
    )

    @task
    @final()
    def scale_down_previous_color(request: dict, state: dict) -> dict:
        return steps.scale_down_previous_color(request, state)

    @task(retries=3)
    def clean_up() -> str:
        """Teardown: undo an unfinished promotion (before or after the switch) and release the lease."""
        return steps.clean_up(get_current_context()["ti"])

    @task(trigger_rule="none_failed_min_one_success")
    def notify() -> dict:
        """Slack summary and PagerDuty change event of what happened."""
        ctx = get_current_context()
        return steps.announce(ctx["ti"], ctx["dag"].dag_id, ctx["run_id"])

    request = resolve_request()
    lease = take_lease(request)
    reconciled = reconcile(request)
    state = resolve_active_color(request)
    deployed = deploy_candidate(request, state)
    rollout = wait_for_rollout(request, deployed)
    pre = run_pre_promotion_analysis(request, rollout)
    decision = decide_approval(request, pre)
    switched = switch_traffic(state)
    post = run_post_promotion_analysis(request, switched)
    pointer = move_registry_pointer(request, post)
    scaled = scale_down_previous_color(request, state)
    lease >> reconciled >> state
    decision >> [approve_promotion, switched]
    approve_promotion >> switched
    pointer >> wait_before_scale_down >> scaled

    cleaned = clean_up().as_teardown(setups=lease, on_failure_fail_dagrun=True)
    scaled >> cleaned
    [scaled, cleaned] >> notify()


mlops_promotion()
