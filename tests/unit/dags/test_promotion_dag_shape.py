"""The promotion and rollback DAGs as the scheduler sees them: what waits where, and what always runs."""

from __future__ import annotations

from mlops.promotion.operators import DeferredDelay, PromotionApproval


def _dag(parsed, dag_id: str = "mlops_promotion"):
    return parsed.dagbag.dags[dag_id]


def test_promotions_of_different_models_run_in_parallel_and_one_model_waits_for_its_lease(parsed):
    dag = _dag(parsed)
    assert dag.max_active_runs > 1
    lease = dag.get_task("take_lease")
    assert lease.is_setup and lease.mode == "reschedule"  # waiting holds no worker slot


def test_reject_cannot_skip_the_clean_up(parsed):
    # ApprovalOperator skips its direct downstream tasks on Reject, except teardown tasks.
    dag = _dag(parsed)
    clean_up = dag.get_task("clean_up")
    assert clean_up.is_teardown and clean_up.trigger_rule == "all_done_setup_success"
    assert "approve_promotion" not in clean_up.upstream_task_ids  # reached through the chain, not skipped


def test_the_approval_keeps_a_quick_answer_across_a_retry_and_waits_four_hours(parsed):
    approval = _dag(parsed).get_task("approve_promotion")
    assert isinstance(approval, PromotionApproval)
    assert approval.retries >= 1 and approval.response_timeout.total_seconds() == 4 * 3600


def test_the_scale_down_delay_waits_in_the_triggerer(parsed):
    dag = _dag(parsed)
    wait = dag.get_task("wait_before_scale_down")
    assert isinstance(wait, DeferredDelay)
    assert wait.downstream_task_ids == {"scale_down_previous_color"}


def test_the_rollback_dag_is_separate_and_asks_only_for_the_model_and_a_reason(parsed):
    rollback = _dag(parsed, "mlops_rollback")
    assert set(rollback.params) == {"model", "reason"}
    assert rollback.max_active_runs > 1 and type(rollback.timetable).__name__ == "NullTimetable"
    assert "rollback" not in _dag(parsed).params
