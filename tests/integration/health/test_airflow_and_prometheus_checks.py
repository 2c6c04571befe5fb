"""Airflow component heartbeats and the optional Prometheus queries, against real servers.

The Airflow health document is produced by Airflow's own ``get_airflow_health()`` over the
test metadata DB (jobs with fresh and stale heartbeats) and served over HTTP; the
Prometheus queries run on a real Prometheus server (Debian's package) scraping a local
exporter.
"""

from __future__ import annotations

import datetime as dt
import socket
import time

import httpx
import pytest

from mlops.dev.ports import free_port
from mlops.health.config import CheckSpec
from mlops.health.runner import run_checks
from tests.harness.prometheus import MISSING, PROMETHEUS, running_prometheus
from tests.harness.tools import require_tool


# -- Airflow ------------------------------------------------------------------------------------
@pytest.fixture
def airflow_jobs(airflow_db):
    from airflow.jobs.job import Job
    from airflow.utils.session import create_session

    now = dt.datetime.now(dt.UTC)
    rows = []
    with create_session() as session:
        for job_type, age in (("SchedulerJob", 5), ("DagProcessorJob", 3600)):
            job = Job()
            job.job_type, job.state, job.hostname = job_type, "running", socket.gethostname()
            job.start_date, job.latest_heartbeat = (
                now - dt.timedelta(seconds=age),
                now - dt.timedelta(seconds=age),
            )
            session.add(job)
            rows.append(job)
    yield
    with create_session() as session:
        for job in rows:
            session.delete(session.merge(job))


def test_airflow_components_are_read_from_the_health_endpoint(airflow_jobs, endpoints, settings):
    from airflow.api.common.airflow_health import get_airflow_health
    from airflow.api_fastapi.core_api.datamodels.monitor import HealthInfoResponse

    health = HealthInfoResponse.model_validate(get_airflow_health()).model_dump(mode="json")
    endpoints.routes["/airflow/api/v2/monitor/health"] = (200, health)
    spec = CheckSpec("airflow", "airflow", 5, params={"url": endpoints.url("/airflow")})
    results = {r.target: r for r in run_checks([spec], settings).results}
    assert results["airflow/metadatabase"].ok
    assert results["airflow/scheduler"].ok, results["airflow/scheduler"].summary
    assert not results["airflow/dag_processor"].ok
    assert results["airflow/dag_processor"].summary.startswith(
        "airflow dag_processor: unhealthy, last heartbeat"
    )
    assert not results["airflow/triggerer"].ok and "no status" in results["airflow/triggerer"].summary


def test_an_unreachable_airflow_api_fails_the_check(settings):
    spec = CheckSpec("airflow", "airflow", 2, params={"url": "http://127.0.0.1:9"})
    (result,) = run_checks([spec], settings).results
    assert not result.ok and result.errored and result.target == "http://127.0.0.1:9"


# -- Prometheus --------------------------------------------------------------------------------

METRICS = b"""# TYPE mlops_model_accuracy gauge
mlops_model_accuracy{model="churn",version="3"} 0.80
mlops_model_accuracy{model="fraud",version="7"} 0.93
# TYPE mlops_model_info gauge
mlops_model_info{model="churn",version="3"} 1
"""


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory, endpoints):
    require_tool(PROMETHEUS, MISSING)
    endpoints.routes["/metrics"] = (200, METRICS)
    home = tmp_path_factory.mktemp("prometheus")
    exporter = endpoints.url("/metrics").split("//")[1].split("/")[0]
    # nothing listens on the model-server target: a model server that is down
    jobs = {"exporter": [exporter], "model-server": [f"127.0.0.1:{free_port()}"]}
    with running_prometheus(home, jobs) as url:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # ready once both targets have been scraped
            try:
                answer = httpx.get(f"{url}/api/v1/query", params={"query": "count(up)"}, timeout=1).json()
                if answer["data"]["result"] and float(answer["data"]["result"][0]["value"][1]) == 2:
                    break
            except (httpx.HTTPError, KeyError, ValueError):
                pass
            time.sleep(0.3)
        else:
            pytest.fail("prometheus did not scrape its targets within 30 s")
        yield url


def prom(name: str, url: str, query: str, op: str, value: float, **extra) -> CheckSpec:
    return CheckSpec(
        name,
        "prometheus",
        5,
        params={"url": url, "query": query, "fail_if": {"op": op, "value": value}, **extra},
    )


def test_accuracy_below_085_fails_per_model_version(prometheus, settings):
    spec = prom(
        "acc",
        prometheus,
        "min by (model, version) (mlops_model_accuracy)",
        "lt",
        0.85,
        target_labels=["model", "version"],
    )
    results = {r.target: r for r in run_checks([spec], settings).results}
    assert not results["model=churn,version=3"].ok and results["model=fraud,version=7"].ok
    assert results["model=churn,version=3"].summary == "acc model=churn,version=3: 0.8 (lt 0.85)"


def test_a_model_server_that_is_down_fails_the_serving_down_query(prometheus, settings):
    spec = prom(
        "down",
        prometheus,
        '(up{job="model-server"} == 0) or absent(up{job="model-server"})',
        "ge",
        0,
        target_labels=["instance"],
    )
    (result,) = run_checks([spec], settings).results
    assert not result.ok and result.target.startswith("instance=127.0.0.1:")


def test_an_empty_answer_is_healthy_unless_told_otherwise(prometheus, settings):
    query = (
        "histogram_quantile(0.95, sum by (model, version, le) "
        "(rate(mlops_model_request_duration_seconds_bucket[5m])))"
    )
    (ok,) = run_checks([prom("p95", prometheus, query, "gt", 0.5)], settings).results
    (no_data,) = run_checks([prom("p95", prometheus, query, "gt", 0.5, on_empty="fail")], settings).results
    assert ok.ok and not no_data.ok and "no series" in no_data.summary


def test_an_invalid_query_fails_the_check_with_prometheus_error(prometheus, settings):
    (result,) = run_checks([prom("bad", prometheus, "sum(", "gt", 0)], settings).results
    assert not result.ok and result.errored and "400" in result.summary
