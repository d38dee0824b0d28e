"""System steps on a real sandboxed runtime: ``apt_install`` of a real Debian package (from Debian's mirrors, into
a base system made with mmdebstrap), ``run_commands``, ``run_function`` and ``from_registry`` (an OCI registry
this test serves on 127.0.0.1), each a root filesystem layer of the image, nothing of it on the host.

The first test makes the base system (a minimal Debian of the host's release, ~15 s); the others reuse it.
"""

from __future__ import annotations

import base64
import glob
import gzip
import hashlib
import http.server
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

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
    status = rc.status()
    assert status["system_images"].startswith("Debian "), status["system_images"]
    assert "system images (apt_install, run_commands, run_function, from_registry): Debian" in repr(status)


def _secret(runtime, name: str, *pairs: str) -> None:
    made = subprocess.run([sys.executable, "-m", "remotecell.cli", "secret", "create", name, *pairs, "--force",
                           "--state-dir", str(runtime.state_dir)], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr


def _build_error(name: str, image: rc.Image) -> str:
    """The message of the ImageBuildError that starting an app of ``image`` raises."""
    app = rc.App(name, image=image)

    @app.function()
    def never():
        return 1

    with pytest.raises(exceptions.ImageBuildError) as caught:
        with app.run():
            pass
    return str(caught.value)


def test_a_missing_apt_package_fails_the_build_naming_the_step_and_aptitudes_words(runtime, capsys):
    message = _build_error("system-apt-missing", rc.Image.debian_slim().apt_install("no-such-deb-xyz"))
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


def test_pip_in_run_commands_installs_into_the_image_venv_under_the_runtime_pins(runtime, capsys):
    image = rc.Image.debian_slim().run_commands(
        "pip install -q --no-cache-dir six==1.17.0", "python -m pip install --disable-pip-version-check idna",
        "uv pip install --system attrs", "pip3 install wheel && wheel version > /opt/wheel-version")
    app = rc.App("system-pip", image=image)

    @app.function()
    def installed():
        import subprocess
        import sys

        import attrs
        import idna
        import six

        script = subprocess.run(["wheel", "version"], capture_output=True, text=True, check=True).stdout
        return six.__version__, idna.__name__, attrs.__name__, script, open("/opt/wheel-version").read(), sys.prefix

    with app.run():
        got = installed.remote()
    assert got[:3] == ("1.17.0", "idna", "attrs") and got[3].startswith("wheel ") and got[3] == got[4], got
    venv = Path(got[5])
    assert venv.parts[-3] == "layers" and venv.name == "venv", got  # the image's own venv, the step's layer
    assert "the image's venv changed" in capsys.readouterr().out
    message = _build_error("system-pip-conflict", rc.Image.debian_slim().run_commands("pip install pyzmq==20.0.0"))
    assert "pyzmq" in message and "pip install pyzmq==20.0.0" in message, message
    message = _build_error("system-pip-refused", rc.Image.debian_slim().run_commands("pip download six"))
    assert "pip download: in an image build `pip` is `uv pip`" in message, message


def test_an_install_after_an_apt_step_builds_from_source_inside_the_image(runtime, tmp_path):
    assert shutil.which(PROGRAM) is None
    setup = ("import shutil, sys\nfrom setuptools import setup\n"
             f"found = shutil.which({PROGRAM!r})\n"
             f"if not found: sys.exit('{PROGRAM} is not here: this package builds only where it is')\n"
             "open('needs_tool.py', 'w').write(f'FOUND = {found!r}\\n')\n"
             "setup(name='needs-tool', version='1.0', py_modules=['needs_tool'])\n")
    with tarfile.open(tmp_path / "needs_tool-1.0.tar.gz", "w:gz") as sdist:
        for name, text in {"setup.py": setup, "PKG-INFO": "Metadata-Version: 2.1\nName: needs-tool\nVersion: 1.0\n"
                           }.items():
            info = tarfile.TarInfo(f"needs_tool-1.0/{name}")
            info.size = len(text.encode())
            sdist.addfile(info, io.BytesIO(text.encode()))
    image = rc.Image.debian_slim().apt_install(PACKAGE).pip_install("needs-tool", find_links=str(tmp_path))
    app = rc.App("system-then-source-build", image=image)

    @app.function()
    def found():
        import needs_tool

        return needs_tool.FOUND

    with app.run():
        assert found.remote() == f"/usr/bin/{PROGRAM}"  # built where the apt step's program is: in the image
    message = _build_error("host-source-build", rc.Image.debian_slim().pip_install("needs-tool",
                                                                                    find_links=str(tmp_path)))
    assert f"{PROGRAM} is not here" in message, message  # without the apt step it builds on the host: no figlet


def test_a_build_step_is_root_without_the_powers_that_reach_past_its_sandbox(runtime):
    image = rc.Image.debian_slim().run_commands("grep CapEff /proc/self/status > /opt/caps; id -u >> /opt/caps",
                                                 "mount -t tmpfs none /mnt 2>> /opt/caps || echo refused >> /opt/caps")
    app = rc.App("system-caps", image=image)

    @app.function()
    def caps():
        return open("/opt/caps").read().split("\n")

    with app.run():
        got = caps.remote()
    effective = int(got[0].split()[1], 16)
    assert got[1] == "0" and effective & (1 << 0) and effective & (1 << 1)  # root: CHOWN, DAC_OVERRIDE
    assert not effective & (1 << 21) and not effective & (1 << 27) and not effective & (1 << 16)  # SYS_ADMIN...
    assert "refused" in got, got  # ... MKNOD, SYS_MODULE: it mounts nothing


def test_python_packages_after_a_system_step_keep_its_root_filesystem(runtime):
    image = (rc.Image.debian_slim().run_commands("echo system > /opt/layered")
             .uv_pip_install("six==1.17.0").env({"AFTER": "pip"}))
    app = rc.App("system-then-pip", image=image)

    @app.function()
    def both():
        import os

        import six

        return open("/opt/layered").read(), six.__version__, os.environ["AFTER"]

    with app.run():
        assert both.remote() == ("system\n", "1.17.0", "pip")


def test_a_failing_command_fails_the_build_naming_it_and_its_last_lines(runtime):
    message = _build_error("system-run-fails", rc.Image.debian_slim().run_commands("echo about to fail; exit 3"))
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
    _secret(runtime, "build-secret", "BUILD_TOKEN=t0k3n")
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


# -- from_registry, against an OCI registry served here on 127.0.0.1 -----------------------------------------------


def _layer(entries: list[tuple[str, object]]) -> bytes:
    """A gzipped tar of (name, bytes | ("link", target) | "dir")."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, what in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if what == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif isinstance(what, tuple):
                info.type, info.linkname = tarfile.SYMTYPE, what[1]
                tar.addfile(info)
            else:
                assert isinstance(what, bytes)
                info.size, info.mode = len(what), 0o755
                tar.addfile(info, io.BytesIO(what))
    return gzip.compress(raw.getvalue(), mtime=0)


def _system_layer() -> bytes:
    """What the host's Python needs to run: the libraries it and its extension modules link, at their paths in a
    merged-/usr system (the names ldd gives as absolute links to the files), and a file the next layer removes."""
    import zmq

    prefix = sys.base_prefix
    files = [*glob.glob(f"{prefix}/bin/python3*"), *glob.glob(f"{prefix}/lib/libpython3*.so*"),
             *(f for f in glob.glob(f"{prefix}/lib/python3*/lib-dynload/*.so") if "_tkinter" not in f),
             *glob.glob(f"{os.path.dirname(os.path.dirname(zmq.__file__))}/pyzmq.libs/*.so*"),
             *glob.glob(f"{os.path.dirname(zmq.__file__)}/**/*.so", recursive=True)]
    libraries = set()
    for path in files:
        said = subprocess.run(["ldd", path], capture_output=True, text=True).stdout
        libraries |= {line.split()[2] for line in said.splitlines() if "=>" in line and "/" in line}
        libraries |= {line.split()[0] for line in said.splitlines() if line.strip().startswith("/")}  # ld-linux
    entries: dict[str, object] = {"bin": ("link", "usr/bin"), "lib": ("link", "usr/lib"),
                                  "lib64": ("link", "usr/lib64"), "etc/": "dir", "etc/removed.txt": b"gone soon\n",
                                  "data/": "dir", "data/a.txt": b"a\n"}
    for library in sorted(libraries):
        if library.startswith((prefix, os.path.dirname(os.path.dirname(zmq.__file__)))):
            continue
        real = os.path.realpath(library)
        inside = library if library.startswith("/usr/") else "/usr" + library
        entries[real.lstrip("/")] = Path(real).read_bytes()
        if inside != real:
            entries[inside.lstrip("/")] = ("link", real)  # absolute: resolved inside the image, not on the host
    return _layer(sorted(entries.items()))


CREDENTIALS = ("robot", "s3cret")


class _Registry:
    """An OCI distribution registry, each image an index over a linux/amd64 manifest: ``tiny:1.0`` behind an
    anonymous bearer token as Docker Hub is, ``private:1.0`` behind a token given only for ``CREDENTIALS``,
    ``basic:1.0`` behind HTTP Basic with them, ``ztiny:1.0`` the same files in zstd layers."""

    def __init__(self) -> None:
        import zstandard

        site = f"usr/local/lib/python{sys.version_info.major}.{sys.version_info.minor}/site-packages"
        layers = [_system_layer(), _layer([("opt/", "dir"), ("opt/hello.txt", b"hello from the registry\n"),
                                           (f"{site}/imagepkg.py", b"WHERE = 'the image'\n"),
                                           ("etc/.wh.removed.txt", b""), ("data/.wh..wh..opq", b""),
                                           ("data/b.txt", b"b\n")])]
        zstd = [zstandard.ZstdCompressor().compress(gzip.decompress(layer)) for layer in layers]
        self.blobs: dict[str, bytes] = {}
        self.manifests = {repo: self._image(made) for repo, made in
                          {"tiny": layers, "private": layers, "basic": layers, "ztiny": zstd}.items()}
        self.asked: list[str] = []
        registry = self
        basic = "Basic " + base64.b64encode(":".join(CREDENTIALS).encode()).decode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                registry.asked.append(self.path)
                if self.path.startswith("/token"):
                    repo = self.path.split("repository%3A", 1)[-1].split("%3A", 1)[0]
                    if repo == "private" and self.headers.get("Authorization") != basic:
                        return self._send(401, b"{}", "application/json")
                    return self._send(200, json.dumps({"token": f"t0k-{repo}"}).encode(), "application/json")
                repo, _, rest = self.path.removeprefix("/v2/").partition("/")
                if repo == "basic" and self.headers.get("Authorization") != basic:
                    return self._refuse('Basic realm="test"')
                if repo != "basic" and self.headers.get("Authorization") != f"Bearer t0k-{repo}":
                    return self._refuse(f'Bearer realm="http://{self.headers["Host"]}/token",service="test",'
                                        f'scope="repository:{repo}:pull"')
                kind, _, ref = rest.partition("/")
                body = (registry.manifests.get(repo, {}) if kind == "manifests" else registry.blobs).get(ref)
                if body is None:
                    return self._send(404, b"{}", "application/json")
                media = json.loads(body).get("mediaType", "") if kind == "manifests" else "application/octet-stream"
                return self._send(200, body, media)

            def _refuse(self, challenge: str) -> None:
                self.send_response(401)
                self.send_header("WWW-Authenticate", challenge)
                self.end_headers()

            def _send(self, code: int, body: bytes, media: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", media)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.address = f"127.0.0.1:{self.server.server_address[1]}"

    def _image(self, layers: list[bytes]) -> dict[str, bytes]:
        """The manifests of an image of ``layers`` (by tag ``1.0`` and by digest); its blobs served."""
        config = json.dumps({"architecture": "amd64", "os": "linux",
                             "config": {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "FROM_REGISTRY=yes"],
                                        "WorkingDir": "/opt"},
                             "rootfs": {"type": "layers", "diff_ids": []}}).encode()
        self.blobs.update({_sha(b): b for b in [config, *layers]})
        kind = "zstd" if layers[0][:4] == b"\x28\xb5\x2f\xfd" else "gzip"
        manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                               "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                          "digest": _sha(config), "size": len(config)},
                               "layers": [{"mediaType": f"application/vnd.oci.image.layer.v1.tar+{kind}",
                                           "digest": _sha(b), "size": len(b)} for b in layers]}).encode()
        index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                           "digest": _sha(manifest), "size": len(manifest),
                                           "platform": {"os": "linux", "architecture": "amd64"}}]}).encode()
        return {"1.0": index, _sha(manifest): manifest}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def registry():
    served = _Registry()
    yield served
    served.close()


def test_from_registry_runs_the_pulled_image_as_the_containers_root_with_a_python(runtime, registry, capsys):
    app = rc.App("system-registry", image=rc.Image.from_registry(f"{registry.address}/tiny:1.0"))

    @app.function()
    def inside():
        import os
        import sys

        import imagepkg

        return {"hello": open("/opt/hello.txt").read(), "removed": os.path.exists("/etc/removed.txt"),
                "imagepkg": imagepkg.WHERE,
                "data": sorted(os.listdir("/data")), "env": os.environ.get("FROM_REGISTRY"), "cwd": os.getcwd(),
                "debian": os.path.exists("/etc/debian_version"), "python": sys.version_info[:2]}

    with app.run():
        out = capsys.readouterr().out
        got = inside.remote()
    assert "layer 2/2" in out, out
    assert "the image's own packages in /usr/local/lib/python" in out, out
    assert got == {"hello": "hello from the registry\n", "removed": False, "data": ["b.txt"], "env": "yes",
                   "imagepkg": "the image",
                   "cwd": "/opt", "debian": False, "python": tuple(sys.version_info[:2])}
    assert "/token?" in " ".join(registry.asked)  # it fetched the anonymous token
    # the image's absolute links were followed inside it: nothing was written on the host
    assert not os.path.exists("/etc/removed.txt") and not os.path.exists("/opt/hello.txt")


def test_a_registry_that_cannot_be_reached_fails_the_build_naming_it(runtime):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{closed.getsockname()[1]}"  # nothing listens there once closed
    app = rc.App("system-registry-gone", image=rc.Image.from_registry(f"{address}/nothing:latest"))

    @app.function()
    def never():
        return 1

    with pytest.raises(exceptions.ImageBuildError) as caught:
        with app.run():
            pass
    assert f"the registry {address} could not be reached" in str(caught.value), caught.value


def _hello(name: str, image: rc.Image) -> str:
    app = rc.App(name, image=image)

    @app.function()
    def hello():
        return open("/opt/hello.txt").read()

    with app.run():
        return hello.remote()


def test_zstd_layers_are_unpacked(runtime, registry):
    assert _hello("system-registry-zstd", rc.Image.from_registry(f"{registry.address}/ztiny:1.0")) == (
        "hello from the registry\n")


@pytest.mark.parametrize("repo", ["private", "basic"])
def test_a_private_image_is_pulled_with_the_credentials_of_its_secret(runtime, registry, repo):
    def error(secret: str | None) -> str:
        return _build_error(f"system-registry-{repo}-{secret}", rc.Image.from_registry(
            f"{registry.address}/{repo}:1.0", secret=rc.Secret.from_name(secret) if secret else None))

    refused = error(None)
    assert "from_registry(tag, secret=rc.Secret.from_name(NAME))" in refused, refused
    _secret(runtime, "registry-keyless", "TOKEN=x")
    keyless = error("registry-keyless")
    assert "has TOKEN: it needs REGISTRY_USERNAME and REGISTRY_PASSWORD" in keyless, keyless
    _secret(runtime, "registry-wrong", "REGISTRY_USERNAME=robot", "REGISTRY_PASSWORD=nope")
    wrong = error("registry-wrong")
    assert "user 'robot'" in wrong and "check the secret's REGISTRY_USERNAME and REGISTRY_PASSWORD" in wrong, wrong
    _secret(runtime, "registry-right", "REGISTRY_USERNAME=robot", "REGISTRY_PASSWORD=s3cret")
    image = rc.Image.from_registry(f"{registry.address}/{repo}:1.0", secret=rc.Secret.from_name("registry-right"))
    assert _hello(f"system-registry-{repo}", image) == "hello from the registry\n"


def test_a_registry_secret_is_a_named_one():
    with pytest.raises(exceptions.InvalidError, match="give a named secret"):
        rc.Image.from_registry("python:3.11-slim", secret=rc.Secret.from_dict({"A": "b"}))
