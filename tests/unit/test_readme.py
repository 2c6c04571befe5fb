"""The README says what is true: each statement a newcomer relies on, checked against the code."""

from __future__ import annotations

import re
from dataclasses import fields

from tests.conftest import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text()


def test_every_mlops_setting_the_readme_names_exists_in_settings():
    from mlops.settings import Settings

    known = {f"MLOPS_{f.name.upper()}" for f in fields(Settings)}
    named = set(re.findall(r"\bMLOPS_[A-Z0-9_]+[A-Z0-9]\b", README))
    # "MLOPS_BACKUP_KEEP_DAILY/WEEKLY/MONTHLY" is written in short form
    named = {n for n in named if n != "MLOPS_BACKUP_KEEP_DAILY"} | {"MLOPS_BACKUP_KEEP_DAILY"}
    not_settings = {
        "MLOPS_DEV_HOME",
        "MLOPS_BENCH_SCALE",
        "MLOPS_KEEP_TEST_DIR",
        "MLOPS_AIRFLOW_API_URL",
        "MLOPS_TEST_IDENTITY",  # read by tests/conftest.py, not by the product
    }
    assert sorted(named - known - not_settings) == []


def test_pg_bin_is_described_as_the_dev_clusters_path_and_the_dag_reads_mlops_pg_bin():
    from mlops.settings import Settings

    assert "pg_bin" in {f.name for f in fields(Settings)}  # the DAG's MLOPS_PG_BIN
    dev = (REPO_ROOT / "include/mlops/dev/postgres.py").read_text()
    assert 'os.environ.get("PG_BIN"' in dev
    assert (
        "`PG_BIN` overrides that path for the\nlocal clusters that `make run` and the tests start" in README
    )
    assert "the backup DAG itself reads `MLOPS_PG_BIN`" in README


def test_the_health_schedule_is_said_to_be_read_at_parse_time():
    dag = (REPO_ROOT / "dags/mlops_health.py").read_text()
    assert "health_schedule" in dag  # used in the DAG declaration, i.e. while parsing
    assert "`MLOPS_HEALTH_SCHEDULE` is read when the\ndag-processor parses" in README


def test_the_layout_lists_plugins_and_it_exists():
    assert re.search(r"(?m)^plugins/ +Airflow plugins", README)
    assert (REPO_ROOT / "plugins/mlops_platform.py").is_file()


def test_the_readme_names_the_test_tiers_in_the_order_pytest_runs_them():
    tiers = sorted(
        d.name for d in (REPO_ROOT / "tests").iterdir() if d.is_dir() and any(d.rglob("test_*.py"))
    )
    assert tiers == ["e2e", "harness_tests", "integration", "unit"]
    section = README.split("## Tests", 1)[1]
    positions = [section.index(f"`tests/{tier}/`") for tier in tiers]
    assert positions == sorted(positions)


def test_without_a_cluster_the_readme_names_the_kube_config_error_not_a_connection_error():
    assert "fail with a connection error" not in README
    assert "kube-config error" in README


def test_the_python_client_snippet_defines_its_token_and_sends_the_curl_examples_conf():
    snippet = README.split("```python", 1)[1].split("```", 1)[0]
    assert re.search(r"(?m)^TOKEN = ", snippet)
    curl_conf = re.search(r'"conf": (\{[^}]*\})', README).group(1)
    for key, value in re.findall(r'"(\w+)": ("[^"]*"|\d+)', curl_conf):
        assert f'"{key}": {value}' in snippet, key


def test_the_first_ten_minutes_come_right_after_the_two_commands_and_deployment_after_configuration():
    headings = re.findall(r"(?m)^## (.+)$", README)
    assert headings[:4] == [
        "The first ten minutes",
        "The ML platform page",
        "What `make run` starts",
        "Trigger a DAG",
    ]
    assert headings.index("Configuration") < headings.index("Deploy on Kubernetes")


def test_the_page_section_shows_a_screenshot_that_exists():
    section = README.split("## The ML platform page", 1)[1].split("\n## ", 1)[0]
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", section)
    assert images, "the page section shows no screenshot"
    for image in images:
        assert (REPO_ROOT / image).is_file(), image
