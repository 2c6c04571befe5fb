"""The Prometheus rules and Grafana dashboard shipped in helm-values/monitoring/.

promtool comes from Debian's ``prometheus`` package (``apt-get install -y
--no-install-recommends prometheus``); these tests skip only when it is absent.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

MONITORING = Path(__file__).resolve().parents[3] / "helm-values" / "monitoring"
RULES = MONITORING / "prometheus-rules.yaml"
RULE_TESTS = MONITORING / "prometheus-rules.test.yaml"
DASHBOARD = MONITORING / "grafana-dashboard-mlops.json"
CHECKS = Path(__file__).resolve().parents[3] / "include" / "mlops" / "health" / "checks.yaml"

# The metric contract documented at the top of prometheus-rules.yaml.
CONTRACT = {
    "up",
    "mlops_model_requests_total",
    "mlops_model_request_duration_seconds_bucket",
    "mlops_model_info",
    "mlops_model_accuracy",
    "mlops_training_failures_total",
    "airflow_dagrun_duration_failed_count",
    "mlops_backup_last_verified_timestamp_seconds",
    "ALERTS",
}
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not installed: apt-get install -y --no-install-recommends prometheus",
)
_METRIC = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?:\{|\[)")


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


def test_rules_dashboard_and_health_checks_use_only_the_metric_contract():
    rules = yaml.safe_load(RULES.read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]] + dashboard_exprs()
    exprs += [c["query"] for c in yaml.safe_load(CHECKS.read_text())["checks"] if c["type"] == "prometheus"]
    functions = {
        "rate",
        "increase",
        "sum",
        "min",
        "max",
        "count",
        "absent",
        "histogram_quantile",
        "by",
        "vector",
        "time",
    }
    used = {m for e in exprs for m in _METRIC.findall(e)} - functions
    assert used <= CONTRACT, f"metrics outside the documented contract: {used - CONTRACT}"
