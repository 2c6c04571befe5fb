"""Check declarations are data: validated with JSON Schema, placeholders filled from settings."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from mlops.health.checks import TYPES
from mlops.health.config import DEFAULT_PATH, ConfigError, load_checks, parse
from mlops.settings import get_settings


def test_the_packaged_checks_file_is_valid_and_covers_every_area():
    settings = dataclasses.replace(
        get_settings(),
        prometheus_url="http://prometheus:9090",
        health_model_service="churn",
        health_check_gpu_nodes=True,
    )
    specs = load_checks(settings)
    assert {s.type for s in specs} == set(TYPES)
    assert len({s.name for s in specs}) == len(specs)


def test_placeholders_are_filled_from_settings_at_load_time():
    settings = dataclasses.replace(
        get_settings(),
        serving_namespace="prod-serving",
        backup_bucket="acme-backups",
        health_model_service="churn",
    )
    by_name = {s.name: s for s in load_checks(settings)}
    assert (
        by_name["model-server-health"].params["url"] == "http://churn.prod-serving.svc.cluster.local/health"
    )
    assert by_name["backup-freshness"].params["bucket"] == "acme-backups"


def test_optional_checks_are_skipped_while_their_setting_is_empty():
    names = {
        s.name
        for s in load_checks(dataclasses.replace(get_settings(), prometheus_url="", health_model_service=""))
    }
    assert "model-latency-p95" not in names and "model-accuracy" not in names
    assert "model-server-health" not in names and "backup-freshness" in names


def test_the_checks_file_path_comes_from_the_environment(tmp_path, monkeypatch):
    path = tmp_path / "checks.yaml"
    path.write_text(yaml.safe_dump({"checks": [{"name": "only", "type": "http", "url": "http://x/health"}]}))
    monkeypatch.setenv("MLOPS_HEALTH_CHECKS_PATH", str(path))
    assert [s.name for s in load_checks(get_settings())] == ["only"]


def test_defaults_apply_unless_a_check_overrides_them():
    doc = {
        "defaults": {"timeout_seconds": 3, "failures_before_alert": 2, "severity": "warning"},
        "checks": [
            {"name": "a", "type": "http", "url": "http://a/"},
            {
                "name": "b",
                "type": "http",
                "url": "http://b/",
                "failures_before_alert": 5,
                "severity": "critical",
            },
        ],
    }
    a, b = parse(doc, get_settings())
    assert (a.timeout_seconds, a.failures_before_alert, a.severity, a.pages) == (3, 2, "warning", False)
    assert (b.failures_before_alert, b.severity, b.pages) == (5, "critical", True)


@pytest.mark.parametrize(
    ("check", "message"),
    [
        (
            {"name": "x", "type": "http", "url": "http://x/", "json": [{"path": "a", "op": "eval"}]},
            "check x:",
        ),
        ({"name": "x", "type": "http", "url": "ftp://x/"}, "does not match"),
        ({"name": "x", "type": "http", "url": "http://${no_such_setting}/"}, "unknown placeholder"),
        ({"name": "x", "type": "s3"}, "'bucket' is a required property"),
        ({"name": "x", "type": "http", "url": "http://x/", "typo_field": 1}, "typo_field"),
        ({"name": "x", "type": "nope"}, "checks file"),
        ({"name": "x", "type": "http", "url": "http://x/", "enabled_if": "nothing"}, "enabled_if"),
    ],
)
def test_invalid_declarations_are_rejected_naming_the_check(check, message):
    with pytest.raises(ConfigError, match="x|checks file") as info:
        parse({"checks": [check]}, get_settings())
    assert message in str(info.value)


def test_a_check_declared_twice_is_rejected():
    check = {"name": "dup", "type": "http", "url": "http://x/"}
    with pytest.raises(ConfigError, match="declared twice"):
        parse({"checks": [check, check]}, get_settings())


def test_the_default_file_is_packaged_with_the_library():
    assert DEFAULT_PATH.name == "checks.yaml" and DEFAULT_PATH.is_file()


def test_checks_that_need_an_unshipped_permission_are_off_by_default():
    """Before: gpu-nodes ran in every environment and errored every five minutes without its ClusterRole."""
    names = {s.name for s in load_checks(get_settings())}
    assert "gpu-nodes" not in names
    enabled = dataclasses.replace(get_settings(), health_check_gpu_nodes=True)
    (gpu,) = [s for s in load_checks(enabled) if s.name == "gpu-nodes"]
    assert gpu.params["label_selector"] == "mlops.io/pool=gpu"
