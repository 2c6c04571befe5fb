"""The code needs exactly what the shipped RBAC grants (helm-values/platform/*.yaml).

Each code path that talks to Kubernetes runs here as Airflow's worker service account
(``system:serviceaccount:airflow:airflow-worker``) against the simulated API, which enforces the shipped
Roles (tests/harness/kubesim/rbac.py): training pods (success and failure), a blue-green promotion,
the nightly Kubernetes export and the Kubernetes health checks. The shipped namespaces are mapped to two
test namespaces (``ml-training`` and ``ml-serving`` each to its own, tests/harness/platform_rbac.py), so
a grant is attributed to the namespace it is for. From the recorded requests the test derives the set of
(verb, resource, shipped namespace) the code needs and compares it with the Roles' grants: nothing
missing (no 403), and nothing granted that no request used unless the rule's comment in the YAML says
``extra <verb>: <why>``.
"""

from __future__ import annotations

import re
import uuid
from datetime import date

import pytest

from mlops.backups.kube_export import api_client_from_connection, export_kubernetes
from mlops.backups.s3 import s3_client
from mlops.health.config import CheckSpec
from mlops.health.runner import run_checks
from mlops.promotion import bluegreen
from mlops.promotion.manifests.render import ServingSpec
from mlops.settings import get_settings
from tests.harness.kubesim import ScriptedContainer
from tests.harness.platform_rbac import PLATFORM_DIR, WORKER, WORKER_USER, apply_shipped_rbac, shipped_rbac

TRAINER = "registry.example.com/mlops/trainer:rbac"
SERVER = "ghcr.io/mlops-airflow/model-server:rbac"


@pytest.fixture
def platform(monkeypatch, kube, s3_conn, worker_kubeconfig) -> dict[str, str]:
    """Two test namespaces standing for ml-training and ml-serving, the shipped RBAC bound in each."""
    from tests.conftest import _point_kube_conn

    suffix = uuid.uuid4().hex[:8]
    spaces = {"ml-training": f"t-{suffix}-train", "ml-serving": f"t-{suffix}-serve"}
    for ns in spaces.values():
        kube.create_namespace(ns)
    apply_shipped_rbac(kube, spaces, include_optional=True)
    _point_kube_conn(monkeypatch, kube, worker_kubeconfig, spaces["ml-training"])
    monkeypatch.setenv("MLOPS_SERVING_NAMESPACE", spaces["ml-serving"])
    return spaces


def _run_training(kube) -> None:
    from tests.integration.training.test_pod_failures import make_operator, run

    kube.register_image(TRAINER, ScriptedContainer(logs=["epoch 1"], exit_code=0, run_seconds=0.2))
    assert run(make_operator(image=TRAINER)) is None
    failing = TRAINER.replace(":rbac", ":rbac-fails")
    kube.register_image(failing, ScriptedContainer(logs=["boom"], exit_code=1, run_seconds=0.2))
    assert run(make_operator(image=failing)) is not None
    # A GPU run first compares its GPUs with the namespace's free GPU quota (the wait before a pod).
    from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

    from mlops.training.gpu_wait import quota_shortfall

    settings = get_settings()
    core = KubernetesHook(conn_id=settings.kubernetes_conn_id).core_v1_client
    assert quota_shortfall(core, settings.training_namespace, 1, None) is None


def _promote(cluster, model: str, version: str, namespace: str, replicas: int) -> None:
    """The promotion DAG's Kubernetes steps in order (the gates talk HTTP to the pods, not to the API)."""
    holder = f"mlops_promotion/rbac-{uuid.uuid4().hex[:6]}"
    state = bluegreen.resolve_active_color(cluster, model, holder, version=version)
    color = state["candidate_color"]
    spec = ServingSpec(model, color, version, SERVER, "s3://b/m", namespace, replicas=replicas)
    deployed = bluegreen.deploy_candidate(cluster, spec, holder)
    bluegreen.wait_for_rollout(cluster, deployed["deployment"], version, deployed["generation"], 30, 0.1)
    bluegreen.switch_traffic(cluster, model, color, state["active_color"], version, holder)
    bluegreen.scale_down(cluster, model, state["active_color"], 0, holder=holder)
    bluegreen.clean_up(cluster, model, color, state["active_color"], holder, True, 10, 0.1)


def _run_promotion(kube, serving_ns: str) -> None:
    kube.register_image(SERVER, ScriptedContainer(run_seconds=3600))
    cluster = bluegreen.Cluster.from_connection()
    # A first deployment, then each color updated in place; v3's new minimum changes its HPA and PDB.
    for version, replicas in (("v1", 1), ("v2", 1), ("v3", 2)):
        _promote(cluster, "rbac", version, serving_ns, replicas)


def _run_export(spaces: dict[str, str], bucket: str) -> None:
    settings = get_settings()
    api_client = api_client_from_connection(settings.kubernetes_conn_id)
    export_kubernetes(
        api_client,
        s3_client(settings),
        bucket=bucket,
        logical_date=date(2026, 3, 1),
        namespaces=list(spaces.values()),
    )


def _run_health(spaces: dict[str, str]) -> None:
    settings = get_settings()
    specs = [
        CheckSpec("deploys", "kubernetes_deployments", 5, params={"namespace": spaces["ml-serving"]}),
        CheckSpec("serving-pods", "kubernetes_pods", 5, params={"namespace": spaces["ml-serving"]}),
        CheckSpec("training-pods", "kubernetes_pods", 5, params={"namespace": spaces["ml-training"]}),
        CheckSpec("hpas", "kubernetes_hpas", 5, params={"namespace": spaces["ml-serving"]}),
        CheckSpec("gpu", "kubernetes_gpu_nodes", 5, params={"min_ready_nodes": 0, "min_allocatable": 0}),
    ]
    report = run_checks(specs, settings)
    assert not [r for r in report.results if r.errored], report.results


def _granted() -> dict[tuple[str, str, str], set[str]]:
    """(verb, group/resource, shipped namespace or "*") -> the rule's ``extra`` markers (verbs)."""
    comments = _rule_comments()
    granted: dict[tuple[str, str, str], set[str]] = {}
    roles = {
        (d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"]): d for d in shipped_rbac(True)
    }
    for doc in shipped_rbac(True):
        if doc["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        if not any(s.get("name") == WORKER[1] and s.get("namespace") == WORKER[0] for s in doc["subjects"]):
            continue
        scope = doc["metadata"].get("namespace", "*")
        ref = doc["roleRef"]
        role = roles[(ref["kind"], "" if ref["kind"] == "ClusterRole" else scope, ref["name"])]
        for index, rule in enumerate(role["rules"]):
            extras = comments.get((ref["kind"], role["metadata"]["name"], index), set())
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        granted[(verb, f"{group}/{resource}".lstrip("/"), scope)] = extras
    return granted


def _rule_comments() -> dict[tuple[str, str, int], set[str]]:
    """The verbs marked ``extra <verb>:`` in the comment block above each rule of each Role."""
    out: dict[tuple[str, str, int], set[str]] = {}
    for path in sorted(PLATFORM_DIR.glob("*.yaml")):
        for text in path.read_text().split("\n---"):
            kind = re.search(r"^kind: (\w+)", text, re.M)
            name = re.search(r"^  name: (\S+)", text, re.M)
            if not kind or kind.group(1) not in ("Role", "ClusterRole") or not name:
                continue
            index, block = 0, []
            for line in text.splitlines():
                stripped = line.strip()
                if stripped.startswith("#"):
                    block.append(stripped)
                elif stripped.startswith("- apiGroups:"):
                    verbs = set(re.findall(r"extra (\w+):", " ".join(block)))
                    out[(kind.group(1), name.group(1), index)] = verbs
                    index, block = index + 1, []
                elif stripped:
                    block = [] if not stripped.startswith(("resources", "verbs", "resourceNames")) else block
    return out


def test_the_code_needs_exactly_what_the_shipped_roles_grant(kube, platform, s3_bucket):
    start = len(kube.requests)
    _run_training(kube)
    _run_promotion(kube, platform["ml-serving"])
    _run_export(platform, s3_bucket)
    _run_health(platform)

    by_test_ns = {v: k for k, v in platform.items()}
    mine = [r for r in kube.requests[start:] if r.user == WORKER_USER and r.resource]
    refused = [(r.verb, r.resource, r.namespace, r.path) for r in mine if r.status == 403]
    assert not refused, f"the shipped RBAC lacks: {refused}"
    needed = {
        (
            r.verb,
            f"{r.group}/{r.resource}".lstrip("/"),
            by_test_ns.get(r.namespace, "*" if not r.namespace else "?"),
        )
        for r in mine
    }
    assert not {n for n in needed if n[2] == "?"}, "a request left the platform namespaces"
    granted = _granted()
    unused = {g: extras for g, extras in granted.items() if g not in needed}
    unexplained = sorted(g for g, extras in unused.items() if g[0] not in extras)
    assert not unexplained, (
        f"granted, used by no code path and without an `extra <verb>:` comment: {unexplained}"
    )
    stale = sorted(g for g, extras in granted.items() if g in needed and g[0] in extras)
    assert not stale, f"marked extra but used by the code: {stale}"
