"""`airflow standalone` as a real server for the e2e tier, started once per session.

It runs in its own process group so that teardown can stop the scheduler, the API
server, the dag-processor, the triggerer and any task process: no orphans.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from mlops.dev.ports import free_port

ADMIN = ("admin", "admin")


@dataclass
class Standalone:
    home: Path
    dags_folder: Path
    env: dict[str, str] = field(default_factory=dict)
    # The metadata DB; production runs Postgres (SQLite locks under concurrent task writes, and a
    # trigger during running tasks then answers HTTP 500 "database is locked").
    metadata_db: str = ""
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180) -> Standalone:
        self.home.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        passwords = self.home / "passwords.json"
        passwords.write_text(json.dumps({ADMIN[0]: ADMIN[1]}))
        venv_bin = Path(sys.executable).parent
        env = {
            **os.environ,
            **self.env,
            "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.metadata_db or f"sqlite:///{self.home}/airflow.db",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN[0]}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": self.url,
            "AIRFLOW__CORE__PARALLELISM": "8",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            # Parse each file once at start, then rarely: re-parsing every few seconds held a core on
            # a 2-core CI machine, and a parse that ran past the 50 s default timeout there marked
            # its DAGs stale (the API then answered 404 for mlops_training mid-test).
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "300",
            "AIRFLOW__DAG_PROCESSOR__DAG_FILE_PROCESSOR_TIMEOUT": "240",
            "AIRFLOW__DAG_PROCESSOR__STALE_DAG_THRESHOLD": "300",
        }
        log = open(self.home / "standalone.log", "wb")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [str(venv_bin / "airflow"), "standalone"],
            env=env,
            cwd=str(self.home),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            restore_signals=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"standalone exited: {self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/api/v2/monitor/health", timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        raise TimeoutError(f"standalone did not answer: {self.log_tail()}")

    def log_tail(self, chars: int = 4000) -> str:
        path = self.home / "standalone.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def token(self) -> str:
        req = urllib.request.Request(
            f"{self.url}/auth/token",
            data=json.dumps({"username": ADMIN[0], "password": ADMIN[1]}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())["access_token"]

    def client(self):
        """An official ``apache-airflow-client`` ApiClient, authenticated as admin."""
        import airflow_client.client as ac

        return ac.ApiClient(ac.Configuration(host=self.url, access_token=self.token()))

    def stop(self) -> None:
        if not self.proc:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGINT)
            self.proc.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
                time.sleep(1)
            except ProcessLookupError:
                break
