"""Throwaway PostgreSQL 15 clusters from the installed server binaries (tests and `make run`).

Every subprocess here runs a fixed argv of the installed PostgreSQL binaries (ruff S603 is
silenced per call for that reason).

``initdb`` and ``postgres`` refuse to run as root, so as root the cluster is
run as the ``postgres`` system user. The cluster listens on 127.0.0.1 on a
free port with trust authentication; it is for tests and the laptop only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from mlops.dev.ports import free_port

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))


def reachable_by_cluster_user(path: Path) -> bool:
    """Whether the user that runs the cluster can reach ``path`` (as root that is ``postgres``)."""
    if os.geteuid() != 0:
        return True
    probe = path if path.exists() else path.parent
    while not probe.exists():
        probe = probe.parent
    return subprocess.run(_as_cluster_user(["test", "-x", str(probe)]), capture_output=True).returncode == 0  # noqa: S603


def _as_cluster_user(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


@dataclass
class PostgresCluster:
    """A running cluster; ``create_database()`` hands each test its own database."""

    base_dir: Path
    port: int = 0
    user: str = "postgres"
    host: str = "127.0.0.1"

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    def start(self) -> PostgresCluster:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.base_dir, "postgres", "postgres")
        self.port = self.port or free_port()
        if not (self.data_dir / "PG_VERSION").exists():
            subprocess.run(  # noqa: S603
                _as_cluster_user(
                    [
                        str(PG_BIN / "initdb"),
                        "-D",
                        str(self.data_dir),
                        "-U",
                        self.user,
                        "--auth=trust",
                        "--no-sync",
                        "-E",
                        "UTF8",
                    ]
                ),
                check=True,
                capture_output=True,
            )
        opts = f"-p {self.port} -k {self.base_dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(  # noqa: S603
            _as_cluster_user(
                [
                    str(PG_BIN / "pg_ctl"),
                    "-D",
                    str(self.data_dir),
                    "-o",
                    opts,
                    "-l",
                    str(self.base_dir / "server.log"),
                    "-w",
                    "start",
                ]
            ),
            check=True,
            capture_output=True,
        )
        return self

    def stop(self) -> None:
        subprocess.run(  # noqa: S603
            _as_cluster_user([str(PG_BIN / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"]),
            check=False,
            capture_output=True,
        )

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}"

    def execute(self, sql: str, dbname: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(self.dsn(dbname), autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    def create_database(self, prefix: str = "test") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        self.execute(f'CREATE DATABASE "{name}"')
        return name

    def wait_ready(self, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (
                subprocess.run(  # noqa: S603
                    [str(PG_BIN / "pg_isready"), "-h", self.host, "-p", str(self.port)], capture_output=True
                ).returncode
                == 0
            ):
                return
            time.sleep(0.1)
        raise TimeoutError(f"postgres on port {self.port} not ready")
