"""`make run`: Airflow standalone with the project's DAGs on embedded defaults.

Starts, on this machine only:
- a local S3 server (moto) with the project's buckets;
- a local PostgreSQL cluster as the backup source, when the PostgreSQL binaries exist;
- `airflow standalone` (LocalExecutor, examples off, fixed admin login, the ML platform page from
  ``plugins/``), with the dev connections from ``connections.json`` passed as ``AIRFLOW_CONN_*``.
  Its metadata database is a database ``airflow`` in that local PostgreSQL (SQLite only when the
  PostgreSQL binaries are missing: with SQLite a trigger during running tasks can fail with
  HTTP 500 "database is locked").

Kubernetes: the current kubeconfig context is used when it answers. Otherwise the
training and promotion tasks fail until one does (the README explains kind). With
``--cluster simulated`` (``make run CLUSTER=simulated``) the test harness's simulated
Kubernetes API is started instead, everything is labelled SIMULATED, and the platform's DAGs are
unpaused so that a triggered run starts at once.

Ctrl-C stops everything: standalone gets SIGINT (its own clean shutdown), then its
whole process group is terminated, so no scheduler, API server or worker is orphaned.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from mlops.dev.connections import connections_env, load_dev_connections

REPO_ROOT = Path(__file__).resolve().parents[3]
ADMIN_USER = "admin"
ADMIN_PASSWORD = "admin"  # noqa: S105 - a fixed local-only login, printed at start


def _log(msg: str) -> None:
    print(f"[make run] {msg}", flush=True)


def _kube_answers(kubeconfig: str | None) -> str | None:
    """Return the current context name if its API server answers within 3 s."""
    try:
        from kubernetes import client, config

        contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
        api_client = config.new_client_from_config(config_file=kubeconfig)
        client.VersionApi(api_client).get_code(_request_timeout=3)
        return active["name"]
    except Exception:
        return None


def _start_s3(port: int) -> str:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="mlops-dev",
        aws_secret_access_key="mlops-dev-secret",  # noqa: S106 - the local moto server's dev key
    )
    for bucket in ("mlops-artifacts", "mlops-backups"):
        s3.create_bucket(Bucket=bucket)
    return endpoint


SIM_S3_SECRET = "mlops-s3"  # noqa: S105 - a Secret's name


def _start_simulated_cluster(home: Path):
    """The test harness's simulated Kubernetes API, set up like a platform cluster.

    The project's trainer and model-server images run as local processes, so training,
    promotion, backups and health can be clicked through in the UI without a cluster.
    """
    sys.path.insert(0, str(REPO_ROOT))
    from mlops.settings import Settings
    from tests.harness.kubesim import KubeSim
    from tests.harness.platform_cluster import prepare_platform

    sim = KubeSim()
    sim.start()
    sim.write_kubeconfig(str(home / "kubeconfig-simulated"), namespace="ml-training")
    defaults = Settings()
    images = {
        os.environ.get("MLOPS_TRAINER_IMAGE", defaults.trainer_image): "mlops.trainer",
        os.environ.get("MLOPS_MODEL_SERVER_IMAGE", defaults.model_server_image): "mlops.serving",
    }
    prepare_platform(sim, (defaults.training_namespace, defaults.serving_namespace), SIM_S3_SECRET, images)
    return sim


def configure_kubernetes(
    mode: str, home: Path, kubeconfig: str | None = None
) -> tuple[dict[str, str], Any, list[str]]:
    """Decide where Kubernetes calls go: ``({"KUBECONFIG": ...} or {}, simulated cluster or None, messages)``.

    ``auto`` uses the current kubeconfig context only if it answers, and never falls back to a
    simulation; ``simulated`` starts the harness's cluster and says so loudly.
    """
    if mode == "simulated":
        sim = _start_simulated_cluster(home)
        return (
            {"KUBECONFIG": sim.kubeconfig},
            sim,
            [
                f"*** SIMULATED Kubernetes cluster (test harness, no real pods) at {sim.url} ***",
                "*** pods of the trainer and model-server images run as local processes on this machine ***",
            ],
        )
    kubeconfig = kubeconfig or os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
    context = _kube_answers(kubeconfig)
    if context:
        return (
            {"KUBECONFIG": kubeconfig},
            None,
            [f"Kubernetes: using the current context {context!r} from {kubeconfig}"],
        )
    return (
        {},
        None,
        [
            "Kubernetes: no cluster answered from the current kubeconfig context. Training and promotion "
            "tasks will fail until one does: see README 'Kubernetes on a laptop (kind)', or run "
            "`make run CLUSTER=simulated` for a clearly labelled simulated cluster."
        ],
    )


PLATFORM_DAGS = tuple(sorted(p.stem for p in (REPO_ROOT / "dags").glob("mlops_*.py")))


def metadata_db_url(pg: Any, airflow_home: Path) -> str:
    """Airflow's metadata DB: the database ``airflow`` of the local PostgreSQL, or SQLite without one."""
    if pg is None:
        return f"sqlite:///{airflow_home}/airflow.db"
    import psycopg

    try:
        pg.execute('CREATE DATABASE "airflow"')
    except psycopg.errors.DuplicateDatabase:
        pass  # a previous `make run`: keep its runs and history
    return f"postgresql+psycopg2://{pg.user}@{pg.host}:{pg.port}/airflow"


def next_steps(simulated: bool, port: int) -> list[str]:
    """What the user should do first, printed once the UI answers."""
    ui = f"http://localhost:{port}"
    if simulated:
        return [
            f"The platform's DAGs are UNPAUSED ({', '.join(PLATFORM_DAGS)}): a triggered run starts at once.",
            f"First ten minutes: trigger mlops_training with compute_profile=cpu and promote=true "
            f"({ui}/dags/mlops_training), "
            f"watch mlops_promotion switch traffic ({ui}/dags/mlops_promotion), then open ML platform "
            f"in the navigation ({ui}/mlops/ui/).",
        ]
    return [
        "DAGs start PAUSED: a triggered run waits, queued, until its DAG is unpaused (tick 'Unpause on "
        "trigger' in the form, or the toggle on the DAG's page).",
        "Training and promotion need a Kubernetes cluster (see the README's 'Kubernetes on a laptop'); "
        "`make run CLUSTER=simulated` shows the whole platform working without one.",
        f"The ML platform page: {ui}/mlops/ui/ (ML platform in the navigation).",
    ]


def _rest(port: int, method: str, path: str, body: dict | None = None, token: str | None = None) -> dict:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    request = urllib.request.Request(  # noqa: S310 - loopback URL
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode() if body is not None else None,
        headers=headers,
        method=method,
    )
    with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310 - loopback URL
        return json.loads(resp.read() or b"{}")


def unpause(port: int, dag_ids: tuple[str, ...], timeout: float = 180) -> list[str]:
    """Unpause ``dag_ids`` by REST once the dag-processor has parsed each; returns those unpaused."""
    token = _rest(port, "POST", "/auth/token", {"username": ADMIN_USER, "password": ADMIN_PASSWORD})[
        "access_token"
    ]
    left, deadline = list(dag_ids), time.monotonic() + timeout
    while left and time.monotonic() < deadline:
        for dag_id in list(left):
            try:
                _rest(port, "PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False}, token)
                left.remove(dag_id)
            except OSError:  # 404 until parsed
                pass
        if left:
            time.sleep(2)
    return [d for d in dag_ids if d not in left]


def _wait_http(url: str, timeout: float) -> float | None:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback URL
                if resp.status == 200:
                    return time.monotonic() - start
        except OSError:
            pass
        time.sleep(0.5)
    return None


def _stop_group(proc: subprocess.Popen[bytes], grace: float = 15) -> None:
    """SIGINT standalone (clean shutdown), then terminate whatever is left in its process group."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        time.sleep(2 if sig == signal.SIGTERM else 0)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _stop_on_ctrl_c_and_sigterm() -> None:
    """Ctrl-C (SIGINT) and ``kill`` (SIGTERM) both shut the stack down in order.

    Set explicitly: a launcher started as a background job (``make run &``,
    ``nohup``, some CI runners) inherits SIGINT as *ignored*, and Python then
    installs no KeyboardInterrupt handler, so Ctrl-C would do nothing and the
    stack would outlive the launcher.
    """
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)


def main(argv: list[str] | None = None) -> int:
    _stop_on_ctrl_c_and_sigterm()
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--cluster", choices=["auto", "simulated"], default=os.environ.get("CLUSTER") or "auto"
    )
    parser.add_argument("--port", type=int, default=int(os.environ.get("AIRFLOW_PORT", "8080")))
    parser.add_argument("--s3-port", type=int, default=int(os.environ.get("S3_PORT", "9090")))
    parser.add_argument("--home", default=os.environ.get("MLOPS_DEV_HOME", str(REPO_ROOT / ".dev")))
    args = parser.parse_args(argv)

    home = Path(args.home)
    airflow_home = home / "airflow"
    airflow_home.mkdir(parents=True, exist_ok=True)
    home.chmod(0o755)
    started = time.monotonic()

    values: dict[str, str] = {"TRAINING_NAMESPACE": os.environ.get("MLOPS_TRAINING_NAMESPACE", "ml-training")}
    values["S3_ENDPOINT"] = _start_s3(args.s3_port)
    _log(f"local S3 (moto) at {values['S3_ENDPOINT']} with buckets mlops-artifacts, mlops-backups")

    pg = None
    from mlops.dev.postgres import PG_BIN, PostgresCluster, reachable_by_cluster_user

    if (PG_BIN / "initdb").exists():
        pg_home = home / "postgres"
        if not reachable_by_cluster_user(pg_home):
            # As root, the cluster runs as the postgres user, who cannot enter a private home (e.g. /root).
            digest = hashlib.sha256(str(home).encode()).hexdigest()[:10]
            pg_home = Path(tempfile.gettempdir()) / f"mlops-dev-postgres-{digest}"
            pg_home.mkdir(mode=0o755, exist_ok=True)
        pg = PostgresCluster(pg_home).start()
        values.update(PG_HOST=pg.host, PG_PORT=str(pg.port), PG_USER=pg.user, PG_DATABASE="postgres")
        _log(f"local PostgreSQL (backup source) at {pg.dsn()}, data in {pg.base_dir}")
    else:
        _log(f"no PostgreSQL binaries under {PG_BIN}: the backup DAG's Postgres part will fail")

    kube_values, sim, messages = configure_kubernetes(args.cluster, home)
    values.update(kube_values)
    for message in messages:
        _log(message)

    metadata_db = metadata_db_url(pg, airflow_home)
    _log(f"Airflow metadata DB: {metadata_db}")
    passwords = airflow_home / "simple_auth_manager_passwords.json"
    passwords.write_text(json.dumps({ADMIN_USER: ADMIN_PASSWORD}))
    venv_bin = Path(sys.executable).parent
    env = {
        **os.environ,
        **connections_env(load_dev_connections(values)),
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",  # standalone starts `airflow` by name
        "AIRFLOW_HOME": str(airflow_home),
        # The embedded default, whatever the shell says: never migrate or use another metadata DB.
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_db,
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__API__PORT": str(args.port),
        "AIRFLOW__API__BASE_URL": f"http://localhost:{args.port}",
        "AIRFLOW__CORE__PARALLELISM": os.environ.get("AIRFLOW__CORE__PARALLELISM", "8"),
        "MLOPS_AIRFLOW_BASE_URL": f"http://localhost:{args.port}",
        "AWS_ACCESS_KEY_ID": "mlops-dev",
        "AWS_SECRET_ACCESS_KEY": "mlops-dev-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
        # One local Postgres on a laptop: restore tests knowingly run on it (no scratch server).
        "MLOPS_BACKUP_VERIFY_ON_SOURCE": os.environ.get("MLOPS_BACKUP_VERIFY_ON_SOURCE", "true"),
    }
    if sim is not None:
        env.update(
            MLOPS_SIMULATED_CLUSTER="1",
            MLOPS_POD_POLL_INTERVAL_SECONDS="1",
            MLOPS_TRAINER_S3_ENDPOINT=values["S3_ENDPOINT"],
            MLOPS_MODEL_SERVER_S3_SECRET=SIM_S3_SECRET,
            MLOPS_TRAINER_S3_SECRET=SIM_S3_SECRET,
            MLOPS_MODEL_SERVER_REPLICAS="1",
        )

    # A fresh session and default SIGINT handling: Ctrl-C reaches only this launcher,
    # which then shuts standalone down in order (FACTS.md: backgrounded jobs ignore SIGINT).
    proc = subprocess.Popen(  # noqa: S603 - fixed argv
        [str(venv_bin / "airflow"), "standalone"],
        env=env,
        cwd=str(airflow_home),
        start_new_session=True,
        restore_signals=True,
    )
    try:
        ready = _wait_http(f"http://localhost:{args.port}/api/v2/monitor/health", timeout=180)
        if ready is None:
            _log("Airflow did not answer within 180 s; see the output above")
        else:
            total = time.monotonic() - started
            _log(f"Airflow UI: http://localhost:{args.port}  (login {ADMIN_USER} / {ADMIN_PASSWORD})")
            _log(f"UI answered {total:.1f} s after `make run` started the stack. Ctrl-C stops everything.")
            if sim is not None:
                unpaused = unpause(args.port, PLATFORM_DAGS)
                _log(f"unpaused {', '.join(unpaused) or 'nothing'} (simulated cluster: runs start at once)")
            for line in next_steps(sim is not None, args.port):
                _log(line)
            if sim is not None:
                _log("Reminder: Kubernetes is SIMULATED in this session.")
        proc.wait()
    except KeyboardInterrupt:
        _log("stopping Airflow ...")
    finally:
        _stop_group(proc)
        if sim is not None:
            sim.stop()
        if pg is not None:
            pg.stop()
        _log("stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
