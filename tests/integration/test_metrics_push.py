"""Batch-job metrics reach a real Pushgateway, one group per grouping key."""

from __future__ import annotations

import logging
import uuid

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from mlops import metrics


def _samples(gateway: str, name: str, job: str) -> dict[str, float]:
    text = requests.get(f"{gateway}/metrics", timeout=5).text
    return {
        sample.labels.get("database", ""): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and sample.labels.get("job") == job
    }


def test_a_push_for_one_database_keeps_the_other_databases_metrics(pushgateway):
    job = f"backup-{uuid.uuid4().hex[:6]}"
    help_text = "when the last verified backup finished"
    assert metrics.push(job, {"database": "airflow"}, {"t_seconds": (100, help_text)}, gateway=pushgateway)
    assert metrics.push(job, {"database": "mlflow"}, {"t_seconds": (200, help_text)}, gateway=pushgateway)
    # A second push for airflow, even one replacing its whole group, leaves mlflow's alone.
    metrics.push(
        job, {"database": "airflow"}, {"t_seconds": (300, help_text)}, gateway=pushgateway, replace=True
    )

    assert _samples(pushgateway, "t_seconds", job) == {"airflow": 300, "mlflow": 200}


def test_pushadd_replaces_only_the_metrics_it_names_within_a_group(pushgateway):
    job = f"backup-{uuid.uuid4().hex[:6]}"
    metrics.push(job, {"database": "db"}, {"a": (1, "a"), "b": (2, "b")}, gateway=pushgateway)
    metrics.push(job, {"database": "db"}, {"a": (5, "a")}, gateway=pushgateway)
    assert (_samples(pushgateway, "a", job), _samples(pushgateway, "b", job)) == ({"db": 5}, {"db": 2})


def test_without_a_gateway_the_metrics_are_logged_and_not_pushed(monkeypatch, caplog):
    monkeypatch.delenv("MLOPS_PUSHGATEWAY_URL", raising=False)
    with caplog.at_level(logging.INFO, logger="mlops.metrics"):
        assert metrics.push("backup", {"database": "db"}, {"size_bytes": (1024, "size")}) is False
    assert "MLOPS_PUSHGATEWAY_URL is not set" in caplog.text and "size_bytes=1024" in caplog.text


def test_the_setting_names_the_gateway_and_a_dead_one_raises(monkeypatch, pushgateway):
    from mlops.dev.ports import free_port

    monkeypatch.setenv("MLOPS_PUSHGATEWAY_URL", pushgateway)
    assert metrics.push(f"j-{uuid.uuid4().hex[:6]}", {"database": "db"}, {"x": (1, "x")})
    monkeypatch.setenv("MLOPS_PUSHGATEWAY_URL", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(OSError):  # urllib's URLError is an OSError
        metrics.push("j", {"database": "db"}, {"x": (1, "x")}, timeout=2)
