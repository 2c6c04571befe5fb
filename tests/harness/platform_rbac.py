"""The shipped RBAC (helm-values/platform/*.yaml), applied to a simulated cluster as production has it.

Production binds Airflow's worker service account (``system:serviceaccount:airflow:airflow-worker``) with
Roles in the fixed namespaces ``ml-training`` and ``ml-serving``. Tests use a random namespace each
(the ``k8s_namespace`` fixture) so they can run side by side; here each shipped namespace is mapped to a
test namespace, and every shipped Role and RoleBinding of that namespace is created in the test
namespace unchanged but for ``metadata.namespace``: exactly what the RoleBinding grants in production,
moved. When several shipped namespaces map to one test namespace, its Roles are the union of theirs.
ClusterRoles and ClusterRoleBindings are created as shipped. Documents annotated
``mlops.io/optional: "true"`` are applied only when asked for (they are off unless an operator applies
them in production too).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import yaml

from tests.harness.kubesim import KubeSim

REPO_ROOT = Path(__file__).resolve().parents[2]
PLATFORM_DIR = REPO_ROOT / "helm-values" / "platform"
RBAC_KINDS = ("Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")
WORKER = ("airflow", "airflow-worker")
WORKER_USER = f"system:serviceaccount:{WORKER[0]}:{WORKER[1]}"
SHIPPED_NAMESPACES = ("ml-training", "ml-serving")


def is_optional(doc: dict) -> bool:
    annotations = (doc.get("metadata") or {}).get("annotations") or {}
    return str(annotations.get("mlops.io/optional", "")).lower() == "true"


def shipped_rbac(include_optional: bool = False) -> list[dict]:
    """Every RBAC document under helm-values/platform/ (and its optional/ ones when asked), in file order."""
    docs = []
    paths = sorted(PLATFORM_DIR.glob("*.yaml"))
    if include_optional:
        paths += sorted((PLATFORM_DIR / "optional").glob("*.yaml"))
    for path in paths:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") in RBAC_KINDS and (include_optional or not is_optional(doc)):
                docs.append(doc)
    return docs


def apply_shipped_rbac(
    sim: KubeSim, namespaces: Mapping[str, str], include_optional: bool = False
) -> list[dict]:
    """Create the shipped RBAC in ``sim``, each shipped namespace's objects in ``namespaces[shipped]``.

    Objects of shipped namespaces missing from ``namespaces`` are skipped; cluster-scoped ones are created
    once. Returns the objects created.
    """
    created = []
    for doc in shipped_rbac(include_optional):
        obj = yaml.safe_load(yaml.safe_dump(doc))  # a deep copy
        meta = obj["metadata"]
        if obj["kind"] in ("ClusterRole", "ClusterRoleBinding"):
            if sim.get(obj["kind"], None, meta["name"]) is None:
                created.append(sim.create(obj))
            continue
        target = namespaces.get(meta.get("namespace", ""))
        if target is None or sim.get(obj["kind"], target, meta["name"]) is not None:
            continue
        meta["namespace"] = target
        created.append(sim.create(obj))
    return created
