"""Web endpoints through real HTTP on 127.0.0.1: the runtime's gateway, real containers, httpx as the client."""


import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import remotecell as rc
import remotecell._client as client_mod
from conftest import Runtime, cli, wait_for
from remotecell import exceptions


def _token() -> str:
    """A value of this container process alone (in a sandbox every container is pid 2)."""
    import builtins
    import uuid

    return builtins.__dict__.setdefault("_web_test_token", uuid.uuid4().hex)


def test_fastapi_endpoint_json_get_and_post(app):
    @app.function()
    @rc.fastapi_endpoint()
    def greet(name: str, times: int = 1):
        return {"greeting": " ".join([f"hello {name}"] * times)}

    @app.function()
    @rc.fastapi_endpoint(method="POST", label="add-up")
    def add(item: dict):
        return {"sum": sum(item["xs"]), "keys": sorted(item)}

    assert greet.stats()["containers"] == {}  # containers start from zero: the first request starts one
    url = greet.get_web_url()
    assert url.startswith("http://127.0.0.1:") and url.endswith("/test/greet/")
    assert rc.status()["web"]["endpoints"]["test/greet"] == url  # `remotecell status` lists live endpoints
    assert f"endpoint test/greet => {url}" in repr(rc.status())
    r = httpx.get(url, params={"name": "ada", "times": 2}, timeout=30)
    assert r.status_code == 200 and r.json() == {"greeting": "hello ada hello ada"}
    assert r.headers["content-type"] == "application/json"
    bad = httpx.get(url, params={"name": "ada", "times": "many"}, timeout=30)  # typed by the signature
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "times"]
    assert httpx.get(url, timeout=30).status_code == 422  # name is required

    post_url = add.get_web_url()
    assert post_url.endswith("/test/add-up/")
    r = httpx.post(post_url, json={"xs": [1, 2, 3], "b": 0}, timeout=30)
    assert r.status_code == 200 and r.json() == {"sum": 6, "keys": ["b", "xs"]}
    assert httpx.get(post_url, timeout=30).status_code == 405  # the one method it takes
    assert httpx.post(post_url, content=b"not json", headers={"content-type": "application/json"},
                      timeout=30).status_code == 422


def test_asgi_app_with_path_parameters_and_its_own_404(app):
    @app.function()
    @rc.asgi_app()
    def api():
        from fastapi import FastAPI, Request

        web = FastAPI()
        calls = []

        @web.get("/items/{item_id}")
        def item(item_id: int, q: str | None = None):
            calls.append(item_id)
            return {"item_id": item_id, "q": q, "seen": len(calls)}

        @web.put("/items/{item_id}")
        async def put(item_id: int, request: Request):
            return {"item_id": item_id, "body": (await request.body()).decode(), "path": request.url.path}

        return web

    base = api.get_web_url()
    r = httpx.get(base + "items/7", params={"q": "x"}, timeout=30)
    assert r.status_code == 200 and r.json() == {"item_id": 7, "q": "x", "seen": 1}
    assert httpx.get(base + "items/8", timeout=30).json()["seen"] == 2  # one app per container, built once
    r = httpx.put(base + "items/3", content=b"raw bytes", timeout=30)
    assert r.json() == {"item_id": 3, "body": "raw bytes", "path": "/test/api/items/3"}
    assert httpx.get(base + "items/seven", timeout=30).status_code == 422
    assert httpx.get(base + "nothing-here", timeout=30).status_code == 404  # the app's own 404


def test_a_custom_domain_serves_its_endpoint_at_the_root_for_requests_with_that_host(app):
    @app.function()
    @rc.asgi_app(custom_domains=["API.example.test"])
    def api():
        from fastapi import FastAPI, Request

        web = FastAPI()

        @web.get("/items/{item_id}")
        def item(item_id: int, request: Request):
            return {"item_id": item_id, "path": request.url.path, "root": request.scope.get("root_path")}

        return web

    gateway = api.get_web_url().removesuffix("/test/api/")
    r = httpx.get(f"{gateway}/items/5", headers={"Host": "api.example.test:443"}, timeout=30)
    assert r.status_code == 200 and r.json() == {"item_id": 5, "path": "/items/5", "root": ""}, r.text
    assert httpx.get(api.get_web_url() + "items/6", timeout=30).json()["item_id"] == 6  # its path still serves
    assert httpx.get(f"{gateway}/items/5", headers={"Host": "other.example.test"}, timeout=30).status_code == 404
    assert rc.status()["web"]["domains"] == {"api.example.test": "test/api"}
    assert "domain api.example.test => endpoint test/api" in repr(rc.status())
    with pytest.raises(exceptions.InvalidError, match="custom_domains=.*a domain name"):
        rc.asgi_app(custom_domains=["https://api.example.test/"])


def test_streaming_response_first_chunk_arrives_before_the_last_is_made(app, tmp_path):
    gate = tmp_path / "go-on"

    @app.function()
    @rc.fastapi_endpoint()
    def stream():
        from fastapi.responses import StreamingResponse

        def chunks():
            yield b"first\n"
            deadline = time.monotonic() + 30
            while not gate.exists():  # the client must have the first chunk before this one is made
                if time.monotonic() > deadline:
                    yield b"timed out waiting for the client\n"
                    return
                time.sleep(0.01)
            yield b"second\n"
            yield b"last\n"

        return StreamingResponse(chunks(), media_type="text/plain")

    with httpx.stream("GET", stream.get_web_url(), timeout=30) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        assert next(lines) == "first"
        gate.touch()
        assert list(lines) == ["second", "last"]


def test_flask_app_through_wsgi(app):
    @app.function()
    @rc.wsgi_app()
    def site():
        from flask import Flask, request

        flask_app = Flask("site")

        @flask_app.get("/")
        def home():
            return "hello from flask"

        @flask_app.post("/form")
        def form():
            return {"name": request.form["name"], "script": request.script_root, "path": request.path}

        return flask_app

    base = site.get_web_url()
    r = httpx.get(base, timeout=30)
    assert r.status_code == 200 and r.text == "hello from flask"
    r = httpx.post(base + "form", data={"name": "grace"}, timeout=30)
    assert r.json() == {"name": "grace", "script": "/test/site", "path": "/form"}
    assert httpx.get(base + "missing", timeout=30).status_code == 404


def test_unknown_paths_are_404(app, runtime):
    @app.function()
    @rc.fastapi_endpoint()
    def here():
        return "ok"

    url = here.get_web_url()
    root = url.split("/test/")[0]
    assert httpx.get(url, timeout=30).json() == "ok"
    for path in ["/", "/test", "/test/nowhere/", "/other-app/here/"]:
        r = httpx.get(root + path, timeout=30)
        assert r.status_code == 404, path
        assert "no web endpoint" in r.json()["detail"]


def test_an_endpoint_that_raises_is_500_with_the_traceback_in_the_log_only(app, runtime):
    @app.function()
    @rc.fastapi_endpoint()
    def broken():
        raise ValueError("secret-detail-of-the-failure")

    r = httpx.get(broken.get_web_url(), timeout=30)
    assert r.status_code == 500
    assert "secret-detail" not in r.text and "Traceback" not in r.text
    wait_for(lambda: "secret-detail-of-the-failure" in runtime.log_text(), what="the traceback in the runtime log")
    assert "ValueError" in runtime.log_text()


def test_a_crashed_container_is_502_and_the_next_request_gets_a_fresh_one(app):
    @app.function()
    @rc.fastapi_endpoint()
    def fragile(crash: bool = False):
        if crash:
            os._exit(3)
        return {"container": _token()}

    url = fragile.get_web_url()
    before = httpx.get(url, timeout=30).json()["container"]
    started = time.monotonic()
    r = httpx.get(url, params={"crash": "true"}, timeout=30)
    assert r.status_code == 502 and time.monotonic() - started < 10
    after = httpx.get(url, timeout=30)
    assert after.status_code == 200 and after.json()["container"] != before


def test_requests_wait_for_a_slot_and_concurrent_ones_scale_out(app, tmp_path):
    gate = tmp_path / "release"

    @app.function(max_containers=2)
    @rc.fastapi_endpoint()
    def slow():
        deadline = time.monotonic() + 30
        while not gate.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        return {"container": _token()}

    url = slow.get_web_url()
    answers: list[httpx.Response] = []
    threads = [threading.Thread(target=lambda: answers.append(httpx.get(url, timeout=60))) for _ in range(3)]
    for t in threads:
        t.start()
    wait_for(lambda: slow.stats()["queued"] == 1 and slow.stats()["running"] == 2, 30,
             "two requests running on two containers (max_containers=2), the third waiting for a slot")
    assert sum(slow.stats()["containers"].values()) == 2
    gate.touch()
    for t in threads:
        t.join(60)
    assert [r.status_code for r in answers] == [200, 200, 200]
    assert len({r.json()["container"] for r in answers}) == 2


def test_requests_are_refused_at_once_when_the_app_stops(runtime):
    web_app = rc.App("stopping")

    @web_app.function()
    @rc.fastapi_endpoint()
    def up():
        return "up"

    with web_app.run():
        url = up.get_web_url()
        assert httpx.get(url, timeout=30).json() == "up"
    started = time.monotonic()
    r = httpx.get(url, timeout=30)
    assert r.status_code == 404 and time.monotonic() - started < 1


def test_a_web_endpoint_is_not_called_with_remote_and_takes_no_retries(app):
    @app.function()
    @rc.fastapi_endpoint()
    def page():
        return "page"

    with pytest.raises(TypeError, match="web endpoint"):
        page.remote()
    with pytest.raises(exceptions.InvalidError, match="no retries"):
        @app.function(retries=2)
        @rc.fastapi_endpoint()
        def flaky():
            return "x"
    with pytest.raises(exceptions.InvalidError, match="below @app.function"):
        rc.fastapi_endpoint()(page)
    with pytest.raises(exceptions.InvalidError, match="method='FETCH'"):
        rc.fastapi_endpoint(method="FETCH")
    with pytest.raises(exceptions.InvalidError, match="label='a b'"):
        rc.asgi_app(label="a b")

    @app.function()
    def plain():
        return 1

    assert plain.get_web_url() is None


@pytest.fixture
def small_gateway(runtime, new_home) -> Iterator[Runtime]:
    """A second runtime whose gateway takes bodies of at most 2 MiB and waits 1 s for a stalled client; the client
    talks to it meanwhile.

    It starts while the session's runtime holds its gateway's port: its own moves to a free one.
    """
    state = new_home("small-gateway")
    second = Runtime(state, args=["--web-max-body", str(2 << 20)], env={"REMOTECELL_WEB_IDLE_TIMEOUT_S": "1"})
    old = os.environ["REMOTECELL_HOME"]
    os.environ["REMOTECELL_HOME"] = str(state)
    client_mod.reset_connection()
    try:
        yield second
    finally:
        client_mod.reset_connection()
        second.stop()
        os.environ["REMOTECELL_HOME"] = old
        client_mod.reset_connection()


def test_a_body_over_the_limit_is_413_and_the_port_moves_when_taken(runtime, small_gateway):
    first_url = json.loads((runtime.state_dir / "connection.json").read_text())["web_url"]
    web_app = rc.App("limits")

    @web_app.function()
    @rc.fastapi_endpoint(method="POST")
    async def size(request_body: dict):
        return {"keys": len(request_body)}

    with web_app.run():
        url = size.get_web_url()
        assert url.startswith(small_gateway.info["web_url"]) and not url.startswith(first_url)
        r = httpx.post(url, content=b"x" * (3 << 20), headers={"content-type": "application/json"}, timeout=30)
        assert r.status_code == 413 and f"limit of {2 << 20}" in r.json()["detail"]  # by its content-length
        assert size.stats()["containers"] == {}  # refused before any container started
        assert httpx.post(url, json={"a": 1}, timeout=30).json() == {"keys": 1}

        def chunked(parts: int) -> Iterator[bytes]:  # no content-length: counted as it comes
            for _ in range(parts):
                yield b"y" * (256 << 10)

        r = httpx.post(url, content=chunked(2), timeout=30)  # 512 KiB: within the request's first part
        assert r.status_code == 422  # reached the app (not JSON)
        r = httpx.post(url, content=chunked(12), timeout=30)  # 3 MiB: past the limit while the app pulls it
        assert r.status_code == 413
        wait_for(lambda: size.stats()["running"] == 0, 10, "the cut-off request to end in its container")


def test_websocket_echo_both_ways(app):
    @app.function()
    @rc.asgi_app()
    def chat():
        from fastapi import FastAPI, WebSocket, WebSocketDisconnect

        web = FastAPI()

        @web.websocket("/echo/{room}")
        async def echo(ws: WebSocket, room: str):
            await ws.accept()
            await ws.send_text(f"welcome to {room}")
            try:
                while True:
                    message = await ws.receive()
                    if message.get("text") is not None:
                        if message["text"] == "bye":
                            await ws.close(code=4000, reason="asked to")
                            return
                        await ws.send_text(message["text"].upper())
                    elif message.get("bytes") is not None:
                        await ws.send_bytes(message["bytes"][::-1])
                    else:
                        return
            except WebSocketDisconnect:
                return

        return web

    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    ws_url = chat.get_web_url().replace("http://", "ws://") + "echo/lobby"
    with connect(ws_url, open_timeout=30) as ws:
        assert ws.recv(timeout=30) == "welcome to lobby"
        for word in ["one", "two", "three"]:
            ws.send(word)
            assert ws.recv(timeout=30) == word.upper()
        ws.send(b"\x01\x02\x03")
        assert ws.recv(timeout=30) == b"\x03\x02\x01"
        ws.send("bye")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=30)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4000
    with pytest.raises(Exception, match="403|rejected"):  # no endpoint there: refused in the handshake
        with connect(chat.get_web_url().replace("http://", "ws://").replace("/chat/", "/nowhere/"), open_timeout=30):
            pass


def test_server_sent_events_arrive_as_they_are_sent(app, tmp_path):
    gate = tmp_path / "next-event"

    @app.function()
    @rc.fastapi_endpoint()
    async def events():
        import asyncio

        from fastapi.responses import StreamingResponse

        async def stream():
            yield "data: first\n\n"
            while not gate.exists():
                await asyncio.sleep(0.01)
            yield "event: done\ndata: second\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")

    with httpx.stream("GET", events.get_web_url(), timeout=30) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = r.iter_lines()
        assert next(lines) == "data: first"
        gate.touch()
        assert [line for line in lines if line] == ["event: done", "data: second"]


def test_proxy_auth_needs_a_token_before_any_container_starts_and_revocation_holds(app, runtime):
    @app.function()
    @rc.fastapi_endpoint(requires_proxy_auth=True)
    def private():
        return {"private": True}

    url = private.get_web_url()
    r = httpx.get(url, timeout=30)
    assert r.status_code == 401 and "Modal-Key" in r.json()["detail"]
    assert private.stats()["containers"] == {}  # refused before any container started

    made = cli("web-token", "new", "reader", "--json")
    assert made.returncode == 0, made.stderr
    token = json.loads(made.stdout)
    assert set(token) == {"key", "secret"}
    headers = {"Modal-Key": token["key"], "Modal-Secret": token["secret"]}
    assert httpx.get(url, headers=headers, timeout=30).json() == {"private": True}
    wrong = {"Modal-Key": token["key"], "Modal-Secret": token["secret"] + "x"}
    assert httpx.get(url, headers=wrong, timeout=30).status_code == 401
    assert "reader" in cli("web-token", "list").stdout
    again = cli("web-token", "new", "reader")
    assert again.returncode == 2 and "exists" in again.stderr
    assert token["secret"] not in (runtime.state_dir / "web_tokens.json").read_text()  # only its hash is kept

    assert cli("web-token", "revoke", "reader").returncode == 0
    revoked = time.monotonic()
    wait_for(lambda: httpx.get(url, headers=headers, timeout=30).status_code == 401, 1.0,
             "the revoked token to be refused within a second")
    assert time.monotonic() - revoked < 1.0
    assert cli("web-token", "revoke", "reader").returncode == 2


def test_class_methods_are_endpoints_of_one_instance_built_with_its_enter_hooks(app):
    @app.cls()
    class Model:
        @rc.enter()
        def load(self):
            self.weight = 3

        @rc.fastapi_endpoint()
        def predict(self, x: int):
            return {"y": x * self.weight, "container": _token()}

        @rc.asgi_app(label="model-admin")
        def admin(self):
            from fastapi import FastAPI

            web = FastAPI()

            @web.get("/weight")
            def weight():
                return {"weight": self.weight, "container": _token()}

            return web

        @rc.method()
        def plain(self):
            return self.weight

    model = Model()
    url = model.predict.get_web_url()
    assert url.endswith("/test/model-predict/")
    first = httpx.get(url, params={"x": 2}, timeout=30).json()
    assert first["y"] == 6
    admin = model.admin.get_web_url()
    assert admin.endswith("/test/model-admin/")
    second = httpx.get(admin + "weight", timeout=30).json()
    assert second == {"weight": 3, "container": first["container"]}  # one pool: the class's containers
    assert model.plain.remote() == 3
    assert model.plain.get_web_url() is None


def test_app_run_serves_its_endpoints_from_the_start_and_says_where(runtime, capsys):
    served = rc.App("announced")

    @served.function()
    @rc.fastapi_endpoint()
    def ping():
        return "pong"

    with served.run():
        out = capsys.readouterr().out
        line = next(line for line in out.splitlines() if line.split(" => ")[0].endswith("ping"))
        url = line.split(" => ")[1]
        assert httpx.get(url, timeout=30).json() == "pong"  # registered when the app started


def test_keep_alive_requests_do_not_wait_out_delayed_acks(app):
    """A head and a body written apart must not wait for the client's delayed ACK (Nagle: ~40 ms each)."""
    @app.function()
    @rc.asgi_app()
    def two_writes():
        async def asgi(scope, receive, send):
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"4")]})
            await asyncio_sleep0()
            await send({"type": "http.response.body", "body": b"da", "more_body": True})
            await asyncio_sleep0()
            await send({"type": "http.response.body", "body": b"ta"})

        return asgi

    url = two_writes.get_web_url()
    with httpx.Client(timeout=30) as client:
        assert client.get(url).text == "data"
        took = []
        for _ in range(20):
            started = time.perf_counter()
            assert client.get(url).text == "data"
            took.append(time.perf_counter() - started)
    # Every request that waits out a delayed ACK takes 40 ms or more: even the fastest would (a busy machine
    # slows some requests, never all of them).
    assert min(took) < 0.035, f"fastest of 20: {min(took) * 1e3:.1f} ms: delayed ACKs are back"


async def asyncio_sleep0() -> None:
    import asyncio

    await asyncio.sleep(0)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_web_server_relays_to_a_real_server_process_in_the_container(app):
    port = _free_port()

    @app.function()
    @rc.web_server(port, startup_timeout=30)
    def files():
        import subprocess
        import sys
        import tempfile

        site = tempfile.mkdtemp()
        with open(f"{site}/hello.txt", "w") as f:
            f.write("hello from http.server\n")
        subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", site],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    base = files.get_web_url()
    r = httpx.get(base + "hello.txt", timeout=30)
    assert r.status_code == 200 and r.text == "hello from http.server\n"
    assert r.headers["content-type"].startswith("text/plain")
    assert httpx.get(base + "missing.txt", timeout=30).status_code == 404  # the server's own 404
    listing = httpx.get(base, timeout=30)
    assert listing.status_code == 200 and "hello.txt" in listing.text


def test_web_server_that_never_listens_fails_its_requests(app):
    port = _free_port()

    @app.function()
    @rc.web_server(port, startup_timeout=0.5)
    def silent():
        pass

    assert httpx.get(silent.get_web_url(), timeout=30).status_code == 500
    with pytest.raises(exceptions.InvalidError, match="port=0"):
        rc.web_server(0)


DEV_APP = '''
import remotecell as rc

app = rc.App("dev-loop")

@app.function()
@rc.fastapi_endpoint()
def version():
    return {"version": VERSION}

VERSION = 1
'''


def test_remotecell_serve_file_serves_reloads_on_edit_and_stops_on_ctrl_c(runtime, tmp_path):
    import queue
    import signal
    import subprocess
    import sys

    source = tmp_path / "dev_app.py"
    source.write_text(DEV_APP)
    proc = subprocess.Popen([sys.executable, "-m", "remotecell.cli", "serve", str(source)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=dict(os.environ))
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()

    def next_url() -> str:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                assert proc.poll() is None, "remotecell serve exited"
                continue
            if " => " in line:
                assert line.split(" => ")[0] == "version", line  # Modal's `name => URL`
                return line.split(" => ")[1].strip()
        raise AssertionError("no `name => URL` line within 60 s")

    try:
        url = next_url()
        assert httpx.get(url, timeout=30).json() == {"version": 1}
        source.write_text(DEV_APP.replace("VERSION = 1", "VERSION = 2"))
        assert next_url() == url  # the same label, the new version
        wait_for(lambda: httpx.get(url, timeout=30).json() == {"version": 2}, 30, "the edited version to serve")
        source.write_text("def broken(:\n")  # a broken edit: reported, the running version goes on
        said: list[str] = []
        wait_for(lambda: (said.append(lines.get(timeout=1)) or "the running version goes on" in said[-1])
                 if proc.poll() is None else pytest.fail("remotecell serve exited"), 30,
                 "the failed reload to be reported")
        assert any("SyntaxError" in line for line in said), "".join(said)
        assert httpx.get(url, timeout=30).json() == {"version": 2}
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        assert httpx.get(url, timeout=30).status_code == 404  # stopped with it
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_large_request_body_streams_to_the_app_as_it_reads_it(app, tmp_path):
    gate = tmp_path / "first-part-arrived"

    @app.function()
    @rc.asgi_app()
    def upload():
        import hashlib

        from fastapi import FastAPI, Request

        web = FastAPI()

        @web.post("/")
        async def take(request: Request):
            digest, size, parts = hashlib.sha256(), 0, 0
            async for chunk in request.stream():
                if size == 0:
                    gate.touch()  # the client sends the rest only once this exists
                digest.update(chunk)
                size += len(chunk)
                parts += 1
            return {"size": size, "sha256": digest.hexdigest(), "parts": parts}

        return web

    import hashlib

    head, tail = os.urandom(3 << 20), os.urandom(5 << 20)

    def body() -> Iterator[bytes]:
        yield head
        deadline = time.monotonic() + 30
        while not gate.exists():  # the app has the first part before the client sent the last
            assert time.monotonic() < deadline, "the app never got the first part of the body"
            time.sleep(0.01)
        for i in range(0, len(tail), 1 << 20):
            yield tail[i:i + (1 << 20)]

    r = httpx.post(upload.get_web_url(), content=body(), timeout=60)
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["size"] == len(head) + len(tail) and got["sha256"] == hashlib.sha256(head + tail).hexdigest()
    assert got["parts"] > 1


def test_one_container_serves_max_inputs_requests_at_once(app, tmp_path):
    @app.function(max_containers=1)
    @rc.concurrent(max_inputs=4)
    @rc.fastapi_endpoint()
    async def together(n: int):
        import asyncio

        (tmp_path / f"in-{n}").touch()
        deadline = time.monotonic() + 30
        while len(list(tmp_path.glob("in-*"))) < 4 and time.monotonic() < deadline:  # all four in at once
            await asyncio.sleep(0.01)
        return {"n": n, "together": len(list(tmp_path.glob("in-*"))), "container": _token()}

    url = together.get_web_url()
    answers: list[dict] = []
    threads = [threading.Thread(target=lambda n=n: answers.append(httpx.get(url, params={"n": n}, timeout=60).json()))
               for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(a["n"] for a in answers) == [0, 1, 2, 3]
    assert all(a["together"] == 4 for a in answers)
    assert len({a["container"] for a in answers}) == 1


def test_a_crash_mid_stream_cuts_the_response_and_a_client_that_leaves_cancels_its_request(app, tmp_path):
    @app.function()
    @rc.fastapi_endpoint()
    def drip(crash: bool = False):
        from fastapi.responses import StreamingResponse

        def chunks():
            yield b"part one\n"
            if crash:  # once the client has the first part (what was sent just before an exit may be lost)
                while not (tmp_path / "crash").exists():
                    time.sleep(0.01)
                os._exit(5)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # until the client leaves (then the input is cancelled)
                (tmp_path / "dripping").touch()
                yield b"more\n"
                time.sleep(0.05)

        return StreamingResponse(chunks(), media_type="text/plain")

    url = drip.get_web_url()
    with pytest.raises(httpx.HTTPError):  # the response is cut: the client sees it is not whole
        with httpx.stream("GET", url, params={"crash": "true"}, timeout=30) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            assert next(lines) == "part one"
            (tmp_path / "crash").touch()
            for _ in lines:
                pass
    with httpx.stream("GET", url, timeout=30) as r:
        lines = r.iter_lines()
        assert next(lines) == "part one"
        assert next(lines) == "more"
    wait_for(lambda: drip.stats()["running"] == 0, 15, "the left request to be cancelled")


def test_a_stalled_request_body_is_timed_out(small_gateway):
    import socket

    stalled_app = rc.App("stalled")

    @stalled_app.function()
    @rc.fastapi_endpoint(method="POST")
    def take(item: dict):
        return item

    with stalled_app.run():
        url = httpx.URL(take.get_web_url())
        for sent in (b"{", b"x" * (1 << 20) + b"y" * 1000):  # stalled in the first part, and while the app pulls
            with socket.create_connection((url.host, url.port), timeout=30) as sock:
                head = (f"POST {url.path} HTTP/1.1\r\nHost: {url.host}\r\ncontent-type: application/json\r\n"
                        f"content-length: {len(sent) + 100}\r\n\r\n").encode()
                started = time.monotonic()
                sock.sendall(head + sent)  # and then nothing: the rest never comes
                answer = sock.recv(4096)
                assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
                assert time.monotonic() - started < 10
        _a_head_sent_a_byte_at_a_time_is_timed_out(url)


def _a_head_sent_a_byte_at_a_time_is_timed_out(url: httpx.URL) -> None:
    """Each byte would reset a keep-alive clock; the head's own deadline (1 s here) still holds."""
    import socket

    with socket.create_connection((url.host, url.port), timeout=30) as idle:
        assert idle.recv(4096) == b""  # nothing sent at all: closed without a word
    head = f"GET {url.path} HTTP/1.1\r\nHost: {url.host}\r\nx-slow: {'z' * 200}\r\n\r\n".encode()
    with socket.create_connection((url.host, url.port), timeout=30) as sock:
        sock.settimeout(0.2)
        started, answer = time.monotonic(), b""
        for byte in head:
            with contextlib.suppress(TimeoutError):
                sock.sendall(bytes([byte]))
                answer = sock.recv(4096)
                break
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert time.monotonic() - started < 10


def test_a_client_that_reads_slowly_holds_the_app_back_not_the_runtimes_memory(app, tmp_path):
    progress = tmp_path / "produced"

    @app.function()
    @rc.fastapi_endpoint()
    def flood():
        from fastapi.responses import StreamingResponse

        def chunks():
            block = b"z" * (256 << 10)
            for i in range(1024):  # 256 MiB if nobody held it back
                progress.write_text(str((i + 1) * len(block)))
                yield block

        return StreamingResponse(chunks(), media_type="application/octet-stream")

    def produced() -> int:
        return int(progress.read_text() or 0) if progress.exists() else 0

    with httpx.stream("GET", flood.get_web_url(), timeout=60) as r:
        raw = r.iter_raw(64 << 10)
        next(raw)  # then read nothing for a while
        last = [-1, time.monotonic()]

        def settled() -> bool:  # the producer stopped advancing for half a second
            now = produced()
            if now != last[0]:
                last[:] = [now, time.monotonic()]
                return False
            return time.monotonic() - last[1] > 0.5

        wait_for(settled, 30, "the producer to be held back")
        assert produced() < 48 << 20, f"{produced() >> 20} MiB made for a client that read 64 KiB"
        total = 64 << 10
        for chunk in raw:  # reading on lets it go on to the end
            total += len(chunk)
    assert total == 256 << 20 and produced() == 256 << 20


def test_a_deployed_endpoint_serves_and_from_name_gives_its_url(runtime):
    deployed = rc.App("web-deployed")

    @deployed.function(name="where")
    @rc.fastapi_endpoint()
    def where():
        return {"deployed": True}

    @deployed.cls(name="Svc")
    class Svc:
        @rc.fastapi_endpoint(label="svc-hello")
        def hello(self):
            return "hello"

    deployed.deploy()
    try:
        url = rc.Function.from_name("web-deployed", "where").get_web_url()
        assert url == where.get_web_url() and url.endswith("/web-deployed/where/")
        assert httpx.get(url, timeout=30).json() == {"deployed": True}
        cls_url = rc.Cls.from_name("web-deployed", "Svc")().hello.get_web_url()
        assert cls_url.endswith("/web-deployed/svc-hello/")
        assert httpx.get(cls_url, timeout=30).json() == "hello"
    finally:
        rc.App.stop_deployed("web-deployed")
    assert httpx.get(url, timeout=30).status_code == 404


ECHO_SERVER = """
import sys
from websockets.sync.server import serve

def echo(ws):
    for message in ws:
        ws.send(message.upper() if isinstance(message, str) else message[::-1])

with serve(echo, "127.0.0.1", int(sys.argv[1])) as server:
    server.serve_forever()
"""


def test_web_server_relays_websockets_too(app):
    port = _free_port()

    @app.function()
    @rc.web_server(port, startup_timeout=30)
    def echo_server():
        import subprocess
        import sys

        subprocess.Popen([sys.executable, "-c", ECHO_SERVER, str(port)])

    from websockets.sync.client import connect

    with connect(echo_server.get_web_url().replace("http://", "ws://") + "any/path", open_timeout=30) as ws:
        ws.send("shout")
        assert ws.recv(timeout=30) == "SHOUT"
        ws.send(b"\x01\x02")
        assert ws.recv(timeout=30) == b"\x02\x01"


class _FileServer:
    """A Server whose enter hook starts ``http.server`` with ``who.txt``: a value of its container alone."""

    port = 0

    @rc.enter()
    def start(self):
        import subprocess
        import sys
        import tempfile
        import uuid

        site = tempfile.mkdtemp()
        with open(f"{site}/who.txt", "w") as f:
            f.write(uuid.uuid4().hex)
        self.proc = subprocess.Popen([sys.executable, "-m", "http.server", str(self.port), "--bind", "127.0.0.1",
                                      "--directory", site], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    @rc.exit()
    def stop(self):
        self.proc.terminate()


def test_a_server_serves_its_port_behind_proxy_auth_and_sessions_stick_to_a_container(runtime):
    served = rc.App("servers")
    port = _free_port()
    # each container its own loopback (block_network), so two can listen on one port
    Files = served.server(port=port, min_containers=2, block_network=True, startup_timeout=60)(
        type("Files", (_FileServer,), {"port": port}))
    with pytest.raises(exceptions.InvalidError, match="block_network=True"):
        served.server(port=port, min_containers=2)(type("Shared", (_FileServer,), {}))

    def relay():
        pass

    with pytest.raises(exceptions.InvalidError, match="only one can listen on port"):  # a function's too
        served.function(max_containers=3)(rc.web_server(port)(relay))
    with pytest.raises(exceptions.InvalidError, match="over HTTP only"):
        served.server(port=port)(type("Called", (_FileServer,), {"call": rc.method()(lambda self: 1)}))

    with served.run():
        url = Files.get_url()
        assert url.endswith("/servers/files/")
        assert httpx.get(url + "who.txt", timeout=30).status_code == 401  # a Server needs proxy auth by default
        made = cli("web-token", "new", "server-reader", "--json")
        token = json.loads(made.stdout)
        auth = {"Modal-Key": token["key"], "Modal-Secret": token["secret"]}
        wait_for(lambda: Files.stats()["containers"].get("idle") == 2, 60, "both containers of the Server to be up")

        seen: dict[str, str] = {}
        for session in range(16):
            answers = {httpx.get(url + "who.txt", headers=auth | {"Modal-Session-Id": f"s{session}"},
                                 timeout=30).text for _ in range(3)}
            assert len(answers) == 1, f"session s{session} went to {len(answers)} containers"
            seen[f"s{session}"] = answers.pop()
        assert len(set(seen.values())) == 2  # the sessions spread over both (all 16 on one: p = 3e-5)
    cli("web-token", "revoke", "server-reader")


def test_a_deployed_server_is_found_by_name(runtime):
    deployed = rc.App("server-deployed")
    port = _free_port()
    deployed.server(port=port, unauthenticated=True, name="Files")(type("Files", (_FileServer,), {"port": port}))
    deployed.deploy()
    try:
        url = rc.Server.from_name("server-deployed", "Files").get_url()
        assert url.endswith("/server-deployed/files/")
        assert len(httpx.get(url + "who.txt", timeout=30).text) == 32  # unauthenticated: no token needed
    finally:
        rc.App.stop_deployed("server-deployed")
