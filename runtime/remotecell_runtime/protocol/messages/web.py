"""Web endpoints: an HTTP request as it travels to a container, and its response as it comes back.

The gateway (``services/web.py``) turns one HTTP request into one input of the endpoint's
function: a ``call`` (or an entry of ``calls``) whose ``web`` field is the request's
``WebRequest`` (method, path, query, headers: text, never pickled) and whose one payload is
the request body as raw bytes.  The container runs the user's ASGI app and sends what it
answers as ``web_out`` messages about that input, in order: one ``start`` (status and
headers), then ``body`` chunks (each one raw payload) as the app produces them; the input's
``result`` ends the exchange (its payloads are not read).  Header names and values travel as
latin-1 text, as HTTP/1.1 allows bytes 0-255 in them.

A websocket is one input too (``WebRequest.type`` ``websocket``): the container's ``web_out``
says ``accept``, then each message it sends (``ws``, its one payload the bytes, ``text`` when it
is text) and at last ``close``; the client's messages go to the container running the input as
``web_in`` (``ws``, or ``close`` when the client left), in order.
"""

from __future__ import annotations

from typing import Any

from ..message import Message, message, wire

WEB_KINDS = ("fastapi", "asgi", "wsgi", "web_server")


@message()
class WebSpec(Message):
    """The ``web`` option of a function: what kind of endpoint it is and where the gateway serves it."""

    kind: str  # fastapi (one handler wrapped in a FastAPI app), asgi or wsgi (the function returns the app),
    # web_server (the function starts a server on ``port`` in its container; requests are relayed to it)
    label: str  # the URL's second path segment: /APP/LABEL/
    method: str = "GET"  # fastapi only: the one method its handler takes
    docs: bool = False  # fastapi only: /docs and /openapi.json
    requires_proxy_auth: bool = False  # requests need a web token's Modal-Key/Modal-Secret
    custom_domains: list[str] = wire(factory=list)  # requests whose Host is one of these: served at its root
    port: int = 0  # web_server only
    startup_timeout_s: float = 5.0  # web_server only: how long the server may take to accept connections


@message()
class WebRequest(Message):
    """One HTTP request's head (or a websocket's handshake), as the container builds the ASGI scope from it."""

    method: str
    path: str  # the whole path, the endpoint's prefix included (ASGI: root_path is a prefix of path)
    root_path: str  # /APP/LABEL
    query: str = ""  # the raw query string, latin-1
    headers: list[Any] = wire(factory=list)  # [[name, value], ...], latin-1, names lower-case
    client: list[Any] | None = None  # [host, port]
    server: list[Any] | None = None
    scheme: str = "http"
    http_version: str = "1.1"
    type: str = "http"  # or websocket
    more_body: bool = False  # the body goes on past the payload: the container pulls it (``web_out`` pull)
    subprotocols: list[str] = wire(factory=list)  # a websocket's


@message("web_out")
class WebOutMsg(Message):
    """Container -> gateway: part of input ``id``'s response: ``start`` (status, headers) or a ``body`` chunk
    (its one payload: the bytes; ``more``: more chunks follow)."""

    id: str
    kind: str  # start | body | pull (the app wants more of the request body); a websocket's accept | ws | close
    status: int = 0
    headers: list[Any] = wire(factory=list)
    more: bool = False
    text: bool = False  # a websocket message that is text (its payload UTF-8)
    code: int = 1000  # close: the websocket's close code
    reason: str = ""
    subprotocol: str | None = None  # accept: the one chosen


@message("web_in")
class WebInMsg(Message):
    """Gateway -> container: a websocket client's message to input ``id`` (``ws``: its one payload, ``text``
    when text) or its leaving (``close``, with the code); a pulled part of a request body (``body``, its one
    payload, ``more`` when more follows); ``credit``: how much of its response the client has taken
    (``written``), so the container sends no more than a window ahead of a slow client."""

    id: str
    kind: str
    text: bool = False
    code: int = 1000
    more: bool = False
    written: int = 0  # credit: the response's bytes written to the client so far (its flow control)
