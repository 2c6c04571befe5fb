"""A real Pushgateway (Debian's ``prometheus-pushgateway``) on loopback, for batch-job metrics."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import requests

from mlops.dev.ports import free_port

PUSHGATEWAY = shutil.which("prometheus-pushgateway")
MISSING = (
    "prometheus-pushgateway not installed: apt-get install --no-install-recommends prometheus-pushgateway"
)


@contextlib.contextmanager
def running_pushgateway(home: Path) -> Iterator[str]:
    """Run a Pushgateway on a free loopback port; yields its base URL, stops it after.

    Metrics live in memory only (no persistence file: the package's default is a system
    path), and the admin API is on so that tests can wipe it (``wipe_pushgateway``).
    """
    assert PUSHGATEWAY, MISSING
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (home / "pushgateway.log").open("wb")
    proc = subprocess.Popen(
        [
            PUSHGATEWAY,
            f"--web.listen-address=127.0.0.1:{port}",
            "--persistence.file=",
            "--web.enable-admin-api",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_ready(url, proc)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"pushgateway exited with {proc.returncode}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{url}/-/ready", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise TimeoutError(f"pushgateway at {url} not ready after {timeout} s")


def wipe_pushgateway(url: str) -> None:
    """Delete every pushed group (the Pushgateway's admin API)."""
    requests.put(f"{url}/api/v1/admin/wipe", timeout=5).raise_for_status()


def pushgateway_target(url: str) -> dict:
    """The Prometheus scrape job for this Pushgateway.

    ``honor_labels: true`` keeps the pushed ``job``/``instance`` (and grouping) labels
    instead of overwriting them with the Pushgateway's own, as Prometheus documents.
    """
    return {
        "job_name": "pushgateway",
        "honor_labels": True,
        "static_configs": [{"targets": [url.split("//", 1)[1]]}],
    }
