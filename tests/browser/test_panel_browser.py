"""The JupyterLab side panel in a real browser: headless Debian chromium driven by Playwright, on `jupyter lab`."""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

import playwright.sync_api as playwright_api
import pytest
from conftest import wait_for
from jupyter_helpers import JupyterServer
from scheduling import deploy_scheduled

CHROMIUM = os.environ.get("REMOTECELL_CHROMIUM", "/usr/bin/chromium")
UI_TIMEOUT_MS = 60_000  # a cold JupyterLab page load on a small CI box takes a while
PANEL = "#remotecell-panel"



@pytest.fixture(scope="module")
def lab(runtime, tmp_path_factory):
    if not Path(CHROMIUM).exists():  # a failure, not a skip: `make test` installs it first
        pytest.fail(f"no browser at {CHROMIUM}: `make browser` installs Debian's chromium")
    # No announcements or extension manager: the test machine reaches no web.
    srv = JupyterServer(tmp_path_factory.mktemp("lab"), runtime.state_dir, app="jupyterlab",
                        options=("--LabApp.news_url=None", "--LabApp.extension_manager=readonly"))
    yield srv
    srv.stop()


@pytest.fixture
def page(lab):
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            tab = browser.new_page()
            tab.set_default_timeout(UI_TIMEOUT_MS)
            errors: list[str] = []
            tab.on("pageerror", lambda exc: errors.append(str(exc)))
            # A new workspace each time: the panel starts closed (a saved layout would reopen it, and the
            # click below would close it again).
            tab.goto(f"{lab.url}/lab/workspaces/{secrets.token_hex(4)}?token={lab.token}")
            tab.locator(f'.jp-SideBar [data-id="{PANEL[1:]}"]').click()  # the panel's tab in the left bar
            playwright_api.expect(tab.locator(PANEL)).to_be_visible()
            yield tab
            assert not [e for e in errors if "remotecell" in e], errors
        finally:
            browser.close()


def test_the_panel_shows_functions_and_cancels_a_spawned_call(page, app):
    expect = playwright_api.expect

    @app.function()
    def browser_square(x):
        return x * x

    @app.function()
    def browser_waits():
        print("waiting in the browser test")
        time.sleep(300)  # until the test cancels it

    assert browser_square.remote(5) == 25
    expect(page.locator(f"{PANEL} .rc-function", has_text="browser_square")).to_be_visible()
    expect(page.locator(f"{PANEL} .rc-app", has_text="test")).to_be_visible()

    call = browser_waits.spawn()
    row = page.locator(f'{PANEL} [data-call-id="{call.object_id}"]')
    expect(row.locator(".rc-call-state")).to_have_text("running")
    row.locator(".rc-cancel").click()
    wait_for(lambda: call.status()["state"] == "cancelled", what="the runtime to cancel the call")
    expect(row.locator(".rc-call-state")).to_have_text("cancelled")
    expect(row.locator(".rc-cancel")).to_have_count(0)

    row.click()  # its logs, below the sections
    expect(page.locator(f"{PANEL} .rc-logs")).to_contain_text("waiting in the browser test")


def test_the_panel_lists_dicts_and_queues(page, runtime):
    import remotecell as rc

    q = rc.Queue.from_name("browser-queue", create_if_missing=True)
    q.put_many(["a", "b"])
    playwright_api.expect(page.locator(f"{PANEL} .rc-store", has_text="Queue browser-queue")).to_have_text(
        "Queue browser-queue: 2 items")


def test_the_panel_pauses_and_runs_a_schedule(page, runtime, tmp_path):
    import remotecell as rc

    expect = playwright_api.expect
    deploy_scheduled(tmp_path, "browser-sched", schedule="rc.Period(hours=1)")
    try:
        row = page.locator(f'{PANEL} [data-schedule="browser-sched/tick"]')
        expect(row).to_contain_text("every")
        row.get_by_role("button", name="Pause").click()
        schedule = rc.Function.from_name("browser-sched", "tick").schedule()
        wait_for(lambda: schedule.refresh().paused, what="the runtime to pause the schedule")
        expect(row.locator(".rc-schedule-state")).to_have_text("paused")
        row.get_by_role("button", name="Run now").click()
        last = wait_for(lambda: schedule.refresh().last, what="a run started from the panel")
        assert last["trigger"] == "run_now"
        assert rc.FunctionCall.from_id(last["call_id"]).get(timeout=60) == "ticked"
        expect(row).to_contain_text("last run succeeded (run_now)")
    finally:
        rc.App.stop_deployed("browser-sched")


def test_the_panel_links_live_web_endpoints_and_lists_sandboxes(page, app):
    import remotecell as rc

    expect = playwright_api.expect

    @app.function()
    @rc.fastapi_endpoint(label="browser-hello")
    def browser_hello():
        return "hello"

    url = browser_hello.get_web_url()
    link = page.locator(f'{PANEL} [data-endpoint="test/browser-hello"] a')
    expect(link).to_have_attribute("href", url)
    expect(link).to_have_text(url)

    sandbox = rc.Sandbox.create("sleep", "300", app=app)
    try:
        row = page.locator(f'{PANEL} [data-sandbox-id="{sandbox.object_id}"]')
        expect(row).to_contain_text("running: sleep 300")
    finally:
        sandbox.terminate()
    expect(row).to_have_count(0)  # an ended sandbox leaves the list


def test_the_inbox_lists_the_days_calls_and_copies_the_reattach_snippet(page, lab, app):
    import remotecell as rc

    expect = playwright_api.expect

    @app.function()
    def browser_inbox(x):
        return x * 3

    call = browser_inbox.spawn(14)
    assert call.get(timeout=60) == 42
    row = page.locator(f'{PANEL} [data-inbox-call="{call.object_id}"]')
    expect(row.locator(".rc-inbox-state")).to_have_text("succeeded")
    expect(row).to_contain_text("browser_inbox")
    expect(row).to_contain_text("started ")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=lab.url)
    row.get_by_role("button", name="Copy").click()
    expect(row.get_by_role("button", name="Copied")).to_be_visible()
    snippet = page.evaluate("navigator.clipboard.readText()")
    assert f'call = rc.FunctionCall.from_id("{call.object_id}")' in snippet
    scope: dict = {}
    exec(snippet.replace("call.get()", "result = call.get(timeout=60)"), scope)  # the copied code, run here
    assert scope["result"] == 42 and isinstance(scope["call"], rc.FunctionCall)


SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"  # committed; the README shows them


def _set_theme(lab, theme: str) -> None:
    """JupyterLab's theme setting, through its settings API (as the Settings menu writes it)."""
    import json
    import urllib.request

    body = json.dumps({"raw": json.dumps({"theme": theme})}).encode()
    req = urllib.request.Request(f"{lab.url}/lab/api/settings/@jupyterlab/apputils-extension:themes", data=body,
                                 method="PUT", headers={"Authorization": f"token {lab.token}",
                                                        "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status in (200, 204), resp.status


def _badge_color(page) -> str:
    return page.evaluate(f"getComputedStyle(document.querySelector('{PANEL} .rc-call-state')).backgroundColor")


def test_charts_grow_in_place_logs_follow_and_badges_take_the_dark_theme(page, lab, app):
    expect = playwright_api.expect

    @app.function()
    def browser_chatty(n):
        for i in range(n):
            print(f"line {i}")
        return n

    assert list(browser_chatty.map([60, 60])) == [60, 60]
    chart = page.locator(f'{PANEL} .rc-chart[data-metric="inputs/s"]')
    expect(chart.locator("canvas")).to_have_count(1)
    chart.locator("canvas").evaluate("c => c.dataset.mark = 'first'")
    first = int(chart.get_attribute("data-points") or 0)
    wait_for(lambda: int(chart.get_attribute("data-points") or 0) >= first + 2, what="two more samples charted")
    assert chart.locator("canvas").get_attribute("data-mark") == "first"  # the same canvas: data set in place

    # The containers table sorts by a header click, both ways, and keeps that order across polls.
    ids = page.locator(f"{PANEL} .rc-container .rc-col-id")
    wait_for(lambda: ids.count() >= 2, what="two containers of browser_chatty in the table")
    header = page.locator(f"{PANEL} .rc-container-table th.rc-col-id")
    header.click()
    expect(header).to_have_attribute("aria-sort", "ascending")
    assert ids.all_text_contents() == sorted(ids.all_text_contents())
    header.click()
    expect(header).to_have_attribute("aria-sort", "descending")
    polls = int(chart.get_attribute("data-points") or 0)
    wait_for(lambda: int(chart.get_attribute("data-points") or 0) > polls, what="another poll")
    shown = ids.all_text_contents()
    assert shown == sorted(shown, reverse=True), shown
    expect(page.locator(f"{PANEL} .rc-container .rc-badge").first).to_be_visible()

    page.locator(f'{PANEL} [data-function$="browser_chatty"] .rc-function-logs').click()
    logs = page.locator(f"{PANEL} .rc-logs")
    expect(logs).to_contain_text("line 59")
    at_end = "p => p.scrollHeight - p.scrollTop - p.clientHeight <= 4"
    wait_for(lambda: logs.evaluate(at_end), what="the logs view to follow to the end")
    logs.evaluate("p => { p.scrollTop = 0; p.dispatchEvent(new Event('scroll')); }")  # the user scrolls up
    expect(page.locator(f"{PANEL} .rc-logs-view")).to_have_attribute("data-following", "false")
    assert browser_chatty.remote(70) == 70
    expect(logs).to_contain_text("line 69")
    assert logs.evaluate("p => p.scrollTop") == 0  # new lines came in below; the view stayed where the user was
    page.locator(f"{PANEL} .rc-follow").click()
    assert logs.evaluate(at_end)

    assert browser_chatty.spawn(1).get(timeout=60) == 1
    expect(page.locator(f"{PANEL} .rc-call-state").first).to_have_text("succeeded")
    light = _badge_color(page)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.locator(PANEL).evaluate("p => p.scrollTop = 0")  # the top: its charts and tables
    page.locator(PANEL).screenshot(path=str(SHOTS / "panel.png"))
    _set_theme(lab, "JupyterLab Dark")
    try:
        # A new workspace: the panel starts closed there (the theme is a user setting, not the workspace's).
        page.goto(f"{lab.url}/lab/workspaces/{secrets.token_hex(4)}?token={lab.token}")
        page.locator(f'.jp-SideBar [data-id="{PANEL[1:]}"]').click()
        expect(page.locator(f"{PANEL} .rc-call-state").first).to_have_text("succeeded")
        wait_for(lambda: page.evaluate("document.body.dataset.jpThemeLight") == "false", what="the dark theme")
        dark = _badge_color(page)
        assert dark != light, (light, dark)
        page.locator(PANEL).screenshot(path=str(SHOTS / "panel-dark.png"))
    finally:
        _set_theme(lab, "JupyterLab Light")
