"""How Airflow loads plugins/: one plugin, no import errors, and an import that costs nothing."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO_ROOT

PLUGINS = REPO_ROOT / "plugins"


def test_airflow_finds_exactly_the_platform_plugin_and_no_import_error():
    from airflow._shared.plugins_manager.plugins_manager import _load_plugins_from_plugin_directory

    plugins, errors = _load_plugins_from_plugin_directory(str(PLUGINS))
    assert errors == {}
    assert [p.name for p in plugins] == ["mlops_platform"]
    plugin = plugins[0]
    assert [(a["url_prefix"], a["name"]) for a in plugin.fastapi_apps] == [("/mlops", "ML platform")]
    assert {v["destination"] for v in plugin.external_views} == {"nav", "dag_run"}


def test_the_views_are_valid_for_the_plugins_api():
    """/api/v2/plugins drops a plugin whose view is invalid with only a warning: validate them here."""
    from airflow._shared.plugins_manager.plugins_manager import _load_plugins_from_plugin_directory
    from airflow.api_fastapi.core_api.datamodels.plugins import ExternalViewResponse

    plugins, _ = _load_plugins_from_plugin_directory(str(PLUGINS))
    for view in plugins[0].external_views:
        ExternalViewResponse.model_validate(view)


def test_importing_the_plugin_touches_no_backend_and_imports_nothing_heavy():
    code = f"""
import json, sys
import airflow.plugins_manager
before = set(sys.modules)
from airflow._shared.plugins_manager.plugins_manager import _load_plugins_from_plugin_directory
_load_plugins_from_plugin_directory({str(PLUGINS)!r})
print(json.dumps(sorted(set(sys.modules) - before)))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    new = json.loads(out.stdout.strip().splitlines()[-1])
    heavy = (
        "boto3",
        "botocore",
        "kubernetes",
        "fastapi",
        "httpx",
        "mlops",
        "mlops_platform_ui",
        "sqlalchemy",
    )
    assert [m for m in new if m.split(".")[0] in heavy] == []
