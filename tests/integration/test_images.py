"""Images: Python packages installed once on the runtime host, cached, and on the path of a function's containers."""

from __future__ import annotations

import threading

import pytest
import remotecell as rc
from conftest import wait_for
from remotecell import _client, exceptions
from remotecell_runtime.protocol import pickling

# Small, pure Python, and not among remotecell's own dependencies (the first test checks that).
PACKAGE = "tabulate==0.9.0"


def test_a_function_gets_its_image_packages_and_the_build_is_reused(app, runtime):
    @app.function()
    def plain():
        try:
            import tabulate  # noqa: F401
        except ImportError:
            return "missing"
        return "present"

    assert plain.remote() == "missing"

    image = rc.Image().pip_install(PACKAGE)

    @app.function(image=image)
    def table(rows):
        import tabulate

        return tabulate.__version__, tabulate.tabulate(rows)

    reasons: list[str] = []
    done = threading.Event()

    def watch() -> None:  # what the pool says while the first container waits for the build
        while not done.is_set():
            reason = table.stats().get("waiting_reason", "")
            if reason:
                reasons.append(reason)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        version, text = table.remote([[1, 2]])
    finally:
        done.set()
        watcher.join()
    assert version == "0.9.0" and "1" in text and "2" in text
    assert any(r.startswith("building its image: pip install tabulate==0.9.0") for r in reasons), reasons

    @app.function(image=rc.Image(python_packages=[PACKAGE]))
    def again():
        import tabulate

        return tabulate.__version__

    assert again.remote() == "0.9.0"
    assert runtime.log_text().count("building image") == 1  # the second function reused the build


def test_an_image_that_cannot_be_built_fails_its_calls_with_pip_output(app):
    @app.function(image=rc.Image(python_packages=["remotecell-no-such-package-xyz==1.0"]))
    def never():
        return 1

    with pytest.raises(exceptions.ImageBuildError, match="remotecell-no-such-package-xyz") as info:
        never.remote()
    assert "could not be built" in str(info.value)
    with pytest.raises(exceptions.ImageBuildError):  # again at once: the failed build is remembered
        never.remote()

    @app.function()
    def fine():
        return "ok"

    assert fine.remote() == "ok"


def test_image_specs_are_checked_where_they_are_given():
    with pytest.raises(exceptions.InvalidError, match="pip options are not accepted"):
        rc.Image(python_packages=["--index-url=https://example.invalid/simple"])
    with pytest.raises(exceptions.InvalidError, match="give a list of requirement specifiers"):
        rc.Image(python_packages="tabulate")
    with pytest.raises(exceptions.InvalidError, match="must be an rc.Image"):
        rc.App("x").function(image="python:3.11")(lambda: None)


def test_the_runtime_refuses_pip_options_from_any_client(app, runtime):
    conn = _client.connection()
    app_id = app.ensure_running()[1]
    header = {"t": "fn_register", "app_id": app_id, "name": "sneaky",
              "options": {"image": {"steps": [{"kind": "pip", "packages": ["-r/etc/passwd"]}]}}}
    with pytest.raises(exceptions.InvalidError, match="no pip options"):
        conn.request(header, [pickling.serialize(lambda: 1)])
    wait_for(lambda: "refused a message" in runtime.log_text(), what="the refusal in the runtime's log")
