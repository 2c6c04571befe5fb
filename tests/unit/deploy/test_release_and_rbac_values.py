"""Values read as a platform engineer installs them: one tag moves every image, every tag referenced is
one the release workflow pushes, the worker cannot exec into other pods, and no deprecated chart key."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.unit.deploy.chart import rendered_values, tpl
from tests.unit.deploy.conftest import HELM_VALUES, PLATFORM, WORKFLOWS

BASE = HELM_VALUES / "values.yaml"
OVERLAYS = {o: (BASE, HELM_VALUES / f"values-{o}.yaml") for o in ("dev", "staging", "prod")}
COMBINATIONS = {"base": (BASE,), **OVERLAYS}
IMAGES = ("airflow", "trainer", "model-server")


def _image_refs(v: dict) -> dict[str, str]:
    """Every project image the rendered chart would run, by name: the Airflow image (chart helpers
    ``airflow_image``/``pod_template_image``) and the two the library starts (from the env)."""
    airflow_tag = v["images"]["airflow"].get("tag") or v["defaultAirflowTag"]
    refs = {"airflow": f"{v['images']['airflow']['repository']}:{airflow_tag}"}
    template_tag = v["images"]["pod_template"].get("tag") or v["defaultAirflowTag"]
    refs["pod_template"] = (
        f"{v['images']['pod_template'].get('repository') or v['defaultAirflowRepository']}:{template_tag}"
    )
    env = {e["name"]: e["value"] for e in v["env"]}
    env.update({e["name"]: e["value"] for e in yaml.safe_load(tpl(v.get("extraEnv") or "", v)) or []})
    refs["trainer"] = env["MLOPS_TRAINER_IMAGE"]
    refs["model-server"] = env["MLOPS_MODEL_SERVER_IMAGE"]
    return refs


@pytest.mark.parametrize("name", list(COMBINATIONS))
def test_one_value_sets_the_tag_of_all_three_images(name, tmp_path):
    override = tmp_path / "set.yaml"
    override.write_text("defaultAirflowTag: 9.8.7\n")  # what `--set defaultAirflowTag=9.8.7` does
    refs = _image_refs(rendered_values(*COMBINATIONS[name], override))
    assert {ref.rpartition(":")[2] for ref in refs.values()} == {"9.8.7"}, refs


def _release_tags() -> list[str]:
    """The tag patterns release.yml pushes (``--tag "${name}:…"`` in its build step)."""
    text = (WORKFLOWS / "release.yml").read_text()
    return re.findall(r'--tag "\$\{name\}:([^"]+)"', text)


def _pushed(tag: str) -> bool:
    for pattern in _release_tags():
        if pattern == "${SHA}" and re.fullmatch(r"[0-9a-f]{40}", tag):
            return True
        if pattern == "${REF_NAME#v}" and re.fullmatch(r"\d+\.\d+\.\d+", tag):
            return True
        if pattern == tag:
            return True
    return False


@pytest.mark.parametrize("name", ["base", "staging", "prod"])
def test_every_tag_the_values_reference_is_one_the_release_workflow_pushes(name):
    refs = _image_refs(rendered_values(*COMBINATIONS[name]))
    for image, ref in refs.items():
        repository, _, tag = ref.rpartition(":")
        assert repository.startswith("ghcr.io/"), ref
        assert _pushed(tag), f"{name}: {image} {ref}: release.yml pushes only {_release_tags()}"


def test_the_dev_tag_is_the_one_the_kind_workflow_builds_and_loads():
    refs = _image_refs(rendered_values(*OVERLAYS["dev"]))
    kind = (WORKFLOWS / "e2e-kind.yml").read_text()
    for image in IMAGES:
        ref = refs[image]
        assert ref in kind, f"e2e-kind.yml neither builds nor loads {ref}"


def test_release_pushes_every_image():
    text = (WORKFLOWS / "release.yml").read_text()
    for image in IMAGES:
        assert re.search(rf"\b{image}\b", text), image


def test_worker_pods_cannot_launch_or_exec_into_pods_of_the_airflow_namespace():
    v = rendered_values(BASE)
    # The chart's pod-launcher RoleBinding (templates/rbac/pod-launcher-rolebinding.yaml) also binds the
    # workers under the KubernetesExecutor, with pods/exec: off; the scheduler gets its own Role.
    assert v["allowPodLaunching"] is False
    assert v["scheduler"]["serviceAccount"]["name"] == "airflow-scheduler"
    docs = [d for p in sorted(PLATFORM.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]
    (role,) = [d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == "mlops-airflow-scheduler"]
    assert role["metadata"]["namespace"] == "airflow"
    rules = {
        (g, r): set(rule["verbs"])
        for rule in role["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
    }
    assert rules[("", "pods")] == {"create", "get", "list", "watch", "patch", "delete"}
    assert ("", "pods/exec") not in rules
    (binding,) = [
        d for d in docs if d["kind"] == "RoleBinding" and d["roleRef"]["name"] == "mlops-airflow-scheduler"
    ]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "airflow-scheduler", "namespace": "airflow"}
    ]
    in_airflow = [d for d in docs if d["kind"] in ("RoleBinding", "ClusterRoleBinding")]
    for doc in in_airflow:
        for subject in doc["subjects"]:
            if subject.get("name") == "airflow-worker":
                assert doc["metadata"].get("namespace") != "airflow", "nothing grants the worker in airflow"


def test_the_airflow_namespace_enforces_baseline_and_warns_on_restricted():
    docs = [d for d in yaml.safe_load_all((PLATFORM / "00-namespaces.yaml").read_text()) if d]
    (ns,) = [d for d in docs if d["metadata"]["name"] == "airflow"]
    labels = ns["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "baseline"
    assert labels["pod-security.kubernetes.io/warn"] == "restricted"
    assert labels["pod-security.kubernetes.io/audit"] == "restricted"


@pytest.mark.parametrize("name", list(COMBINATIONS))
def test_no_deprecated_chart_keys(name):
    from tests.unit.deploy.chart import load_values

    user = load_values(*COMBINATIONS[name])
    workers = user.get("workers") or {}
    assert "serviceAccount" not in workers, "workers.serviceAccount: use workers.kubernetes.serviceAccount"
    assert "terminationGracePeriodSeconds" not in workers, (
        "use workers.kubernetes.terminationGracePeriodSeconds"
    )
    assert "branch" not in ((user.get("dags") or {}).get("gitSync") or {}), "git-sync v4: ref only"
    v = rendered_values(*COMBINATIONS[name])
    assert v["config"]["logging"]["remote_logging"] == "True"
    assert v["triggerer"]["persistence"]["enabled"] is False, "task logs go to S3: no triggerer volume"
    assert v["workers"]["kubernetes"]["serviceAccount"]["name"] == "airflow-worker"
    assert "{{ .Values.workers.kubernetes.serviceAccount.name }}" in v["podTemplate"]
    assert "{{ .Values.workers.kubernetes.terminationGracePeriodSeconds }}" in v["podTemplate"]
