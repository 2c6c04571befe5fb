"""The training DAG's triggers, retry policy and alerting, as the scheduler sees them."""

from __future__ import annotations


def _dag(parsed):
    return parsed.dagbag.dags["mlops_training"]


def test_runs_nightly_at_two_utc_without_catchup(parsed):
    dag = _dag(parsed)
    timetable = dag.timetable
    assert (getattr(timetable, "expression", None) or timetable._expression) == "0 2 * * *"
    assert dag.catchup is False


def test_the_pod_task_retries_with_exponential_backoff_then_registration_follows(parsed):
    dag = _dag(parsed)
    train = dag.get_task("train_model")
    assert train.retries == 3 and train.retry_exponential_backoff
    assert dag.get_task("register_candidate").upstream_task_ids == {"train_model"}


def test_registration_announces_candidates_on_the_asset_promotion_listens_to(parsed):
    dag = _dag(parsed)
    outlets = dag.get_task("register_candidate").outlets
    assert [o.name for o in outlets] == ["model_candidates"]
    promotion = parsed.dagbag.dags["mlops_promotion"]
    assert "model_candidates" in repr(promotion.timetable.asset_condition)


def test_a_run_over_budget_raises_a_deadline_alert(parsed):
    deadline = _dag(parsed).deadline
    alerts = deadline if isinstance(deadline, list) else [deadline]
    assert alerts and alerts[0].interval.total_seconds() == 8 * 3600
