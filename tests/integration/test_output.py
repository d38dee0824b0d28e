"""Issue 14, item 2: ``remotecell run`` and ``rc.enable_output()`` show all of an app's output here (calls, map
inputs, spawned calls, schedules), each line prefixed with whose it is, ``[function input-id]``."""

from __future__ import annotations

import re
import subprocess
import sys

import remotecell as rc
from conftest import wait_for

APP = '''
import remotecell as rc

app = rc.App("printing")

@app.function()
def shout(word):
    print("said", word)
    return word.upper()

@app.function()
def background(n):
    for i in range(n):
        print("background line", i)
    return n

@app.local_entrypoint()
def main():
    call = background.spawn(2)                  # reaches no caller: followed from the app's log
    print("local", shout.remote("hi"), sorted(shout.map(["a", "b"])))
    print("spawned returned", call.get(timeout=60))
'''


def test_remotecell_run_shows_every_inputs_output_prefixed_by_whose_it_is(runtime, tmp_path):
    path = tmp_path / "printing_app.py"
    path.write_text(APP)
    out = subprocess.run([sys.executable, "-m", "remotecell", "run", str(path)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    said = [line for line in lines if "said" in line]
    assert len(said) == 3 and all(re.fullmatch(r"\[shout \S+\] said (hi|a|b)", line) for line in said), lines
    assert len({line.split()[1] for line in said}) == 3  # each input by its own id
    background = [line for line in lines if "background line" in line]
    assert [re.sub(r"fc-[0-9a-f]+", "ID", line) for line in background] == [
        "[background ID] background line 0", "[background ID] background line 1"], lines
    assert "local HI ['A', 'B']" in lines and "spawned returned 2" in lines  # the entrypoint's own: as printed


def test_enable_output_follows_spawned_calls_and_schedules_and_stops_with_the_block(runtime, capfd):
    app = rc.App("followed")
    seen: list[str] = []

    def printed() -> str:
        seen.append(capfd.readouterr().out)
        return "".join(seen)

    @app.function(schedule=rc.Period(seconds=1))
    def tick():
        print("tick fired")

    @app.function()
    def spawned():
        print("from the spawned call")

    with rc.enable_output(), app.run():
        spawned.spawn().get(timeout=60)
        wait_for(lambda: "tick fired" in printed(), timeout_s=30, what="a scheduled run's output")
    out = printed()
    assert re.search(r"^\[\S*spawned fc-[0-9a-f]+\] from the spawned call$", out, re.M), out
    assert re.search(r"^\[\S*tick fc-[0-9a-f]+\] tick fired$", out, re.M), out

    @app.function()
    def plain():
        print("not prefixed")

    with app.run():  # outside enable_output: as before, unprefixed, and nothing followed
        plain.remote()
    assert "not prefixed" in capfd.readouterr().out.splitlines()
