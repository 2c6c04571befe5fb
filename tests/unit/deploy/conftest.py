"""Fixtures of the deploy validation tests: the files under test, and one checkov run per session."""

from __future__ import annotations

import json
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest

from tests.unit.deploy import tools

REPO = tools.REPO
FIXTURES = Path(__file__).with_name("fixtures")
HELM_VALUES = REPO / "helm-values"
PLATFORM = HELM_VALUES / "platform"
WORKFLOWS = REPO / ".github" / "workflows"
OVERLAYS = ("dev", "staging", "prod")


def dockerfiles() -> list[Path]:
    """Every Dockerfile under docker/, including ones added later (Dockerfile, Dockerfile.*, *.Dockerfile)."""
    found = {
        p
        for pattern in ("Dockerfile", "Dockerfile.*", "*.Dockerfile")
        for p in (REPO / "docker").rglob(pattern)
    }
    return sorted(found)


def workflows() -> list[Path]:
    return sorted([*WORKFLOWS.glob("*.yml"), *WORKFLOWS.glob("*.yaml")])


def checkov_targets() -> list[Path]:
    """What checkov scans: helm-values/ (kubernetes, secrets), docker/ (dockerfile, secrets), workflows."""
    files = [p for p in HELM_VALUES.rglob("*") if p.is_file()]
    files += [p for p in (REPO / "docker").rglob("*") if p.is_file()]
    files += workflows()
    return sorted(set(files))


CHECKOV_FIXTURES = {
    "kubernetes": FIXTURES / "checkov" / "privileged-pod.yaml",
    "secrets": FIXTURES / "checkov" / "leaked-credentials.env",
    "dockerfile": FIXTURES / "dockerfiles" / "Dockerfile.broken",
    "github_actions": FIXTURES / "workflows" / ".github" / "workflows" / "broken.yml",
}


class CheckovReport:
    """checkov's JSON results, grouped by repository-relative file."""

    def __init__(self, reports: list[dict]):
        self.failed: dict[str, list[dict]] = defaultdict(list)
        self.passed: dict[str, list[dict]] = defaultdict(list)
        self.skipped: dict[str, list[dict]] = defaultdict(list)
        self.parsing_errors: list[str] = []
        self.check_types: set[str] = set()
        for report in reports:
            self.check_types.add(report["check_type"])
            results = report.get("results", {})
            for kind in ("failed", "passed", "skipped"):
                for check in results.get(f"{kind}_checks", []):
                    getattr(self, kind)[check["file_path"].lstrip("/")].append(check)
            self.parsing_errors += results.get("parsing_errors", [])

    def failed_ids(self, path: Path) -> set[str]:
        return {c["check_id"] for c in self.failed.get(str(path.relative_to(REPO)), [])}


@pytest.fixture(scope="session")
def checkov_report() -> CheckovReport:
    """One checkov run (~5 s) over every target and every broken fixture, all four frameworks."""
    files = [*checkov_targets(), *CHECKOV_FIXTURES.values()]
    argv = [
        str(tools.checkov()),
        "--framework",
        "kubernetes",
        "secrets",
        "dockerfile",
        "github_actions",
        "--skip-download",
        "--output",
        "json",
        "--soft-fail",
    ]
    for path in files:
        argv += ["--file", str(path.relative_to(REPO))]
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.stdout.strip(), f"checkov printed nothing; stderr:\n{proc.stderr[-3000:]}"
    data = json.loads(proc.stdout)
    return CheckovReport(data if isinstance(data, list) else [data])
