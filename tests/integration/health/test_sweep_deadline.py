"""The sweep's global deadline and the bound on a check's own timeout (issue 15, bug 9)."""

from __future__ import annotations

import dataclasses
import time

import pytest

from mlops.health.config import CheckSpec, ConfigError, parse
from mlops.health.runner import run_checks
from mlops.settings import get_settings


def test_the_sweep_ends_at_its_deadline_and_keeps_the_results_of_checks_that_finished(endpoints):
    """Before: the sweep waited for its slowest check, however long the check's own timeout."""
    specs = [
        CheckSpec("fast", "http", timeout_seconds=5, params={"url": endpoints.url("/healthy?deadline")}),
        CheckSpec("hangs", "http", timeout_seconds=5, params={"url": endpoints.url("/hang?deadline")}),
    ]
    started = time.monotonic()
    report = run_checks(specs, get_settings(), deadline_seconds=1.0)
    assert time.monotonic() - started < 3
    by_check = {r.check: r for r in report.results}
    assert by_check["fast"].ok and report.completed == ["fast"]
    assert not by_check["hangs"].ok and by_check["hangs"].errored
    assert "deadline" in by_check["hangs"].summary
    assert report.started_at


def test_a_check_timeout_longer_than_the_sweep_allows_is_a_configuration_error():
    """Before: a check could declare a timeout past the run_checks task's own timeout."""
    settings = dataclasses.replace(get_settings(), health_sweep_deadline_seconds=60)
    document = {"checks": [{"name": "slow", "type": "http", "url": "http://x/", "timeout_seconds": 200}]}
    with pytest.raises(
        ConfigError, match="check slow: timeout_seconds 200 exceeds the sweep's deadline of 60s"
    ):
        parse(document, settings)
