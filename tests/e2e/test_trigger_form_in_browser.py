"""The training DAG's trigger form, used the way an engineer does: headless Chromium in the Airflow UI.

Debian's ``chromium`` is driven by Playwright (``make system-deps`` installs it). Screenshots of each
step are kept under ``test-artifacts/screenshots/`` at the repository root.

The DAG is kept paused while these tests run (and the form's "unpause on trigger" box is unticked),
so a run triggered here stays queued: it is seen in the UI and through the REST API, and starts no
training pod that could disturb the other e2e tests of the session.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest
from playwright.sync_api import Browser, BrowserContext, Locator, Page, expect, sync_playwright
from playwright.sync_api import Error as PlaywrightError

from mlops.training.params import training_params
from tests.conftest import REPO_ROOT
from tests.e2e.conftest import parsed_dag
from tests.harness.standalone import ADMIN

pytestmark = pytest.mark.e2e

DAG_ID = "mlops_training"
CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium's own calls out are refused by the closed
# network of CI and dev machines, and it stalls on them.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = REPO_ROOT / "test-artifacts" / "screenshots"
# Generous: the machine is shared, and the UI's first load fetches and parses a large React bundle.
UI_TIMEOUT_MS = 60_000
# Tall enough that the whole trigger dialog fits in one screenshot.
VIEWPORT = {"width": 1280, "height": 2400}


def _shot(page: Page, name: str) -> Path:
    path = SCREENSHOTS / f"trigger-form-{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


# -- browser, login and the DAG ------------------------------------------------------------
@pytest.fixture(scope="session", autouse=True)
def _chromium_installed() -> None:
    # Session scope and autouse: checked before the (slow) standalone server starts.
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the browser test needs Debian's chromium "
            "(`make system-deps`, or `apt-get install --no-install-recommends chromium`)",
            pytrace=False,
        )


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for old in SCREENSHOTS.glob("trigger-form-*.png"):  # the artifacts show this run only
        old.unlink()
    expect.set_options(timeout=UI_TIMEOUT_MS)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def signed_in(browser: Browser, standalone) -> Iterator[BrowserContext]:
    """A browser context that signed in as admin through the UI's login page."""
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(UI_TIMEOUT_MS)
    page = context.new_page()
    page.goto(f"{standalone.url}/")
    expect(page).to_have_url(re.compile(r"/auth/login"))
    expect(page.get_by_text("Sign into Airflow")).to_be_visible()
    page.get_by_label("Username").fill(ADMIN[0])
    page.get_by_label("Password").fill(ADMIN[1])
    _shot(page, "01-login")
    page.get_by_role("button", name="Sign in").click()
    expect(page).not_to_have_url(re.compile(r"/auth/login"))
    expect(page.get_by_test_id("nav-dags-link")).to_be_visible()  # the dashboard has "Failed Dags" etc. too
    _shot(page, "02-signed-in")
    page.close()
    try:
        yield context
    finally:
        context.close()


@pytest.fixture(scope="module")
def paused_training_dag(api) -> Iterator[None]:
    """Wait until the DAG is parsed; keep it paused for the module, then restore its pause state."""
    import airflow_client.client as ac

    was_paused = parsed_dag(api, DAG_ID).is_paused
    dags = ac.DAGApi(api)
    dags.patch_dag(DAG_ID, ac.DAGPatchBody(is_paused=True))
    try:
        yield
    finally:
        dags.patch_dag(DAG_ID, ac.DAGPatchBody(is_paused=was_paused))


@pytest.fixture
def page(signed_in: BrowserContext, paused_training_dag, request) -> Iterator[Page]:
    page = signed_in.new_page()
    try:
        yield page
    finally:
        with contextlib.suppress(PlaywrightError):  # never hide the test's own failure
            _shot(page, f"last-{request.node.name}")  # what the page showed at the end, pass or fail
        page.close()


@pytest.fixture
def run_ids(api) -> Iterator[list[str]]:
    """Run ids a test submits; any run that was created is deleted afterwards."""
    import airflow_client.client as ac

    ids: list[str] = []
    yield ids
    for run_id in ids:
        try:
            ac.DagRunApi(api).delete_dag_run(DAG_ID, run_id)
        except ac.ApiException as exc:
            if exc.status != 404:
                raise


# -- the trigger form ----------------------------------------------------------------------
def _open_trigger_form(page: Page, base_url: str) -> Locator:
    """Open the DAG's trigger dialog, untick "unpause on trigger"; return the dialog."""
    page.goto(f"{base_url}/dags/{DAG_ID}")
    page.get_by_role("button", name="Trigger Dag").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_role("heading", name=f"Trigger Dag - {DAG_ID}")).to_be_visible()
    expect(_param_fields(dialog).first).to_be_visible()
    unpause = dialog.get_by_role("checkbox", name=f"Unpause {DAG_ID} on trigger")
    if unpause.is_checked():
        dialog.get_by_text(f"Unpause {DAG_ID} on trigger").click()
    expect(unpause).not_to_be_checked()
    return dialog


def _param_fields(dialog: Locator) -> Locator:
    """Every field of the "Run Parameters" section (one per DAG param)."""
    section = dialog.locator('[data-scope="accordion"][data-part="item"]').filter(
        has=dialog.page.get_by_role("button", name="Run Parameters")
    )
    return section.locator('[data-scope="field"][data-part="root"]')


def _field(dialog: Locator, title: str) -> Locator:
    """The form field whose label is ``title`` (a required field's label ends in "*")."""
    label = dialog.page.locator('label[data-scope="field"][data-part="label"]').filter(
        has_text=re.compile(rf"^\s*{re.escape(title)}\s*\*?\s*$")
    )
    return _param_fields(dialog).filter(has=label)


def _set_run_id(dialog: Locator, run_id: str) -> None:
    dialog.get_by_role("button", name="Advanced Options").click()
    dialog.get_by_label("Run ID").fill(run_id)


def _submit(dialog: Locator) -> None:
    dialog.get_by_role("button", name="Trigger", exact=True).click()


def _served_params(standalone) -> dict:
    """The form as the standalone builds it: with its ``MLOPS_*`` settings (the trainer image's
    allow-list, named in that field's description, follows the configured image)."""
    with mock.patch.dict(os.environ, standalone.env):
        return training_params()


def _titles() -> dict[str, str]:
    return {name: param.schema["title"] for name, param in training_params().items()}


def _run_count(api) -> int:
    import airflow_client.client as ac

    return ac.DagRunApi(api).get_dag_runs(DAG_ID, limit=1).total_entries


# -- specifications ------------------------------------------------------------------------
def test_trigger_form_shows_every_param_with_its_title_and_description(page, standalone):
    params = _served_params(standalone)
    assert len(params) == 16
    dialog = _open_trigger_form(page, standalone.url)

    for name, param in params.items():
        title, description = param.schema.get("title"), param.description
        assert title and description, f"param {name} lacks a title or description"
        field = _field(dialog, title)
        expect(field, f"one field titled {title!r}").to_have_count(1)
        expect(field.locator("label").first).to_be_visible()
        expect(field.get_by_text(description, exact=True)).to_be_visible()
    # and the form holds no field that the DAG does not document
    expect(_param_fields(dialog)).to_have_count(len(params))
    _shot(page, "03-form-fields")


def test_valid_values_trigger_a_run_that_the_ui_and_the_rest_api_show_with_that_conf(
    page, standalone, api, run_ids
):
    import airflow_client.client as ac

    titles = _titles()
    run_id = f"browser-{uuid.uuid4().hex[:8]}"
    run_ids.append(run_id)
    dialog = _open_trigger_form(page, standalone.url)

    _field(dialog, titles["model_name"]).get_by_role("textbox").fill("digits-browser")
    _field(dialog, titles["epochs"]).get_by_role("spinbutton").fill("7")
    _field(dialog, titles["learning_rate"]).get_by_role("spinbutton").fill("0.05")
    _field(dialog, titles["compute_profile"]).get_by_role("combobox").click()
    page.get_by_role("option", name="gpu-large", exact=True).click()
    _field(dialog, titles["gpus"]).get_by_role("spinbutton").fill("4")
    _field(dialog, titles["extra_args"]).get_by_role("textbox").fill("--hidden-units=64\n--warmup=2")
    retry = _field(dialog, titles["retry_on_training_failure"])
    retry.locator('[data-scope="switch"][data-part="control"]').click()
    expect(retry.get_by_role("checkbox")).to_be_checked()
    _shot(page, "04-valid-values")
    _set_run_id(dialog, run_id)
    _submit(dialog)

    # The UI lands on the new run's page, queued (the DAG is paused), and shows its conf.
    expect(page).to_have_url(re.compile(rf"/dags/{DAG_ID}/runs/{run_id}$"))
    expect(page.get_by_role("heading", name=run_id)).to_be_visible()
    expect(page.get_by_test_id("state-badge").first).to_have_text(re.compile("Queued"))
    _shot(page, "05-run-page")
    page.get_by_role("link", name="Details", exact=True).click()
    expect(page.get_by_text('"model_name": "digits-browser"')).to_be_visible()
    expect(page.get_by_text('"epochs": 7')).to_be_visible()
    _shot(page, "06-run-conf")
    page.goto(f"{standalone.url}/dags/{DAG_ID}/runs")
    expect(page.get_by_role("link", name=run_id, exact=True)).to_be_visible()
    _shot(page, "07-runs-list")

    defaults = {name: param.value for name, param in _served_params(standalone).items()}
    run = ac.DagRunApi(api).get_dag_run(DAG_ID, run_id)
    assert run.conf == {
        **defaults,
        "model_name": "digits-browser",
        "epochs": 7,
        "learning_rate": 0.05,
        "compute_profile": "gpu-large",
        "gpus": 4,
        "extra_args": ["--hidden-units=64", "--warmup=2"],
        "retry_on_training_failure": True,
    }
    assert run.triggered_by == ac.DagRunTriggeredByType.UI


@pytest.mark.parametrize(
    ("param", "role", "value"),
    [("model_name", "textbox", "Bad Name!"), ("learning_rate", "spinbutton", "0")],
)
def test_invalid_value_shows_the_validation_error_naming_the_param_and_no_run_is_created(
    page, standalone, api, run_ids, param, role, value
):
    import airflow_client.client as ac

    run_id = f"browser-invalid-{uuid.uuid4().hex[:8]}"
    run_ids.append(run_id)
    before = _run_count(api)
    dialog = _open_trigger_form(page, standalone.url)

    _field(dialog, _titles()[param]).get_by_role(role).fill(value)
    _set_run_id(dialog, run_id)
    _submit(dialog)

    error = dialog.get_by_text(f"Invalid input for param {param}:")
    expect(error).to_be_visible()
    expect(dialog).to_be_visible()  # the form stays open for a correction
    error.scroll_into_view_if_needed()
    _shot(page, f"08-invalid-{param}")

    with pytest.raises(ac.ApiException) as missing:
        ac.DagRunApi(api).get_dag_run(DAG_ID, run_id)
    assert missing.value.status == 404
    assert _run_count(api) == before


def test_form_raises_epochs_below_the_documented_minimum_to_that_minimum(page, standalone):
    minimum = training_params()["epochs"].schema["minimum"]
    dialog = _open_trigger_form(page, standalone.url)
    epochs = _field(dialog, _titles()["epochs"]).get_by_role("spinbutton")

    epochs.fill("0")
    epochs.press("Tab")

    expect(epochs).to_have_value(str(minimum))
    _shot(page, "09-epochs-clamped")
