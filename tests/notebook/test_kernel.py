"""The notebook face through a real Jupyter kernel (jupyter_client) against the test runtime:
streamed order, display data, interrupts, output routing to the cell that made the call, widgets."""

from __future__ import annotations

import nbformat
from conftest import wait_for
from nbclient import NotebookClient

PNG_1PX = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")


def test_remote_cell_streams_in_order_with_display_and_value(kernel):
    kernel.run(f"import base64\nPNG = base64.b64decode({PNG_1PX!r})")
    outs = kernel.run(
        "%%remote\n"
        "print('one')\n"
        "class Dot:\n"
        "    def _repr_png_(self): return PNG\n"
        "display(Dot())\n"
        "print('two')\n"
        "6 * 7\n"
    )
    shapes = [(o["msg_type"], o["content"].get("text") or sorted(o["content"].get("data", {}))) for o in outs]
    assert shapes == [
        ("stream", "one\n"),
        ("display_data", ["image/png", "text/plain"]),
        ("stream", "two\n"),
        ("execute_result", ["text/plain"]),
    ]
    assert outs[1]["content"]["data"]["image/png"] == PNG_1PX
    assert outs[3]["content"]["data"]["text/plain"] == "42"
    assert kernel.value("_ + 1") == "43"  # the kernel's own `_` and Out


def test_ipythons_own_display_functions_reach_the_cell_from_a_remote_cell(kernel):
    outs = kernel.run(
        "%%remote --session rich\n"
        "from IPython.display import HTML, Markdown, clear_output, display, update_display\n"
        "display(HTML('<b>bold</b>'))\n"
        "display(Markdown('*it*'))\n"
        "class Table:\n"
        "    def _repr_html_(self): return '<table><tr><td>1</td></tr></table>'\n"
        "display(Table(), display_id='t1')\n"
        "update_display(HTML('<i>new</i>'), display_id='t1')\n"
        "clear_output()\n"
        "print('after')\n"
    )
    kinds = [(o["msg_type"], sorted(o["content"].get("data", {}))) for o in outs]
    assert kinds == [
        ("display_data", ["text/html", "text/plain"]),
        ("display_data", ["text/markdown", "text/plain"]),
        ("display_data", ["text/html", "text/plain"]),
        ("update_display_data", ["text/html", "text/plain"]),
        ("clear_output", []),
        ("stream", []),
    ], kinds
    assert outs[0]["content"]["data"]["text/html"] == "<b>bold</b>"
    assert outs[2]["content"]["transient"]["display_id"] == outs[3]["content"]["transient"]["display_id"] == "t1"
    assert outs[3]["content"]["data"]["text/html"] == "<i>new</i>"
    assert outs[5]["content"]["text"] == "after\n"


def test_interrupting_a_remote_cell_keeps_the_session(kernel):
    kernel.run("%%remote --session intr\ncounter = 41")
    msg_id = kernel.start("%%remote --session intr\nimport time\nprint('running', flush=True)\n"
                          "while True:\n    time.sleep(0.05)")
    kernel.pump(lambda: "running" in kernel.texts(msg_id), what="the remote cell to run")
    kernel.km.interrupt_kernel()
    kernel.pump(lambda: kernel.finished(msg_id), what="the interrupted cell to end")
    errors = [o["content"] for o in kernel.outputs(msg_id) if o["msg_type"] == "error"]
    assert errors and errors[0]["ename"] == "KeyboardInterrupt"
    assert kernel.texts(msg_id).count("remotecell: interrupted the remote cell; session 'intr' keeps its state") == 1
    assert kernel.value("%%remote --session intr\ncounter + 1") == "42"


def test_interrupting_a_map_cancels_its_inputs_and_the_next_cell_works(kernel):
    import remotecell as rc

    kernel.run("@app.function()\ndef slow(i):\n    import time\n    print('started', i, flush=True)\n"
               "    time.sleep(120)\n")
    msg_id = kernel.start("list(slow.map(range(4)))")
    kernel.pump(lambda: "started" in kernel.texts(msg_id), what="the map's inputs to start")
    kernel.km.interrupt_kernel()
    kernel.pump(lambda: kernel.finished(msg_id), what="the interrupted map to end")
    errors = [o["content"] for o in kernel.outputs(msg_id) if o["msg_type"] == "error"]
    assert errors and errors[0]["ename"] == "KeyboardInterrupt", kernel.texts(msg_id)
    assert "remotecell: interrupted; cancelled" in kernel.texts(msg_id)

    def idle():
        pools = [p for p in rc.status()["pools"] if p["function"] == "slow"]
        return pools and all(p["running"] == 0 and p["queued"] == 0 for p in pools)

    wait_for(idle, what="nothing of the map to run on the runtime")
    kernel.run("@app.function()\ndef square(x):\n    return x * x")
    assert kernel.value("square.remote(7)") == "49"


def test_output_lands_in_the_cell_that_made_the_call(kernel, tmp_path):
    gate = tmp_path / "gate"
    kernel.run("@app.function()\ndef late(path):\n    import os, time\n"
               "    while not os.path.exists(path):\n        time.sleep(0.02)\n    print('late output')\n"
               "@app.function()\ndef shout(tag):\n    print('from', tag)\n")
    first = kernel.start(f"import asyncio\ntask = asyncio.ensure_future(late.remote.aio({str(gate)!r}))")
    kernel.pump(lambda: kernel.finished(first), what="the first cell to finish")
    second = kernel.start(f"open({str(gate)!r}, 'w').close()\nawait task\nprint('second cell done')")
    kernel.pump(lambda: kernel.finished(second), what="the second cell to finish")
    assert "late output" in kernel.texts(first) and "late output" not in kernel.texts(second)
    # maps run on the bridge's loop thread: each map's output goes to its own cell
    a = kernel.start("list(shout.map(['a']))")
    kernel.pump(lambda: kernel.finished(a))
    b = kernel.start("list(shout.map(['b']))")
    kernel.pump(lambda: kernel.finished(b))
    assert "from a" in kernel.texts(a) and "from b" in kernel.texts(b) and "from b" not in kernel.texts(a)


def test_rerunning_a_cell_ships_the_new_definition(kernel):
    kernel.run("@app.function()\ndef version():\n    return 'first'")
    assert kernel.value("version.remote()") == "'first'"
    kernel.run("@app.function()\ndef version():\n    return 'second'")
    assert kernel.value("version.remote()") == "'second'"


def test_progress_widget_reaches_its_final_state(runtime, tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in (
        "%load_ext remotecell\nimport remotecell as rc\napp = rc.App('progress')",
        "@app.function(max_containers=2)\ndef tick(i):\n    import time\n    time.sleep(0.1)\n    return i",
        "assert list(tick.map(range(12))) == list(range(12))",
    )]
    NotebookClient(nb, timeout=120, kernel_name="python3", store_widget_state=True,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    bars = [m["state"] for m in state.values() if m["model_name"] == "IntProgressModel"]
    assert len(bars) == 1
    assert bars[0]["value"] == bars[0]["max"] == 12 and bars[0]["bar_style"] == "success"
    assert bars[0]["description"] == "tick.map"
    views = [o for o in nb.cells[2].outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert len(views) == 1  # the bar is shown in the map's own cell


def test_an_images_build_log_streams_into_the_cell_whose_call_builds_it(kernel):
    kernel.run("image = rc.Image.debian_slim().env({'IMAGE_TEST': 'kernel'}).uv_pip_install('humanize==4.16.0')\n"
               "@app.function(image=image)\ndef human(n):\n    import humanize\n    return humanize.intcomma(n)\n")
    msg_id = kernel.start("human.remote(1234567)")
    kernel.pump(lambda: kernel.finished(msg_id), what="the first call, which builds the image")
    outs = kernel.outputs(msg_id)
    kinds = [o["msg_type"] for o in outs]
    assert kinds[-1] == "execute_result" and outs[-1]["content"]["data"]["text/plain"] == "'1,234,567'"
    log = kernel.texts(msg_id)
    assert "=> Step 2/2: uv pip install humanize==4.16.0" in log and "+ humanize==4.16.0" in log, log
    assert kinds.index("stream") < kinds.index("execute_result")  # the log came while the cell waited
    again = kernel.start("human.remote(1000)")
    kernel.pump(lambda: kernel.finished(again), what="a second call")
    assert kernel.texts(again) == "'1,000'\n"  # built once: nothing more to say
