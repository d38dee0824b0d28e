"""Modal's Servers: ``@app.server(port=...)`` on a class whose ``@rc.enter`` hooks start an HTTP server.

>>> @app.server(port=8000, unauthenticated=True)
... class Files:
...     @rc.enter()
...     def start(self):
...         self.proc = subprocess.Popen(["python", "-m", "http.server", "8000"])
>>> Files.get_url()
'http://127.0.0.1:8190/APP/files/'

A Server is a class with one web endpoint: the gateway relays each request to the port inside
one of its containers (as ``@rc.web_server`` does for a function), many requests to a container
at once (``target_concurrency`` is the autoscaler's aim per container). Requests that carry the
same ``Modal-Session-Id`` header go to the same container while it lives (best effort, by
rendezvous hashing over the live containers: a container that stops moves only its own sessions).
A Server has no ``@rc.method``: it is reached over HTTP only. Unlike other endpoints, and as in
Modal, a Server needs proxy auth unless ``unauthenticated=True``.
"""

from __future__ import annotations

import math
from typing import Any

from .cls import Cls, DeployedCls
from .exceptions import InvalidError
from .options import check_range, concurrent
from .web import web_server

SERVE_METHOD = "__remotecell_serve__"
MAX_REQUESTS_PER_CONTAINER = 1000  # a container only relays: what bounds it is the user's server, not us
# Modal's options for servers that mean nothing on one host: accepted, no effect (README's Servers section)
NO_EFFECT = ("h2_enabled", "exit_grace_period", "routing_region", "compute_region", "scaleup_window",
             "nonpreemptible", "i6pn", "experimental_options")


def server_decorator(app: Any, options: dict[str, Any]) -> Any:
    """``app.server(...)``: what the decorator does with the class (``App.server`` holds the signature)."""
    port = check_range("port", options.pop("port", 8000), 1, 65535)
    startup_timeout = options.get("startup_timeout", 30)
    unauthenticated = bool(options.pop("unauthenticated", False))
    target = options.pop("target_concurrency", None)
    for name in NO_EFFECT:
        options.pop(name, None)
    per_container = _target_inputs(target)

    def wrap(user_cls: type) -> Server:
        if not isinstance(user_cls, type):
            raise InvalidError(f"@app.server needs a class, got {user_cls!r}")
        name = options.get("name") or user_cls.__qualname__

        def serve(self: Any) -> None:  # its @rc.enter hooks started the server: requests just go to the port
            return None

        endpoint = web_server(port, startup_timeout=startup_timeout, label=str(name).replace("_", "-").lower(),
                              requires_proxy_auth=not unauthenticated)(serve)
        setattr(user_cls, SERVE_METHOD, endpoint)
        concurrent(max_inputs=max(MAX_REQUESTS_PER_CONTAINER, per_container), target_inputs=per_container)(user_cls)
        cls = app.cls(**options)(user_cls)
        if cls.roles["method"] != [SERVE_METHOD]:
            others = [m for m in cls.roles["method"] if m != SERVE_METHOD]
            raise InvalidError(f"@app.server {name} has methods {others}: a Server is reached over HTTP only "
                               "(use @app.cls for methods called with .remote())")
        return Server(cls, name)

    return wrap


def _target_inputs(target: float | None) -> int:
    if target is None:
        return MAX_REQUESTS_PER_CONTAINER
    check_range("target_concurrency", target, 0, 100_000, float)
    return MAX_REQUESTS_PER_CONTAINER if target == 0 else max(1, math.ceil(target))  # 0: Modal's "no autoscaling"


class Server:
    """A Server of an app (``@app.server``) or of a deployed one (``Server.from_name``)."""

    def __init__(self, cls: Cls | DeployedCls, name: str) -> None:
        self._cls = cls
        self.name = name

    def get_url(self) -> str | None:
        """The URL its requests go to (``/APP/LABEL/`` on the runtime's gateway).

        >>> requests.get(Files.get_url() + "hello.txt")
        """
        return getattr(self._cls(), SERVE_METHOD).get_web_url()

    def stats(self) -> dict[str, Any]:
        """Its pool's state, as ``Function.stats()``: containers, running and waiting requests."""
        return getattr(self._cls(), SERVE_METHOD).stats()

    @staticmethod
    def from_name(app_name: str, name: str) -> Server:
        """The Server ``name`` of the deployed app ``app_name``, from any process.

        >>> rc.Server.from_name("demo", "Files").get_url()
        """
        return Server(DeployedCls(app_name, name), name)

    def __repr__(self) -> str:
        return f"<rc.Server {self.name}>"
