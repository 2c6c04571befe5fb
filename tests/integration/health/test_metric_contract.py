"""Every metric a shipped rule, dashboard panel or Prometheus check reads is emitted by shipped code.

The real emitters run: the model server process (``python -m mlops.serving``), and the
Pushgateway that batch code pushes to through the shipped functions (the failure and
success callbacks, the health sweep, the accuracy publisher). A real Prometheus scrapes
them under the job names of helm-values/monitoring/scrape-configs.yaml and evaluates
the shipped rules on what it scraped. A metric that nothing emits fails the test.
"""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import yaml

from tests.harness.prometheus import MISSING, PROMETHEUS, running_prometheus
from tests.harness.pushgateway import pushgateway_target, wipe_pushgateway
from tests.harness.tools import require_tool
from tests.integration.serving.test_model_server_process import start_server, wait_ready
from tests.unit.serving.digits_artifacts import held_out, upload_version

ROOT = Path(__file__).resolve().parents[3]
MONITORING = ROOT / "helm-values" / "monitoring"
RULES = MONITORING / "prometheus-rules.yaml"
DASHBOARD = MONITORING / "grafana-dashboard-mlops.json"
SCRAPE = MONITORING / "scrape-configs.yaml"
CHECKS = ROOT / "include" / "mlops" / "health" / "checks.yaml"
# Series Prometheus itself makes (for every target, and for every alerting rule).
PROMETHEUS_OWN = {"up", "ALERTS", "ALERTS_FOR_STATE"}
# Metrics whose shipped emitter lives on a branch not merged here yet: name -> owner. The test
# fails as soon as one of them is emitted, so that the entry is removed with the merge.
# Metrics a rule reads whose emitter is still being built (name -> owner); empty when all exist.
PENDING_EMITTERS: dict[str, str] = {}

_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
    "offset", "inf", "nan",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (functions, keywords and label names removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range selectors
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"\boffset\s+\d+[smhdwy]", "", text)
    names = set()
    for match in re.finditer(r"(?<![\w$.])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\()?", text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in _KEYWORDS or re.fullmatch(r"\d+[smhdwy]", name):
            continue
        names.add(name)
    return names


def shipped_expressions() -> dict[str, str]:
    """``{where: expr}`` for every rule, dashboard query and Prometheus health check that ships."""
    exprs = {}
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            exprs[f"rule {rule.get('alert') or rule.get('record')}"] = rule["expr"]
    dash = json.loads(DASHBOARD.read_text())
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            exprs[f"panel {panel['title']!r} {target.get('refId', '')}"] = target["expr"]
    for annotation in dash["annotations"]["list"]:
        exprs[f"annotation {annotation['name']!r}"] = annotation["expr"]
    for variable in dash.get("templating", {}).get("list", []):
        query = variable.get("query", "")
        found = re.fullmatch(r"label_values\((\w+),\s*\w+\)", query) if isinstance(query, str) else None
        if found:
            exprs[f"variable {variable['name']}"] = found.group(1)
    for check in yaml.safe_load(CHECKS.read_text())["checks"]:
        if check["type"] == "prometheus":
            exprs[f"check {check['name']}"] = check["query"]
    return exprs


def missing_metrics(exprs: dict[str, str], prometheus: str) -> dict[str, list[str]]:
    """``{metric: [where it is read]}`` for every metric read that the Prometheus has no series of."""
    readers: dict[str, list[str]] = {}
    for where, expr in exprs.items():
        for name in metric_names(expr):
            readers.setdefault(name, []).append(where)
    missing = {}
    for name, where in sorted(readers.items()):
        if name in PROMETHEUS_OWN:
            continue
        answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": f'count({{__name__="{name}"}})'})
        if not answer.json()["data"]["result"]:
            missing[name] = where
    return missing


def test_metric_names_are_read_from_promql():
    expr = (
        'max by (dag_id) (a_total{x="y"}) > on (dag_id) max(b_seconds offset 1h) '
        'or absent(c) unless histogram_quantile(0.95, sum by (le) (rate(d_bucket{m=~"$model"}[5m])))'
    )
    assert metric_names(expr) == {"a_total", "b_seconds", "c", "d_bucket"}


def wait_until(predicate, what: str, timeout: float = 40.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except httpx.HTTPError:
            value = None
        if value:
            return value
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}")


def _evaluated_at(rule: dict) -> datetime:
    stamp = rule.get("lastEvaluation") or "0001-01-01T00:00:00Z"
    whole, _, fraction = stamp.rstrip("Z").partition(".")
    return datetime.fromisoformat(f"{whole}.{(fraction or '0')[:6]:0<6}+00:00")


def query(prometheus: str, promql: str) -> list[dict]:
    return httpx.get(f"{prometheus}/api/v1/query", params={"query": promql}).json()["data"]["result"]


def test_every_metric_read_by_rules_panels_and_checks_is_scraped_from_a_real_emitter(
    tmp_path, s3_server, s3_client, s3_bucket, pushgateway, monkeypatch, alert_conns, endpoints
):
    require_tool(PROMETHEUS, MISSING)
    jobs = {job["job_name"]: job for job in yaml.safe_load(SCRAPE.read_text())["scrape_configs"]}
    assert {"model-server", "pushgateway"} <= set(jobs)
    assert jobs["pushgateway"]["honor_labels"] is True

    # Batch emitters, through the shipped code paths.
    wipe_pushgateway(pushgateway)
    monkeypatch.setenv("MLOPS_PUSHGATEWAY_URL", pushgateway)
    from mlops.callbacks import failure_callbacks, success_callbacks
    from mlops.health.publish import publish_model_accuracy
    from mlops.health.tasks import sweep

    ti = SimpleNamespace(dag_id="mlops_training", task_id="train_model", run_id="r1", try_number=1)
    failure_callbacks()[0]({"ti": ti, "run_id": "r1", "exception": RuntimeError("pod failed")})
    nightly = SimpleNamespace(dag_id="nightly_train", task_id="train_model", run_id="r1", try_number=1)
    success_callbacks()[0]({"ti": nightly, "run_id": "r1"})
    publish_model_accuracy("digits", "v3", 0.93, source="promotion-gate")
    from mlops.backups.tasks import publish_backup_metrics

    publish_backup_metrics(
        {
            "database": "platform",
            "verified_at": "2026-11-28T03:10:00+00:00",
            "size_bytes": 1024,
            "backup_seconds": 2.5,
            "restore_seconds": 1.5,
        }
    )
    checks = tmp_path / "checks.yaml"
    checks.write_text(
        yaml.safe_dump({"checks": [{"name": "ep", "type": "http", "url": endpoints.url("/healthy")}]})
    )
    monkeypatch.setenv("MLOPS_HEALTH_CHECKS_PATH", str(checks))
    sweep()

    server, url = start_server(s3_server, upload_version(s3_client, s3_bucket, "digits", "v3"), version="v3")
    try:
        targets = {"model-server": [url.split("//", 1)[1]]}
        with running_prometheus(
            tmp_path, targets, scrape_configs=[pushgateway_target(pushgateway)], rule_files=[RULES]
        ) as prometheus:
            wait_ready(server, url)
            inputs, _ = held_out(4)
            for _ in range(5):
                assert httpx.post(f"{url}/predict", json={"instances": inputs}).status_code == 200
            wait_until(
                lambda: (
                    len(query(prometheus, "up == 1")) == 2
                    and query(prometheus, "mlops_model_requests_total")
                    and query(prometheus, "mlops_health_last_sweep_timestamp_seconds")
                ),
                "both jobs scraped",
            )
            missing = missing_metrics(shipped_expressions(), prometheus)
            still_pending = {name for name in missing if name in PENDING_EMITTERS}
            assert set(missing) == still_pending, f"read but emitted by nothing: {missing}"
            assert still_pending == set(PENDING_EMITTERS), (
                f"now emitted, remove from PENDING_EMITTERS: {set(PENDING_EMITTERS) - still_pending}"
            )
            assert missing_metrics({"probe": "nothing_emits_this_total > 0"}, prometheus) == {
                "nothing_emits_this_total": ["probe"]
            }

            # The shipped rules, evaluated on what was scraped: wait for evaluations that started after
            # the data was in (the very first ones may predate the first scrape).
            scraped_at = datetime.now(UTC)

            def rules() -> dict[str, dict]:
                groups = httpx.get(f"{prometheus}/api/v1/rules").json()["data"]["groups"]
                found = {r["name"]: r for g in groups for r in g["rules"]}
                fresh = all(_evaluated_at(r) > scraped_at for r in found.values())
                return found if fresh else {}

            evaluated = wait_until(rules, "rules evaluated after the scrape")
            assert {name: r["health"] for name, r in evaluated.items() if r["health"] != "ok"} == {}
            firing = {
                (name, a["labels"].get("dag_id"))
                for name, r in evaluated.items()
                for a in r.get("alerts", [])
                if a["state"] in ("firing", "pending")
            }
            # The first training failure alerts; a DAG whose last news is a success does not.
            assert ("TrainingRunsFailing", "mlops_training") in firing
            assert ("TrainingRunsFailing", "nightly_train") not in firing
            # Nothing fires from day one on a healthy platform.
            for quiet in ("ModelServingDown", "ModelServingAbsent", "HealthSweepStale", "HealthSweepAbsent"):
                assert evaluated[quiet]["state"] == "inactive", (quiet, evaluated[quiet])
            assert ("ModelAccuracyDrop", None) not in firing
    finally:
        server.terminate()
        server.wait(10)


def test_the_scheduled_evaluation_measures_and_publishes_the_serving_versions_accuracy(
    s3_server, s3_client, s3_bucket, s3_conn, pushgateway, monkeypatch
):
    """Before: ModelAccuracyDrop had only the training-time figure; nothing measured the live version."""
    from mlops.health.config import CheckSpec
    from mlops.health.runner import run_checks
    from mlops.settings import get_settings
    from tests.unit.serving.digits_artifacts import accuracy

    wipe_pushgateway(pushgateway)
    monkeypatch.setenv("MLOPS_PUSHGATEWAY_URL", pushgateway)
    server, url = start_server(s3_server, upload_version(s3_client, s3_bucket, "digits", "v5"), version="v5")
    try:
        wait_ready(server, url)
        good = CheckSpec("eval", "model_evaluation", timeout_seconds=30, params={"url": url})
        strict = CheckSpec("eval-strict", "model_evaluation", 30, params={"url": url, "min_accuracy": 0.9999})
        ok, too_low = run_checks([good, strict], get_settings()).results
    finally:
        server.terminate()
        server.wait(10)
    inputs, labels = held_out()
    assert ok.ok and ok.target == "digits/v5" and ok.details["samples"] == len(labels)
    assert abs(ok.details["accuracy"] - accuracy("good")) < 0.05
    assert not too_low.ok and "< 0.9999" in too_low.summary
    text = httpx.get(f"{pushgateway}/metrics").text
    assert any(
        line.startswith("mlops_model_accuracy{")
        and 'model="digits"' in line
        and 'version="v5"' in line
        and 'source="scheduled-evaluation"' in line
        for line in text.splitlines()
    )
