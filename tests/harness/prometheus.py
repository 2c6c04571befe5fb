"""A real Prometheus (Debian's package) scraping local targets, for the gates and checks querying it."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import yaml

from mlops.dev.ports import free_port

PROMETHEUS = shutil.which("prometheus")
MISSING = "prometheus not installed: apt-get install -y --no-install-recommends prometheus"


@contextlib.contextmanager
def running_prometheus(home: Path, jobs: Mapping[str, Sequence[str]]) -> Iterator[str]:
    """Run Prometheus scraping ``{job: ["host:port", ...]}`` every second; yields its URL, stops it after."""
    assert PROMETHEUS, MISSING
    config = {
        "global": {"scrape_interval": "1s"},
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": list(targets)}]} for job, targets in jobs.items()
        ],
    }
    (home / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={home / 'prometheus.yml'}",
            f"--storage.tsdb.path={home / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)
