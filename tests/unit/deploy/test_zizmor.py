"""zizmor (PyPI, pinned in requirements-tools.txt) audits every workflow offline: no finding beyond the one
rule its config (.github/zizmor.yml) disables with a reason, and it rejects the broken fixture."""

from __future__ import annotations

import subprocess

from tests.unit.deploy.conftest import FIXTURES, REPO, WORKFLOWS
from tests.unit.deploy.tools import zizmor

CONFIG = REPO / ".github" / "zizmor.yml"


def _zizmor(*paths) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(zizmor()), "--offline", "--no-progress", "--config", str(CONFIG), *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )


def test_zizmor_finds_nothing_in_the_workflows():
    result = _zizmor(WORKFLOWS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No findings to report" in result.stdout + result.stderr


def test_zizmor_rejects_the_broken_workflow():
    result = _zizmor(FIXTURES / "workflows" / ".github" / "workflows" / "broken.yml")
    assert result.returncode != 0
    for rule in ("template-injection", "unpinned-uses", "dangerous-triggers"):
        assert f"[{rule}]" in result.stdout, rule
