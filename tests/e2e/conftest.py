"""The e2e tier: a real `airflow standalone` wired to the session's harness servers."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from mlops.dev.connections import connections_env, load_dev_connections
from tests.conftest import REPO_ROOT
from tests.harness.platform_cluster import prepare_platform
from tests.harness.standalone import Standalone

E2E_NAMESPACE = "e2e-training"
SERVING_NAMESPACE = "e2e-serving"
TRAINER_IMAGE = "registry.example.com/mlops/trainer:e2e"
SERVER_IMAGE = "registry.example.com/mlops/model-server:e2e"
LOOP_MODEL = "digits-e2e"
PLATFORM_DB = "platform"
S3_SECRET = "mlops-s3"


def _health_checks(kube) -> str:
    """The e2e health checks: the loop model's active Service, by its DNS name (the cluster network)."""
    base = kube.service_url_template.format(namespace=SERVING_NAMESPACE, service=LOOP_MODEL, port=80)
    return f"""
defaults:
  timeout_seconds: 5
  failures_before_alert: 2
  severity: critical
checks:
  - name: model-server-ready
    type: http
    description: The live model server has its model loaded and accepts traffic.
    url: {base}/ready
    expect_status: [200]
"""


@pytest.fixture(scope="session")
def standalone(
    session_dir, s3_server, s3_client, kube, worker_kubeconfig, pg_cluster, _slack, _pagerduty
) -> Iterator[Standalone]:
    """`airflow standalone` with the project's DAGs, wired to every harness server.

    The simulated cluster runs the project's own trainer and model server as local processes.
    Airflow reaches it as its worker service account, with exactly the shipped RBAC (issue 16),
    and reaches the model servers by their Services' DNS names, as the shipped values configure it.
    """
    from tests.harness.platform_rbac import apply_shipped_rbac

    images = {TRAINER_IMAGE: "mlops.trainer", SERVER_IMAGE: "mlops.serving"}
    prepare_platform(kube, (E2E_NAMESPACE, SERVING_NAMESPACE), S3_SECRET, images)
    apply_shipped_rbac(kube, {"ml-training": E2E_NAMESPACE, "ml-serving": SERVING_NAMESPACE}, True)
    for bucket in ("mlops-artifacts", "mlops-backups"):
        s3_client.create_bucket(Bucket=bucket)
    pg_cluster.execute(f'CREATE DATABASE "{PLATFORM_DB}"')
    pg_cluster.execute(
        "CREATE TABLE runs (id serial primary key, model text, accuracy float);"
        "INSERT INTO runs (model, accuracy) SELECT 'm' || g, g / 100.0 FROM generate_series(1, 500) g;",
        PLATFORM_DB,
    )
    checks = session_dir / "e2e-health-checks.yaml"
    checks.write_text(_health_checks(kube))
    values = {
        "S3_ENDPOINT": s3_server,
        "KUBECONFIG": worker_kubeconfig,
        "TRAINING_NAMESPACE": E2E_NAMESPACE,
        "PG_HOST": pg_cluster.host,
        "PG_PORT": str(pg_cluster.port),
        "PG_USER": pg_cluster.user,
        "PG_DATABASE": PLATFORM_DB,
        "SLACK_WEBHOOK_BASE": f"{_slack.url}/services",
        "PAGERDUTY_EVENTS_URL": _pagerduty.url,
        "PAGERDUTY_CA_BUNDLE": _pagerduty.ca_path or "",
    }
    env = {
        **connections_env(load_dev_connections(values)),
        "MLOPS_TRAINING_NAMESPACE": E2E_NAMESPACE,
        "MLOPS_SERVING_NAMESPACE": SERVING_NAMESPACE,
        "MLOPS_TRAINER_IMAGE": TRAINER_IMAGE,
        "MLOPS_TRAINER_S3_SECRET": S3_SECRET,
        "MLOPS_TRAINER_S3_ENDPOINT": s3_server,
        "MLOPS_MODEL_SERVER_IMAGE": SERVER_IMAGE,
        "MLOPS_MODEL_SERVER_S3_SECRET": S3_SECRET,
        "MLOPS_MODEL_SERVER_REPLICAS": "1",
        "MLOPS_MODEL_SERVER_PROGRESS_DEADLINE_SECONDS": "120",
        "MLOPS_PROMOTION_POLL_SECONDS": "0.5",
        "MLOPS_SERVING_ACCESS": "direct",
        "MLOPS_SERVING_DIRECT_URL": kube.service_url_template,
        "MLOPS_TRAINING_BUDGET_POLL_SECONDS": "2",  # the training run ends within 2 s of its work
        "MLOPS_PG_BIN": "/usr/lib/postgresql/15/bin",
        "MLOPS_BACKUP_VERIFY_ON_SOURCE": "true",  # one test cluster: restore tests on the source
        "MLOPS_HEALTH_CHECKS_PATH": str(checks),
    }
    pg_cluster.execute('CREATE DATABASE "airflow_e2e"')
    server = Standalone(
        home=session_dir / "standalone",
        dags_folder=REPO_ROOT / "dags",
        env=env,
        metadata_db=f"postgresql+psycopg2://{pg_cluster.user}@{pg_cluster.host}:{pg_cluster.port}/airflow_e2e",
    )
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def api(standalone):
    return standalone.client()


def parsed_dag(api, dag_id: str, timeout: float = 120):
    """The DAG as the API serves it, once the dag-processor has serialized it (404 until then)."""
    import airflow_client.client as ac

    dags = ac.DAGApi(api)
    deadline = time.monotonic() + timeout
    while True:
        try:
            return dags.get_dag(dag_id)
        except ac.ApiException as exc:
            if exc.status != 404 or time.monotonic() > deadline:
                raise
            time.sleep(1)


def wait_for_dag(api, dag_id: str, timeout: float = 120) -> None:
    """Wait until the dag-processor has serialized the DAG, then unpause it."""
    import airflow_client.client as ac

    parsed_dag(api, dag_id, timeout)
    ac.DAGApi(api).patch_dag(dag_id, ac.DAGPatchBody(is_paused=False))
