"""System steps on a real sandboxed runtime: ``apt_install`` of a real Debian package (from Debian's mirrors, into
a base system made with mmdebstrap), ``run_commands``, ``run_function`` and ``from_registry`` (an OCI registry
this test serves on 127.0.0.1), each a root filesystem layer of the image, nothing of it on the host.

The first test makes the base system (a minimal Debian of the host's release, ~15 s); the others reuse it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import remotecell as rc
from remotecell import exceptions

PACKAGE, PROGRAM, LIBRARY = "figlet", "figlet", "libmd4c0"  # small, and not on this host


@pytest.fixture(scope="module")
def runtime(sandboxed):
    return sandboxed


def test_an_apt_package_runs_and_loads_in_the_container_and_is_absent_on_the_host(runtime, capsys):
    assert shutil.which(PROGRAM) is None, f"{PROGRAM} is on this host: pick a package it lacks"
    image = rc.Image.debian_slim().apt_install(PACKAGE, LIBRARY)
    app = rc.App("system-apt", image=image)

    @app.function()
    def inside():
        import ctypes
        import os
        import shutil
        import subprocess

        banner = subprocess.run([PROGRAM, "hi"], capture_output=True, text=True, check=True).stdout
        lib = ctypes.CDLL("libmd4c.so.0")
        return {"which": shutil.which(PROGRAM), "banner": banner, "md_parse": hasattr(lib, "md_parse"),
                "release": open("/etc/debian_version").read().strip(), "home": os.listdir("/root")}

    with app.run():
        out = capsys.readouterr().out
        got = inside.remote()
    assert "apt install figlet libmd4c0" in out and "Setting up figlet" in out, out
    assert got["which"] == f"/usr/bin/{PROGRAM}" and "_" in got["banner"] and got["md_parse"], got
    assert got["release"].split(".")[0] == open("/etc/debian_version").read().split(".")[0]  # the host's release
    assert shutil.which(PROGRAM) is None  # nothing on the host
    systems = list((runtime.state_dir / "images" / "systems").iterdir())
    assert len(systems) == 1, systems


def test_a_missing_apt_package_fails_the_build_naming_the_step_and_aptitudes_words(runtime, capsys):
    app = rc.App("system-apt-missing", image=rc.Image.debian_slim().apt_install("no-such-deb-xyz"))

    @app.function()
    def never():
        return 1

    with pytest.raises(exceptions.ImageBuildError) as caught:
        with app.run():
            pass
    message = str(caught.value)
    assert "apt install no-such-deb-xyz" in message and "apt-get install exited with 100" in message, message
    assert "Unable to locate package no-such-deb-xyz" in message, message
    assert not list((runtime.state_dir / "images" / "staging").iterdir())  # nothing half-built left


def test_run_commands_make_files_the_function_sees_and_a_second_build_builds_nothing(runtime, capsys):
    image = (rc.Image.debian_slim().env({"GREETING": "hello"})
             .run_commands("mkdir -p /opt/made && echo \"$GREETING from the build\" > /opt/made/note",
                           "rm /etc/issue", "echo second >> /opt/made/note"))
    app = rc.App("system-run", image=image)

    @app.function()
    def read():
        import os

        return open("/opt/made/note").read(), os.path.exists("/etc/issue")

    with app.run():
        assert read.remote() == ("hello from the build\nsecond\n", False)
    out = capsys.readouterr().out
    assert "Built image" in out, out
    built = runtime.log_text().count("building image")
    with app.run():
        assert read.remote() == ("hello from the build\nsecond\n", False)
    assert capsys.readouterr().out == ""  # nothing built, nothing said
    assert runtime.log_text().count("building image") == built
    base = next((runtime.state_dir / "images" / "systems").iterdir()) / "rootfs"
    assert (base / "etc" / "issue").exists() and not (base / "opt" / "made").exists()  # the base is untouched


def test_a_failing_command_fails_the_build_naming_it_and_its_last_lines(runtime):
    app = rc.App("system-run-fails", image=rc.Image.debian_slim().run_commands("echo about to fail; exit 3"))

    @app.function()
    def never():
        return 1

    with pytest.raises(exceptions.ImageBuildError) as caught:
        with app.run():
            pass
    message = str(caught.value)
    assert "`echo about to fail; exit 3` exited with 3" in message and "about to fail" in message, message
    assert not list((runtime.state_dir / "images" / "staging").iterdir())


def write_at_build():
    """A run_function step: what it writes in the image stays; what it writes in a volume is the volume's."""
    import os

    os.makedirs("/opt/weights", exist_ok=True)
    with open("/opt/weights/w.txt", "w") as f:
        f.write(f"{os.environ['BUILD_TOKEN']} {os.environ['REMOTECELL_IS_REMOTE']}")
    with open("/root/cache.txt", "w") as f:
        f.write("kept in the home")
    with open("/vol/from-build.txt", "w") as f:
        f.write("in the volume")
    print("wrote the weights")


def test_run_function_changes_are_a_layer_the_container_sees(runtime, capsys):
    made = subprocess.run([sys.executable, "-m", "remotecell.cli", "secret", "create", "build-secret",
                           "BUILD_TOKEN=t0k3n", "--state-dir", str(runtime.state_dir)], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    volume = rc.Volume.from_name("build-vol", create_if_missing=True)
    volume.hydrate()
    image = rc.Image.debian_slim().run_function(write_at_build, secrets=[rc.Secret.from_name("build-secret")],
                                                volumes={"/vol": volume})
    app = rc.App("system-function", image=image)

    @app.function()
    def read():
        import os

        return open("/opt/weights/w.txt").read(), open("/root/cache.txt").read(), os.path.exists("/vol")

    with app.run():
        out = capsys.readouterr().out
        got = read.remote()
    assert "wrote the weights" in out, out
    assert got == ("t0k3n 1", "kept in the home", False)
    assert b"".join(volume.read_file("from-build.txt")) == b"in the volume"
    rootfs = [p for p in (runtime.state_dir / "images" / "layers").glob("*/rootfs") if (p / "opt/weights").exists()]
    assert len(rootfs) == 1 and not (rootfs[0] / "vol").exists()  # the volume's mount point is not in the image


def test_a_failing_build_function_fails_the_build_with_its_traceback(runtime):
    app = rc.App("system-function-fails", image=rc.Image.debian_slim().run_function(fail_at_build))

    @app.function()
    def never():
        return 1

    with pytest.raises(exceptions.ImageBuildError) as caught:
        with app.run():
            pass
    message = str(caught.value)
    assert "the build function exited with 1" in message and "ValueError: no weights today" in message, message


def fail_at_build():
    raise ValueError("no weights today")
