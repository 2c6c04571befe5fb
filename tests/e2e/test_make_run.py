"""`make run`'s launcher: the product on embedded defaults, and the opt-in simulated-cluster demo."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from mlops.dev.ports import free_port
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.e2e


def _processes_using(home: Path) -> list[str]:
    """Processes whose working directory, environment or command line points into ``home``: what
    Ctrl-C must not leave behind. The working directory matters: Airflow's components rename
    themselves (setproctitle), which overwrites the environment that /proc shows."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            text = (entry / "environ").read_bytes() + (entry / "cmdline").read_bytes()
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if str(home).encode() in text or Path(cwd).is_relative_to(home):
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")[:120]
            found.append(f"{entry.name}: {cmdline!r}")
    return found


def _kill_everything_using(launcher: subprocess.Popen, home: Path, log: Path) -> None:
    launcher.kill()
    dirs = [home, *(Path(d) for d in re.findall(r"data in (\S+)", log.read_text(errors="replace")))]
    for line in [line for d in dirs for line in _processes_using(d)]:
        try:
            os.kill(int(line.split(":", 1)[0]), signal.SIGKILL)
        except ProcessLookupError:
            pass
    launcher.wait(timeout=10)


def _api(port: int, method: str, path: str, body: dict | None = None, token: str | None = None) -> dict:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode() if body is not None else None,
        headers=headers,
        method=method,
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        return json.loads(resp.read() or b"{}")


def test_simulated_demo_is_labelled_runs_training_and_ctrl_c_leaves_nothing_behind(tmp_path):
    """Also when started as a background job, which inherits SIGINT as ignored."""
    home = tmp_path / "dev"
    port, s3_port = free_port(), free_port()
    log = tmp_path / "make-run.log"
    env = dict(os.environ)
    # A fresh shell: none of this test session's Airflow settings (its metadata DB above all).
    for key in [k for k in env if k.startswith(("AIRFLOW", "MLOPS_"))]:
        env.pop(key, None)
    with log.open("wb") as out:
        # Started the way a background job is (`make run &`, nohup, CI runners): with SIGINT
        # ignored, a disposition exec inherits. Ctrl-C must still stop everything.
        launcher = subprocess.Popen(
            [
                "bash",
                "-c",
                'trap "" INT; exec "$@"',
                "make-run",
                sys.executable,
                "-m",
                "mlops.dev.run",
                "--cluster",
                "simulated",
                "--port",
                str(port),
                "--s3-port",
                str(s3_port),
                "--home",
                str(home),
            ],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 240
        while "UI answered" not in log.read_text(errors="replace"):
            assert launcher.poll() is None, log.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "the UI never answered"
            time.sleep(1)
        output = log.read_text(errors="replace")
        assert "SIMULATED Kubernetes cluster" in output
        assert f"Airflow UI: http://localhost:{port}" in output and "login admin / admin" in output

        assert "Airflow metadata DB: postgresql+psycopg2://" in output  # not SQLite: no "database is locked"

        token = _api(port, "POST", "/auth/token", {"username": "admin", "password": "admin"})["access_token"]
        # The launcher unpauses the platform's DAGs itself, and says so.
        deadline = time.monotonic() + 200
        while "The platform's DAGs are UNPAUSED" not in log.read_text(errors="replace"):
            assert launcher.poll() is None, log.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "the launcher never unpaused the DAGs"
            time.sleep(1)
        for dag_id in ("mlops_training", "mlops_promotion", "mlops_backups", "mlops_health"):
            assert _api(port, "GET", f"/api/v2/dags/{dag_id}", token=token)["is_paused"] is False, dag_id
        plugins = _api(port, "GET", "/api/v2/plugins", token=token)["plugins"]
        assert "mlops_platform" in [p["name"] for p in plugins]
        # Unpausing did not start a nightly training run with the default parameters (issue 17).
        assert _api(port, "GET", "/api/v2/dags/mlops_training/dagRuns", token=token)["total_entries"] == 0
        run = _api(
            port,
            "POST",
            "/api/v2/dags/mlops_training/dagRuns",
            {
                "logical_date": None,
                # The README's first ten minutes: cpu, promote, the other defaults (fewer epochs than
                # the default 10 leave the candidate under the 0.85 quality gate).
                "conf": {"model_name": "digits-demo", "compute_profile": "cpu", "promote": True},
            },
            token,
        )
        deadline = time.monotonic() + 240
        state = None
        while state not in ("success", "failed") and time.monotonic() < deadline:
            time.sleep(2)
            state = _api(
                port, "GET", f"/api/v2/dags/mlops_training/dagRuns/{run['dag_run_id']}", token=token
            )["state"]
        assert state == "success", log.read_text(errors="replace")[-3000:]

        # The first ten minutes: the candidate's asset event starts a promotion that switches traffic,
        # and the platform page shows the model in production on its live color.
        page = urllib.request.Request(
            f"http://127.0.0.1:{port}/mlops/ui/", headers={"Authorization": f"Bearer {token}"}
        )
        deadline = time.monotonic() + 600  # training, gates, a 60 s post-promotion window, the pointer
        demo = ""
        # Mid-promotion the page rightly shows traffic switched before the pointer moved: wait for both.
        while "Cluster and registry agree." not in demo and time.monotonic() < deadline:
            runs = _api(port, "GET", "/api/v2/dags/mlops_promotion/dagRuns", token=token)["dag_runs"]
            states = [r["state"] for r in runs]
            for failed in [r for r in runs if r["state"] == "failed"]:
                path = f"/api/v2/dags/mlops_promotion/dagRuns/{failed['dag_run_id']}/taskInstances"
                tasks = _api(port, "GET", path, token=token)["task_instances"]
                broken = [t["task_id"] for t in tasks if t["state"] == "failed"]
                logs = [
                    _api(port, "GET", f"{path}/{t}/logs/1?full_content=true", token=token) for t in broken
                ]
                raise AssertionError(f"promotion {failed['dag_run_id']} failed at {broken}: {logs!s:.4000}")
            with urllib.request.urlopen(page, timeout=30) as reply:  # the page caches its reads briefly
                html = reply.read().decode()
            # The model's own card: up to the next model's card or the backups section.
            demo = html.partition('data-testid="model-digits-demo"')[2].partition('<h2 id="backups">')[0]
            demo = demo.partition('data-testid="model-')[0]
            time.sleep(3)
        assert 'data-testid="live-color">blue<' in demo, (states, html[:3000])
        assert "Cluster and registry agree." in demo
    finally:
        if launcher.poll() is None:
            launcher.send_signal(signal.SIGINT)  # what Ctrl-C sends to the launcher
        try:
            launcher.wait(timeout=90)
        except subprocess.TimeoutExpired:
            _kill_everything_using(launcher, home, log)  # never leak a whole Airflow stack into the session
            raise AssertionError("the launcher did not stop within 90 s of Ctrl-C") from None

    output = log.read_text(errors="replace")
    assert "[make run] stopped" in output
    pg_dir = Path(re.search(r"local PostgreSQL \(backup source\) at \S+, data in (\S+)", output).group(1))
    deadline = time.monotonic() + 10
    while (_processes_using(home) or _processes_using(pg_dir)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _processes_using(home) == []
    assert _processes_using(pg_dir) == []
    shutil.rmtree(pg_dir, ignore_errors=True)
