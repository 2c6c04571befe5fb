"""A missing external tool skips a test on a developer machine and fails it under CI."""

from __future__ import annotations

import pytest

from tests.harness.tools import require_tool


def test_a_found_tool_is_returned(monkeypatch):
    monkeypatch.setenv("CI", "true")
    assert require_tool("/usr/bin/promtool", "promtool missing") == "/usr/bin/promtool"


@pytest.mark.parametrize("ci", ["true", "1", "yes", "TRUE"])
def test_a_missing_tool_fails_when_ci_is_set(monkeypatch, ci):
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception, match="promtool missing .CI is set: a missing tool fails"):
        require_tool(None, "promtool missing")


@pytest.mark.parametrize("ci", [None, "", "false", "0"])
def test_a_missing_tool_skips_outside_ci(monkeypatch, ci):
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.skip.Exception, match="promtool missing"):
        require_tool(None, "promtool missing")
