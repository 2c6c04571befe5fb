"""The ML platform page on a real `airflow standalone`: loaded from plugins/, served under /mlops."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest

pytestmark = pytest.mark.e2e


def _get(standalone, path: str, **headers: str) -> tuple[int, bytes, float]:
    request = urllib.request.Request(f"{standalone.url}{path}", headers=headers)
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, resp.read(), time.monotonic() - started
    except urllib.error.HTTPError as err:
        return err.code, err.read(), time.monotonic() - started


def test_the_plugin_is_listed_with_its_views_and_no_import_errors(standalone):
    auth = {"Authorization": f"Bearer {standalone.token()}"}
    status, body, _ = _get(standalone, "/api/v2/plugins/importErrors", **auth)
    assert status == 200 and json.loads(body)["import_errors"] == [], body
    status, body, _ = _get(standalone, "/api/v2/plugins", **auth)
    plugins = {p["name"]: p for p in json.loads(body)["plugins"]}
    assert "mlops_platform" in plugins, plugins.keys()
    plugin = plugins["mlops_platform"]
    assert [(a["url_prefix"], a["name"]) for a in plugin["fastapi_apps"]] == [("/mlops", "ML platform")]
    views = {(v["name"], v["destination"], v["href"]) for v in plugin["external_views"]}
    assert views == {
        ("ML platform", "nav", "mlops/ui/"),
        ("Model card", "dag_run", "mlops/ui/runs/{DAG_ID}/{RUN_ID}/model-card"),
        ("Promotion", "dag_run", "mlops/ui/runs/{DAG_ID}/{RUN_ID}/promotion"),
    }


def test_the_page_needs_a_login_and_then_shows_every_section_within_a_second(standalone):
    assert _get(standalone, "/mlops/ui/")[0] == 401
    cookie = {"Cookie": f"_token={standalone.token()}"}  # what the UI's iframe sends
    # The first requests build the app and the backend clients, and read each section once (a section
    # never read waits up to its deadline, then finishes in the background): warm until none is pending.
    deadline = time.monotonic() + 60
    while b"timed out after" in _get(standalone, "/mlops/ui/", **cookie)[1] and time.monotonic() < deadline:
        time.sleep(1)
    status, body, seconds = _get(standalone, "/mlops/ui/", **cookie)
    page = body.decode()
    assert status == 200, page[-2000:]
    for heading in ("Models", "Backups", "Health", "Training"):
        assert f">{heading}</h2>" in page
    assert 'data-testid="error-airflow"' not in page, page  # the training section read Airflow's REST API
    print(f"\n[figure] platform page served in {seconds * 1000:.0f} ms")
    state = json.loads(_get(standalone, "/mlops/api/state", **cookie)[1])
    print(
        "[figure] per section (s):",
        {k: state[k]["seconds"] for k in ("registry", "backups", "health", "training")},
    )
    assert "timed out after" not in page
    assert seconds < 1.0
