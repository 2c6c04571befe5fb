"""What reaches PagerDuty and Slack when a verification fails or passes (the DAG task's code path)."""

from __future__ import annotations

import json
from datetime import date
from types import SimpleNamespace

import pytest

from mlops.backups.postgres import PgTarget, backup_database, manifest_key_of
from mlops.backups.s3 import s3_client
from mlops.backups.tasks import verify_postgres
from mlops.backups.verify import VerificationFailed
from mlops.callbacks import failure_callbacks
from mlops.settings import get_settings

DAY = date(2026, 3, 1)


def _backup(db: str, bucket: str, pg_bin: str) -> dict:
    settings = get_settings()
    m = backup_database(
        s3_client(settings),
        PgTarget.from_connection(settings.postgres_conn_id),
        bucket=bucket,
        logical_date=DAY,
        pg_bin_dir=pg_bin,
    )
    return {"database": db, "key": m.key, "manifest_key": manifest_key_of(m)}


def _truncate(s3_client, bucket: str, key: str) -> None:
    data = s3_client.get_object(Bucket=bucket, Key=key)
    s3_client.put_object(Bucket=bucket, Key=key, Body=data["Body"].read()[:-100])


def _task_failed(error: BaseException) -> None:
    """What Airflow does next: the DAG's failure callback, with the task's exception."""
    ti = SimpleNamespace(dag_id="mlops_backups", task_id="verify_postgres_backup", run_id="manual__v",
                         try_number=1, log_url="")  # fmt: skip
    (notifier,) = failure_callbacks()
    notifier({"ti": ti, "run_id": "manual__v", "exception": error})


def test_failed_verification_pages_critical_once_per_database_and_fails(
    seeded_db, backup_bucket, pg_bin, s3_client, alert_conns, verify_conn
):
    slack, pagerduty = alert_conns
    backup = _backup(seeded_db, backup_bucket, pg_bin)
    _truncate(s3_client, backup_bucket, backup["key"])

    with pytest.raises(VerificationFailed):
        verify_postgres(backup, run_url="http://airflow.example/run")

    (event,) = pagerduty.bodies()
    assert event["event_action"] == "trigger"
    assert event["dedup_key"] == f"mlops-backups/verify/{seeded_db}"
    assert event["payload"]["severity"] == "critical"
    assert event["payload"]["summary"].startswith(
        f"Backup verification failed for database {seeded_db}: size"
    )
    assert event["links"] == [{"href": "http://airflow.example/run", "text": "Airflow run"}]
    assert slack.bodies() == []
    assert s3_client.list_objects_v2(Bucket=backup_bucket, Prefix="_markers/").get("KeyCount") == 0


def test_the_task_failure_callback_does_not_page_a_second_time_for_a_paged_verification(
    seeded_db, backup_bucket, pg_bin, s3_client, alert_conns, verify_conn
):
    slack, pagerduty = alert_conns
    backup = _backup(seeded_db, backup_bucket, pg_bin)
    _truncate(s3_client, backup_bucket, backup["key"])
    with pytest.raises(VerificationFailed) as failed:
        verify_postgres(backup)

    _task_failed(failed.value)

    # One incident: the critical, per-database one. The generic callback is inhibited from paging...
    assert [e["dedup_key"] for e in pagerduty.bodies()] == [f"mlops-backups/verify/{seeded_db}"]
    # ...and still tells Slack, naming the incident that pages.
    (message,) = slack.bodies()
    assert message["text"] == "Airflow task failed: mlops_backups.verify_postgres_backup"
    assert f"*Paged as* `mlops-backups/verify/{seeded_db}`" in json.dumps(message["blocks"])


def test_when_the_verification_page_was_not_delivered_the_task_failure_callback_pages(
    seeded_db, backup_bucket, pg_bin, s3_client, alert_conns, verify_conn
):
    slack, pagerduty = alert_conns
    backup = _backup(seeded_db, backup_bucket, pg_bin)
    _truncate(s3_client, backup_bucket, backup["key"])
    pagerduty.fail_next(500, times=4)  # the first try and its three retries: the critical page is lost
    with pytest.raises(VerificationFailed) as failed:
        verify_postgres(backup)

    _task_failed(failed.value)

    *lost, event = pagerduty.bodies()  # four failed tries of the critical page, then the generic page
    assert [e["dedup_key"] for e in lost] == [f"mlops-backups/verify/{seeded_db}"] * 4
    assert event["dedup_key"] == "airflow/mlops_backups/verify_postgres_backup"  # one incident per task
    assert event["payload"]["summary"].startswith("Airflow task failed: mlops_backups.verify_postgres_backup")
    assert "Paged as" not in json.dumps(slack.bodies())


def test_passed_verification_resolves_the_incident_and_posts_a_slack_summary(
    seeded_db, backup_bucket, pg_bin, alert_conns, verify_conn
):
    slack, pagerduty = alert_conns
    result = verify_postgres(_backup(seeded_db, backup_bucket, pg_bin))

    assert result["tables"]["public.runs"] == 1200
    assert [(e["event_action"], e["dedup_key"]) for e in pagerduty.bodies()] == [
        ("resolve", f"mlops-backups/verify/{seeded_db}")
    ]
    (message,) = slack.bodies()
    assert message["text"] == f"Backup verified: {seeded_db} (2026-03-01)"
    assert "row counts equal to the manifest" in json.dumps(message["blocks"])
