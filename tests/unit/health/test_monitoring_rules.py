"""The Prometheus rules, scrape configuration and Grafana dashboard shipped in helm-values/monitoring/.

The metric contract (every metric read is emitted by a real emitter) is proven by
tests/integration/health/test_metric_contract.py against the real emitters.

promtool comes from Debian's ``prometheus`` package (``apt-get install -y
--no-install-recommends prometheus``); these tests skip only when it is absent.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.harness.tools import require_tool

MONITORING = Path(__file__).resolve().parents[3] / "helm-values" / "monitoring"
RULES = MONITORING / "prometheus-rules.yaml"
RULE_TESTS = MONITORING / "prometheus-rules.test.yaml"
DASHBOARD = MONITORING / "grafana-dashboard-mlops.json"
CHECKS = Path(__file__).resolve().parents[3] / "include" / "mlops" / "health" / "checks.yaml"

PROMTOOL = shutil.which("promtool")
MISSING_PROMTOOL = "promtool not installed: apt-get install -y --no-install-recommends prometheus"
needs_promtool = pytest.mark.usefixtures("promtool_installed")


@pytest.fixture
def promtool_installed() -> str:
    return require_tool(PROMTOOL, MISSING_PROMTOOL)


def promtool(*args: str, cwd: Path = MONITORING) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    return exprs + [a["expr"] for a in dash["annotations"]["list"]]


@needs_promtool
def test_the_alert_rules_pass_promtool_check():
    result = promtool("check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_the_alert_rules_pass_their_promtool_unit_tests():
    result = promtool("test", "rules", RULE_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_seed_alerts_are_all_defined():
    rules = yaml.safe_load(RULES.read_text())
    names = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    assert {
        "ModelServingDown",
        "ModelHighLatencyP95",
        "ModelAccuracyDrop",
        "TrainingRunsFailing",
        "BackupStale",
        "HealthSweepStale",
        "HealthSweepAbsent",
    } <= names
    tested = {
        t["alertname"]
        for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for t in case["alert_rule_test"]
    }
    assert names - {"BackupMetricAbsent"} <= tested


@needs_promtool
def test_every_dashboard_query_is_valid_promql(tmp_path):
    exprs = [e.replace("$model", ".*") for e in dashboard_exprs()]
    groups = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": f"dashboard:q{i}", "expr": e} for i, e in enumerate(exprs)],
            }
        ]
    }
    (tmp_path / "dashboard.yaml").write_text(yaml.safe_dump(groups))
    result = promtool("check", "rules", "dashboard.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dashboard_is_importable_grafana_json():
    dash = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)) and dash["uid"] and dash["title"]
    assert all(t["datasource"]["uid"] == "${datasource}" for p in dash["panels"] for t in p["targets"])


@needs_promtool
def test_the_shipped_scrape_configs_are_a_valid_prometheus_configuration(tmp_path):
    snippet = yaml.safe_load((MONITORING / "scrape-configs.yaml").read_text())
    for job in snippet["scrape_configs"]:
        # Debian's Prometheus is built without the Kubernetes service discovery: check everything
        # else (relabelling, options) with the same job discovering a static target instead.
        if job.pop("kubernetes_sd_configs", None) is not None:
            job["static_configs"] = [{"targets": ["10.0.0.1:8080"]}]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({"global": {}, **snippet}))
    result = promtool("check", "config", "prometheus.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_operator_monitors_give_the_job_names_the_rules_use():
    """The rules read up{job="model-server"}: the PodMonitor must name its job so (jobLabel: app)."""
    docs = {
        d["kind"]: d
        for d in yaml.safe_load_all((MONITORING / "prometheus-operator-monitors.yaml").read_text())
    }
    pod_monitor = docs["PodMonitor"]
    assert pod_monitor["spec"]["jobLabel"] == "app"
    assert pod_monitor["spec"]["selector"]["matchLabels"] == {"app": "model-server"}
    from mlops.promotion.manifests.render import APP

    assert APP == "model-server"  # the serving pods' app label, which becomes the job name
    assert docs["ServiceMonitor"]["spec"]["endpoints"][0]["honorLabels"] is True
    rules = RULES.read_text()
    assert 'up{job="model-server"}' in rules
