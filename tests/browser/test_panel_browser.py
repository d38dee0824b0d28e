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
                        options=("--LabApp.news_url=None", "--LabApp.extension_manager=readonly",
                             "--LabApp.expose_app_in_browser=True"))  # window.jupyterapp: run a notebook's cells
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

    row.locator(".rc-call-function").click()  # a click on the row (not on a button): its logs, below the sections
    expect(page.locator(f"{PANEL} .rc-logs")).to_contain_text("waiting in the browser test")


def test_the_panel_lists_dicts_and_queues(page, runtime):
    import remotecell as rc

    q = rc.Queue.from_name("browser-queue", create_if_missing=True)
    q.put_many(["a", "b"])
    row = page.locator(f'{PANEL} [data-store="queue:browser-queue"]')
    playwright_api.expect(row.locator(".rc-col-size")).to_have_text("2 items")
    playwright_api.expect(row.locator(".rc-col-kind")).to_have_text("Queue")


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
        expect(row.locator(".rc-schedule-last")).to_have_text("succeeded")
        expect(row.locator(".rc-col-last")).to_contain_text("run_now")
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
        expect(row.locator(".rc-badge")).to_have_text("running")
        expect(row.locator(".rc-col-what")).to_have_text("sleep 300")
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
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=lab.url)
    row.get_by_role("button", name="Copy").click()
    expect(row.get_by_role("button", name="Copied")).to_be_visible()
    snippet = page.evaluate("navigator.clipboard.readText()")
    assert f'call = rc.FunctionCall.from_id("{call.object_id}")' in snippet
    scope: dict = {}
    exec(snippet.replace("call.get()", "result = call.get(timeout=60)"), scope)  # the copied code, run here
    assert scope["result"] == 42 and isinstance(scope["call"], rc.FunctionCall)


SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"  # committed; the README shows them


def _put_setting(lab, plugin: str, values: dict) -> None:
    """A JupyterLab user setting, through its settings API (as the Settings menu writes it)."""
    import json
    import urllib.request

    body = json.dumps({"raw": json.dumps(values)}).encode()
    req = urllib.request.Request(f"{lab.url}/lab/api/settings/{plugin}", data=body, method="PUT",
                                 headers={"Authorization": f"token {lab.token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status in (200, 204), resp.status


def _set_theme(lab, theme: str) -> None:
    _put_setting(lab, "@jupyterlab/apputils-extension:themes", {"theme": theme})


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


# -- every list a sortable table; a call row's Copy and logs; the batch sizes chart ---------------------------------

# Which column each table is sorted by in the test below (names the test chose, so the two orders differ).
SORTED_BY = {"rc-app": "name", "rc-function": "name", "rc-call": "function", "rc-inbox-call": "function",
             "rc-schedule": "app", "rc-endpoint": "name", "rc-sandbox": "id", "rc-store": "name"}
STATEFUL = ("rc-app", "rc-function", "rc-call", "rc-inbox-call", "rc-schedule", "rc-endpoint", "rc-sandbox")
# A column's texts, top to bottom, if they are in descending order as the table compares them; else null.
DESCENDING_JS = """([rows, key]) => {
  const t = [...document.querySelectorAll(rows)].map(r => r.querySelector('.rc-col-' + key).textContent);
  return t.every((v, i) => i === 0 || t[i - 1].localeCompare(v, undefined, { numeric: true }) >= 0) ? t : null;
}"""
AT_END_JS = "p => p.scrollHeight - p.scrollTop - p.clientHeight <= 4"


def _polls(page) -> int:
    return int(page.locator(PANEL).get_attribute("data-polls") or 0)


def _rows(table: str) -> str:
    return f"{PANEL} .{table}-table tbody tr.rc-row"


def test_every_list_is_a_sortable_table_with_state_badges_and_icons(page, app, tmp_path):
    import remotecell as rc

    expect = playwright_api.expect

    @app.function()
    def browser_sort_b(i):
        return i

    @app.function()
    def browser_sort_a(i):
        return i

    @app.function()
    @rc.fastapi_endpoint(label="browser-sort-b")
    def browser_sort_web_b():
        return "b"

    @app.function()
    @rc.fastapi_endpoint(label="browser-sort-a")
    def browser_sort_web_a():
        return "a"

    assert [browser_sort_b.spawn(1).get(timeout=60), browser_sort_a.spawn(2).get(timeout=60)] == [1, 2]
    browser_sort_web_a.get_web_url(), browser_sort_web_b.get_web_url()
    for name, size in (("browser-sort-d1", 1), ("browser-sort-d2", 3)):
        rc.Dict.from_name(name, create_if_missing=True).update({str(i): i for i in range(size)})
    apps = ["browser-sort-s1", "browser-sort-s2"]
    sandboxes = []
    try:
        for name in apps:
            deploy_scheduled(tmp_path, name, schedule="rc.Period(hours=1)")
        sandboxes = [rc.Sandbox.create("sleep", "300", app=app) for _ in range(2)]
        for table in SORTED_BY:  # each table lists at least two rows, then sorts by a header, descending
            wait_for(lambda t=table: page.locator(_rows(t)).count() >= 2, what=f"two rows in the {table} table")
            header = page.locator(f"{PANEL} .{table}-table th.rc-col-{SORTED_BY[table]}")
            header.click()
            header.click()
            expect(header).to_have_attribute("aria-sort", "descending")
        polls = _polls(page)
        wait_for(lambda: _polls(page) > polls, what="another poll")  # the order outlives a redraw
        for table, key in SORTED_BY.items():
            shown = page.evaluate(DESCENDING_JS, [_rows(table), key])
            assert shown and len(shown) >= 2, (table, page.locator(_rows(table)).all_text_contents())
        for table in STATEFUL:  # a row with a state shows it as a badge
            rows = page.locator(_rows(table))
            assert page.locator(f"{_rows(table)} .rc-col-state .rc-badge").count() == rows.count(), table
        expect(page.locator(f'{PANEL} [data-schedule="browser-sort-s1/tick"] .rc-schedule-state')).to_have_text(
            "scheduled")
        expect(page.locator(f"{PANEL} .rc-sandbox .rc-badge").first).to_have_text("running")
        # JupyterLab's icons: on each section's title and on the rows' buttons
        assert page.locator(f"{PANEL} .rc-section > h3 .rc-icon svg").count() == 13
        for button in ("rc-copy", "rc-call-logs", "rc-function-logs"):
            assert page.locator(f"{PANEL} .{button} .rc-icon svg").count() >= 2, button
    finally:
        for sandbox in sandboxes:
            sandbox.terminate()
        for name in apps:
            rc.App.stop_deployed(name)


def test_a_call_row_copies_its_snippet_its_logs_follow_and_the_batch_sizes_chart_grows(page, lab, app, tmp_path):
    import remotecell as rc

    expect = playwright_api.expect
    more, last = tmp_path / "more", tmp_path / "last"

    @app.function()
    def browser_talks(more, last):
        import os
        import time

        for gate, lines in ((None, range(0, 40)), (more, range(40, 80)), (last, range(80, 120))):
            while gate and not os.path.exists(gate):  # each batch of lines once the test says so
                time.sleep(0.01)
            for i in lines:
                print(f"talk {i}", flush=True)
        return "done"

    call = browser_talks.spawn(str(more), str(last))
    row = page.locator(f'{PANEL} [data-call-id="{call.object_id}"]')
    expect(row.locator(".rc-call-state")).to_have_text("running")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=lab.url)
    row.get_by_role("button", name="Copy").click()
    expect(row.get_by_role("button", name="Copied")).to_be_visible()
    snippet = page.evaluate("navigator.clipboard.readText()")
    assert f'call = rc.FunctionCall.from_id("{call.object_id}")' in snippet, snippet

    row.get_by_role("button", name="Logs").click()
    logs = page.locator(f"{PANEL} .rc-logs")
    expect(page.locator(f"{PANEL} .rc-logs-view .rc-title")).to_have_text(f"Logs of {call.object_id}")
    expect(logs).to_contain_text("talk 39")
    wait_for(lambda: logs.evaluate(AT_END_JS), what="the call's logs at their end")
    more.touch()
    expect(logs).to_contain_text("talk 79")
    wait_for(lambda: logs.evaluate(AT_END_JS), what="the view to follow the call's new lines")
    logs.evaluate("p => { p.scrollTop = 0; p.dispatchEvent(new Event('scroll')); }")  # the user scrolls up
    expect(page.locator(f"{PANEL} .rc-logs-view")).to_have_attribute("data-following", "false")
    last.touch()
    assert call.get(timeout=60) == "done"
    expect(logs).to_contain_text("talk 119")
    assert logs.evaluate("p => p.scrollTop") == 0  # the lines came in below; the view stayed where the user was
    page.locator(f"{PANEL} .rc-follow").click()
    assert logs.evaluate(AT_END_JS)
    scope: dict = {}
    exec(snippet.replace("call.get()", "result = call.get(timeout=60)"), scope)  # the copied code, run here
    assert scope["result"] == "done" and isinstance(scope["call"], rc.FunctionCall)

    @app.function(max_containers=1)
    @rc.batched(max_batch_size=4, wait_ms=100)
    def browser_batches(xs):
        import time

        time.sleep(0.5)  # 16 batches of 4: about 8 s, so batches close between several polls
        return xs

    chart = page.locator(f'{PANEL} .rc-chart[data-metric="batch size"]')
    before = int(chart.get_attribute("data-values") or 0)
    assert list(browser_batches.map(range(64))) == list(range(64))
    wait_for(lambda: int(chart.get_attribute("data-values") or 0) >= before + 2,
             what="batch sizes charted at two polls or more")
    expect(chart.locator("canvas")).to_have_count(1)


# -- the notebook widgets, in a real JupyterLab notebook: screenshots for the README ---------------------------------

NOTEBOOK_CELLS = [
    "%load_ext remotecell\nimport remotecell as rc\napp = rc.App('browser-shots')",
    "@app.function(max_containers=2)\ndef square(i):\n    import time\n    time.sleep(0.25)\n    return i * i\n\n"
    "squares = list(square.map(range(48)))",
    "@app.function(max_containers=1)\n@rc.batched(max_batch_size=8, wait_ms=20)\ndef embed(xs):\n"
    "    import time\n    time.sleep(0.02)\n    return [x * 2 for x in xs]\n\n"
    "assert len(list(embed.map(range(300)))) == 300\nembed.batch_stats()",
    "rc.Function.from_name('browser-shots-sched', 'tick').schedule()",
]


KERNEL_IDLE_JS = """() => {
  const nb = window.jupyterapp.shell.currentWidget;
  return nb?.sessionContext?.session?.kernel?.status === 'idle';
}"""


def _output(page, css: str, text: str):
    """The rendered widget ``css`` (its box: what a screenshot crops to) that reads ``text``."""
    return page.locator(f"{css}.jupyter-widgets", has_text=text)


@pytest.mark.timeout(240)  # a notebook's kernel starts, then three cells run, on a small shared box
def test_the_notebook_widgets_render_in_jupyterlab_and_are_screenshot(page, lab, tmp_path):
    import nbformat
    import remotecell as rc

    expect = playwright_api.expect
    deploy_scheduled(tmp_path, "browser-shots-sched", schedule="rc.Period(seconds=2)")
    try:
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell(src) for src in NOTEBOOK_CELLS]
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, lab.log_path.parent / "shots.ipynb")  # the server's root dir
        # No "get notified about Jupyter news?" toast over the outputs (the machine reaches no web anyway).
        _put_setting(lab, "@jupyterlab/apputils-extension:notification", {"fetchNews": "false"})
        page.goto(f"{lab.url}/lab/workspaces/{secrets.token_hex(4)}/tree/shots.ipynb?token={lab.token}")
        expect(page.locator(".jp-Notebook .jp-Cell")).to_have_count(len(NOTEBOOK_CELLS))
        # Its kernel up first: run-all-cells before the session is ready may run nothing.
        page.wait_for_function(KERNEL_IDLE_JS, timeout=120_000)
        page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
        SHOTS.mkdir(parents=True, exist_ok=True)

        # The map's bar: done/total, its rate, and how long it took (the ETA while it ran: see the report of h23;
        # JupyterLab drew this bar only once the map had ended).
        bar = _output(page, ".remotecell-progress", "square.map")
        expect(bar.locator(".remotecell-progress-eta")).to_contain_text("took ", timeout=120_000)  # kernel first
        expect(bar.locator(".remotecell-progress-rate")).to_contain_text("/s")
        expect(bar).to_contain_text("48/48 done")
        bar.screenshot(path=str(SHOTS / "widget-progress.png"))

        batching = _output(page, ".remotecell-batching", "embed")
        expect(batching.locator(".remotecell-batching-timeline svg")).to_be_visible(timeout=120_000)
        expect(batching.locator(".remotecell-batching-summary")).to_contain_text("300 items")
        batching.screenshot(path=str(SHOTS / "widget-batching.png"))

        schedule = _output(page, ".remotecell-schedule", "tick")
        expect(schedule.locator(".remotecell-schedule-timeline")).to_contain_text("last run", timeout=120_000)
        expect(schedule.locator(".remotecell-schedule-timeline")).to_contain_text("next in")
        schedule.screenshot(path=str(SHOTS / "widget-schedule.png"))
        for name in ("widget-progress", "widget-batching", "widget-schedule"):
            assert 2_000 < (SHOTS / f"{name}.png").stat().st_size < 200_000, name  # a real picture, and small
    finally:
        rc.App.stop_deployed("browser-shots-sched")
