"""Fixtures: a real runtime daemon with real container processes, in a temporary state dir."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import remotecell._client as client_mod

ROOT = Path(__file__).resolve().parent.parent


def wait_for(condition, timeout_s: float = 20.0, what: str = "condition"):
    """Poll ``condition`` until it returns a truthy value or the deadline passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


class Runtime:
    """A daemon started with `remotecell serve` in a subprocess."""

    def __init__(self, state_dir: Path, binds: list[str] = (), env: dict[str, str] | None = None,
                 args: list[str] = ()) -> None:
        self.state_dir = state_dir
        cmd = [sys.executable, "-m", "remotecell_runtime", "serve", "--state-dir", str(state_dir),
               "--log-level", "INFO", *args]
        for b in binds:
            cmd += ["--bind", b]
        self.log_path = state_dir.parent / f"{state_dir.name}.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=dict(os.environ, **(env or {})))
        self.info = wait_for(self._connection, what=f"runtime in {state_dir} to start (log: {self.log_path})")

    def _connection(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"runtime exited: {self.log_path.read_text()}")
        path = self.state_dir / "connection.json"
        if not path.exists():
            return None
        info = json.loads(path.read_text())
        return info if info.get("pid") == self.proc.pid else None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        stop_process(self.proc)
        self.log.close()


@contextlib.contextmanager
def own_runtime(state: Path, args: list[str] = (), env: dict[str, str] | None = None) -> Iterator[Runtime]:
    """A runtime of its own in ``state`` that the client talks to while the block runs (then stopped)."""
    rt = Runtime(state, args=args, env=env)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("REMOTECELL_HOME", str(state))
        patch.delenv("REMOTECELL_RUNTIME", raising=False)
        client_mod.reset_connection()
        try:
            yield rt
        finally:
            client_mod.reset_connection()
            rt.stop()


def host_pid(stats: dict, cid: str) -> int:
    """The host pid of container ``cid`` of a pool (``f.stats()``), from its placement "pid N on this host".

    Not ``os.getpid()`` inside it: a sandboxed container has its own pid namespace (there it is pid 2).
    """
    placement = stats["placements"][cid]
    found = re.match(r"pid (\d+) on this host", placement)
    assert found, f"container {cid} is not a local process: {placement}"
    return int(found.group(1))


def stop_process(proc: subprocess.Popen, grace_s: float = 15) -> None:
    """SIGTERM, then SIGKILL if it is still there after ``grace_s``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session", autouse=True)
def shared_tmp(tmp_path_factory) -> Iterator[Path]:
    """The pytest folders (every ``tmp_path``), shared with the containers of every runtime the tests start.

    A test's remote functions read and write its marker files there as on the host; without the share
    a sandboxed container's /tmp is its own.
    """
    basetemp = tmp_path_factory.getbasetemp()
    old = os.environ.get("REMOTECELL_SHARE")
    os.environ["REMOTECELL_SHARE"] = str(basetemp)
    yield basetemp
    if old is None:
        os.environ.pop("REMOTECELL_SHARE", None)
    else:
        os.environ["REMOTECELL_SHARE"] = old


@pytest.fixture(scope="session")
def new_home() -> Iterator[Callable[[str], Path]]:
    """``new_home(name)``: a fresh state folder for a runtime, outside the shared pytest folders (a runtime
    refuses to share its own state folder with containers); all removed at the end of the session."""
    root = Path(tempfile.mkdtemp(prefix="rc-homes-"))
    yield lambda name: Path(tempfile.mkdtemp(prefix=f"{name}-", dir=root))
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def runtime(new_home) -> Iterator[Runtime]:
    """One runtime for the session; the client finds it through REMOTECELL_HOME."""
    home = new_home("rc-home")
    rt = Runtime(home)
    old = os.environ.get("REMOTECELL_HOME")
    os.environ["REMOTECELL_HOME"] = str(home)
    os.environ.pop("REMOTECELL_RUNTIME", None)
    client_mod.reset_connection()
    yield rt
    client_mod.reset_connection()
    rt.stop()
    if old is None:
        os.environ.pop("REMOTECELL_HOME", None)
    else:
        os.environ["REMOTECELL_HOME"] = old


@pytest.fixture(scope="module")
def sandboxed(new_home):
    """A runtime whose containers run sandboxed (even in a suite run with REMOTECELL_SANDBOX=0); the client
    talks to it for this module.  Skipped where bubblewrap cannot make sandboxes."""
    import remotecell as rc

    state = new_home("sandboxed")
    rt = Runtime(state, env={"REMOTECELL_SANDBOX": "1"})
    old = os.environ.get("REMOTECELL_HOME")
    os.environ["REMOTECELL_HOME"] = str(state)
    client_mod.reset_connection()
    try:
        why = rc.status()["sandbox"]
        if why.startswith("off:"):
            pytest.skip(f"no sandbox on this host: {why}")
        yield rt
    finally:
        client_mod.reset_connection()
        rt.stop()
        if old is not None:
            os.environ["REMOTECELL_HOME"] = old


@pytest.fixture
def app(runtime):
    """A fresh ephemeral app per test, stopped at the end."""
    import remotecell as rc

    application = rc.App("test")
    with application.run():
        yield application


@pytest.fixture(scope="module")
def kernel(runtime, tmp_path_factory, request):
    """A real Jupyter kernel for the test module, with remotecell loaded and an app ``app`` named after the module.

    A module that needs more set-up overrides it: ``def kernel(kernel): kernel.run(...); return kernel``.
    """
    from kernels import Kernel

    k = Kernel(tmp_path_factory.mktemp("kernel"))
    name = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_").replace("_", "-")
    k.run(f"%load_ext remotecell\nimport remotecell as rc\napp = rc.App({name!r})")
    yield k
    k.stop()


@pytest.fixture
def scheduled(runtime, tmp_path, request):
    """The name of a deployed app whose ``tick`` runs every second; stopped at the end of the test."""
    import remotecell as rc
    from scheduling import deploy_scheduled

    name = f"sched-{request.node.name[-40:]}".replace("_", "-")
    deploy_scheduled(tmp_path, name)
    yield name
    if any(a["name"] == name for a in rc.App.list_deployed()):
        rc.App.stop_deployed(name)


def cli(*args: str, env: dict[str, str] | None = None, timeout_s: float = 120) -> subprocess.CompletedProcess:
    """``remotecell ARGS`` in a fresh process."""
    return subprocess.run([sys.executable, "-m", "remotecell.cli", *args], capture_output=True, text=True,
                          timeout=timeout_s, env=dict(os.environ, **(env or {})))


def run_script(code: str, env: dict[str, str] | None = None, timeout_s: float = 60,
               tmp_path: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``code`` as ``__main__`` of a fresh interpreter (the notebook/script case)."""
    script = (tmp_path or Path("/tmp")) / f"script_{time.monotonic_ns()}.py"
    script.write_text(code)
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=timeout_s, env=dict(os.environ, **(env or {})))
