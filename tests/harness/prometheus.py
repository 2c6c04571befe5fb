"""A real Prometheus (Debian's package) scraping local targets, for the gates and checks querying it."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import requests
import yaml

from mlops.dev.ports import free_port

PROMETHEUS = shutil.which("prometheus")
MISSING = "prometheus not installed: apt-get install -y --no-install-recommends prometheus"


@contextlib.contextmanager
def running_prometheus(
    home: Path,
    jobs: Mapping[str, Sequence[str]],
    *,
    scrape_configs: Sequence[dict] = (),
    rule_files: Sequence[Path] = (),
) -> Iterator[str]:
    """Run Prometheus scraping ``{job: ["host:port", ...]}`` every second; yields its URL, stops it after.

    ``scrape_configs`` adds whole scrape jobs (e.g. ``pushgateway_target(url)``, which
    keeps the pushed labels); ``rule_files`` are evaluated every second.
    """
    assert PROMETHEUS, MISSING
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": list(targets)}]} for job, targets in jobs.items()
        ]
        + [dict(extra) for extra in scrape_configs],
    }
    if rule_files:
        config["rule_files"] = [str(path) for path in rule_files]
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


def query(url: str, promql: str) -> list[dict]:
    """The instant vector (``data.result``) of ``promql``; raises on an HTTP or query error."""
    reply = requests.get(f"{url}/api/v1/query", params={"query": promql}, timeout=5)
    reply.raise_for_status()
    return reply.json()["data"]["result"]


def query_until(
    url: str, promql: str, accept: Callable[[list[dict]], bool] = bool, timeout: float = 30.0
) -> list[dict]:
    """Poll ``promql`` until ``accept(result)``; returns that result, fails after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    result: list[dict] = []
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.RequestException):
            result = query(url, promql)
            if accept(result):
                return result
        time.sleep(0.25)
    raise AssertionError(f"{promql!r} did not reach the expected result within {timeout} s; last: {result}")


def firing_alerts(url: str, name: str) -> list[dict]:
    """The alerts named ``name`` that Prometheus reports as firing, with their labels."""
    reply = requests.get(f"{url}/api/v1/alerts", timeout=5)
    reply.raise_for_status()
    return [
        a
        for a in reply.json()["data"]["alerts"]
        if a["labels"].get("alertname") == name and a["state"] == "firing"
    ]
