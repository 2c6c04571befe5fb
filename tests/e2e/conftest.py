"""The e2e tier: a real `airflow standalone` wired to the session's harness servers."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from mlops.dev.connections import connections_env, load_dev_connections
from tests.conftest import REPO_ROOT
from tests.harness.standalone import Standalone

E2E_NAMESPACE = "e2e-training"


@pytest.fixture(scope="session")
def standalone(session_dir, s3_server, s3_client, kube, _slack, _pagerduty) -> Iterator[Standalone]:
    kube.create_namespace(E2E_NAMESPACE)
    for bucket in ("mlops-artifacts", "mlops-backups"):
        s3_client.create_bucket(Bucket=bucket)
    values = {
        "S3_ENDPOINT": s3_server,
        "KUBECONFIG": kube.kubeconfig,
        "TRAINING_NAMESPACE": E2E_NAMESPACE,
        "SLACK_WEBHOOK_BASE": f"{_slack.url}/services",
        "PAGERDUTY_EVENTS_URL": _pagerduty.url,
        "PAGERDUTY_CA_BUNDLE": _pagerduty.ca_path or "",
    }
    env = {
        **connections_env(load_dev_connections(values)),
        "MLOPS_TRAINING_NAMESPACE": E2E_NAMESPACE,
        "MLOPS_SERVING_NAMESPACE": E2E_NAMESPACE,
        "MLOPS_TRAINER_S3_ENDPOINT": s3_server,
    }
    server = Standalone(home=session_dir / "standalone", dags_folder=REPO_ROOT / "dags", env=env)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def api(standalone):
    return standalone.client()


def wait_for_dag(api, dag_id: str, timeout: float = 120) -> None:
    """Wait until the dag-processor has serialized the DAG, then unpause it."""
    import airflow_client.client as ac

    dags = ac.DAGApi(api)
    deadline = time.monotonic() + timeout
    while True:
        try:
            dags.get_dag(dag_id)
            break
        except ac.ApiException as exc:
            if exc.status != 404 or time.monotonic() > deadline:
                raise
            time.sleep(1)
    dags.patch_dag(dag_id, ac.DAGPatchBody(is_paused=False))
