"""The health sweep's dead-man's switch: each finished sweep pushes its heartbeat and pings the URL."""

from __future__ import annotations

import time

import requests
import yaml

from mlops.health.tasks import sweep
from tests.harness.pushgateway import wipe_pushgateway


def test_a_finished_sweep_pushes_its_heartbeat_and_pings_the_heartbeat_url(
    endpoints, pushgateway, tmp_path, monkeypatch
):
    """Before: nothing outside Airflow heard from sweeps: a dead scheduler or a paused DAG paged nobody."""
    wipe_pushgateway(pushgateway)
    path = tmp_path / "checks.yaml"
    path.write_text(
        yaml.safe_dump({"checks": [{"name": "ep", "type": "http", "url": endpoints.url("/error")}]})
    )
    monkeypatch.setenv("MLOPS_HEALTH_CHECKS_PATH", str(path))
    monkeypatch.setenv("MLOPS_PUSHGATEWAY_URL", pushgateway)
    monkeypatch.setenv("MLOPS_HEALTH_HEARTBEAT_URL", endpoints.url("/healthy?heartbeat=mlops"))
    before = time.time()
    sweep()
    assert endpoints.hits.get("/healthy?heartbeat=mlops") == 1
    metrics = requests.get(f"{pushgateway}/metrics", timeout=5).text
    (line,) = [x for x in metrics.splitlines() if x.startswith("mlops_health_last_sweep_timestamp_seconds{")]
    assert 'job="mlops_health"' in line and float(line.rsplit(" ", 1)[1]) >= before
    (failing,) = [x for x in metrics.splitlines() if x.startswith("mlops_health_failing_results{")]
    assert failing.endswith(" 1")


def test_an_unreachable_heartbeat_target_never_fails_the_sweep(endpoints, tmp_path, monkeypatch):
    from mlops.dev.ports import free_port

    path = tmp_path / "checks.yaml"
    path.write_text(
        yaml.safe_dump({"checks": [{"name": "ep", "type": "http", "url": endpoints.url("/healthy")}]})
    )
    monkeypatch.setenv("MLOPS_HEALTH_CHECKS_PATH", str(path))
    monkeypatch.setenv("MLOPS_PUSHGATEWAY_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("MLOPS_HEALTH_HEARTBEAT_URL", f"http://127.0.0.1:{free_port()}/ping")
    assert len(sweep()["results"]) == 1
