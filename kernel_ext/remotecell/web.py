"""Web endpoints, Modal's decorators: ``@rc.fastapi_endpoint``, ``@rc.asgi_app``, ``@rc.wsgi_app``.

Each goes below ``@app.function()`` (closer to the def) and only marks the function; ``@app.function``
puts the mark in the registered options as ``web`` (``WebSpec`` fields), and the runtime's gateway
serves the function at ``/APP/LABEL/`` of its HTTP port (``Function.get_web_url()``).  A web
function is never retried: a request that failed was answered already (a container that died
under it is a 502, and the next request gets a fresh container).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from .exceptions import InvalidError

_WEB_ATTR = "__remotecell_web__"
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_DOMAIN = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9]([A-Za-z0-9-]{0,61}"
                     r"[A-Za-z0-9])?$")
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


def fastapi_endpoint(*, method: str = "GET", label: str | None = None, custom_domains: Iterable[str] | None = None,
                     docs: bool = False, requires_proxy_auth: bool = False) -> Callable[[Any], Any]:
    """Serve the function over HTTP as a single FastAPI route: query parameters and JSON bodies typed by its
    signature, the return value as JSON.

    >>> @app.function()
    ... @rc.fastapi_endpoint(method="POST")
    ... def predict(item: dict) -> dict:
    ...     return {"echo": item}
    >>> predict.get_web_url()    # 'http://127.0.0.1:8190/demo/predict/'
    """
    if not isinstance(method, str) or method.upper() not in METHODS:
        raise InvalidError(f"fastapi_endpoint(method={method!r}): use one of {', '.join(METHODS)}")
    return _marker("fastapi_endpoint", {"kind": "fastapi", "method": method.upper(), "docs": bool(docs)},
                   label, custom_domains, requires_proxy_auth)


def asgi_app(*, label: str | None = None, custom_domains: Iterable[str] | None = None,
             requires_proxy_auth: bool = False) -> Callable[[Any], Any]:
    """Serve the ASGI app the function returns (FastAPI, Starlette, ...); it is called once per container.

    >>> @app.function()
    ... @rc.asgi_app()
    ... def api():
    ...     web = FastAPI()
    ...     @web.get("/items/{n}")
    ...     def item(n: int): return {"n": n}
    ...     return web
    """
    return _marker("asgi_app", {"kind": "asgi"}, label, custom_domains, requires_proxy_auth)


def wsgi_app(*, label: str | None = None, custom_domains: Iterable[str] | None = None,
             requires_proxy_auth: bool = False) -> Callable[[Any], Any]:
    """Serve the WSGI app the function returns (Flask, Django, ...); it is called once per container.

    >>> @app.function()
    ... @rc.wsgi_app()
    ... def site():
    ...     from flask import Flask
    ...     flask_app = Flask(__name__)
    ...     @flask_app.get("/")
    ...     def home(): return "hello"
    ...     return flask_app
    """
    return _marker("wsgi_app", {"kind": "wsgi"}, label, custom_domains, requires_proxy_auth)


def web_server(port: int, *, startup_timeout: float = 5.0, label: str | None = None,
               custom_domains: Iterable[str] | None = None, requires_proxy_auth: bool = False) -> Callable[[Any], Any]:
    """Serve the HTTP server the function starts in its container on ``port`` (any language, any framework):
    the gateway relays each request to it once it accepts connections (within ``startup_timeout`` seconds).

    >>> @app.function()
    ... @rc.web_server(8000)
    ... def files():
    ...     subprocess.Popen("python -m http.server -d / 8000", shell=True)

    Containers share the host's network unless ``block_network=True``: give each endpoint its own port.
    """
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise InvalidError(f"web_server(port={port!r}): give the port the server listens on, 1-65535")
    if not isinstance(startup_timeout, (int, float)) or not 0 < startup_timeout <= 3600:
        raise InvalidError(f"web_server(startup_timeout={startup_timeout!r}): give seconds, more than 0, at most 3600")
    return _marker("web_server", {"kind": "web_server", "port": port, "startup_timeout_s": float(startup_timeout)},
                   label, custom_domains, requires_proxy_auth)


def _marker(decorator: str, spec: dict[str, Any], label: str | None, custom_domains: Iterable[str] | None,
            requires_proxy_auth: bool) -> Callable[[Any], Any]:
    if label is not None and (not isinstance(label, str) or not _LABEL.match(label)):
        raise InvalidError(f"{decorator}(label={label!r}): a label is 1-63 letters, digits, '-', '_' or '.', "
                           "starting with a letter or digit (it is a segment of the URL's path)")
    domains = [] if custom_domains is None else list(custom_domains)
    if not all(isinstance(d, str) and _DOMAIN.match(d) for d in domains):
        raise InvalidError(f"{decorator}(custom_domains={custom_domains!r}): give a list of domain names, each "
                           "a domain name such as 'api.example.com' (no scheme, port or path)")
    spec = spec | {"requires_proxy_auth": bool(requires_proxy_auth), "custom_domains": [d.lower() for d in domains]}

    def attach(fn: Any) -> Any:
        if hasattr(fn, "registration") or hasattr(fn, "roles"):
            raise InvalidError(f"@rc.{decorator} goes below @app.function (closer to the def)")
        if not callable(fn) or isinstance(fn, type):
            raise InvalidError(f"@rc.{decorator} goes on a function, got {fn!r}")
        if getattr(fn, _WEB_ATTR, None) is not None:
            raise InvalidError(f"{getattr(fn, '__qualname__', fn)} has two web decorators: keep one")
        setattr(fn, _WEB_ATTR, spec | {"label": label or ""})
        return fn

    return attach


def announce(name: str, url: str | None) -> None:
    """Say where an endpoint is: ``name => URL``, and in a notebook the URL as a link too."""
    import sys

    text = f"{name} => {url}"
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is None or "IPKernelApp" not in getattr(shell, "config", {}) or url is None:
        print(text, flush=True)
        return
    import html

    from IPython.display import display

    link = f'{html.escape(name)} =&gt; <a href="{html.escape(url)}" target="_blank">{html.escape(url)}</a>'
    display({"text/plain": text, "text/html": link}, raw=True)


def web_methods(user_cls: type, name: str, options: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """A class's web endpoint methods and the options they add (``web_methods``), none for another class.

    Such a method needs no ``@rc.method()``; its label is ``CLASS-METHOD`` unless it names one.
    """
    found = {m: spec for m in dir(user_cls) if (spec := getattr(getattr(user_cls, m, None), _WEB_ATTR, None))}
    if not found:
        return [], {}
    if options.get("retries"):
        raise InvalidError(f"{name} has web endpoints: it takes no retries= (a failed request was answered already)")
    specs = {}
    for method, spec in sorted(found.items()):
        label = spec["label"] or f"{options.get('name') or user_cls.__name__}-{method}".replace("_", "-").lower()
        if not _LABEL.match(label):
            raise InvalidError(f"{name}.{method}: its name makes no URL label; give the decorator label=")
        specs[method] = spec | {"label": label}
    return sorted(found), {"web_methods": specs, "crash_retries": 0}


def class_port_limit(user_cls: type, name: str, options: dict[str, Any]) -> dict[str, Any]:
    """What a class's ``web_server`` methods add to its options (as given, before defaults): see below."""
    added: dict[str, Any] = {}
    for m in dir(user_cls):
        spec = getattr(getattr(user_cls, m, None), _WEB_ATTR, None)
        if spec is not None:
            added |= _one_container_per_port(spec, name, options)
    return added


def web_options(fn: Any, name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The options a web endpoint adds to its function's (none for another function): ``web``, never retried."""
    spec = getattr(fn, _WEB_ATTR, None)
    if spec is None:
        return {}
    if options.get("retries"):
        raise InvalidError(f"{name} is a web endpoint: it takes no retries= (a failed request was answered "
                           "already; a container that died under one is a 502, the next request gets a new one)")
    label = spec["label"] or str(options.get("name") or fn.__name__).replace("_", "-").lower()
    if not _LABEL.match(label):
        raise InvalidError(f"{name}: its name makes no URL label; give the decorator label=")
    return {"web": spec | {"label": label}, "crash_retries": 0} | _one_container_per_port(spec, name, options)


def _one_container_per_port(spec: dict[str, Any], name: str, options: dict[str, Any]) -> dict[str, Any]:
    """A ``web_server``'s containers share the host's network unless ``block_network=True``, and only one of them
    can listen on the port then: it runs one container (two would relay to the first one's server)."""
    if spec["kind"] != "web_server" or options.get("block_network"):
        return {}
    for key in ("min_containers", "max_containers"):
        if options.get(key, 1) > 1:
            raise InvalidError(f"{name}({key}={options[key]!r}): its containers would share the host's network and "
                               f"only one can listen on port {spec['port']}; give block_network=True (each "
                               "container its own loopback, no outside network) to run more than one")
    return {"max_containers": 1}
