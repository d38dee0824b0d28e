"""The views of spawn handles: widgets in a real Jupyter kernel against the test runtime, read from the
comm messages the kernel sends; the text view without ipywidgets; the plain repr outside a kernel."""

from __future__ import annotations

from conftest import run_script, wait_for
from IPython import get_ipython
from IPython.testing.globalipapp import start_ipython
from IPython.utils.capture import capture_output
from kernels import VIEW, Kernel, click, shown_views, view_parts
from remotecell.widgets.calls import CallSnapshot, GroupSnapshot, duration, short_repr, tail
from remotecell.widgets.poller import Poller


def state_of(kernel: Kernel, model_id: str) -> str:
    return view_parts(kernel, model_id)["remotecell-call-state"]["value"]


def test_snapshot_lines():
    queued = CallSnapshot("square", "fc-1", "queued", reason="waiting for a free container", attempts=1,
                          elapsed_s=0.25)
    assert queued.line() == "square fc-1: queued 0.2 s, attempt 1 (waiting for a free container)"
    done = CallSnapshot("square", "fc-1", "succeeded", attempts=2, elapsed_s=75, container="c-3",
                        log_tail="a\nb", result="49")
    assert done.text() == "square fc-1: succeeded 1 min 15 s, attempt 2\n  | a\n  | b\n  result: 49"
    group = GroupSnapshot("f.spawn_map", "fg-1", 10, {"succeeded": 6, "failed": 1, "running": 2, "queued": 1})
    assert group.line() == "f.spawn_map fg-1: 7/10 finished (6 succeeded, 1 failed), 2 running, 1 queued"
    assert not group.final and GroupSnapshot("g", "fg-2", 2, {"cancelled": 2}).final
    assert duration(7300) == "2 h 01 min"
    assert tail("".join(f"{i}\n" for i in range(30)), 3) == "27\n28\n29"
    assert short_repr("x" * 3000).endswith("... (3,002 characters)")


def test_the_poller_ticks_until_done_survives_a_failing_view_and_stops():
    ticks: list[str] = []
    left = {"a": 3}

    class Counting:
        def tick(self) -> bool:
            ticks.append("a")
            left["a"] -= 1
            return left["a"] == 0

    class Broken:
        def tick(self) -> bool:
            ticks.append("broken")
            raise RuntimeError("a bug in a view")

    poller = Poller(every_s=0.01)
    poller.add(Broken())
    poller.add(Counting())
    wait_for(lambda: poller.idle, what="the poller to have no views left")
    assert ticks.count("a") == 3 and ticks.count("broken") == 1
    left["a"] = 2
    poller.add(Counting())  # the idle thread wakes for a new view
    wait_for(lambda: poller.idle, what="the new view to be done")
    assert ticks.count("a") == 5 and poller.alive
    poller.stop()  # the kernel exits
    wait_for(lambda: not poller.alive, what="the poller thread to end")
    poller.add(Counting())  # after stop: nothing is ticked
    assert poller.idle and ticks.count("a") == 5


# -- widgets in a real kernel ----------------------------------------------------------------


def test_a_spawned_calls_widget_goes_live_to_succeeded_with_its_result(kernel, tmp_path):
    gate = tmp_path / "go"
    kernel.run("@app.function()\ndef gated_cube(x, path):\n    import os, time\n    print('cubing', x, flush=True)\n"
               "    while not os.path.exists(path):\n        time.sleep(0.02)\n    print('cubed', x)\n"
               "    return {'cube': x ** 3}")
    shown = kernel.start(f"call = gated_cube.spawn(3, {str(gate)!r})\ncall")
    kernel.pump(lambda: kernel.finished(shown), what="the spawning cell to finish")
    [view] = shown_views(kernel, shown)
    [bundle] = [o["content"]["data"] for o in kernel.outputs(shown) if VIEW in o["content"]["data"]]
    assert bundle["text/plain"].startswith("<rc.FunctionCall fc-")  # where widgets are not rendered
    kernel.pump(lambda: ">running</b>" in state_of(kernel, view), what="the widget to say running")
    kernel.pump(lambda: "cubing 3" in view_parts(kernel, view)["remotecell-call-logs"]["value"],
                what="the call's output in the widget's log tail")
    assert "attempt 1" in state_of(kernel, view)
    # the call prints again and finishes while a later cell runs: its output goes to the widget only
    later = kernel.start(f"open({str(gate)!r}, 'w').close()\nprint(call.get(timeout=30))")
    kernel.pump(lambda: kernel.finished(later), what="the later cell to finish")
    assert kernel.texts(later) == "{'cube': 27}\n"
    kernel.pump(lambda: ">succeeded</b>" in state_of(kernel, view), what="the widget to say succeeded")
    parts = view_parts(kernel, view)
    assert "gated_cube" in parts["remotecell-call-title"]["value"]
    assert kernel.value("call.object_id").strip("'") in parts["remotecell-call-title"]["value"]
    assert "{&#x27;cube&#x27;: 27}" in parts["remotecell-call-outcome"]["value"]
    assert "cubing 3\ncubed 3" in parts["remotecell-call-logs"]["value"]
    assert parts["remotecell-call-cancel"]["disabled"] is True
    assert "cubing" not in kernel.texts() and "cubed" not in kernel.texts()  # in no cell's output


def test_a_failed_calls_widget_shows_the_error(kernel):
    kernel.run("@app.function()\ndef lookup(key):\n    print('looking up', key)\n    return {}[key]")
    shown = kernel.start("missing = lookup.spawn('nope')\nmissing")
    kernel.pump(lambda: kernel.finished(shown), what="the cell to finish")
    [view] = shown_views(kernel, shown)
    kernel.pump(lambda: ">failed</b>" in state_of(kernel, view), what="the widget to say failed")
    parts = view_parts(kernel, view)
    assert parts["remotecell-call-outcome"]["value"].endswith("KeyError: &#x27;nope&#x27;</span>")
    assert parts["remotecell-call-logs"]["value"] == "<pre>looking up nope</pre>"


def test_cancel_buttons_cancel_a_queued_and_a_running_call(kernel):
    kernel.run("@app.function(max_containers=1)\ndef forever(tag):\n    import time\n    print('started', tag)\n"
               "    while True:\n        time.sleep(0.05)")
    shown = kernel.start("first = forever.spawn('first')\nsecond = forever.spawn('second')\ndisplay(first, second)")
    kernel.pump(lambda: kernel.finished(shown), what="the cell to finish")
    first, second = shown_views(kernel, shown)
    kernel.pump(lambda: ">running</b>" in state_of(kernel, first), what="the first call to run")
    kernel.pump(lambda: ">queued</b>" in state_of(kernel, second), what="the second call to wait")
    assert "(" in state_of(kernel, second)  # why it waits
    for view in (second, first):
        click(kernel, view_parts(kernel, view)["remotecell-call-cancel"]["model_id"])
        kernel.pump(lambda view=view: ">cancelled</b>" in state_of(kernel, view), what="the call to be cancelled")
        assert view_parts(kernel, view)["remotecell-call-cancel"]["disabled"] is True
    assert kernel.value("first.status()['state'], second.status()['state']") == "('cancelled', 'cancelled')"



def test_a_spawn_map_widget_counts_to_the_end_and_its_cancel_stops_the_rest(kernel):
    kernel.run("@app.function(max_containers=2)\ndef double(x):\n    return 2 * x\n"
               "@app.function(max_containers=1)\ndef stuck(x):\n    import time\n    while True:\n"
               "        time.sleep(0.05)")
    shown = kernel.start("done = double.spawn_map(range(6))\nblocked = stuck.spawn_map(range(3))\n"
                         "display(done, blocked)")
    kernel.pump(lambda: kernel.finished(shown), what="the cell to finish")
    done, blocked = shown_views(kernel, shown)

    kernel.pump(lambda: view_parts(kernel, done)["remotecell-group-bar"]["bar_style"] == "success",
                what="the finished map's bar to turn green")
    parts = view_parts(kernel, done)
    assert parts["remotecell-group-bar"]["value"] == parts["remotecell-group-bar"]["max"] == 6
    assert parts["remotecell-group-counts"]["value"] == "6/6 finished (6 succeeded)"
    assert parts["remotecell-group-bar"]["description"] == "double.spawn_map"
    assert parts["remotecell-call-cancel"]["disabled"] is True
    kernel.pump(lambda: "1 running, 2 queued" in view_parts(kernel, blocked)["remotecell-group-counts"]["value"],
                what="the stuck map to show one running and two queued")
    click(kernel, view_parts(kernel, blocked)["remotecell-call-cancel"]["model_id"])
    kernel.pump(lambda: view_parts(kernel, blocked)["remotecell-group-bar"]["bar_style"] == "warning",
                what="the stuck map's bar to say it was stopped")
    assert view_parts(kernel, blocked)["remotecell-group-counts"]["value"] == "3/3 finished (3 cancelled)"
    assert kernel.value("blocked.status()") == "{'cancelled': 3}"


def test_without_ipywidgets_the_view_is_text_updated_in_place(kernel):
    kernel.run("@app.function()\ndef shout(word):\n    print('shouting', word)\n    return word.upper()")
    shown = kernel.start("import sys\nsaved = sys.modules.get('ipywidgets')\nsys.modules['ipywidgets'] = None\n"
                         "try:\n    plain = shout.spawn('hey')\n    display(plain)\n"
                         "finally:\n    sys.modules['ipywidgets'] = saved")
    kernel.pump(lambda: kernel.finished(shown), what="the cell to finish")
    [first] = [o["content"] for o in kernel.outputs(shown) if o["msg_type"] == "display_data"]
    assert VIEW not in first["data"] and "shout fc-" in first["data"]["text/plain"]
    display_id = first["transient"]["display_id"]

    def latest() -> str:
        updates = [m["content"]["data"]["text/plain"] for m in kernel.messages
                   if m["msg_type"] == "update_display_data" and m["content"]["transient"]["display_id"] == display_id]
        return updates[-1] if updates else ""

    kernel.pump(lambda: "succeeded" in latest(), what="the text view to say succeeded")
    assert latest().endswith("attempt 1\n  | shouting hey\n  result: 'HEY'")


def test_outside_a_kernel_the_handles_show_their_repr(runtime):
    shell = start_ipython() or get_ipython()
    shell.run_cell("import remotecell as rc\napp = rc.App('terminal')\n"
                   "@app.function()\ndef one(x):\n    return x")
    with capture_output() as out:
        result = shell.run_cell("call = one.spawn(1)\ncall")
    text = repr(shell.user_ns["call"])
    assert result.success and [o.data for o in out.outputs] == [{"text/plain": text}]
    assert text.startswith("<rc.FunctionCall fc-") and text.endswith(" of one>")
    with capture_output() as out:
        shell.run_cell("group = one.spawn_map(range(2))\ngroup")
    [shown] = [o.data["text/plain"] for o in out.outputs]
    assert shown.startswith("<rc.FunctionCallGroup fg-") and shown.endswith(" of one, 2 inputs>")
    assert shell.run_cell("call.get(timeout=30), group.get(timeout=30)").result == (1, [0, 1])


def test_handles_work_without_ipython_or_ipywidgets(runtime, tmp_path):
    done = run_script("""
import sys
sys.modules["IPython"] = sys.modules["ipywidgets"] = None   # as if not installed
import remotecell as rc
app = rc.App("plain")

@app.function()
def twice(x):
    return 2 * x

if __name__ == "__main__":
    call = twice.spawn(21)
    print(repr(call).split(" ")[0], call.get(timeout=30))
    assert "IPython" not in [m for m in sys.modules if sys.modules[m] is not None]
""", tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "<rc.FunctionCall 42\n"
