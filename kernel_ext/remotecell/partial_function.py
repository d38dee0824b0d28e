"""``remotecell.partial_function``, as Modal's ``modal.partial_function``: the decorators."""

from __future__ import annotations

from .cls import enter, exit, method
from .options import batched, concurrent
from .web import asgi_app, fastapi_endpoint, web_server, wsgi_app

__all__ = ["asgi_app", "batched", "concurrent", "enter", "exit", "fastapi_endpoint", "method", "web_server",
           "wsgi_app"]
