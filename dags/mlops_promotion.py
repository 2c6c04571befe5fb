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
from mlops.promotion import final_verdicts, promotion_params

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
    @final_verdicts()
    def resolve_request() -> dict:
        """Model and version from the params or the triggering asset event; checked in the registry."""
        from mlops.promotion import resolve_request as resolve

        ctx = get_current_context()
        return resolve(ctx["params"], ctx.get("triggering_asset_events"), ctx["dag"].dag_id, ctx["run_id"])

    @task
    def list_other_candidates() -> list[dict]:
        """Candidates of other models that arrived in the same batch of asset events."""
        from mlops.promotion import other_candidates

        return other_candidates(get_current_context().get("triggering_asset_events"))

    # One promotion run each, queued behind this one (max_active_runs=1): no candidate is dropped.
    TriggerDagRunOperator.partial(
        task_id="promote_other_candidates", trigger_dag_id="mlops_promotion", wait_for_completion=False
    ).expand(conf=list_other_candidates())

    @task.branch
    def choose_path(request: dict) -> str:
        return "rollback_traffic" if request["rollback"] else "resolve_active_color"

    @task
    @final_verdicts()
    def resolve_active_color(request: dict) -> dict:
        """The active color from the Service's selector; takes the promotion lease."""
        from airflow.sdk.exceptions import AirflowSkipException

        from mlops import bluegreen
        from mlops.promotion import cluster
        from mlops.settings import get_settings

        state = bluegreen.resolve_active_color(
            cluster(),
            request["model"],
            request["holder"],
            get_settings().promotion_lease_seconds,
            request["dry_run"],
            version=request["version"],
        )
        if state["already_active"]:
            raise AirflowSkipException(f"{request['model']} {request['version']} already serves production")
        return state

    @task
    @final_verdicts()
    def deploy_candidate(request: dict, state: dict) -> dict:
        """Create or patch the idle color's Deployment (and HPA, PDB); point the preview Service at it."""
        from mlops import bluegreen
        from mlops.promotion import cluster, serving_spec

        kube = cluster()
        spec = serving_spec(request, state["candidate_color"], kube.namespace)
        return bluegreen.deploy_candidate(kube, spec, request["holder"], request["dry_run"])

    @task
    @final_verdicts()
    def wait_for_rollout(request: dict, deployed: dict) -> dict:
        """Complete only when observedGeneration >= generation and updated = ready = available = desired."""
        from mlops import bluegreen
        from mlops.promotion import cluster
        from mlops.settings import get_settings

        if request["dry_run"]:
            return {"dry_run": True}
        s = get_settings()
        return bluegreen.wait_for_rollout(
            cluster(),
            deployed["deployment"],
            request["version"],
            deployed["generation"],
            s.promotion_rollout_timeout_seconds,
            s.promotion_poll_seconds,
        )

    @task
    @final_verdicts()
    def run_pre_promotion_analysis(request: dict, rollout: dict) -> dict:
        """Gates through the preview Service: ready, version, smoke predictions, quality, Prometheus."""
        from mlops import analysis
        from mlops.manifests.render import preview_service_name
        from mlops.promotion import cluster, prometheus_gate, samples_for, service_client

        if request["dry_run"]:
            return {"dry_run": True}
        kube = cluster()
        report = analysis.pre_promotion(
            service_client(kube, preview_service_name(request["model"])),
            request["model"],
            request["version"],
            samples_for(request),
            request["candidate_accuracy"],
            request["production_accuracy"],
            analysis.Gates.from_settings(),
            prometheus_gate(),
        )
        return report.raise_if_failed().as_dict()

    @task.branch
    def decide_approval(request: dict, report: dict) -> list[str]:
        """Auto-promote: straight to the switch. Otherwise the switch also waits for the approval."""
        if request["auto_promote"] or request["dry_run"]:
            return ["switch_traffic"]
        return ["approve_promotion", "switch_traffic"]

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
    @final_verdicts()
    def switch_traffic(state: dict) -> dict:
        """One patch of the active Service's selector, guarded by resourceVersion and the lease."""
        from mlops import bluegreen
        from mlops.promotion import cluster

        # Pulled, not passed: an upstream resolve_request must not make a skipped promotion run this.
        request = get_current_context()["ti"].xcom_pull(task_ids="resolve_request")

        return bluegreen.switch_traffic(
            cluster(),
            request["model"],
            state["candidate_color"],
            state["active_color"],
            request["version"],
            request["holder"],
            request["dry_run"],
        )

    @task
    @final_verdicts()
    def run_post_promotion_analysis(request: dict, switched: dict) -> dict:
        """The live checks through the active Service, for the analysis window."""
        from mlops import analysis
        from mlops.manifests.render import active_service_name
        from mlops.promotion import cluster, prometheus_gate, samples_for, service_client

        if request["dry_run"]:
            return {"dry_run": True}
        report = analysis.analysis_window(
            service_client(cluster(), active_service_name(request["model"])),
            request["model"],
            request["version"],
            samples_for(request),
            analysis.Gates.from_settings(),
            request["analysis_duration_seconds"],
            interval_seconds=min(5.0, max(0.5, request["analysis_duration_seconds"] / 10)),
            prometheus=prometheus_gate(),
        )
        return report.raise_if_failed().as_dict()

    @task
    @final_verdicts()
    def move_registry_pointer(request: dict, report: dict) -> dict | None:
        """Production pointer -> the candidate (compare-and-swap against what was read at the start)."""
        from mlops.registry import ModelRegistry

        if request["dry_run"]:
            return None
        return ModelRegistry.from_settings().promote(
            request["model"], request["version"], request["production_version"], request["holder"]
        )

    @task
    @final_verdicts()
    def scale_down_previous_color(request: dict, state: dict, pointer: dict | None) -> dict:
        """After scale_down_delay_seconds, the old color goes to 0 replicas; its Deployment stays."""
        from mlops import bluegreen
        from mlops.promotion import cluster

        return bluegreen.scale_down(
            cluster(),
            request["model"],
            state["active_color"],
            request["scale_down_delay_seconds"],
            request["dry_run"],
        )

    @task
    @final_verdicts()
    def rollback_traffic(request: dict) -> dict:
        """Scale the previous color up if needed, then switch the active Service back to it."""
        from mlops import bluegreen
        from mlops.promotion import cluster
        from mlops.settings import get_settings

        s = get_settings()
        kube = cluster()
        bluegreen.resolve_active_color(
            kube, request["model"], request["holder"], s.promotion_lease_seconds, request["dry_run"]
        )
        return bluegreen.rollback(
            kube,
            request["model"],
            request["holder"],
            s.promotion_rollout_timeout_seconds,
            s.promotion_poll_seconds,
            request["dry_run"],
        )

    @task
    @final_verdicts()
    def roll_back_registry_pointer(request: dict, outcome: dict) -> dict | None:
        from mlops.registry import ModelRegistry

        if request["dry_run"]:
            return None
        return ModelRegistry.from_settings().rollback(request["model"], request["holder"])

    @task
    @final_verdicts()
    def scale_down_rolled_back_color(request: dict, outcome: dict, pointer: dict | None) -> dict:
        from mlops import bluegreen
        from mlops.promotion import cluster

        return bluegreen.scale_down(
            cluster(),
            request["model"],
            outcome.get("from_color"),
            request["scale_down_delay_seconds"],
            request["dry_run"],
        )

    @task(trigger_rule="none_failed_min_one_success")
    def notify() -> dict:
        """Slack summary and PagerDuty change event of what happened."""
        from mlops.promotion import notify as send
        from mlops.settings import get_settings

        ctx = get_current_context()
        ti = ctx["ti"]
        request = ti.xcom_pull(task_ids="resolve_request")
        if request["rollback"]:
            outcome = dict(ti.xcom_pull(task_ids="rollback_traffic") or {})
        else:
            outcome = {
                **(ti.xcom_pull(task_ids="switch_traffic") or {}),
                "pre_promotion": _verdicts(ti.xcom_pull(task_ids="run_pre_promotion_analysis")),
                "post_promotion": _verdicts(ti.xcom_pull(task_ids="run_post_promotion_analysis")),
            }
        outcome["dry_run"] = request["dry_run"] or None
        run_url = f"{get_settings().airflow_base_url}/dags/{ctx['dag'].dag_id}/runs/{ctx['run_id']}"
        return send(request, outcome, run_url)

    @task(trigger_rule="all_done", retries=3)
    def clean_up(request: dict | None = None) -> str:
        """Always runs: undo a failed promotion (before or after the switch) and release the lease."""
        from mlops import bluegreen
        from mlops.promotion import cluster
        from mlops.settings import get_settings

        ti = get_current_context()["ti"]
        request = request or ti.xcom_pull(task_ids="resolve_request")
        if not request or request["dry_run"]:
            return "nothing to clean up"
        kube = cluster()
        if request["rollback"]:
            bluegreen.release_lease(kube, request["model"], request["holder"])
            return "lease released"
        state = ti.xcom_pull(task_ids="resolve_active_color")
        if not state:
            return "the lease was never taken: nothing to clean up"
        completed = ti.xcom_pull(task_ids="move_registry_pointer") is not None
        s = get_settings()
        return bluegreen.clean_up(
            kube,
            request["model"],
            state["candidate_color"],
            state["active_color"],
            request["holder"],
            completed,
            s.promotion_rollout_timeout_seconds,
            s.promotion_poll_seconds,
        )

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
    all_steps = [
        path,
        state,
        deployed,
        rollout,
        pre,
        decision,
        approve_promotion,
        switched,
        post,
        pointer,
        scaled,
        rolled,
        back_pointer,
        rolled_scaled,
        notified,
    ]
    all_steps >> cleaned
    [*all_steps, request, cleaned] >> fail_run_if_any_failed()


def _verdicts(report: dict | None) -> str | None:
    if not report or report.get("dry_run"):
        return None
    return ", ".join(f"{c['name']} {'ok' if c['ok'] else 'FAILED'}" for c in report.get("checks", []))


mlops_promotion()
