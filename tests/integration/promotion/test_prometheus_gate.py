"""The optional Prometheus gate, against a real Prometheus scraping a real model server."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import httpx
import pytest

from mlops.dev.ports import free_port
from mlops.promotion import gates
from mlops.promotion.gates import Gates, PrometheusGate
from tests.harness.prometheus import MISSING, PROMETHEUS, running_prometheus
from tests.harness.tools import require_tool
from tests.integration.serving.test_model_server_process import start_server, wait_ready
from tests.unit.serving.digits_artifacts import held_out, upload_version


@dataclass(frozen=True)
class Scraped:
    prometheus: str  # Prometheus's URL
    server: str  # the model server's URL
    artifact_uri: str


@pytest.fixture
def scraped_server(tmp_path, s3_server, s3_client, s3_bucket):
    """A model server serving digits v7 that has answered 40 predictions, and a Prometheus that scraped it."""
    require_tool(PROMETHEUS, MISSING)
    uri = upload_version(s3_client, s3_bucket, "digits", "v7")
    server, url = start_server(s3_server, uri, version="v7")
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
            yield Scraped(prom_url, url, uri)
    finally:
        server.terminate()
        server.wait(10)


def test_prometheus_gate_passes_a_healthy_version_and_fails_one_over_its_latency_budget(scraped_server):
    gate = PrometheusGate(scraped_server.prometheus, window="1m")
    healthy = gate.check("digits", "v7", Gates(max_error_rate=0.01, max_p95_seconds=0.25))
    assert healthy.ok and "error_rate 0.0000" in healthy.detail, healthy.detail
    strict = gate.check("digits", "v7", Gates(max_error_rate=0.01, max_p95_seconds=0.00001))
    assert not strict.ok and "p95 latency" in strict.detail
    unknown = gate.check("digits", "v8", Gates())  # a version without traffic has no data: it fails
    assert not unknown.ok and "error_rate: no data" in unknown.detail, unknown.detail
    assert gate.queries("digits", "v8")["error_rate"] in unknown.detail  # the message names the query
    allowed = gate.check("digits", "v8", Gates(allow_no_metrics=True))
    assert allowed.ok and "no data (allowed)" in allowed.detail


def test_an_unreachable_prometheus_fails_the_gate():
    check = PrometheusGate(f"http://127.0.0.1:{free_port()}", timeout=1).check("digits", "v7", Gates())
    assert not check.ok and "query failed" in check.detail


def queries_answered(prom_url: str, at_least: int = 0) -> int:
    """How many instant queries Prometheus has answered, from its own request counter.

    Prometheus counts a request after its handler has returned, so a reply can arrive before its
    count: wait (briefly) for ``at_least``.
    """
    deadline = time.monotonic() + 3
    while (count := _query_counter(prom_url)) < at_least and time.monotonic() < deadline:
        time.sleep(0.05)
    return count


def _query_counter(prom_url: str) -> int:
    metrics = httpx.get(f"{prom_url}/metrics").text
    found = re.search(
        r'^prometheus_http_requests_total\{code="200",handler="/api/v1/query"\} (\d+)', metrics, re.M
    )
    return int(found.group(1)) if found else 0


def test_a_candidate_whose_traffic_was_never_scraped_fails_pre_promotion_naming_the_query(
    scraped_server, s3_server, s3_client
):
    # v8 serves and answers the smoke predictions, but no scrape target covers it (a missing annotation).
    server, url = start_server(s3_server, scraped_server.artifact_uri, version="v8")
    try:
        wait_ready(server, url)
        gate = PrometheusGate(scraped_server.prometheus, window="1m")
        report = gates.pre_promotion(
            gates.DirectServiceClient(url),
            "digits",
            "v8",
            gates.load_samples(s3_client, scraped_server.artifact_uri),
            0.95,
            None,
            Gates(metrics_wait_seconds=1.5),
            gate,
        )
    finally:
        server.terminate()
        server.wait(10)
    verdicts = {c.name: c for c in report.checks}
    assert verdicts["smoke"].ok and not report.ok
    prometheus = verdicts["prometheus"]
    assert not prometheus.ok and "error_rate: no data" in prometheus.detail
    assert gate.queries("digits", "v8")["error_rate"] in prometheus.detail
    assert "after waiting 1.5 s" in prometheus.detail
    with pytest.raises(gates.GateFailed, match=r"prometheus: error_rate: no data \(query: "):
        report.raise_if_failed()


def test_the_post_promotion_analysis_queries_prometheus_at_every_round(scraped_server, s3_client):
    gate = PrometheusGate(scraped_server.prometheus, window="1m")
    before = queries_answered(scraped_server.prometheus)
    report = gates.analysis_window(
        gates.DirectServiceClient(scraped_server.server),
        "digits",
        "v7",
        gates.load_samples(s3_client, scraped_server.artifact_uri),
        Gates(max_p95_seconds=5.0),  # this test counts queries; a loaded test machine may be slow
        # A round costs well under a second here; 6 s leaves a loaded 2-core machine room for two.
        duration_seconds=6.0,
        interval_seconds=0.3,
        prometheus=gate,
    )
    assert report.ok, report.as_dict()
    assert report.rounds >= 2, report.as_dict()
    answered = queries_answered(scraped_server.prometheus, before + 2 * report.rounds) - before
    assert answered == 2 * report.rounds, f"{answered} queries for {report.rounds} rounds"  # 2 per round
    prometheus = [c for c in report.checks if c.name == "prometheus"]
    assert len(prometheus) == 1 and prometheus[0].ok and "error_rate 0.0000" in prometheus[0].detail
