"""The Helm values, merged with the chart's defaults the way helm merges them, satisfy the chart's
schema (chart 1.22.0) and the platform's deployment contract."""

from __future__ import annotations

import re
from dataclasses import fields

import kubernetes_validate
import pytest
import yaml

from mlops.settings import Settings
from tests.unit.deploy.chart import (
    CHART_VERSION,
    REPO,
    chart_dir,
    coalesce,
    load_values,
    merge_files,
    pod_template_skeleton,
    rendered_values,
    schema_errors,
)
from tests.unit.deploy.conftest import FIXTURES, HELM_VALUES, OVERLAYS, PLATFORM

BASE = HELM_VALUES / "values.yaml"
COMBINATIONS = {"base": (BASE,), **{o: (BASE, HELM_VALUES / f"values-{o}.yaml") for o in OVERLAYS}}


@pytest.fixture(scope="module", params=list(COMBINATIONS))
def values(request) -> tuple[str, dict]:
    return request.param, rendered_values(*COMBINATIONS[request.param])


def test_the_chart_values_and_schema_come_from_the_repository_itself(monkeypatch):
    """A clone with nothing beside it finds chart 1.22.0's values and schema inside the repository."""
    import subprocess

    monkeypatch.delenv("MLOPS_AIRFLOW_CHART_DIR", raising=False)
    found = chart_dir()
    assert found.is_relative_to(REPO), f"{found} lies outside the repository"
    listing = ["git", "ls-files", str(found.relative_to(REPO))]
    tracked = subprocess.run(listing, cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    assert {p.rsplit("/", 1)[-1] for p in tracked} >= {"Chart.yaml", "values.yaml", "values.schema.json"}
    assert yaml.safe_load((found / "Chart.yaml").read_text())["version"] == CHART_VERSION


def test_merge_follows_helm_maps_merged_lists_replaced_null_deletes():
    defaults = {"a": {"x": 1, "y": 2}, "l": [1, 2], "gone": {"k": 1}, "keep": 3}
    base = {"a": {"y": 20}, "l": [9]}
    overlay = {"a": {"z": 30}, "gone": None, "new": None}
    merged = coalesce(merge_files(base, overlay), defaults)
    assert merged == {"a": {"x": 1, "y": 20, "z": 30}, "l": [9], "keep": 3, "new": None}


def test_values_and_every_overlay_validate_against_the_chart_schema(values):
    name, merged = values
    assert schema_errors(merged) == [], name


def test_broken_values_fixture_is_rejected_by_the_chart_schema():
    errors = schema_errors(rendered_values(BASE, FIXTURES / "values-broken.yaml"))
    joined = "\n".join(errors)
    assert "executor:" in joined
    assert "dags.gitSync: Additional properties are not allowed ('repository' was unexpected)" in joined
    assert "workers.kubernetes.resources.requests.cpu" in joined


def test_kubernetes_executor_and_external_postgres_from_a_secret(values):
    _, v = values
    assert v["executor"] == "KubernetesExecutor"
    assert v["postgresql"]["enabled"] is False
    assert v["data"]["metadataSecretName"]
    for key in ("fernetKeySecretName", "apiSecretKeySecretName", "jwtSecretName"):
        assert v[key], key


def test_dags_come_from_git_sync_except_on_kind(values):
    name, v = values
    if name == "dev":  # kind: the `bundled` image target carries dags/
        assert v["dags"]["gitSync"]["enabled"] is False
    else:
        sync = v["dags"]["gitSync"]
        assert sync["enabled"] is True and sync["subPath"] == "dags" and sync["repo"].endswith(".git")


def test_task_logs_go_to_s3_through_the_aws_connection(values):
    _, v = values
    logging = v["config"]["logging"]
    assert logging["remote_logging"] == "True"
    assert logging["remote_base_log_folder"].startswith("s3://")
    assert logging["remote_log_conn_id"] == Settings().aws_conn_id


COMPONENT_RESOURCES = (
    "scheduler",
    "scheduler.logGroomerSidecar",
    "apiServer",
    "dagProcessor",
    "dagProcessor.logGroomerSidecar",
    "triggerer",
    "triggerer.logGroomerSidecar",
    "statsd",
    "migrateDatabaseJob",
    "createUserJob",
    "cleanup",
    "databaseCleanup",
    "pgbouncer",
    "workers.kubernetes",
    "dags.gitSync",
)


@pytest.mark.parametrize("component", COMPONENT_RESOURCES)
def test_every_component_requests_cpu_and_memory_and_limits_memory(values, component):
    _, v = values
    section = v
    for part in component.split("."):
        section = section[part]
    resources = section["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"]), component
    assert "memory" in resources["limits"], component


@pytest.mark.parametrize(
    "component", ["scheduler", "apiServer", "dagProcessor", "triggerer", "workers.kubernetes"]
)
def test_service_accounts_carry_an_irsa_role(values, component):
    _, v = values
    section = v
    for part in component.split("."):
        section = section[part]
    account = section["serviceAccount"]
    assert account["create"] is True
    assert re.fullmatch(
        r"arn:aws:iam::\d{12}:role/[\w+=,.@-]+", account["annotations"]["eks.amazonaws.com/role-arn"]
    )


def test_worker_service_account_is_the_subject_of_the_platform_role_bindings(values):
    _, v = values
    bindings = [
        d
        for p in PLATFORM.glob("*.yaml")
        for d in yaml.safe_load_all(p.read_text())
        if d["kind"] == "RoleBinding" and d["metadata"]["namespace"] != "airflow"  # the scheduler's is there
    ]
    assert bindings
    for binding in bindings:
        assert binding["subjects"] == [
            {
                "kind": "ServiceAccount",
                "name": v["workers"]["kubernetes"]["serviceAccount"]["name"],
                "namespace": "airflow",
            }
        ]


def test_env_sets_only_real_mlops_settings_and_overlays_keep_every_base_setting(values):
    _, v = values
    known = {f"MLOPS_{f.name.upper()}" for f in fields(Settings)}
    names = [e["name"] for e in v["env"]]
    assert len(names) == len(set(names)), "duplicate env names"
    assert set(names) <= known, set(names) - known
    base_names = {e["name"] for e in load_values(BASE)["env"]}
    assert base_names <= set(names), base_names - set(names)


def test_connections_and_credentials_only_come_from_kubernetes_secrets(values):
    name, v = values
    user = load_values(*COMBINATIONS[name])
    assert yaml.safe_load(user["extraEnvFrom"]) == [{"secretRef": {"name": "mlops-airflow-connections"}}]
    assert not any(e["name"].startswith("AIRFLOW_CONN_") for e in user["env"])
    assert "metadataConnection" not in user.get("data", {})
    for literal in ("fernetKey", "apiSecretKey", "jwtSecret", "webserverSecretKey"):
        assert user.get(literal) is None, literal
    assert "defaultUser" not in user.get("createUserJob", {})
    assert not re.search(r"://[^/\s:@'\"]+:[^/\s@'\"]+@", repr(user)), "credentials in a URL"


def test_pod_template_is_a_valid_pod_with_the_restricted_security_context(values):
    _, v = values
    pod = pod_template_skeleton(v)
    kubernetes_validate.validate(pod, "1.30.0", strict=True)
    spec = pod["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] == 50000
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (base,) = spec["containers"]
    assert base["name"] == "base"
    assert base["securityContext"] == {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    mounts = {m["mountPath"] for m in base["volumeMounts"]}
    assert "/tmp" in mounts  # read-only root: the only writable scratch
    assert {vol["name"] for vol in spec["volumes"]} >= {"logs", "tmp", "config"}
    assert "{{ .Values.workers.kubernetes.serviceAccount.name }}" in v["podTemplate"]
