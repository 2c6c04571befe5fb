"""The post-promotion analysis's failure limit, through the simulated cluster network (Service DNS).

The model server is a real process behind the active Service; a round fails because the network
really answers 503 (kubesim's fault injection), as a restarting pod or a flaky network would.
"""

from __future__ import annotations

import pytest

from mlops.promotion import gates
from tests.integration.promotion.conftest import MODEL


@pytest.fixture
def serving_v1(serving):
    serving.register("v1")
    serving.promote("v1")
    return serving


def analyse(serving, limit: int) -> gates.AnalysisReport:
    return gates.analysis_window(
        serving.client(MODEL),
        MODEL,
        "v1",
        serving.samples("v1"),
        gates.Gates(failure_limit=limit),
        duration_seconds=1.0,
        interval_seconds=0.1,
    )


def ready_path(serving) -> str:
    return rf"/_network/{serving.namespace}/{MODEL}:80/ready$"  # the Service's DNS name, as a worker


def test_one_flaky_round_under_the_failure_limit_passes_the_analysis(serving_v1):
    flaky = serving_v1.kube.faults.add("GET", ready_path(serving_v1), 503, times=1)
    report = analyse(serving_v1, limit=3)
    assert flaky.hits == 1
    assert report.ok, report.as_dict()
    window = next(c for c in report.checks if c.name == "window")
    assert "1 failed round under the failure limit 3: round 1" in window.detail
    assert report.rounds >= 2  # it went on past the failed round, to the end of the window


def test_limit_consecutive_failed_rounds_fail_the_analysis_listing_the_rounds(serving_v1):
    serving_v1.kube.faults.add("GET", ready_path(serving_v1), 503, times=None)
    with pytest.raises(gates.GateFailed) as failed:
        analyse(serving_v1, limit=3).raise_if_failed()
    assert str(failed.value).startswith(
        "post-promotion analysis failed: ready: failed in rounds 1, 2, 3 of 3 consecutive failed rounds 1-3 "
        "(failure limit 3); last: /ready answered 503"
    ), str(failed.value)


def test_a_failing_streak_at_the_end_of_the_window_is_not_cut_short(serving_v1):
    # Rounds fail from the start; the window (1 s) ends long before the limit (30 rounds at 0.1 s) is
    # reached, yet the analysis neither passes on the deadline nor stops before the limit.
    serving_v1.kube.faults.add("GET", ready_path(serving_v1), 503, times=12)
    report = analyse(serving_v1, limit=30)
    assert report.ok and report.rounds == 13, report.as_dict()
    window = next(c for c in report.checks if c.name == "window")
    assert "12 failed rounds under the failure limit 30" in window.detail
