"""What reaches PagerDuty and Slack when a verification fails or passes (the DAG task's code path)."""

from __future__ import annotations

import json
from datetime import date

import pytest

from mlops.backups import layout
from mlops.backups.postgres import PgTarget, backup_database
from mlops.backups.s3 import s3_client
from mlops.backups.tasks import verify_postgres
from mlops.backups.verify import VerificationFailed
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
    return {"database": db, "key": m.key, "manifest_key": layout.postgres_manifest_key(db, DAY)}


def test_failed_verification_pages_critical_once_per_database_and_fails(
    seeded_db, backup_bucket, pg_bin, s3_client, alert_conns
):
    slack, pagerduty = alert_conns
    backup = _backup(seeded_db, backup_bucket, pg_bin)
    data = s3_client.get_object(Bucket=backup_bucket, Key=backup["key"])
    s3_client.put_object(
        Bucket=backup_bucket, Key=backup["key"], Body=data["Body"].read()[:-100], Metadata=data["Metadata"]
    )

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


def test_passed_verification_resolves_the_incident_and_posts_a_slack_summary(
    seeded_db, backup_bucket, pg_bin, alert_conns
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
