"""System layers made by a user who is not root: the base system under fakechroot (its absolute links made the
image's own), an apt step as root of a user namespace of its own (one uid mapped, an overlay with ``userxattr``),
the layer flattened, and a container sandbox over it, all as ``nobody``.

The session's runtime runs as root here, and its Python lives in root's home, where ``nobody`` cannot reach it,
so this test drives ``images/system.py`` and ``backends/sandbox.py`` (standard library only, loaded by path)
with the host's Debian Python as ``nobody`` (``setpriv``): the unprivileged path of the builder, command by
command.  Where the session itself is not root, ``test_images_system.py`` runs this path through a runtime.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import textwrap
from pathlib import Path

import pytest

NOBODY = 65534
RUNTIME = Path(__file__).resolve().parents[2] / "runtime" / "remotecell_runtime"

SCRIPT = textwrap.dedent("""
    import importlib.util, json, os, subprocess, sys
    from pathlib import Path

    def load(name, path):
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module

    system = load("system", sys.argv[1])
    sandbox = load("sandbox", sys.argv[2])
    work = Path(sys.argv[3])
    release = system.base_release(["/usr"])  # the host's Debian Python: its packages come with it
    base = work / "base"
    command = release.bootstrap("mmdebstrap", base)
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    fixed = system.fix_links(base)
    step = system.StepSandbox(base, work / "upper", work / "work", work / "merged")
    env = {"PATH": system.BASE_PATH, "DEBIAN_FRONTEND": "noninteractive", "HOME": "/root"}
    for argv in (["apt-get", "-q", "-o", "APT::Sandbox::User=root", "update"],
                 ["apt-get", "-q", "-o", "APT::Sandbox::User=root", "install", "-y", "figlet"],
                 ["/bin/sh", "-c", "rm /etc/motd && echo made > /opt/made"]):
        done = subprocess.run(step.argv(argv, env), capture_output=True, text=True)
        assert done.returncode == 0, (argv, done.stdout[-2000:], done.stderr[-2000:])
    system.prune(step.upper, base, step.mount_points())
    layer = work / "layer"
    system.link_tree(base, layer)
    system.apply_upper(step.upper, layer)
    box = sandbox.Sandbox("bwrap", "bubblewrap", str(work), [])
    check = "import os, subprocess; print(os.getuid(), bool(subprocess.run(['figlet', 'x'], capture_output=True, " \\
            "check=True).stdout), open('/opt/made').read().strip(), os.path.exists('/etc/motd'))"
    python = os.path.realpath(sys.executable)  # /usr/bin/python3.11: its package is in the base system
    done = subprocess.run(box.argv([python, "-c", check], rootfs=str(layer)), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    print(json.dumps({"container": done.stdout.strip(), "fixed": fixed, "uid": os.stat(base).st_uid,
                      "base_has_figlet": (base / "usr/bin/figlet").exists(),
                      "base_motd": (base / "etc/motd").exists()}))
""")


def test_system_layers_are_made_and_run_by_a_user_who_is_not_root():
    if os.geteuid() != 0:
        pytest.skip("this session is not root: test_images_system.py runs this path through its runtime")
    for tool in ("setpriv", "fakechroot", "mmdebstrap"):
        assert shutil.which(tool), f"{tool} is not installed: make setup installs it"
    work = Path(tempfile.mkdtemp(prefix="rc-nobody-"))
    try:
        # the modules go where nobody reads them: a checkout may lie in a folder only its owner enters
        modules = [shutil.copy(RUNTIME / "images" / "system.py", work),
                   shutil.copy(RUNTIME / "backends" / "sandbox.py", work)]
        os.chown(work, NOBODY, NOBODY)
        done = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--",
                               "/usr/bin/python3", "-c", SCRIPT, *map(str, modules), str(work)],
                              capture_output=True, text=True, timeout=600, cwd=work,
                              env={"PATH": os.environ["PATH"], "HOME": str(work), "LANG": "C.UTF-8"})
        assert done.returncode == 0, done.stderr[-3000:]
        got = json.loads(done.stdout.strip().splitlines()[-1])
        assert got["container"] == f"{NOBODY} True made False", got
        assert got["uid"] == NOBODY and got["fixed"] > 0  # fakechroot's links, made the image's own
        assert not got["base_has_figlet"] and got["base_motd"]  # the base system is untouched
    finally:
        shutil.rmtree(work, ignore_errors=True)
