"""Loading a container's function once (``load``): its volumes, the instance of a class and its hooks.

``Loaded`` is what every input needs of the loaded function: ``methods`` by name (None
for a plain function), those that run on the event loop (``loop_methods``: ``async
def`` and async generators, known at load), the worker threads when ``max_inputs`` > 1,
the event loop thread once something needs it, and the ``@exit`` hooks.  asyncio and
concurrent.futures are imported only then: most functions never pay for them.
"""

from __future__ import annotations

import inspect
import os
import sys
import threading
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..protocol import pickling
from ..protocol.framing import Payload
from ..protocol.messages.containers import LoadFailedMsg, LoadMsg, ReadyMsg
from ..protocol.messages.web import WebSpec
from ..protocol.options import FunctionOptions
from ..protocol.spec import ClsSpec
from . import references
from .inputs import describe_error
from .outbox import Outbox

if TYPE_CHECKING:  # asyncio (~60 ms) and concurrent.futures (~30 ms) load only when a function needs them
    import asyncio
    import concurrent.futures


class Loaded:
    """The loaded function (or a ClsSpec's instance): its methods and where they run."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self.methods: dict[str | None, Callable[..., Any]] = {}
        self.loop_methods: set[str | None] = set()  # those that run on the event loop
        self.inline: dict[str | None, Callable[..., Any]] = {}  # those that run on the I/O thread itself
        self.exit_hooks: list[Callable[[], Any]] = []
        self.max_inputs = 1
        self.threads: concurrent.futures.ThreadPoolExecutor | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.webs: dict[str | None, Any] = {}  # the web endpoints' WebApps by method: their inputs are requests

    def on_load(self, msg: LoadMsg, payloads: list[Payload]) -> None:
        os.environ.update(msg.env)  # before the function's imports: they may read it (thread pools, secrets)
        try:
            # a definition by reference is imported from its module here: its module-level code runs now, once
            self.load(references.resolve(pickling.deserialize(payloads[0])), FunctionOptions.from_wire(msg.options))
        except BaseException as exc:
            error, error_payloads = describe_error(exc, "loading the function failed")
            self.outbox.send(LoadFailedMsg(error=error), error_payloads)
            return
        direct_address = self.outbox.direct_address
        # A lease is one blocking caller's calls, one at a time.
        self.outbox.send(ReadyMsg(direct=direct_address if self.max_inputs == 1 else None))

    def load(self, target: Any, options: FunctionOptions) -> None:
        _link_volumes(os.environ.get("REMOTECELL_VOLUMES"))
        self.max_inputs = options.max_inputs
        if isinstance(target, ClsSpec):
            instance = target.cls(**target.params)
            self.methods = {name: getattr(instance, name) for name in target.methods}
            self.exit_hooks = [getattr(instance, name) for name in target.exit_hooks]
            for name in target.enter_hooks:
                self.call_hook(getattr(instance, name))
            for name, spec in options.web_methods.items():  # after @enter: an app may use what it made
                self._load_web(name, self.methods[name], spec)
        elif options.web is not None:
            self._load_web(None, target, options.web)
        else:
            self.methods = {None: target}
        self.loop_methods = {name for name, m in self.methods.items() if _on_loop(m) or name in self.webs}
        if self.loop_methods:
            self._start_loop()
        if self.max_inputs > 1:
            import concurrent.futures

            self.threads = concurrent.futures.ThreadPoolExecutor(self.max_inputs, thread_name_prefix="input")
        else:
            self.inline = {name: m for name, m in self.methods.items() if name not in self.loop_methods}

    def _load_web(self, name: str | None, target: Any, spec: WebSpec) -> None:
        """A web endpoint: its ASGI app built and started once; each request runs as a task on the loop."""
        import asyncio

        from .web import WebApp, build_app

        self._start_loop()
        assert self.loop is not None
        web = WebApp(build_app(target, spec, self.loop), self.outbox, self.loop)
        asyncio.run_coroutine_threadsafe(web.start(), self.loop).result()
        self.webs[name] = web
        self.methods[name] = web.handle
        self.exit_hooks.insert(0, web.stop)  # before the class's own @exit

    def _start_loop(self) -> None:
        import asyncio

        if self.loop is None:
            self.loop = asyncio.new_event_loop()
            threading.Thread(target=self.loop.run_forever, name="inputs-loop", daemon=True).start()

    def call_hook(self, hook: Callable[[], Any]) -> None:
        if inspect.iscoroutinefunction(hook):
            import asyncio

            self._start_loop()
            assert self.loop is not None
            asyncio.run_coroutine_threadsafe(hook(), self.loop).result()
        else:
            hook()

    def run_exit_hooks(self) -> None:
        for hook in self.exit_hooks:
            try:
                self.call_hook(hook)
            except BaseException:
                traceback.print_exc(file=sys.__stderr__)

    def no_method(self, name: str | None) -> AttributeError:
        return AttributeError(f"no remote method {name!r}; methods: {sorted(map(str, self.methods))}")


def _link_volumes(mounts_json: str | None) -> None:
    """Each volume's path becomes a link to its folder on the host (the runtime resolved them: services/volumes.py)."""
    if not mounts_json:
        return
    import json

    for path, folder in json.loads(mounts_json).items():
        if os.path.islink(path) and os.readlink(path) == folder:
            continue  # linked by an earlier container of this volume
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            os.symlink(folder, path, target_is_directory=True)
        except FileExistsError:
            if not (os.path.islink(path) and os.readlink(path) == folder):
                raise OSError(f"cannot mount a volume at {path}: that path exists on the runtime host and is not "
                              "this volume; choose a path that does not exist there") from None
        except OSError as exc:
            raise OSError(f"cannot mount a volume at {path}: {exc.strerror}; choose a path the runtime's user "
                          "can create") from None


def _on_loop(fn: Callable[..., Any]) -> bool:
    """``async def`` functions and async generators run on the container's event loop."""
    return inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)
