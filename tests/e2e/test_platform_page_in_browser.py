"""The ML platform page used the way an engineer does, after the platform loop has run.

Headless Debian Chromium (Playwright) logs in, opens the page from the navigation and reads, inside
the UI's iframe, what the loop left behind: the promoted model's version and live color, the verified
backup, the health checks. It then rolls the model back and promotes a new candidate from the page,
and creates and expires a silence, each time seeing the change. The loop's stages it needs (a
promoted model with a previous version, a verified backup) come from the session fixtures in
``tests/e2e/conftest.py``, whatever ran before. Screenshots go to
``test-artifacts/screenshots/platform-*.png``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, FrameLocator, Page, expect, sync_playwright

from tests.conftest import REPO_ROOT
from tests.e2e.conftest import LOOP_MODEL, PLATFORM_DB, SERVING_NAMESPACE
from tests.e2e.flows import register_copy, wait_run
from tests.harness.standalone import ADMIN

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
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
UI_TIMEOUT_MS = 60_000
VIEWPORT = {"width": 1400, "height": 2000}


def _shot(page: Page, name: str) -> Path:
    path = SCREENSHOTS / f"platform-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


@pytest.fixture(scope="module")
def loop_state(s3_client, loop_with_history, loop_backed_up):
    """The loop model's registry, once it serves a promoted version with a previous one to roll back
    to and a verified backup exists (the session's loop stages)."""
    from mlops.registry import ModelRegistry

    return ModelRegistry(s3_client, "mlops-artifacts")


@pytest.fixture(scope="module")
def page(standalone) -> Iterator[Page]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing (`make system-deps`)", pytrace=False)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    expect.set_options(timeout=UI_TIMEOUT_MS)
    with sync_playwright() as pw:
        browser: Browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport=VIEWPORT)
        context.set_default_timeout(UI_TIMEOUT_MS)
        page = context.new_page()
        page.goto(f"{standalone.url}/")
        page.get_by_label("Username").fill(ADMIN[0])
        page.get_by_label("Password").fill(ADMIN[1])
        page.get_by_role("button", name="Sign in").click()
        expect(page).not_to_have_url(re.compile(r"/auth/login"))
        try:
            yield page
        finally:
            _shot(page, "last")
            browser.close()


def _open_from_nav(page: Page, standalone) -> FrameLocator:
    page.goto(f"{standalone.url}/")
    nav = page.get_by_role("link", name="ML platform").or_(page.get_by_role("button", name="ML platform"))
    nav.first.click()
    frame = page.frame_locator("iframe")
    expect(frame.get_by_role("heading", name="ML platform", exact=True)).to_be_visible()
    return frame


def _eventually(page: Page, standalone, check: Callable[[FrameLocator], None], seconds: float = 60) -> None:
    """Reopen the page until ``check`` passes: the page serves its last reads while it refreshes them."""
    deadline = time.monotonic() + seconds
    while True:
        frame = _open_from_nav(page, standalone)
        try:
            check(frame)
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(2)


def _visible(locator):
    expect(locator).to_be_visible(timeout=3000)
    return locator


def _open_frame(page: Page) -> FrameLocator:
    return page.frame_locator("iframe")


def _model(frame: FrameLocator):
    return frame.get_by_test_id(f"model-{LOOP_MODEL}")


def _serving_color(kube) -> str:
    return kube.get("Service", SERVING_NAMESPACE, LOOP_MODEL)["spec"]["selector"]["color"]


def _started_run(frame: FrameLocator, dag_id: str = "mlops_promotion") -> str:
    status = frame.get_by_role("status")
    expect(status).to_have_text(re.compile(rf"Started {dag_id} run \S+"))
    return re.search(r"run (\S+)", status.inner_text()).group(1)


def test_1_the_page_opens_from_the_navigation_and_shows_the_platform_state(
    page, standalone, loop_state, kube, s3_client
):
    frame = _open_from_nav(page, standalone)
    production = loop_state.production(LOOP_MODEL)["version"]
    model = _model(frame)
    expect(model.get_by_test_id("production-version")).to_have_text(production)
    expect(model.get_by_test_id("live-color")).to_have_text(_serving_color(kube))
    expect(model.get_by_test_id("agreement")).to_have_text("Cluster and registry agree.")

    def verified_backup_shown(frame: FrameLocator) -> None:
        # A section read for the first time may miss its 3 s deadline on a loaded machine and show as
        # loading; the page serves it from its cache on the next open.
        row = frame.get_by_test_id("backups").get_by_role("row").filter(has_text=PLATFORM_DB)
        expect(row).to_contain_text(re.compile(r"\d{4}-\d{2}-\d{2}"), timeout=5000)

    _eventually(page, standalone, verified_backup_shown, seconds=120)
    frame = _open_from_nav(page, standalone)
    expect(frame.get_by_test_id("check-model-server-ready").locator("td").nth(1)).to_have_text("ok")
    for backend in ("registry", "cluster", "backups", "health", "airflow"):
        expect(frame.get_by_test_id(f"error-{backend}")).to_have_count(0)
    _shot(page, "01-overview")


def test_2_the_page_itself_loads_in_under_a_second(page, standalone):
    deadline = time.monotonic() + 60  # warm: every section read once (see test_platform_page.py)
    page.goto(f"{standalone.url}/mlops/ui/")
    while "timed out after" in page.content() and time.monotonic() < deadline:
        time.sleep(1)
        page.goto(f"{standalone.url}/mlops/ui/")
    page.goto(f"{standalone.url}/mlops/ui/")
    expect(page.get_by_role("heading", name="Models")).to_be_visible()
    duration = page.evaluate("performance.getEntriesByType('navigation')[0].duration")
    print(f"\n[figure] platform page load in the browser: {duration:.0f} ms")
    assert duration < 1000


@pytest.mark.timeout(600)
def test_3_roll_back_from_the_page_and_see_the_previous_version_serve(
    page, standalone, api, loop_state, kube
):
    before = loop_state.production(LOOP_MODEL)
    color_before = _serving_color(kube)
    frame = _open_from_nav(page, standalone)
    _model(frame).get_by_role("textbox", name=f"Reason to roll {LOOP_MODEL} back").fill("e2e: from the page")
    _model(frame).get_by_role("button", name=f"Roll back to {before['previous_version']}").click()
    run_id = _started_run(frame, "mlops_rollback")  # the emergency rollback: never queued behind a promotion
    _shot(page, "02-rollback-started")
    assert wait_run(api, standalone, "mlops_rollback", run_id, 300) == "success"

    assert loop_state.production(LOOP_MODEL)["version"] == before["previous_version"]

    def rolled_back(frame: FrameLocator) -> None:
        expect(_model(frame).get_by_test_id("production-version")).to_have_text(
            before["previous_version"], timeout=3000
        )
        expect(_model(frame).get_by_test_id("live-color")).not_to_have_text(color_before, timeout=3000)

    _eventually(page, standalone, rolled_back)
    _shot(page, "03-rolled-back")


@pytest.mark.timeout(600)
def test_4_promote_a_candidate_from_the_page_and_see_it_serve(page, standalone, api, loop_state, s3_client):
    current = loop_state.production(LOOP_MODEL)["version"]
    new = register_copy(s3_client, LOOP_MODEL, current, f"{current[:40]}-page", "e2e-page")
    button: list = []
    _eventually(
        page,
        standalone,
        lambda f: button.append(_visible(_model(f).get_by_role("button", name=f"Promote {new}"))),
    )
    button[-1].click()
    run_id = _started_run(_open_frame(page))
    assert wait_run(api, standalone, "mlops_promotion", run_id, 400) == "success"

    _eventually(
        page,
        standalone,
        lambda f: expect(_model(f).get_by_test_id("production-version")).to_have_text(new, timeout=3000),
    )
    _shot(page, "04-promoted")


def test_5_create_a_silence_see_it_listed_and_expire_it(page, standalone):
    frame = _open_from_nav(page, standalone)
    form = frame.locator("#silence-form")
    form.locator("input[name=matcher]").fill("model-server-ready")
    form.locator("input[name=minutes]").fill("30")
    form.locator("input[name=comment]").fill("e2e: maintenance window")
    form.get_by_role("button", name="Create silence").click()
    row = frame.get_by_test_id("silences").get_by_role("row").filter(has_text="e2e: maintenance window")
    expect(row).to_contain_text("model-server-ready")
    expect(row).to_contain_text(ADMIN[0])
    _shot(page, "05-silence")
    row.get_by_role("button", name="Expire").click()
    expect(frame.get_by_role("status")).to_have_text("Silence expired")
    expect(
        frame.get_by_test_id("silences").get_by_role("row").filter(has_text="e2e: maintenance window")
    ).to_have_count(0)
