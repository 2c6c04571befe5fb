"""checkov (kubernetes, secrets, dockerfile and github_actions frameworks) passes on everything the
project ships, with every skip justified, and fails each deliberately broken fixture."""

from __future__ import annotations

import pytest
import yaml

from tests.unit.deploy.conftest import (
    CHECKOV_FIXTURES,
    PLATFORM,
    REPO,
    checkov_targets,
    dockerfiles,
    workflows,
)


def test_checkov_finds_no_failed_check_in_helm_values_docker_or_workflows(checkov_report):
    targets = {str(p.relative_to(REPO)) for p in checkov_targets()}
    failures = {
        path: sorted(f"{c['check_id']} {c['check_name']} ({c['resource']})" for c in checks)
        for path, checks in checkov_report.failed.items()
        if path in targets
    }
    assert failures == {}
    assert checkov_report.parsing_errors == []


def test_checkov_really_scanned_the_manifests_dockerfiles_and_workflows(checkov_report):
    scanned = set(checkov_report.passed) | set(checkov_report.skipped)
    expected = [*PLATFORM.glob("*.yaml"), *dockerfiles(), *workflows()]
    # checkov has no checks for these kinds; a file holding anything else must have been checked.
    unchecked_kinds = {"Namespace", "PriorityClass", "ResourceQuota", "NetworkPolicy"}

    def has_checks(path):
        if path.suffix != ".yaml":
            return True
        return any(d and d["kind"] not in unchecked_kinds for d in yaml.safe_load_all(path.read_text()))

    unchecked = [p for p in expected if has_checks(p) and str(p.relative_to(REPO)) not in scanned]
    assert unchecked == []
    assert {"kubernetes", "dockerfile", "github_actions"} <= checkov_report.check_types


def test_every_checkov_skip_states_its_reason(checkov_report):
    for path, checks in checkov_report.skipped.items():
        for check in checks:
            reason = (check.get("check_result") or {}).get("suppress_comment", "")
            assert len(reason.strip()) >= 20 and reason != "No comment provided", (path, check["check_id"])


@pytest.mark.parametrize(
    ("framework", "expected"),
    [
        ("kubernetes", {"CKV_K8S_16", "CKV_K8S_19", "CKV_K8S_23"}),  # privileged, host network, root
        ("secrets", {"CKV_SECRET_2"}),  # AWS access key
        ("dockerfile", {"CKV_DOCKER_2", "CKV_DOCKER_3", "CKV_DOCKER_7"}),  # no HEALTHCHECK, no USER, :latest
        ("github_actions", {"CKV_GHA_2", "CKV2_GHA_1"}),  # shell injection, write-all permissions
    ],
)
def test_checkov_fails_the_broken_fixture(checkov_report, framework, expected):
    assert expected <= checkov_report.failed_ids(CHECKOV_FIXTURES[framework])
