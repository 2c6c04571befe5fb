"""Two writers of the alert state on the moto S3 server: the later write is refused, never lost silently."""

from __future__ import annotations

import pytest

from mlops.health import state as state_module
from mlops.health.state import S3StateStore, StateConflictError, apply_report
from tests.unit.health.test_state import SPECS, T0, sweep

KEY = "health/alert-state.json"


@pytest.fixture
def stores(s3_conn, s3_bucket) -> tuple[S3StateStore, S3StateStore]:
    """Two health runs' views of one state object (the Airflow connection points at the moto server)."""
    return S3StateStore(s3_bucket, KEY, "aws_default"), S3StateStore(s3_bucket, KEY, "aws_default")


def test_two_first_writers_one_wins_and_the_other_gets_a_conflict(stores):
    first, second = stores
    state_a, etag_a = first.load()
    state_b, etag_b = second.load()
    assert (etag_a, etag_b) == (None, None)
    apply_report(state_a, sweep(("api", "u", False)), SPECS, "run-a", T0)
    apply_report(state_b, sweep(("pods", "p", False)), SPECS, "run-b", T0)
    first.save(state_a, etag_a)
    with pytest.raises(StateConflictError, match="changed since it was read"):
        second.save(state_b, etag_b)
    stored, _ = second.load()
    assert stored.last_run_id == "run-a" and set(stored.alerts) == {"api/u"}


def test_a_writer_holding_an_old_etag_is_refused_and_its_retry_keeps_both_runs(stores):
    first, second = stores
    state, etag = first.load()
    etag = first.save(state, etag)
    state_a, etag_a = first.load()
    state_b, etag_b = second.load()
    assert etag_a == etag_b == etag
    apply_report(state_a, sweep(("api", "u", False)), SPECS, "run-a", T0)
    first.save(state_a, etag_a)
    apply_report(state_b, sweep(("api", "u", False)), SPECS, "run-b", T0)
    with pytest.raises(StateConflictError):
        second.save(state_b, etag_b)
    # What the health task does on a conflict (tasks.evaluate_and_alert): read again, apply again, save.
    state_b, etag_b = second.load()
    apply_report(state_b, sweep(("api", "u", False)), SPECS, "run-b", T0)
    second.save(state_b, etag_b)
    stored, _ = first.load()
    assert stored.alerts["api/u"].consecutive_failures == 2, "one run's failure was lost"
    assert stored.last_run_id == "run-b"


def test_the_state_is_stored_as_json_through_one_client_per_connection(stores, s3_client, s3_bucket):
    first, _ = stores
    state, etag = first.load()
    first.save(state, etag)
    assert s3_client.head_object(Bucket=s3_bucket, Key=KEY)["ContentType"] == "application/json"
    client = state_module.s3_client("aws_default")
    assert state_module.s3_client("aws_default") is client  # built once: botocore's models cost CPU
    config = client.meta.config
    assert (config.connect_timeout, config.read_timeout) == (10, 30)
    assert config.retries == {"total_max_attempts": 6, "mode": "standard"}  # botocore: 5 retries + the call
    assert state_module.s3_client("aws_default", connect_timeout=2) is not client
