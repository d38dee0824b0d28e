"""The remote side of a ``%%remote`` session: it runs inside the session's container.

One :class:`SessionWorker` per container keeps the session's globals and runs
cells in them, like a second kernel: all statements but the last are executed,
a last expression is evaluated and returned (and kept as ``_``).  Rich output
(``display(...)``, ``plt.show()``) travels to the caller as ``display`` output
messages carrying a JSON mime bundle, in order with what the cell prints.

This module must not import IPython at import time (the container may not have
it, and the runtime never imports it): it has its own small ``display``.  Where the
container has IPython, the session also hooks IPython's own display machinery (an
``InteractiveShell`` whose display publisher sends to the cell), so that
``from IPython.display import display, HTML`` (and Markdown, Image, a DataFrame,
``update_display``, ``clear_output``) behaves as in the notebook.
"""

from __future__ import annotations

import ast
import asyncio
import base64
import builtins
import inspect
import json
import linecache
import os
import secrets
import socket
import sys
from dataclasses import dataclass, field
from typing import Any

MPL_BACKEND = "module://remotecell.ipython.mpl_backend"
_TEXT_REPRS = {
    "text/html": "_repr_html_", "text/markdown": "_repr_markdown_", "text/latex": "_repr_latex_",
    "image/svg+xml": "_repr_svg_", "application/javascript": "_repr_javascript_",
}
_BINARY_REPRS = {"image/png": "_repr_png_", "image/jpeg": "_repr_jpeg_", "application/pdf": "_repr_pdf_"}

# The container's own stdout (set by the worker at start): the channel to the caller, even
# when a cell redirects sys.stdout.
_channel: Any = None


@dataclass
class CellOutcome:
    """What a call to :meth:`SessionWorker.run_cell` reports back to the kernel."""

    token: str                       # which session instance answered (a new one after a crash)
    ran: bool = False                # False: nothing ran (stale token, or names to push first)
    stale: bool = False              # the caller expected another session instance: its state is gone
    missing: list[str] = field(default_factory=list)   # names to push before the cell can run
    value: Any = None                # the last expression's value (None when the cell ends in a statement)
    pulled: dict[str, Any] = field(default_factory=dict)
    not_found: list[str] = field(default_factory=list)  # --pull names the session does not have
    where: str = ""                  # the session's container and its host


def mime_bundle(obj: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The mime bundle of ``obj`` as IPython would build it, without IPython.

    >>> mime_bundle(3)
    ({'text/plain': '3'}, {})
    """
    if _is_figure(obj):
        return _figure_bundle(obj), {}
    data: dict[str, Any] = {}
    metadata: dict[str, Any] = {}
    if hasattr(obj, "_repr_mimebundle_") and not isinstance(obj, type):
        got = obj._repr_mimebundle_(include=None, exclude=None)
        if isinstance(got, tuple):
            got, metadata = got[0], dict(got[1] or {})
        data.update(got or {})
    for mime, method in _TEXT_REPRS.items():
        value = _call_repr(obj, method)
        if isinstance(value, str) and mime not in data:
            data[mime] = value
    for mime, method in _BINARY_REPRS.items():
        value = _call_repr(obj, method)
        if isinstance(value, tuple):  # (data, metadata)
            value, metadata[mime] = value
        if isinstance(value, bytes) and mime not in data:
            data[mime] = base64.b64encode(value).decode("ascii")
        elif isinstance(value, str) and mime not in data:
            data[mime] = value
    json_repr = _call_repr(obj, "_repr_json_")
    if json_repr is not None and "application/json" not in data:
        data["application/json"] = json_repr
    data.setdefault("text/plain", repr(obj))
    return data, metadata


def _call_repr(obj: Any, method: str) -> Any:
    fn = getattr(obj, method, None)
    if fn is None or isinstance(obj, type):
        return None
    try:
        return fn()
    except Exception:  # a broken repr must not break the cell; IPython skips it too
        return None


def _is_figure(obj: Any) -> bool:
    return any(f"{c.__module__}.{c.__qualname__}" == "matplotlib.figure.Figure" for c in type(obj).__mro__)


def _figure_bundle(fig: Any) -> dict[str, Any]:
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    return {"image/png": base64.b64encode(buffer.getvalue()).decode("ascii"), "text/plain": repr(fig)}


def display(*objs: Any, raw: bool = False, metadata: dict[str, Any] | None = None, **_ignored: Any) -> None:
    """Show objects in the notebook cell that runs this session's cell (``display`` in ``%%remote`` cells).

    >>> display(fig)                                  # a matplotlib figure, as a PNG
    >>> display({"text/html": "<b>hi</b>"}, raw=True) # a mime bundle as is
    """
    for obj in objs:
        if raw:
            data, meta = dict(obj), dict(metadata or {})
        else:
            data, meta = mime_bundle(obj)
            meta.update(metadata or {})
        send_display(data, meta)


def send_display(data: dict[str, Any], metadata: dict[str, Any], transient: dict[str, Any] | None = None,
                 update: bool = False) -> None:
    """One ``display`` output message to the caller, after what the cell printed so far (``transient``'s
    ``display_id`` names it for a later ``update``)."""
    data = {mime: base64.b64encode(v).decode("ascii") if isinstance(v, bytes) else v for mime, v in data.items()}
    message: dict[str, Any] = {"data": data, "metadata": metadata}
    if transient:
        message["transient"] = transient
    if update:
        message["update"] = True
    if not _emit(json.dumps(message, default=str)):  # not in a container input: print the text form
        print(data.get("text/plain", ""))


def send_clear(wait: bool) -> None:
    """``clear_output(wait=)`` of the cell's output area."""
    _emit(json.dumps({"clear": True, "wait": wait}))


def _emit(text: str) -> bool:
    sys.stderr.flush()
    sys.stdout.flush()
    emit = getattr(_channel, "emit", None)
    return bool(emit is not None and emit("display", text))


def hook_ipython() -> bool:
    """IPython's display functions send to the cell, when this container has IPython; whether it has."""
    try:
        from IPython.core.displaypub import DisplayPublisher
        from IPython.core.interactiveshell import InteractiveShell
        from traitlets.config import Config
    except ImportError:
        return False

    class CellPublisher(DisplayPublisher):
        def publish(self, data: dict[str, Any], metadata: dict[str, Any] | None = None, source: Any = None, *,
                    transient: dict[str, Any] | None = None, update: bool = False, **_: Any) -> None:
            send_display(data, metadata or {}, transient, update)

        def clear_output(self, wait: bool = False) -> None:
            send_clear(wait)

    config = Config()
    config.HistoryManager.enabled = False  # nothing written to the container's home
    shell = InteractiveShell.instance(config=config)
    shell.display_pub = CellPublisher(shell=shell)
    assert shell.display_formatter is not None  # made with the shell
    png = shell.display_formatter.formatters["image/png"]
    png.for_type_by_name("matplotlib.figure", "Figure", lambda fig: base64.b64decode(_figure_bundle(fig)["image/png"]))
    return True


class SessionWorker:
    """The session's interpreter in its container (loaded by the runtime as a remote class)."""

    def start(self) -> None:
        """``@enter``: a fresh namespace, and the matplotlib backend that sends figures to the cell."""
        global _channel
        _channel = sys.stdout
        os.environ.setdefault("MPLBACKEND", MPL_BACKEND)
        hook_ipython()
        self.token = secrets.token_hex(8)
        # its id, not its pid: in a sandbox every container is pid 2 of its own namespace
        self.where = f"container {os.environ.get('REMOTECELL_TASK_ID', os.getpid())} on {socket.gethostname()}"
        self.namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins, "display": display}
        self.loop: asyncio.AbstractEventLoop | None = None

    def run_cell(self, source: str, filename: str, token: str | None, wanted: list[str],
                 pushed: dict[str, Any], pull: list[str]) -> CellOutcome:
        """Run one cell: refuse when the caller's state is gone or names must be pushed first."""
        if token is not None and token != self.token:
            return CellOutcome(self.token, stale=True, where=self.where)
        missing = [n for n in wanted if n not in pushed and n not in self.namespace and not hasattr(builtins, n)]
        if missing:
            return CellOutcome(self.token, missing=missing, where=self.where)
        self.namespace.update(pushed)
        value = self._execute(source, filename)
        self._show_open_figures()
        if value is not None:
            self.namespace["_"] = value
        pulled = {n: self.namespace[n] for n in pull if n in self.namespace}
        return CellOutcome(self.token, ran=True, value=value, pulled=pulled,
                           not_found=[n for n in pull if n not in self.namespace], where=self.where)

    def names(self) -> list[str]:
        """The session's variables (what ``%remote_session`` lists)."""
        return sorted(n for n in self.namespace if not n.startswith("__") and n != "display")

    def _execute(self, source: str, filename: str) -> Any:
        linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
        tree = ast.parse(source, filename, "exec")
        last = tree.body[-1] if tree.body else None
        if isinstance(last, ast.Expr):
            tree.body.pop()
        flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        self._run(compile(tree, filename, "exec", flags=flags))
        if not isinstance(last, ast.Expr):
            return None
        return self._run(compile(ast.Expression(last.value), filename, "eval", flags=flags))

    def _run(self, code: Any) -> Any:
        result = eval(code, self.namespace)
        if inspect.iscoroutine(result):  # the cell used top-level await: one loop for the session
            if self.loop is None:
                self.loop = asyncio.new_event_loop()
            result = self.loop.run_until_complete(result)
        return result

    def _show_open_figures(self) -> None:
        """Figures a cell drew but did not show are shown at its end (as the notebook's inline backend does)."""
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is not None and pyplot.get_backend() == MPL_BACKEND:
            pyplot.show()
