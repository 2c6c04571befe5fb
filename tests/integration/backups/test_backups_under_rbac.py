"""The nightly backup as Airflow's worker service account under the shipped RBAC (helm-values/platform/).

Before the export had a Role of its own, every list of the Kubernetes export was refused (403), and
retention, downstream of it, ended ``upstream_failed``: the night paged and old backups piled up.
"""

from __future__ import annotations

import pendulum
import pytest

from tests.conftest import REPO_ROOT

DAY = pendulum.datetime(2026, 3, 1, 3, tz="UTC")


@pytest.fixture
def backups_dag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO_ROOT / "dags" / "mlops_backups.py"), safe_mode=False).get_dag(
        "mlops_backups"
    )


@pytest.fixture
def night(
    airflow_db,
    seeded_db,
    backup_bucket,
    pg_bin,
    s3_client,
    alert_conns,
    kube,
    kube_conn_as_worker,
    verify_conn,
    monkeypatch,
):
    artifacts = f"art-{kube_conn_as_worker}"
    s3_client.create_bucket(Bucket=artifacts)
    monkeypatch.setenv("MLOPS_ARTIFACTS_BUCKET", artifacts)
    kube.create(
        {
            "kind": "ConfigMap",
            "metadata": {"name": "serving-config", "namespace": kube_conn_as_worker},
            "data": {"MODEL": "churn"},
        }
    )
    return kube_conn_as_worker


def _keys(s3_client, bucket: str) -> set[str]:
    return {o["Key"] for o in s3_client.list_objects_v2(Bucket=bucket).get("Contents", [])}


def test_the_export_runs_as_the_worker_with_the_shipped_read_only_role(
    backups_dag, night, backup_bucket, s3_client, kube
):
    run = backups_dag.test(logical_date=DAY)

    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["export_kubernetes_config"] == "success", states
    assert states["apply_retention"] == "success", states
    exported = [k for k in _keys(s3_client, backup_bucket) if k.startswith("kubernetes/2026-03-01/")]
    assert any(k.endswith(f"/{night}/ConfigMap/serving-config.yaml") for k in exported), exported
    refused = [r for r in kube.requests if r.namespace == night and r.status == 403]
    assert not refused, [(r.verb, r.resource) for r in refused]


def test_a_refused_export_fails_the_night_but_retention_still_runs(
    backups_dag, night, backup_bucket, s3_client, kube
):
    # The export Role missing in this namespace (an operator who skipped 34-rbac-backups.yaml).
    kube.delete("RoleBinding", night, "mlops-airflow-backup-export")

    run = backups_dag.test(logical_date=DAY)

    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["export_kubernetes_config"] == "failed", states
    # At once: a refused read is not retried (a missing Role does not come back in two minutes).
    (export,) = [ti for ti in run.get_task_instances() if ti.task_id == "export_kubernetes_config"]
    assert export.try_number == 1, export.try_number
    assert states["apply_retention"] == "success", states
    assert run.state == "failed"
    assert any(r.namespace == night and r.status == 403 for r in kube.requests)
