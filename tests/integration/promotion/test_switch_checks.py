"""The switch's own checks, on the simulated cluster with a trivial always-ready server as the model server.

Switching traffic is the one step users feel: it must refuse a color that does not run the requested
version, even when that color is a complete, healthy rollout (of another version).
"""

from __future__ import annotations

import sys
import uuid

import pytest

from mlops.promotion import bluegreen
from mlops.promotion.manifests.render import ServingSpec
from tests.harness.kubesim import LocalProcess

MODEL = "digits"
IMAGE = "ghcr.io/mlops-airflow/always-ready:1"
# Answers 200 to every request: the probes pass at once, so a rollout completes in about a second.
SERVER = r"""
import http.server, os
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""


@pytest.fixture
def cluster(kube, kube_conn) -> bluegreen.Cluster:
    kube.register_image(IMAGE, LocalProcess(argv=[sys.executable, "-c", SERVER]))
    cluster = bluegreen.Cluster.from_connection()
    cluster.retry = bluegreen.RetryPolicy(attempts=5, initial_seconds=0.05, max_seconds=0.5)
    return cluster


def roll_out(cluster: bluegreen.Cluster, holder: str, color: str, version: str) -> None:
    spec = ServingSpec(
        MODEL,
        color,
        version,
        IMAGE,
        f"s3://artifacts/models/{MODEL}/versions/{version}/",
        cluster.namespace,
        replicas=1,
        readiness_period_seconds=1,
        progress_deadline_seconds=30,
    )
    deployed = bluegreen.deploy_candidate(cluster, spec, holder)
    bluegreen.wait_for_rollout(cluster, deployed["deployment"], version, deployed["generation"], 30, 0.1)


def selector(kube, cluster) -> str | None:
    return kube.get("Service", cluster.namespace, MODEL)["spec"]["selector"]["color"]


@pytest.fixture
def blue_serves_v1(kube, cluster) -> str:
    """blue runs v1 and takes the traffic; the test's run holds the lease. Returns the holder."""
    holder = f"mlops_promotion/test-{uuid.uuid4().hex[:6]}"
    state = bluegreen.resolve_active_color(cluster, MODEL, holder)
    assert state["candidate_color"] == "blue" and state["first_deployment"]
    roll_out(cluster, holder, "blue", "v1")
    switched = bluegreen.switch_traffic(cluster, MODEL, "blue", None, "v1", holder)
    assert switched["switched"] and selector(kube, cluster) == "blue"
    return holder


def test_a_complete_rollout_of_another_version_never_takes_the_traffic(kube, cluster, blue_serves_v1):
    roll_out(cluster, blue_serves_v1, "green", "v1")  # green is healthy and complete, but runs v1
    with pytest.raises(bluegreen.PromotionError, match="green is not a complete rollout of v2") as refused:
        bluegreen.switch_traffic(cluster, MODEL, "green", "blue", "v2", blue_serves_v1)
    assert "template version 'v1'" in str(refused.value)
    assert selector(kube, cluster) == "blue"


def test_the_switch_goes_through_when_the_target_runs_the_requested_version(kube, cluster, blue_serves_v1):
    roll_out(cluster, blue_serves_v1, "green", "v2")
    switched = bluegreen.switch_traffic(cluster, MODEL, "green", "blue", "v2", blue_serves_v1)
    assert (switched["switched"], switched["from_color"], switched["to_color"]) == (True, "blue", "green")
    service = kube.get("Service", cluster.namespace, MODEL)
    annotations = service["metadata"]["annotations"]
    assert service["spec"]["selector"]["color"] == "green"
    assert annotations[bluegreen.ACTIVE_VERSION] == "v2"
    assert annotations[bluegreen.PREVIOUS_COLOR] == "blue" and annotations[bluegreen.PREVIOUS_VERSION] == "v1"
    assert annotations[bluegreen.SWITCHED_BY] == blue_serves_v1
    assert annotations[bluegreen.SWITCHED_AT] == switched["switched_at"]


def test_switching_to_where_the_traffic_already_goes_changes_nothing(kube, cluster, blue_serves_v1):
    before = kube.get("Service", cluster.namespace, MODEL)
    again = bluegreen.switch_traffic(cluster, MODEL, "blue", None, "v1", blue_serves_v1)
    assert again["switched"] is False and again["to_color"] == "blue"
    after = kube.get("Service", cluster.namespace, MODEL)
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


def test_a_switch_from_a_color_the_service_no_longer_selects_is_refused(kube, cluster, blue_serves_v1):
    roll_out(cluster, blue_serves_v1, "green", "v2")
    with pytest.raises(bluegreen.ConcurrentPromotion, match="selects 'blue', expected 'green'"):
        bluegreen.switch_traffic(cluster, MODEL, "green", "green", "v2", blue_serves_v1)
    assert selector(kube, cluster) == "blue"


def test_a_switch_to_a_color_without_a_deployment_is_refused(kube, cluster, blue_serves_v1):
    with pytest.raises(bluegreen.PromotionError, match=f"Deployment {MODEL}-green does not exist"):
        bluegreen.switch_traffic(cluster, MODEL, "green", "blue", "v2", blue_serves_v1)
    assert selector(kube, cluster) == "blue"


def test_a_run_that_lost_its_lease_does_not_switch(kube, cluster, blue_serves_v1):
    roll_out(cluster, blue_serves_v1, "green", "v2")
    with pytest.raises(bluegreen.ConcurrentPromotion):
        bluegreen.switch_traffic(cluster, MODEL, "green", "blue", "v2", "mlops_promotion/someone-else")
    assert selector(kube, cluster) == "blue"
