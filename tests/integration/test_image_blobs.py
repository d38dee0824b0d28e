"""Images on a real runtime: local files arrive as blobs, once; App(image=) reaches the registered options;
a container knows it is one (Image.imports raises there)."""

from __future__ import annotations

import hashlib

import pytest
import remotecell as rc
from remotecell import _client
from remotecell.exceptions import InvalidError, PayloadTooLarge
from remotecell.registration import Registration
from remotecell_runtime.protocol.framing import Payload
from remotecell_runtime.protocol.messages.blobs import BLOB_MAX_BYTES, BlobHasMsg, BlobHasReply, BlobPutMsg
from remotecell_runtime.protocol.messages.session import EmptyReply

PIP = rc.Image.debian_slim().pip_install("tabulate==0.10.0")


@pytest.fixture
def sent(monkeypatch):
    """The type of every request this process asks the runtime, in order."""
    types: list[str] = []
    ask = _client.Connection.ask

    def spy(self, msg, *args, **kwargs):
        types.append(type(msg).TYPE)
        return ask(self, msg, *args, **kwargs)

    monkeypatch.setattr(_client.Connection, "ask", spy)
    return types


def local_image(folder):
    return rc.Image.debian_slim().pip_install("tabulate==0.10.0").add_local_dir(folder, "/data")


def test_local_files_are_uploaded_once_and_kept_by_their_digest(runtime, tmp_path, sent):
    (tmp_path / "a.txt").write_text("hello")
    conn = _client.connection()
    image = local_image(tmp_path)
    with rc.App("blobs-one").run() as first:
        option = image.publish(conn, first.app_id)
        assert image.publish(conn, first.app_id) is option  # once per app run: nothing asked again
    digest = option["steps"][-1]["digest"]
    assert sent == ["app_create", "blob_has", "blob_put", "image_build", "app_stop"]
    stored = runtime.state_dir / "blobs" / digest
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == digest

    sent.clear()
    with rc.App("blobs-two").run() as second:  # the same files in a new image, a new app run: nothing to send
        assert local_image(tmp_path).publish(conn, second.app_id) == option
    assert sent == ["app_create", "blob_has", "image_build", "app_stop"]  # built: cached


def test_an_image_is_published_before_the_registration_that_uses_it(app, tmp_path, sent):
    (tmp_path / "a.txt").write_text("registered")

    def uses_files() -> None: ...

    registration = Registration(app, uses_files, {}, "uses_files", local_image(tmp_path))
    registration.fid()
    assert sent == ["blob_has", "blob_put", "image_build", "fn_register"]


def test_the_runtime_refuses_a_blob_that_is_not_what_it_is_named(runtime):
    conn = _client.connection()
    data = b"the real bytes"
    wrong = hashlib.sha256(b"other bytes").hexdigest()
    with pytest.raises(InvalidError, match="its bytes hash to .* not to the digest it was named by"):
        conn.ask(BlobPutMsg(digest=wrong, size=len(data)), EmptyReply, [Payload([data])])
    assert not (runtime.state_dir / "blobs" / wrong).exists()
    assert conn.ask(BlobHasMsg(digests=[wrong]), BlobHasReply).missing == [wrong]
    right = hashlib.sha256(data).hexdigest()
    with pytest.raises(InvalidError, match="says 3 bytes but 14 came"):
        conn.ask(BlobPutMsg(digest=right, size=3), EmptyReply, [Payload([data])])
    with pytest.raises(PayloadTooLarge, match=f"at most {BLOB_MAX_BYTES}"):
        conn.ask(BlobPutMsg(digest=right, size=BLOB_MAX_BYTES + 1), EmptyReply, [Payload([data])])
    with pytest.raises(InvalidError, match="is not a blob digest"):
        conn.ask(BlobHasMsg(digests=["../../keys"]), BlobHasReply)
    conn.ask(BlobPutMsg(digest=right, size=len(data)), EmptyReply, [Payload([data])])
    assert (runtime.state_dir / "blobs" / right).read_bytes() == data


def test_the_app_image_is_every_definitions_default_and_their_own_overrides_it(runtime):
    own = rc.Image.debian_slim(python_version=None).uv_pip_install("tabulate==0.10.0")
    app = rc.App("image-defaults", image=PIP)

    @app.function(name="default")
    def default() -> None: ...

    @app.function(image=own, name="overridden")
    def overridden() -> None: ...

    @app.cls(image=own, name="Model")
    class Model:
        @rc.method()
        def predict(self) -> None: ...

    @app.function(image=rc.Image.debian_slim(), name="plain")
    def plain() -> None: ...

    app.deploy()
    try:
        def registered(name: str):
            return rc.Function.from_name("image-defaults", name).options.get("image")

        assert registered("default") == {"steps": [{"kind": "pip", "packages": ["tabulate==0.10.0"]}]}
        assert registered("overridden") == {"steps": [{"kind": "uv_pip", "packages": ["tabulate==0.10.0"]}]}
        assert rc.Cls.from_name("image-defaults", "Model")._lookup.options["image"] == registered("overridden")
        assert registered("plain") is None  # the default image: no option
    finally:
        rc.App.stop_deployed("image-defaults")


def test_imports_raise_in_a_container_what_they_swallow_here(app):
    image = rc.Image.debian_slim()
    with image.imports():
        import remotecell_no_such_module_xyz  # noqa: F401

    @app.function()
    def inside() -> str:
        try:
            with image.imports():
                import remotecell_no_such_module_xyz  # noqa: F401
        except ImportError:
            return "raised"
        return "swallowed"

    assert inside.remote() == "raised"
