"""The mlops_backups DAG end to end with ``dag.test()``: real Postgres, S3, Kubernetes API and receivers."""

from __future__ import annotations

import json
import uuid

import pendulum
import requests

from tests.conftest import REPO_ROOT


def test_nightly_run_backs_up_verifies_syncs_exports_and_reports(
    airflow_db,
    seeded_db,
    backup_bucket,
    pg_bin,
    s3_client,
    alert_conns,
    kube,
    kube_conn,
    verify_conn,
    pushgateway,
    monkeypatch,
):
    slack, pagerduty = alert_conns
    artifacts = f"art-{uuid.uuid4().hex[:10]}"
    s3_client.create_bucket(Bucket=artifacts)
    for i in range(5):
        s3_client.put_object(Bucket=artifacts, Key=f"models/churn/v{i}/model.bin", Body=f"w{i}".encode())
    monkeypatch.setenv("MLOPS_ARTIFACTS_BUCKET", artifacts)
    monkeypatch.setenv("MLOPS_PUSHGATEWAY_URL", pushgateway)
    import kubernetes.client as k8s

    # Set-up as the cluster admin; the DAG's export then runs as the worker (kube_conn).
    k8s.CoreV1Api(kube.admin_api_client()).create_namespaced_config_map(
        kube_conn, {"metadata": {"name": "serving-config"}, "data": {"MODEL": "churn"}}
    )
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(REPO_ROOT / "dags" / "mlops_backups.py"), safe_mode=False).get_dag(
        "mlops_backups"
    )

    run = dag.test(logical_date=pendulum.datetime(2026, 3, 1, 3, tz="UTC"))

    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == "success", states
    keys = {o["Key"] for o in s3_client.list_objects_v2(Bucket=backup_bucket).get("Contents", [])}
    db = seeded_db
    marker = json.loads(
        s3_client.get_object(Bucket=backup_bucket, Key=f"_markers/postgres/{db}/last_verified.json")[
            "Body"
        ].read()
    )
    bid = marker["backup_id"]
    assert {f"postgres/{db}/2026-03-01/{bid}/{db}.dump", f"postgres/{db}/2026-03-01/{bid}/manifest.json",
            "_markers/globals/last_verified.json"} <= keys  # fmt: skip
    assert any(k.startswith("globals/2026-03-01/") and k.endswith("/globals.sql") for k in keys)
    assert any(k.endswith(f"/{kube_conn}/ConfigMap/serving-config.yaml") for k in keys)
    assert {f"artifacts/models/churn/v{i}/model.bin" for i in range(5)} <= keys
    assert (marker["database"], marker["backup_logical_date"], marker["grants_checked"]) == (
        db,
        "2026-03-01",
        True,
    )
    assert marker["tables"]["public.models"] == 250
    rules = s3_client.get_bucket_lifecycle_configuration(Bucket=backup_bucket)["Rules"]
    assert [r["AbortIncompleteMultipartUpload"] for r in rules] == [{"DaysAfterInitiation": 1}]
    pushed = requests.get(f"{pushgateway}/metrics", timeout=5).text
    assert (
        f'mlops_backup_last_verified_timestamp_seconds{{database="{db}",instance="",job="mlops_backups"}}'
        in pushed
    )

    texts = [b.get("text", "") for b in slack.bodies()]
    assert any(t.startswith(f"Backup verified: {db} (2026-03-01)") for t in texts), texts
    events = pagerduty.bodies()
    assert [e["event_action"] for e in events] == ["resolve"]
    assert events[0]["dedup_key"] == f"mlops-backups/verify/{db}"

    # The platform page's Backups section reads what this run wrote (issue 17: after the immutable
    # layout landed, the section broke on the Kubernetes export's new keys and showed no database).
    from mlops_platform_ui.backups import backups_state

    state = backups_state()
    (row,) = state["databases"]
    assert (row["database"], row["verified"], row["backup_date"]) == (db, True, "2026-03-01")
    assert row["key"] == f"postgres/{db}/2026-03-01/{bid}/{db}.dump"
    assert row["size_bytes"] > 0 and row["tables"] == len(marker["tables"]) and row["dump_seconds"] >= 0
    assert row["retention"]["backups"] == 1 and row["retention"]["to_delete"] == 0
    assert state["artifacts"]["objects"] == 5
    export = state["kubernetes"]
    assert (export["date"], export["exports"]) == ("2026-03-01", 1)
    assert kube_conn in export["namespaces"] and export["objects"] >= 1
