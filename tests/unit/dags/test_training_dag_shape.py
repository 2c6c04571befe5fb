"""The training DAG's triggers, retry policy and alerting, as the scheduler sees them."""

from __future__ import annotations

import pytest


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


def test_the_run_budget_is_watched_by_a_task_not_a_deadline_alert_that_breaks_clearing(parsed):
    dag = _dag(parsed)
    # A DAGRUN_QUEUED_AT DeadlineAlert makes clearing answer HTTP 500 (apache/airflow#70368).
    assert not dag.deadline
    watcher = dag.get_task("watch_run_budget")
    assert watcher.mode == "reschedule"  # holds no worker slot between looks
    assert set(watcher.watched) == {"train_model", "register_candidate"}
    assert not watcher.upstream_task_ids and not watcher.downstream_task_ids


def test_a_refused_run_alerts_slack_only_and_other_failures_page(parsed):
    from mlops.training.alerts import TrainingFailureAlert

    callbacks = _dag(parsed).get_task("train_model").on_failure_callback
    assert [type(c) for c in callbacks] == [TrainingFailureAlert]


@pytest.mark.parametrize(
    "now",
    [
        "2026-11-29T00:58:00+00:00",  # before 02:00
        "2026-11-29T02:00:30+00:00",  # just after: within run_immediately=False's hidden 2.4 h window
        "2026-11-29T02:26:14+00:00",  # when CI unpaused it and got the 02:00 run at once
        "2026-11-29T23:59:00+00:00",
    ],
)
def test_unpausing_waits_for_the_next_two_oclock_instead_of_starting_a_run_at_once(parsed, now):
    """Issue 17: unpausing started the most recent 02:00 run at once, with the default parameters
    (a start_date with catchup=False does that; so does run_immediately=False within 2.4 h of 02:00);
    the first nightly run is the next 02:00. The scheduler's clock is set by patching Airflow's own
    utcnow in the timetable module (a clock cannot be moved otherwise)."""
    from datetime import datetime, timedelta
    from unittest import mock

    import pendulum
    from airflow.serialization.decoders import decode_timetable
    from airflow.serialization.encoders import encode_timetable
    from airflow.timetables.base import TimeRestriction

    dag = _dag(parsed)
    assert dag.start_date is None
    timetable = decode_timetable(encode_timetable(dag.timetable))  # as the scheduler holds it
    moment = pendulum.instance(datetime.fromisoformat(now))
    with mock.patch("airflow.timetables.trigger.utcnow", return_value=moment):
        info = timetable.next_dagrun_info(
            last_automated_data_interval=None,
            restriction=TimeRestriction(earliest=dag.start_date, latest=None, catchup=dag.catchup),
        )
    assert info.run_after > moment, "a run at once"
    assert info.run_after - moment <= timedelta(days=1)
    assert (info.run_after.hour, info.run_after.minute) == (2, 0)
