"""The e2e tier: a real `airflow standalone` wired to the session's harness servers."""

from __future__ import annotations

import dataclasses
import json
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


# -- the platform loop's stages: each test asks for the stage it needs (tests/e2e/flows.py) ---------
@pytest.fixture(scope="session")
def loop_unpaused(api) -> None:
    """Every loop DAG parsed and unpaused, and the scheduled runs that unpausing started finished
    (so what a test measures next meets an idle scheduler, as a caller usually does)."""
    from tests.e2e.flows import LOOP_DAG_IDS, wait_until_quiet

    for dag_id in LOOP_DAG_IDS:
        wait_for_dag(api, dag_id)
    wait_until_quiet(api)


@pytest.fixture(scope="session")
def loop_training(api, kube, loop_unpaused):
    """The loop model's training run, triggered through the REST API with a full conf, as another
    system retrains a model: returned once its pod was POSTed to the Kubernetes API."""
    from tests.e2e.flows import Training, trigger, wait

    conf = {
        "model_name": LOOP_MODEL,
        "epochs": 4,
        "batch_size": 32,
        "learning_rate": 0.01,
        "compute_profile": "gpu-small",
        "gpus": 2,
        "image": TRAINER_IMAGE,
        "seed": 7,
        "promote": True,  # a REST-triggered run is promoted only when it asks
    }
    started = time.monotonic()
    run_id = trigger(api, "mlops_training", conf)

    def pod_post():
        for request in kube.requests_matching("POST", rf"/namespaces/{E2E_NAMESPACE}/pods$"):
            if {"name": "RUN_ID", "value": run_id} in request.body["spec"]["containers"][0]["env"]:
                return request
        return None

    post = wait("the training pod's POST", pod_post, 60, 0.05)
    env = {e["name"]: e.get("value") for e in post.body["spec"]["containers"][0]["env"]}
    return Training(run_id, env["MODEL_VERSION"], post.body, time.monotonic() - started)


@pytest.fixture(scope="session")
def loop_trained(api, standalone, loop_training):
    """The training run finished; it must have succeeded."""
    from tests.e2e.flows import wait_run

    state = wait_run(api, standalone, "mlops_training", loop_training.run_id, 240)
    assert state == "success", f"the loop's training run {loop_training.run_id} ended {state}"
    return loop_training


@pytest.fixture(scope="session")
def loop_promoted(kube, s3_client, loop_trained):
    """The trained version took production: the asset-triggered promotion switched the active
    Service to it and moved the registry's pointer."""
    from tests.e2e.flows import call_service, production, wait

    def serving_it():
        status, body = call_service(kube, SERVING_NAMESPACE, LOOP_MODEL, "/version")
        return status == 200 and body.get("model_version") == loop_trained.version

    def pointer_moved():
        pointer = production(s3_client, LOOP_MODEL)
        return bool(pointer) and pointer["version"] == loop_trained.version

    wait("the active Service to answer from the trained version", serving_it, 240, 1)
    wait("the registry's production pointer to move", pointer_moved, 240, 1)
    holder = production(s3_client, LOOP_MODEL)["updated_by"]  # "mlops_promotion/<run id>"
    return dataclasses.replace(loop_trained, promotion_run=holder.split("/", 1)[1])


@pytest.fixture(scope="session")
def loop_with_history(api, standalone, s3_client, loop_promoted) -> None:
    """Production has a previous version to roll back to: when the loop's approval test has not
    made one yet, a copy of the serving version is promoted through the REST API."""
    from tests.e2e.flows import production, register_copy, trigger, wait_run

    pointer = production(s3_client, LOOP_MODEL)
    if pointer.get("previous_version"):
        return
    new = register_copy(s3_client, LOOP_MODEL, pointer["version"], f"{pointer['version'][:40]}-again", "e2e")
    conf = {"analysis_duration_seconds": 2, "scale_down_delay_seconds": 0}
    run_id = trigger(api, "mlops_promotion", {"model": LOOP_MODEL, "version": new, **conf})
    assert wait_run(api, standalone, "mlops_promotion", run_id, 300) == "success"


@pytest.fixture(scope="session")
def loop_backed_up(api, standalone, s3_client, loop_unpaused) -> dict:
    """A verified backup of the platform database exists (the one unpausing started, or one run now)."""
    from tests.e2e.flows import BACKUPS, trigger, wait_run

    key = f"_markers/postgres/{PLATFORM_DB}/last_verified.json"

    def marker() -> dict | None:
        try:
            return json.loads(s3_client.get_object(Bucket=BACKUPS, Key=key)["Body"].read())
        except s3_client.exceptions.NoSuchKey:
            return None

    if marker() is None:
        run_id = trigger(api, "mlops_backups", {"artifacts": True, "kubernetes": True, "postgres": True})
        assert wait_run(api, standalone, "mlops_backups", run_id, 300) == "success"
    return marker()
