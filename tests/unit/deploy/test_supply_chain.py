"""Supply chain: base images pinned by digest (tag in a comment) and bumped by Renovate, the trainer
image on CUDA's `-base-` variant with `pip check` and an import test, and a release that only runs after
CI passed, signs keylessly with cosign, fails on fixable critical vulnerabilities and records provenance."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from tests.unit.deploy.conftest import REPO, WORKFLOWS, dockerfiles

DOCKERFILES = [p for p in dockerfiles() if p.name == "Dockerfile"]
# No published digest of these tags could be found offline (see the report of issue 16); Renovate's
# `pinDigests` pins them in its first pull request.
DIGEST_UNKNOWN = {"apache/airflow:3.3.2-python3.11"}


def _froms(path) -> list[tuple[str, str]]:
    """(image reference, the comment line above it) for each FROM of an external image."""
    lines = path.read_text().splitlines()
    stages = set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", path.read_text(), flags=re.M | re.I))
    out = []
    for i, line in enumerate(lines):
        match = re.match(r"FROM\s+(\S+)", line)
        if match and match.group(1) not in stages:
            out.append((match.group(1), lines[i - 1] if i else ""))
    return out


@pytest.mark.parametrize("path", DOCKERFILES, ids=[p.parent.name for p in DOCKERFILES])
def test_base_images_are_pinned_by_digest_with_the_tag_beside_it(path):
    for ref, _ in _froms(path):
        if ref in DIGEST_UNKNOWN:
            continue
        assert re.fullmatch(r"[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}", ref), (
            f"{path}: {ref} not pinned by digest"
        )


def test_renovate_bumps_the_base_image_digests_and_the_actions():
    config = json.loads((REPO / ".github" / "renovate.json").read_text())
    assert config["pinDigests"] is True
    managers = {m for rule in config["packageRules"] for m in rule.get("matchManagers", [])}
    assert {"dockerfile", "github-actions"} <= managers


def test_the_trainer_uses_the_cuda_base_variant_and_checks_its_python_set():
    text = (REPO / "docker" / "trainer" / "Dockerfile").read_text()
    bases = [ref for ref, _ in _froms(REPO / "docker" / "trainer" / "Dockerfile")]
    assert bases and all(re.match(r"nvidia/cuda:[\d.]+-base-ubuntu", ref) for ref in bases), bases
    assert "-runtime-" not in "".join(bases)
    final = text.split("\nFROM ")[-1]
    assert "pip check" in final, "the final image's environment is checked, not only the build stage's"
    assert re.search(r'python -c "import [^"]*torch', final), "an import test in the final image"


def _release() -> dict:
    return yaml.safe_load((WORKFLOWS / "release.yml").read_text())


def test_the_release_runs_only_after_ci_passed():
    release = _release()
    ci = yaml.safe_load((WORKFLOWS / "ci.yml").read_text())
    assert "workflow_call" in ci[True]  # yaml reads the key `on` as True
    gate = [j for j, job in release["jobs"].items() if job.get("uses") == "./.github/workflows/ci.yml"]
    assert gate, "release.yml calls ci.yml"
    assert set(gate) <= set(release["jobs"]["publish"]["needs"])


def test_images_are_signed_keylessly_scanned_and_carry_full_provenance():
    release = _release()
    publish = release["jobs"]["publish"]
    assert publish["permissions"]["id-token"] == "write"
    assert release["permissions"].get("id-token") is None, "only the publishing job gets an OIDC token"
    script = "\n".join(s.get("run", "") for s in publish["steps"]).replace("\\\n", " ")
    assert "--provenance=mode=max" in script
    sign = re.search(r"COSIGN_IMAGE\"? sign\b[^\n]*", script)
    assert sign and "--key" not in sign.group(0) and "@${DIGEST}" in sign.group(0), "keyless, by digest"
    scan = re.search(r"TRIVY_IMAGE\"?\s+image\b[^\n]*", script)
    assert scan
    for flag in ("--severity CRITICAL", "--ignore-unfixed", "--exit-code 1"):
        assert flag in scan.group(0), flag
    # The scan gates the tags: it runs on the pushed digest before `staging`/X.Y.Z point at it.
    assert script.index("TRIVY_IMAGE") < script.index("COSIGN_IMAGE") < script.index("imagetools create")
