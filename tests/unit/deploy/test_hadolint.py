"""Every Dockerfile under docker/ (found by glob, so images added later are covered) is hadolint-clean,
each ignore is justified in a comment, and hadolint rejects a deliberately bad Dockerfile."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.unit.deploy.conftest import FIXTURES, REPO, dockerfiles
from tests.unit.deploy.tools import venv_binary

DOCKERFILES = dockerfiles()


def hadolint(path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(venv_binary("hadolint")), "--no-color", "--failure-threshold", "info", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_project_images_are_all_found():
    found = {p.relative_to(REPO).as_posix() for p in DOCKERFILES}
    assert {"docker/airflow/Dockerfile", "docker/model-server/Dockerfile"} <= found


@pytest.mark.parametrize("path", DOCKERFILES, ids=[p.relative_to(REPO).as_posix() for p in DOCKERFILES])
def test_dockerfile_is_hadolint_clean(path):
    result = hadolint(path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", DOCKERFILES, ids=[p.relative_to(REPO).as_posix() for p in DOCKERFILES])
def test_every_hadolint_ignore_is_justified_in_a_comment_above_it(path):
    lines = path.read_text().splitlines()
    for number, line in enumerate(lines):
        match = re.match(r"\s*#\s*hadolint\s+(?:global\s+)?ignore=([\w,]+)", line)
        if not match:
            continue
        comments = []
        for previous in reversed(lines[:number]):
            if not previous.lstrip().startswith("#"):
                break
            comments.append(previous)
        for rule in match.group(1).split(","):
            assert any(rule in c for c in comments), (
                f"{path.name}:{number + 1}: {rule} ignored without a reason"
            )


@pytest.mark.parametrize("path", DOCKERFILES, ids=[p.relative_to(REPO).as_posix() for p in DOCKERFILES])
def test_images_run_as_a_non_root_user(path):
    users = re.findall(r"^USER\s+(\S+)", path.read_text(), flags=re.M)
    assert users and users[-1].split(":")[0] not in {"root", "0"}, path


def test_model_server_image_has_a_healthcheck():
    text = (REPO / "docker" / "model-server" / "Dockerfile").read_text()
    assert re.search(r"^HEALTHCHECK .*CMD .*/health", text, flags=re.M | re.S)


def test_hadolint_rejects_the_broken_dockerfile():
    result = hadolint(FIXTURES / "dockerfiles" / "Dockerfile.broken")
    assert result.returncode != 0
    for rule in ("DL3007", "DL3008", "DL3003", "DL3025"):  # :latest, unpinned apt, cd, shell-form CMD
        assert rule in result.stdout, rule
