"""Session-wide test harness: real servers, started once, each test isolated.

Airflow reads its configuration from the environment at import time, so the
environment is set here, before anything imports airflow. Every server is a
real one on 127.0.0.1: moto's S3 server, PostgreSQL 15 clusters, the
Slack/PagerDuty receivers and the simulated Kubernetes API.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="mlops-tests-"))
_SESSION_DIR.chmod(0o755)  # the postgres system user must reach its cluster directory

os.environ.update(
    {
        "AIRFLOW_HOME": str(_SESSION_DIR / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "True",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_SESSION_DIR}/airflow/airflow.db",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        # Loopback only: no proxies, and no real AWS credentials can leak into a test.
        "AWS_ACCESS_KEY_ID": "mlops-dev",
        "AWS_SECRET_ACCESS_KEY": "mlops-dev-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
        "NO_PROXY": "127.0.0.1,localhost",
        # Fast polling and retries against local servers.
        "MLOPS_POD_POLL_INTERVAL_SECONDS": "1",
        "MLOPS_POD_STARTUP_TIMEOUT_SECONDS": "30",
        "MLOPS_ALERT_RETRY_BASE_SECONDS": "0.05",
    }
)
(_SESSION_DIR / "airflow").mkdir(parents=True, exist_ok=True)

from mlops.dev.connections import connections_env, load_dev_connections  # noqa: E402
from tests.harness.postgres import PostgresCluster  # noqa: E402
from tests.harness.receivers import Receiver, pagerduty_receiver, slack_receiver  # noqa: E402


def pytest_sessionfinish(session, exitstatus) -> None:
    if os.environ.get("MLOPS_KEEP_TEST_DIR"):  # keep servers' logs for debugging
        print(f"\nkept test session dir: {_SESSION_DIR}")
        return
    shutil.rmtree(_SESSION_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def session_dir() -> Path:
    return _SESSION_DIR


# -- S3 ------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """moto's S3 server over HTTP; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{server._server.server_port}"
    server.stop()


@pytest.fixture(scope="session")
def s3_client(s3_server: str):
    import boto3

    return boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")


@pytest.fixture
def s3_bucket(s3_client) -> str:
    """A fresh bucket per test."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    return name


# -- Postgres ------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster(_SESSION_DIR / "pg").start()
    yield cluster
    cluster.stop()


@pytest.fixture
def pg_database(pg_cluster: PostgresCluster) -> str:
    """A fresh database per test; its name. ``pg_cluster.dsn(name)`` connects to it."""
    return pg_cluster.create_database()


# -- Pushgateway ----------------------------------------------------------------------------
@pytest.fixture(scope="session")
def pushgateway() -> Iterator[str]:
    """Debian's prometheus-pushgateway on a free loopback port; yields its base URL.

    Scrape it from the test Prometheus with
    ``running_prometheus(..., scrape_configs=[pushgateway_target(url)])``.
    """
    from tests.harness.pushgateway import running_pushgateway

    with running_pushgateway(_SESSION_DIR / "pushgateway") as url:
        yield url


# -- Slack / PagerDuty -----------------------------------------------------------------------
@pytest.fixture(scope="session")
def _slack() -> Iterator[Receiver]:
    r = slack_receiver().start()
    yield r
    r.stop()


@pytest.fixture(scope="session")
def _pagerduty() -> Iterator[Receiver]:
    r = pagerduty_receiver(_SESSION_DIR / "certs").start()
    yield r
    r.stop()


@pytest.fixture
def slack(_slack: Receiver) -> Receiver:
    _slack.reset()
    return _slack


@pytest.fixture
def pagerduty(_pagerduty: Receiver) -> Receiver:
    _pagerduty.reset()
    return _pagerduty


# -- Kubernetes ------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def kube():
    """The simulated Kubernetes API (tests/harness/kubesim), one per session."""
    from tests.harness.kubesim import KubeSim

    sim = KubeSim()
    sim.start()
    sim.kubeconfig = sim.write_kubeconfig(str(_SESSION_DIR / "kubeconfig"))
    yield sim
    sim.stop()


@pytest.fixture
def k8s_namespace(kube) -> str:
    name = f"t-{uuid.uuid4().hex[:8]}"
    kube.create_namespace(name)
    return name


# -- Airflow connections ----------------------------------------------------------------------
# Each fixture points one project connection at a harness server, through the same
# data file `make run` uses (mlops/dev/connections.json).
def _set_connections(monkeypatch, values: dict[str, str]) -> None:
    for key, value in connections_env(load_dev_connections(values)).items():
        monkeypatch.setenv(key, value)


@pytest.fixture
def s3_conn(monkeypatch, s3_server) -> str:
    _set_connections(monkeypatch, {"S3_ENDPOINT": s3_server})
    return s3_server


@pytest.fixture
def pg_conn(monkeypatch, pg_cluster, pg_database) -> str:
    """``platform_postgres`` points at this test's database; returns its name."""
    _set_connections(
        monkeypatch,
        {
            "PG_HOST": pg_cluster.host,
            "PG_PORT": str(pg_cluster.port),
            "PG_USER": pg_cluster.user,
            "PG_DATABASE": pg_database,
        },
    )
    return pg_database


@pytest.fixture
def alert_conns(monkeypatch, slack, pagerduty) -> tuple[Receiver, Receiver]:
    _set_connections(
        monkeypatch,
        {
            "SLACK_WEBHOOK_BASE": f"{slack.url}/services",
            "PAGERDUTY_EVENTS_URL": pagerduty.url,
            "PAGERDUTY_CA_BUNDLE": pagerduty.ca_path or "",
        },
    )
    return slack, pagerduty


def kube_identity() -> str:
    """Who ``kube_conn`` is to the simulated API: ``worker`` (default) or ``admin``.

    The worker is Airflow's worker service account with exactly the shipped RBAC (issue 16: the
    code runs under the permissions the manifests grant). ``MLOPS_TEST_IDENTITY=admin`` runs the
    tiers as the cluster admin, to tell an RBAC failure from any other. Either way the code reaches
    model servers as a worker in the cluster does, by the Service's DNS name
    (``MLOPS_SERVING_ACCESS=direct`` over kubesim's cluster network), and a test's own set-up
    (``kube.create``, ``kube.api_client``) stays the cluster admin.
    """
    identity = os.environ.get("MLOPS_TEST_IDENTITY", "worker")
    if identity not in ("worker", "admin"):
        raise pytest.UsageError(f"MLOPS_TEST_IDENTITY must be worker or admin, not {identity!r}")
    return identity


@pytest.fixture(scope="session")
def worker_kubeconfig(kube) -> str:
    """A kubeconfig whose token is Airflow's worker service account (``airflow/airflow-worker``)."""
    return kube.service_account_kubeconfig(_SESSION_DIR / "kubeconfig-worker", "airflow", "airflow-worker")


@pytest.fixture
def kube_conn_as_worker(monkeypatch, kube, k8s_namespace, worker_kubeconfig) -> str:
    """``kubernetes_default`` as Airflow's worker service account, with exactly the shipped RBAC.

    The shipped Roles of both platform namespaces (ml-training, ml-serving) are bound in this test's
    namespace, as their RoleBindings bind them there in production (tests/harness/platform_rbac.py).
    The test's own set-up (``kube.create``, ``kube.kubeconfig``) stays the cluster admin.
    """
    from tests.harness.platform_rbac import apply_shipped_rbac

    apply_shipped_rbac(
        kube, {"ml-training": k8s_namespace, "ml-serving": k8s_namespace}, include_optional=True
    )
    return _point_kube_conn(monkeypatch, kube, worker_kubeconfig, k8s_namespace)


def _point_kube_conn(monkeypatch, kube, kubeconfig: str, namespace: str) -> str:
    _set_connections(monkeypatch, {"KUBECONFIG": kubeconfig, "TRAINING_NAMESPACE": namespace})
    monkeypatch.setenv("MLOPS_TRAINING_NAMESPACE", namespace)
    monkeypatch.setenv("MLOPS_SERVING_NAMESPACE", namespace)
    # Model servers by their Service's DNS name, as the shipped values configure the workers.
    monkeypatch.setenv("MLOPS_SERVING_ACCESS", "direct")
    monkeypatch.setenv("MLOPS_SERVING_DIRECT_URL", kube.service_url_template)
    return namespace


@pytest.fixture
def kube_conn(request, monkeypatch, kube, k8s_namespace) -> str:
    """``kubernetes_default`` points at the simulated API; both platform namespaces are this test's.

    As ``kube_conn_as_worker`` (the default; see ``kube_identity``), or as the cluster admin.
    """
    if kube_identity() == "worker":
        return request.getfixturevalue("kube_conn_as_worker")
    return _point_kube_conn(monkeypatch, kube, kube.kubeconfig, k8s_namespace)


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """Migrate the session's SQLite metadata DB once (needed by ``dag.test()``)."""
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)
