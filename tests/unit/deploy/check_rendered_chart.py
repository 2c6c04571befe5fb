"""Check `helm template` output of the chart with this project's values (used by the CI workflow,
which has helm; the unit tests cover the same values without it).

Usage: python tests/unit/deploy/check_rendered_chart.py RENDERED.yaml
Every rendered object must validate against Kubernetes 1.30; the KubernetesExecutor's pod template
(the `pod_template_file.yaml` key of the chart's ConfigMap) strictly, with the restricted security context.
"""

from __future__ import annotations

import sys
from pathlib import Path

import kubernetes_validate
import yaml

RESTRICTED_CONTAINER = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def check(rendered: str) -> list[str]:
    """Problems found in the rendered documents (empty when all is well)."""
    problems: list[str] = []
    pod_templates = []
    for doc in yaml.safe_load_all(rendered):
        if not doc:
            continue
        name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        try:
            kubernetes_validate.validate(doc, "1.30.0", strict=False)
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"{name}: {exc.message}")
        if doc.get("kind") == "ConfigMap" and "pod_template_file.yaml" in (doc.get("data") or {}):
            pod_templates.append(yaml.safe_load(doc["data"]["pod_template_file.yaml"]))
    if len(pod_templates) != 1:
        return [*problems, f"expected one pod_template_file.yaml, found {len(pod_templates)}"]
    pod = pod_templates[0]
    try:
        kubernetes_validate.validate(pod, "1.30.0", strict=True)
    except kubernetes_validate.ValidationError as exc:
        problems.append(f"pod template: {exc.message}")
    spec = pod["spec"]
    if spec.get("securityContext", {}).get("runAsNonRoot") is not True:
        problems.append("pod template: spec.securityContext.runAsNonRoot is not true")
    for container in spec["containers"]:
        if container.get("securityContext") != RESTRICTED_CONTAINER:
            problems.append(
                f"pod template: container {container['name']} lacks the restricted securityContext"
            )
    return problems


if __name__ == "__main__":
    found = check(Path(sys.argv[1]).read_text())
    print("\n".join(found) or "rendered chart OK")
    sys.exit(1 if found else 0)
