"""HTTP(S) checks against real local endpoints: healthy, 500, hanging, bad JSON, expiring TLS."""

from __future__ import annotations

import time

import pytest

from mlops.health.config import CheckSpec
from mlops.health.runner import run_checks
from tests.integration.health.endpoints import EndpointServer

# What a loaded 2-core machine (other test runs beside this one) may add to a bounded wait: the bounds
# below stay well under what the bug they catch would take.
LOAD_MARGIN_S = 2.0

READY = [
    {"path": "status", "op": "eq", "value": "ok"},
    {"path": "models[0].ready", "op": "eq", "value": True},
]


def http(name: str, url: str, timeout: float = 2.0, **params) -> CheckSpec:
    return CheckSpec(name, "http", timeout_seconds=timeout, params={"url": url, **params})


def one(spec: CheckSpec, settings):
    (result,) = run_checks([spec], settings).results
    return result


def test_a_healthy_endpoint_passes_status_body_and_latency(endpoints, settings):
    result = one(http("ok", endpoints.url("/healthy"), json=READY, max_latency_seconds=1.0), settings)
    assert result.ok, result.summary
    assert result.details["status"] == 200


def test_a_500_fails_naming_the_status(endpoints, settings):
    result = one(http("err", endpoints.url("/error")), settings)
    assert not result.ok and "status 500, expected [200]" in result.summary


def test_a_body_that_is_not_json_fails_the_body_predicate(endpoints, settings):
    result = one(http("html", endpoints.url("/badjson"), json=READY), settings)
    assert not result.ok and "body is not JSON: <html>" in result.summary


def test_a_body_predicate_that_does_not_hold_fails(endpoints, settings):
    endpoints.documents["degraded"] = {"status": "degraded", "models": []}
    result = one(http("pred", endpoints.url("/json/degraded"), json=READY), settings)
    assert not result.ok
    assert (
        "status: 'degraded' is not eq 'ok'" in result.summary and "models[0].ready: missing" in result.summary
    )


def test_a_slow_endpoint_fails_the_latency_threshold(endpoints, settings):
    result = one(http("slow", endpoints.url("/slow/300"), max_latency_seconds=0.1), settings)
    assert not result.ok and "above 0.1s" in result.summary


def test_a_hanging_endpoint_fails_at_its_timeout_not_later(endpoints, settings):
    started = time.monotonic()
    result = one(http("hang", endpoints.url("/hang"), timeout=0.5), settings)
    elapsed = time.monotonic() - started
    assert not result.ok and "timed out after 0.5s" in result.summary
    assert elapsed < 0.5 + LOAD_MARGIN_S  # without the timeout it would hang until the server stops


def test_a_closed_port_fails_with_the_transport_error(settings):
    result = one(http("closed", "http://127.0.0.1:9/health"), settings)
    assert not result.ok and result.summary.startswith("http://127.0.0.1:9/health: ")


@pytest.mark.parametrize(("days_left", "ok"), [(5, False), (60, True)])
def test_tls_certificates_close_to_expiry_fail(tmp_path, settings, days_left, ok):
    server = EndpointServer(tls_dir=tmp_path, cert_days_left=days_left).start()
    try:
        result = one(http("tls", server.url("/healthy"), ca_file=server.ca_path, tls_min_days=14), settings)
    finally:
        server.stop()
    assert result.ok is ok, result.summary
    assert result.details["tls_days_left"] == pytest.approx(days_left, abs=0.01)
    if not ok:
        assert f"TLS certificate expires in {days_left}.0 days (minimum 14)" in result.summary


def test_an_untrusted_certificate_fails_verification(tmp_path, settings):
    server = EndpointServer(tls_dir=tmp_path).start()
    try:
        result = one(http("tls", server.url("/healthy")), settings)
    finally:
        server.stop()
    assert not result.ok and "CERTIFICATE_VERIFY_FAILED" in result.summary


def test_checks_run_concurrently_so_hangs_cost_one_timeout(endpoints, settings):
    specs = [http(f"hang-{i}", endpoints.url(f"/hang?{i}"), timeout=1.0) for i in range(5)]
    specs += [http(f"ok-{i}", endpoints.url(f"/healthy?{i}"), timeout=1.0) for i in range(20)]
    started = time.monotonic()
    report = run_checks(specs, settings)
    elapsed = time.monotonic() - started
    # One after another they would take 5 s; together one timeout (1 s) plus the margin for load.
    assert elapsed < 1.0 + LOAD_MARGIN_S, f"5 hanging checks of 1 s took {elapsed:.2f}s together"
    assert sorted(r.check for r in report.failing) == [f"hang-{i}" for i in range(5)]
    assert set(report.completed) == {f"ok-{i}" for i in range(20)}
