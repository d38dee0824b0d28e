"""The result cache's note and the session inbox in real Jupyter kernels (nbclient), against the test runtime."""

from __future__ import annotations

import uuid

import nbformat
from nbclient import NotebookClient
from nbclient.util import run_sync


def _run(tmp_path, *cells: str):
    """The cells as one notebook executed by nbclient in a fresh kernel (which exits at the end); its code cells."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()  # raises on a failing cell
    return nb.cells


def _streams(cell, name: str) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream" and o["name"] == name)


def _value(cell) -> str:
    return "".join(o.get("data", {}).get("text/plain", "") for o in cell.outputs)


def test_a_cell_says_its_result_came_from_the_cache(runtime, tmp_path):
    runs = f"nb-cache-runs-{uuid.uuid4().hex[:8]}"
    cells = _run(
        tmp_path,
        f"""import remotecell as rc
app = rc.App("nb-cache")
runs = rc.Dict.from_name({runs!r}, create_if_missing=True)

@app.function(cache=True)
def nb_tripled(x):
    import remotecell as rc
    d = rc.Dict.from_name({runs!r})
    d[x] = d.get(x, 0) + 1
    return 3 * x

nb_tripled.cache_clear()""",
        "nb_tripled.remote(2)",
        "nb_tripled.remote(2)",
        "list(nb_tripled.map([2, 5, 2]))",
        "dict(runs.items())",
        f"rc.Dict.objects.delete({runs!r})",
    )
    assert _value(cells[1]) == "6" and "from the cache" not in _streams(cells[1], "stderr")
    assert _value(cells[2]) == "6"
    assert _streams(cells[2], "stderr") == "remotecell: nb_tripled: result from the cache (it did not run)\n"
    assert _value(cells[3]) == "[6, 15, 6]"
    assert "remotecell: nb_tripled.map: 2 results from the cache (not run again)" in _streams(cells[3], "stderr")
    assert _value(cells[4]) == "{2: 1, 5: 1}"  # each ran once


def test_a_call_spawned_before_a_restart_is_listed_and_fetched_after_it(runtime, tmp_path):
    """One notebook, one kernel manager: kernel A spawns, the kernel restarts, kernel B lists and fetches."""
    marker = uuid.uuid4().hex[:8]
    cells = [
        f"""import remotecell as rc
app = rc.App("nb-inbox")

@app.function()
def nb_inbox_{marker}(x):
    return x * 10

with app.run():
    call = nb_inbox_{marker}.spawn(4)
    call.get(timeout=60)
call.object_id""",
        "'call' in globals()",  # after the restart: kernel B has nothing of kernel A's
        f"""import remotecell as rc
[info] = [i for i in rc.calls(since="1h") if i.function.endswith("nb_inbox_{marker}")]
print(info.object_id, info.state, info.duration.total_seconds() < 60)""",
        "info.reattach().get()",
        "print(info.snippet)",
        "rc.calls(since='1h')",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    client = NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    with client.setup_kernel():
        client.execute_cell(nb.cells[0], 0)
        pid_a = client.km.provisioner.pid if client.km.provisioner else None
        run_sync(client.km.restart_kernel)(now=True)  # nbclient's managers are async ones
        run_sync(client.kc.wait_for_ready)(timeout=60)
        assert pid_a is None or client.km.provisioner.pid != pid_a  # a new kernel process
        for index in range(1, len(cells)):
            client.execute_cell(nb.cells[index], index)
    code = nb.cells
    spawned = _value(code[0]).strip("'")
    assert spawned.startswith("fc-")
    assert _value(code[1]) == "False"
    assert _streams(code[2], "stdout") == f"{spawned} succeeded True\n"
    assert _value(code[3]) == "40"
    assert f'call = rc.FunctionCall.from_id("{spawned}")' in _streams(code[4], "stdout")
    assert spawned in _value(code[5]) and f"nb_inbox_{marker}" in _value(code[5])
