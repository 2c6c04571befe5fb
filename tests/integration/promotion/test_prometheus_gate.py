"""The optional Prometheus gate, against a real Prometheus scraping a real model server."""

from __future__ import annotations

import time

import httpx
import pytest

from mlops.dev.ports import free_port
from mlops.promotion.gates import Gates, PrometheusGate
from tests.harness.prometheus import MISSING, PROMETHEUS, running_prometheus
from tests.integration.serving.test_model_server_process import start_server, wait_ready
from tests.unit.serving.digits_artifacts import held_out, upload_version


@pytest.fixture
def scraped_server(tmp_path, s3_server, s3_client, s3_bucket):
    """A model server serving digits v7 that has answered 40 predictions, and a Prometheus that scraped it."""
    if PROMETHEUS is None:
        pytest.skip(MISSING)
    server, url = start_server(s3_server, upload_version(s3_client, s3_bucket, "digits", "v7"), version="v7")
    try:
        with running_prometheus(tmp_path, {"model-server": [url.split("//")[1]]}) as prom_url:
            wait_ready(server, url)
            inputs, _ = held_out(4)
            query = 'mlops_model_requests_total{model="digits",version="v7",status="200"}'
            deadline = time.monotonic() + 30
            while (
                time.monotonic() < deadline
            ):  # traffic, until two scrapes have seen it (rate needs two points)
                for _ in range(10):
                    assert httpx.post(f"{url}/predict", json={"instances": inputs}).status_code == 200
                try:
                    if (PrometheusGate(prom_url).query(f"count_over_time({query}[1m])") or 0) >= 2:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.5)
            else:
                pytest.fail("prometheus did not scrape the model server within 30 s")
            yield prom_url
    finally:
        server.terminate()
        server.wait(10)


def test_prometheus_gate_passes_a_healthy_version_and_fails_one_over_its_latency_budget(scraped_server):
    gate = PrometheusGate(scraped_server, window="1m")
    healthy = gate.check("digits", "v7", Gates(max_error_rate=0.01, max_p95_seconds=0.25))
    assert healthy.ok and "error_rate 0.0000" in healthy.detail, healthy.detail
    strict = gate.check("digits", "v7", Gates(max_error_rate=0.01, max_p95_seconds=0.00001))
    assert not strict.ok and "p95 latency" in strict.detail
    unknown = gate.check("digits", "v8", Gates())  # a version without traffic has no data
    assert unknown.ok and "no data" in unknown.detail


def test_an_unreachable_prometheus_fails_the_gate():
    check = PrometheusGate(f"http://127.0.0.1:{free_port()}", timeout=1).check("digits", "v7", Gates())
    assert not check.ok and "query failed" in check.detail
