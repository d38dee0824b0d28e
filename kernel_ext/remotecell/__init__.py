"""remotecell: run Python functions and notebook cells on a GPU box.

>>> import remotecell as rc
>>> app = rc.App("demo")
>>> @app.function(gpu="any")
... def square(x): return x * x
>>> square.remote(3)
9
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from remotecell_runtime.protocol.versions import VERSION as __version__

# Public name -> the module that owns it. Loaded on first use (PEP 562), so a container,
# which needs only the wire module, does not pay for the client's imports at cold start.
_EXPORTS = {
    "App": "app", "Cls": "cls", "Function": "functions", "Retries": "options", "batched": "options",
    "concurrent": "options", "enter": "cls", "exit": "cls", "method": "cls", "exceptions": "exceptions",
    "status": "status", "FunctionCall": "calls", "FunctionCallGroup": "calls", "Secret": "infra",
    "Image": "images", "FilePatternMatcher": "file_pattern_matcher", "Volume": "volumes", "Dict": "stores",
    "Queue": "stores", "Cron": "options", "Period": "options", "Schedule": "schedules", "Sandbox": "sandboxes",
    "ContainerProcess": "sandboxes", "fastapi_endpoint": "web", "asgi_app": "web", "wsgi_app": "web",
    "web_server": "web",
}

__all__ = [
    "App", "Cls", "ContainerProcess", "Cron", "Dict", "FilePatternMatcher", "Function", "FunctionCall",
    "FunctionCallGroup", "Image", "Period", "Queue", "Retries", "Sandbox", "Schedule", "Secret", "Volume",
    "__version__", "asgi_app", "batched", "concurrent", "enter", "exceptions", "exit", "fastapi_endpoint", "method",
    "status", "web_server", "wsgi_app",
]

# Modal's names beyond the core (issue 14): introspection, proxies, Modal's module names.
_EXPORTS |= {"is_local": "_context", "current_input_id": "_context", "current_function_call_id": "_context",
             "Proxy": "infra", "exception": "exception", "Error": "exceptions", "parameter": "cls",
             "Server": "server", "enable_output": "output", "debug": "debugging",
             "container_process": "container_process", "calls": "calls"}
# rc.calls(since=) is the module, called (calls.CallsModule)
_MODULES = {"exceptions", "exception", "container_process", "calls"}
__all__ += ["Error", "Proxy", "Server", "calls", "current_function_call_id", "current_input_id", "debug",
            "enable_output",
            "exception", "is_local", "parameter"]

if TYPE_CHECKING:
    from . import exception, exceptions
    from ._context import current_function_call_id, current_input_id, is_local
    from .app import App
    from .calls import FunctionCall, FunctionCallGroup
    from .cls import Cls, enter, exit, method, parameter
    from .debugging import debug
    from .exceptions import Error
    from .file_pattern_matcher import FilePatternMatcher
    from .functions import Function
    from .images import Image
    from .infra import Proxy, Secret
    from .options import Cron, Period, Retries, batched, concurrent
    from .output import enable_output
    from .sandboxes import ContainerProcess, Sandbox
    from .schedules import Schedule
    from .server import Server
    from .status import status
    from .stores import Dict, Queue
    from .volumes import Volume
    from .web import asgi_app, fastapi_endpoint, web_server, wsgi_app


def load_ipython_extension(shell: Any) -> None:
    """``%load_ext remotecell``: the ``%%remote`` magics and the notebook widgets (see ``remotecell.ipython``)."""
    from .ipython import load_ipython_extension as load

    load(shell)


def unload_ipython_extension(shell: Any) -> None:
    from .ipython import unload_ipython_extension as unload

    unload(shell)


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'remotecell' has no attribute {name!r}")
    module = importlib.import_module(f".{module_name}", __name__)
    value = module if name in _MODULES else getattr(module, name)
    globals()[name] = value
    return value
