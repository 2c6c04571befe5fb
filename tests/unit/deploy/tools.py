"""Paths of the offline validators the deploy tests run, and the tool venv that holds checkov.

hadolint, actionlint and shellcheck ship as binaries inside wheels pinned in requirements-dev.txt
(they land in .venv/bin). checkov conflicts with the runtime pins, so it lives in its own venv,
``.venv-tools/``, installed from ``requirements-tools.txt`` beside this file.
``python -m tests.unit.deploy.tools`` (or the first test that needs it) creates that venv.
"""

from __future__ import annotations

import fcntl
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
TOOLS_REQUIREMENTS = Path(__file__).with_name("requirements-tools.txt")
TOOLS_VENV = REPO / ".venv-tools"
_STAMP = TOOLS_VENV / ".installed"
_BIN = Path(sys.executable).parent


def venv_binary(name: str) -> Path:
    """A validator binary installed by a wheel into the running interpreter's venv."""
    path = _BIN / name
    if not path.exists():
        raise FileNotFoundError(f"{path} missing: install requirements-dev.txt into this venv")
    return path


def checkov() -> Path:
    """The checkov entry point of .venv-tools/, created from the pinned requirements when missing or stale."""
    return tools_binary("checkov")


def zizmor() -> Path:
    """zizmor (the GitHub Actions security linter, a binary wheel) from .venv-tools/."""
    return tools_binary("zizmor")


def tools_binary(name: str) -> Path:
    """A binary of .venv-tools/, created from the pinned requirements when missing or stale."""
    binary = TOOLS_VENV / "bin" / name
    wanted = TOOLS_REQUIREMENTS.read_text()
    if binary.exists() and _STAMP.exists() and _STAMP.read_text() == wanted:
        return binary
    TOOLS_VENV.mkdir(exist_ok=True)
    # Never committed, even where .gitignore lacks the entry (Python >= 3.13 venvs do the same).
    (TOOLS_VENV / ".gitignore").write_text("*\n")
    with open(TOOLS_VENV / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel sessions build it once
        if not (binary.exists() and _STAMP.exists() and _STAMP.read_text() == wanted):
            subprocess.run([sys.executable, "-m", "venv", str(TOOLS_VENV)], check=True)
            subprocess.run(
                [
                    str(TOOLS_VENV / "bin" / "python"),
                    "-m",
                    "pip",
                    "install",
                    "-q",
                    "--disable-pip-version-check",
                    "-r",
                    str(TOOLS_REQUIREMENTS),
                ],
                check=True,
            )
            _STAMP.write_text(wanted)
    return binary


if __name__ == "__main__":
    print(checkov())
