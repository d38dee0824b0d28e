"""The wheel as a user gets it: `python -m build` makes it with the prebuilt panel; a clean venv that installs it
lists the panel (`jupyter labextension list`) and the server extension (`jupyter server extension list`).

The clean venv is made with uv and installs from the indexes this machine's pip uses (`pip config list`: its
extra indexes and find-links before the default one), as `make setup` does.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import uv

ROOT = Path(__file__).resolve().parents[2]
LABEXT = "remotecell-0.1.0.data/data/share/jupyter/labextensions/remotecell/"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _run(cmd: list[str], timeout_s: float, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=ROOT,
                          env=dict(os.environ, **(env or {})))
    out = ANSI.sub("", done.stdout + done.stderr)
    assert done.returncode == 0, f"{shlex.join(cmd)} exited {done.returncode}:\n{out[-4000:]}"
    return out


def pip_sources() -> list[str]:
    """uv's flags for the package sources this machine's pip is configured with (none: uv's default index)."""
    out = _run([sys.executable, "-m", "pip", "config", "list"], 60)
    flags: list[str] = []
    for line in out.splitlines():
        key, _, value = line.partition("=")
        name = key.rsplit(".", 1)[-1]
        values = value.strip("'\"").split()
        if name == "index-url":
            flags += [f for v in values for f in ("--index-url", v)]
        elif name == "extra-index-url":
            flags += [f for v in values for f in ("--extra-index-url", v)]
        elif name == "find-links":
            flags += [f for v in values for f in ("--find-links", v)]
    return _dedupe(flags)


def _pairs(flags: list[str]) -> list[tuple[str, str]]:
    return list(zip(flags[::2], flags[1::2], strict=True))


def _dedupe(flags: list[str]) -> list[str]:
    """The same source given in two scopes (global and env) once."""
    return [part for pair in dict.fromkeys(_pairs(flags)) for part in pair]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`python -m build --wheel` of this checkout: its build hook builds the panel (npm) first."""
    out = tmp_path_factory.mktemp("dist")
    bin_dir = str(Path(sys.executable).parent)  # the hook's `python` (JupyterLab's staging dir) is this venv's
    _run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(ROOT)], 300,
         env={"PATH": bin_dir + os.pathsep + os.environ["PATH"]})
    [made] = out.glob("remotecell-*.whl")
    return made


def test_the_wheel_holds_the_prebuilt_labextension_and_the_server_config(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert LABEXT + "package.json" in names
    assert LABEXT + "install.json" in names
    assert LABEXT + "static/style.js" in names
    assert any(re.fullmatch(re.escape(LABEXT) + r"static/remoteEntry\.[0-9a-f]+\.js", n) for n in names), names
    assert "remotecell-0.1.0.data/data/etc/jupyter/jupyter_server_config.d/remotecell.json" in names


def test_a_clean_venv_with_the_wheel_lists_the_panel_and_the_server_extension(wheel: Path, tmp_path: Path) -> None:
    uv_bin = uv.find_uv_bin()
    venv = tmp_path / "venv"
    base_python = os.path.realpath(sys.executable)  # the interpreter under this venv: nothing of it comes along
    _run([uv_bin, "venv", "-q", "--python", base_python, str(venv)], 120)
    python = str(venv / "bin" / "python")
    _run([uv_bin, "pip", "install", "-q", "--python", python, *pip_sources(), f"remotecell[jupyter] @ {wheel}"], 600)
    jupyter = str(venv / "bin" / "jupyter")
    labext = _run([jupyter, "labextension", "list"], 120)
    assert re.search(r"remotecell v0\.1\.0 enabled\s+OK \(python, remotecell\)", labext), labext
    server = _run([jupyter, "server", "extension", "list"], 120)
    assert re.search(r"remotecell\.server_ext enabled", server), server
    assert re.search(r"remotecell\.server_ext\s+OK", server), server
