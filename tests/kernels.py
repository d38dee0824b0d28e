"""A real Jupyter kernel for tests (jupyter_client), and how to read the widgets it shows.

The ``kernel`` fixture in conftest.py is the one way tests get a kernel; ``Kernel`` itself is
here for tests that need one against a runtime of their own.
"""

from __future__ import annotations

import queue
import time
from pathlib import Path

from jupyter_client import KernelManager


class Kernel:
    """A real ipykernel; every iopub message is kept, so a test can ask which cell got what."""

    def __init__(self, cwd: Path) -> None:
        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel(cwd=str(cwd))
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)
        self.messages: list[dict] = []

    def stop(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)

    def pump(self, until, timeout_s: float = 60, what: str = "a kernel message"):
        """Read iopub messages until ``until()`` is true."""
        deadline = time.monotonic() + timeout_s
        while not until():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_s} s waiting for {what}; got {self.texts()}")
            try:
                self.messages.append(self.kc.get_iopub_msg(timeout=0.2))
            except queue.Empty:
                pass
        return until()

    def start(self, code: str) -> str:
        return self.kc.execute(code)

    def finished(self, msg_id: str) -> bool:
        return any(m["msg_type"] == "status" and m["content"]["execution_state"] == "idle"
                   and m["parent_header"].get("msg_id") == msg_id for m in self.messages)

    def run(self, code: str, ok: bool = True, timeout_s: float = 60) -> list[dict]:
        """Execute a cell to its end; its outputs (stream, display_data, execute_result, error)."""
        msg_id = self.start(code)
        self.pump(lambda: self.finished(msg_id), timeout_s, f"cell {code[:40]!r} to finish")
        outs = self.outputs(msg_id)
        errors = [o for o in outs if o["msg_type"] == "error"]
        if ok and errors:
            raise AssertionError(f"cell failed: {errors[0]['content']['ename']}: {errors[0]['content']['evalue']}"
                                 f"\n{self.texts(msg_id)}")
        return outs

    def outputs(self, msg_id: str) -> list[dict]:
        kinds = ("stream", "display_data", "execute_result", "error", "update_display_data", "clear_output")
        return [m for m in self.messages if m["msg_type"] in kinds and m["parent_header"].get("msg_id") == msg_id]

    def texts(self, msg_id: str | None = None) -> str:
        parts = []
        for m in self.messages:
            if msg_id is not None and m["parent_header"].get("msg_id") != msg_id:
                continue
            c = m["content"]
            parts.append(c.get("text") or c.get("data", {}).get("text/plain", "") or
                         (f"{c['ename']}: {c['evalue']}" if "ename" in c else ""))
        return "".join(p if p.endswith("\n") else p + "\n" for p in parts if p)

    def value(self, code: str):
        outs = self.run(code)
        results = [o for o in outs if o["msg_type"] == "execute_result"]
        assert results, f"no value from {code!r}: {self.texts()}"
        return results[-1]["content"]["data"]["text/plain"]


VIEW = "application/vnd.jupyter.widget-view+json"


def widget_states(messages: list[dict]) -> dict[str, dict]:
    """Every widget model's state as the kernel's comm messages left it, by model id."""
    states: dict[str, dict] = {}
    for m in messages:
        content = m["content"]
        if m["msg_type"] == "comm_open" and content.get("target_name") == "jupyter.widget":
            states[content["comm_id"]] = dict(content["data"]["state"])
        elif m["msg_type"] == "comm_msg" and content["data"].get("method") == "update":
            states.setdefault(content["comm_id"], {}).update(content["data"]["state"])
    return states


def view_parts(kernel: Kernel, model_id: str) -> dict[str, dict]:
    """The parts of one shown view (the model ``model_id`` and its descendants), by CSS class."""
    states = widget_states(kernel.messages)
    parts, todo = {}, [model_id]
    while todo:
        model_id = todo.pop()
        state = states[model_id]
        for css in state.get("_dom_classes", []):
            parts[css] = dict(state, model_id=model_id)
        todo += [child.removeprefix("IPY_MODEL_") for child in state.get("children", [])]
    return parts


def shown_views(kernel: Kernel, msg_id: str) -> list[str]:
    """The model ids of the widgets a cell displayed, in order (an update of a shown one is not another)."""
    return [o["content"]["data"][VIEW]["model_id"] for o in kernel.outputs(msg_id)
            if o["msg_type"] != "update_display_data" and VIEW in o["content"].get("data", {})]


def click(kernel: Kernel, model_id: str) -> None:
    """What the frontend sends when a Button is pressed."""
    msg = kernel.kc.session.msg("comm_msg", {"comm_id": model_id,
                                             "data": {"method": "custom", "content": {"event": "click"}}})
    kernel.kc.shell_channel.send(msg)
