"""The fleet dashboard in headless Chromium (Debian's chromium, driven by Playwright; no browser
download): an admin logs in, watches a running rollout advance, pauses it, finds the pause in the
audit log under their name, and sees a drift alarm appear when the fleet's inputs drift. One
screenshot per page lands in the test's temp folder (and in $TINYMLOPS_SHOTS when set). Every
request the pages make must go to the fleet server: nothing is loaded from anywhere else."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from tests.support.fleet_world import ROLLOUT, World, fleet_world

pytestmark = pytest.mark.browser
playwright = pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install -e '.[dev]')")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip(
        "no chromium on PATH (make test installs Debian's chromium when apt is available)", allow_module_level=True
    )
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage"]
expect = playwright.expect


@pytest.fixture
def world(tmp_path: Path):
    with fleet_world(tmp_path / "fleet") as w:
        yield w


@pytest.fixture
def browser():
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        try:
            yield b
        finally:
            b.close()


def shot(page, folder: Path, name: str) -> Path:  # type: ignore[no-untyped-def]
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    extra = os.environ.get("TINYMLOPS_SHOTS")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, Path(extra) / path.name)
    return path


def test_admin_watches_pauses_audits_and_sees_a_drift_alarm(world: World, browser, tmp_path: Path) -> None:
    shots = tmp_path / "screenshots"
    shots.mkdir()
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    requests: list[str] = []
    context.on("request", lambda r: requests.append(r.url))
    # Anything not for the fleet server is refused outright (and fails the assertion below).
    context.route(
        "**/*",
        lambda route: route.continue_() if route.request.url.startswith(world.url) else route.abort(),
    )
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

    world.admin.verb(ROLLOUT, "start")
    world.round()

    # -- log in ----------------------------------------------------------------------------------
    page.goto(f"{world.url}/ui/rollouts/{ROLLOUT}")
    expect(page).to_have_url(f"{world.url}/ui/login?next=/ui/rollouts/{ROLLOUT}")
    page.fill("#token", "not-the-token")
    page.click("#login")
    expect(page.locator(".error")).to_contain_text("not a valid admin token")
    shot(page, shots, "1-login")
    page.fill("#token", world.token)  # type: ignore[attr-defined]
    page.click("#login")
    expect(page).to_have_url(f"{world.url}/ui/rollouts/{ROLLOUT}")
    expect(page.locator("#admin-name")).to_have_text("alice")
    [cookie] = [c for c in context.cookies() if c["name"] == "tinymlops_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/ui"
    assert page.evaluate("document.cookie") == ""  # no script can read the session

    # -- a running rollout advances on screen (live refresh, no reload) ----------------------------
    expect(page.locator("#rollout-status")).to_have_text("running")
    expect(page.locator("#rollout-group")).to_contain_text("canary")
    world.round()
    assert world.tick() == "advance"
    expect(page.locator("#rollout-group")).to_contain_text("early", timeout=10_000)
    world.round()
    expect(page.locator("#gates")).to_contain_text("latency", timeout=10_000)  # gates judged, with numbers
    expect(page.locator("#gates")).to_contain_text(" / ")  # device counts behind each gate
    shot(page, shots, "3-rollout")

    # -- pause it, with confirmation ---------------------------------------------------------------
    page.once("dialog", lambda d: d.dismiss())  # "cancel" changes nothing
    page.click("#verb-pause")
    expect(page.locator("#rollout-status")).to_have_text("running")
    page.once("dialog", lambda d: d.accept())
    page.click("#verb-pause")
    expect(page.locator("#rollout-status")).to_have_text("paused")
    expect(page.locator("#verb-resume")).to_be_visible()
    state, _ = world.admin.status(ROLLOUT)
    assert state.status == "paused" and state.history[-1].actor == "alice"

    page.click("nav >> text=Rollouts")
    expect(page.locator("#rollouts")).to_contain_text(ROLLOUT)
    expect(page.locator("#rollouts")).to_contain_text("paused")
    shot(page, shots, "2-rollouts")

    # -- the audit log names the admin --------------------------------------------------------------
    page.click("nav >> text=Audit log")
    row = page.locator("#audit tr", has_text="pause").first
    expect(row).to_contain_text("alice")
    expect(row).to_contain_text(ROLLOUT)
    expect(page.locator("#audit tr", has_text="login").first).to_contain_text("alice")
    shot(page, shots, "5-audit")

    # -- devices --------------------------------------------------------------------------------------
    page.click("nav >> text=Devices")
    expect(page.locator("#by-class")).to_contain_text("m4")
    expect(page.locator("#devices tbody tr")).to_have_count(100)  # one page of 200
    shot(page, shots, "4-devices")

    # -- monitoring: the fleet's inputs drift, an alarm appears ------------------------------------------
    page.click("nav >> text=Monitoring")
    expect(page.locator("#alarms")).to_contain_text("no alarms")
    world.round()  # one more clean window: drift over time starts below its limit
    time.sleep(1.5)
    world.drift()
    started = time.monotonic()
    for _ in range(3):
        world.round()
    alarm = page.locator("#alarms tr.alarm", has_text="classes").first
    expect(alarm).to_be_visible(timeout=15_000)  # the background check raised it; the page refreshed itself
    seen_after = time.monotonic() - started
    expect(alarm).to_contain_text("open")
    page.reload()
    shot(page, shots, "6-monitoring")
    assert world.admin.alarms(status="open"), "the API lists the alarm too"

    # -- nothing left the server; no script errors -----------------------------------------------------
    outside = [u for u in requests if not u.startswith(world.url) and not u.startswith("data:")]
    assert outside == []
    assert errors == []
    assert len(list(shots.glob("*.png"))) == 6
    print(f"\nscreenshots: {shots}\nalarm on screen {seen_after:.1f} s after the drift began")
