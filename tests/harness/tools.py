"""External tools the tests need (promtool, prometheus, alertmanager, pushgateway, wrk).

On a developer machine a missing tool skips the tests that need it, naming the package to install.
Where ``CI`` is set (``.ci/run`` runs with ``CI=true`` after ``make system-deps`` installed every tool),
a missing tool FAILS those tests: a skip there would hide that they never ran.
"""

from __future__ import annotations

import os

import pytest


def in_ci() -> bool:
    """Whether the environment says this is a CI run (any non-empty ``CI`` but ``false``/``0``)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require_tool(path: str | None, missing: str) -> str:
    """``path`` when the tool was found; otherwise skip the calling test, or fail it under CI."""
    if path:
        return path
    if in_ci():
        pytest.fail(
            f"{missing} (CI is set: a missing tool fails the test instead of skipping it)", pytrace=False
        )
    pytest.skip(missing)
