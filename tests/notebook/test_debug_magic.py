"""Remote post-mortem in a real kernel: ``%debug`` after a remote exception opens pdb in the container's frames.

The pdb prompts are the kernel's input requests (what a notebook's input box answers);
the test answers them with scripted commands.
"""

from __future__ import annotations

import time

from kernels import Kernel


def debug_session(kernel: Kernel, code: str, commands: list[str], prompt_text: str = "(Pdb) ") -> str:
    """Run ``code`` (``%debug``), answering each pdb prompt with the next command; the cell's text."""
    msg_id = kernel.start(code)
    for command in commands:
        prompt = kernel.kc.get_stdin_msg(timeout=60)
        assert prompt["content"]["prompt"] == prompt_text, prompt
        kernel.kc.input(command)
    kernel.pump(lambda: kernel.finished(msg_id), what="the debugger cell to finish")
    return kernel.texts(msg_id)


OUTER = """
@app.function(max_containers=1)
def outer(y):
    def inner(x):
        total = x * 2
        return total / (x - 21)
    if y < 0:
        raise ValueError(f"negative {y}")
    return inner(y + 20)
"""


def test_debug_after_remote_opens_pdb_in_the_remote_frames(kernel):
    kernel.run(OUTER)
    failed = kernel.run("outer.remote(1)", ok=False)
    assert any(o["msg_type"] == "error" and o["content"]["ename"] == "ZeroDivisionError" for o in failed)
    text = debug_session(kernel, "%debug", ["p x, total", "l", "up", "p y", "q"])
    assert "ZeroDivisionError: division by zero" in text and "-> return total / (x - 21)" in text
    assert "(21, 42)" in text  # p x, total in the frame that raised
    assert "total = x * 2" in text  # l: the cell's source, sent from the kernel
    assert "-> return inner(y + 20)" in text and "\n1\n" in text  # up, p y


def test_another_call_completes_while_a_frame_is_held(kernel):
    kernel.run(OUTER)
    kernel.run("outer.remote(-5)", ok=False)
    # the one container that holds the frames serves the next calls; a cell that succeeds leaves the last error
    assert kernel.value("[outer.remote(v) for v in (22, 43)]") == "[4.0, 3.0]"
    text = debug_session(kernel, "%debug", ["p y", "q"])
    assert "ValueError: negative -5" in text and "\n-5\n" in text


def test_debug_after_a_failed_map_and_a_remote_cell(kernel):
    kernel.run("@app.function()\ndef check(v):\n    if v == 3:\n        raise ValueError(f'bad {v}')\n    return v")
    kernel.run("list(check.map(range(5)))", ok=False)
    assert "\n3\n" in debug_session(kernel, "%debug", ["p v", "q"])
    kernel.run("%%remote\ndef g(n):\n    z = n + 1\n    return z / 0\ng(4)", ok=False)
    text = debug_session(kernel, "%debug", ["p z", "q"])
    assert "ZeroDivisionError" in text and "\n5\n" in text


def test_rc_debug_says_released_after_the_hold_time(kernel):
    kernel.run("@app.function(secrets=[rc.Secret.from_dict({'REMOTECELL_DEBUG_HOLD_S': '1'})])\n"
               "def brief(x):\n    raise RuntimeError(f'x was {x}')")
    kernel.run("brief.remote(7)", ok=False)
    deadline = time.monotonic() + 20
    while True:  # each try is a cell: rc.debug() with no argument takes the last exception
        text = kernel.texts(kernel.run("rc.debug(commands=['p x'])")[0]["parent_header"]["msg_id"])
        if "released" in text or time.monotonic() > deadline:
            break
    assert "RuntimeError: x was 7: released: the frames of that RuntimeError were held 1 s" in text


def test_debug_after_a_local_error_is_ipythons_own(kernel):
    kernel.run("def local_fail():\n    here = 'local'\n    raise KeyError(here)")
    kernel.run("local_fail()", ok=False)
    text = debug_session(kernel, "%debug", ["p here", "q"], prompt_text="ipdb> ")
    assert "'local'" in text and "remote frames" not in text
