"""The image builder's settings without a runtime: pip's config as uv flags, uv's command lines, which steps
are built, and how a container of an image is sandboxed."""

from __future__ import annotations

from pathlib import Path

import pytest
from remotecell_runtime.backends.sandbox import Bubblewrap
from remotecell_runtime.images import ImageError, check
from remotecell_runtime.images.pipconf import IndexSettings, config_files, read_pip_config
from remotecell_runtime.images.runtime_code import RuntimeCode
from remotecell_runtime.images.uv import Uv, checked_options
from remotecell_runtime.protocol.image_spec import ImageSpec, ImageStep


def conf(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def settings(tmp_path: Path, environ: dict[str, str]) -> IndexSettings:
    """pip's settings with a home, prefix and /etc of the test's own (no file of this machine's)."""
    environ = {"XDG_CONFIG_DIRS": str(tmp_path / "xdg"), **environ}
    return read_pip_config(environ, home=str(tmp_path / "home"), prefix=str(tmp_path / "prefix"),
                           etc=str(tmp_path / "etc"))


def test_this_machines_pip_config_as_uv_flags(tmp_path):
    conf(tmp_path / "home" / ".config" / "pip" / "pip.conf",
         "[global]\nfind-links = /opt/wheels\nextra-index-url = file:///opt/pypi/simple file:///opt/pypi-more/simple\n")
    conf(tmp_path / "xdg" / "pip" / "pip.conf", "[global]\nconstraint = /etc/xdg/pip/constraints.txt\n")
    found = settings(tmp_path, {"PIP_CERT": "/etc/ssl/certs/ca-certificates.crt"})
    assert found.uv_args() == [
        "--extra-index-url", "file:///opt/pypi/simple", "--extra-index-url", "file:///opt/pypi-more/simple",
        "--index-strategy", "unsafe-best-match",  # pip takes the best version of all its indexes
        "--find-links", "/opt/wheels", "--constraint", "/etc/xdg/pip/constraints.txt"]
    assert found.uv_env() == {"SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt"}


def test_later_files_win_install_beats_global_and_variables_beat_both(tmp_path):
    conf(tmp_path / "xdg" / "pip" / "pip.conf", "[global]\nindex-url = https://global/simple\n"
                                                 "[install]\nfind-links = /from-global-install\n")
    conf(tmp_path / "home" / ".pip" / "pip.conf", "[global]\nindex-url = https://legacy-user/simple\n")
    conf(tmp_path / "home" / ".config" / "pip" / "pip.conf", "[global]\nindex-url = https://user/simple\n"
                                                             "find-links = /from-user-global\n")
    conf(tmp_path / "prefix" / "pip.conf", "[global]\nno-index = false\n")
    found = settings(tmp_path, {})
    assert found.index_url == "https://user/simple"  # the user's new file over its legacy one over the global
    assert found.find_links == ("/from-global-install",)  # [install] over [global], whatever the files
    assert not found.no_index
    assert settings(tmp_path, {"PIP_INDEX_URL": "https://env/simple", "PIP_NO_INDEX": "1"}) == IndexSettings(
        index_url="https://env/simple", find_links=("/from-global-install",), no_index=True)


def test_pip_config_file_is_read_last_skips_the_users_and_devnull_reads_none(tmp_path):
    conf(tmp_path / "home" / ".config" / "pip" / "pip.conf", "[global]\nfind-links = /user\n")
    conf(tmp_path / "prefix" / "pip.conf", "[global]\nindex-url = https://site/simple\n")
    chosen = conf(tmp_path / "chosen.conf", "[global]\nindex-url = https://chosen/simple\n")
    found = settings(tmp_path, {"PIP_CONFIG_FILE": str(chosen)})
    assert found.index_url == "https://chosen/simple" and found.find_links == ()
    assert settings(tmp_path, {"PIP_CONFIG_FILE": "/dev/null", "PIP_FIND_LINKS": "/a /b"}) == IndexSettings(
        find_links=("/a", "/b"))
    env = {"XDG_CONFIG_DIRS": "/x:/y", "XDG_CONFIG_HOME": "/cfg"}
    assert [str(p) for p in config_files(env, "/h", "/p")] == [
        "/x/pip/pip.conf", "/y/pip/pip.conf", "/etc/pip.conf", "/h/.pip/pip.conf", "/cfg/pip/pip.conf", "/p/pip.conf"]


def test_a_broken_config_file_is_skipped(tmp_path):
    conf(tmp_path / "xdg" / "pip" / "pip.conf", "not an ini file [")
    conf(tmp_path / "prefix" / "pip.conf", "[global]\nextra-index-url = https://x/simple\n")
    assert settings(tmp_path, {}).extra_index_urls == ("https://x/simple",)


def test_a_steps_own_index_options_come_first_and_its_index_replaces_the_hosts():
    host = IndexSettings(index_url="https://host/simple", extra_index_urls=("https://extra/simple",),
                         find_links=("/wheels",), no_index=True)
    step = host.with_step("https://step/simple", "https://a/simple https://b/simple", "/mine")
    assert step.index_url == "https://step/simple" and not step.no_index
    assert step.extra_index_urls == ("https://a/simple", "https://b/simple", "https://extra/simple")
    assert step.find_links == ("/mine", "/wheels")
    assert host.with_step(None, None, None) == host


def uv(tmp_path: Path) -> Uv:
    code = RuntimeCode(("pyzmq==1", "cloudpickle==2"), tmp_path / "wheels", tmp_path / "pins.txt", tmp_path / "code")
    return Uv("uv", tmp_path / "cache", IndexSettings(index_url="https://host/simple"), code)


def test_an_install_is_under_the_pins_with_the_steps_options(tmp_path):
    step = ImageStep(kind="uv_pip", packages=["six"], index_url="https://step/simple", pre=True,
                     extra_options="--no-deps --resolution=lowest")
    argv = uv(tmp_path).install(tmp_path / "venv", ["six"], step)
    assert argv[:4] == ["uv", "pip", "install", "--python"] and argv[4] == str(tmp_path / "venv" / "bin" / "python")
    assert ["--constraint", str(tmp_path / "pins.txt")] == argv[argv.index("--constraint"):][:2]
    assert "--compile-bytecode" in argv and ["--index-url", "https://step/simple"] == argv[
        argv.index("--index-url"):][:2]
    assert argv[-5:] == ["--prerelease", "allow", "--no-deps", "--resolution=lowest", "six"]
    env = uv(tmp_path).environment({"FROM_IMAGE": "1"})
    assert env["UV_LINK_MODE"] == "hardlink" and env["UV_CACHE_DIR"] == str(tmp_path / "cache")
    assert env["FROM_IMAGE"] == "1" and "VIRTUAL_ENV" not in env


@pytest.mark.parametrize("options", ["--target /tmp/x", "--python /usr/bin/python3", "-r /etc/passwd",
                                     "--prefix=/x", "--system"])
def test_options_that_would_install_elsewhere_are_refused(options):
    with pytest.raises(ValueError, match="is not an option an image step may give uv"):
        checked_options(options)


def test_bad_steps_are_refused_naming_the_step_and_the_value():
    with pytest.raises(ImageError, match=r"image step 1 \(apt install git -y\): \['-y'\]: give Debian package"):
        check(ImageSpec(steps=[ImageStep(kind="apt", packages=["git", "-y"])]), sandboxed=True)
    with pytest.raises(ImageError, match="holds no command, or an empty one"):
        check(ImageSpec(steps=[ImageStep(kind="run", commands=["true", " "])]), sandboxed=True)
    with pytest.raises(ImageError, match="names no blob of its function"):
        check(ImageSpec(steps=[ImageStep(kind="function", digest="x")]), sandboxed=True)
    with pytest.raises(ImageError, match="unknown image base 'scratch'"):
        check(ImageSpec(base="scratch"), sandboxed=True)
    with pytest.raises(ImageError, match="no pip options"):
        check(ImageSpec(steps=[ImageStep(kind="pip", packages=["--index-url=x"])]), sandboxed=True)
    check(ImageSpec(steps=[ImageStep(kind="uv_pip", packages=["six"]), ImageStep(kind="env", env={"A": "1"}),
                           ImageStep(kind="workdir", path="/app"),
                           ImageStep(kind="files", path="/data", digest="d" * 64, copy=True)]), sandboxed=True)


def test_system_steps_and_registry_bases_are_built_with_the_sandbox_only():
    system = [ImageStep(kind="apt", packages=["git"]), ImageStep(kind="run", commands=["true"]),
              ImageStep(kind="function", digest="d" * 64, volumes={"/vol": "v"})]
    check(ImageSpec(steps=system), sandboxed=True)
    check(ImageSpec(base="registry", registry_tag="python:3.11-slim", steps=system), sandboxed=True)
    for step in system:
        with pytest.raises(ImageError, match="without the sandbox .* own root filesystem"):
            check(ImageSpec(steps=[step]), sandboxed=False)
    with pytest.raises(ImageError, match=r"from_registry\('python:3.11-slim'\): this runtime runs containers"):
        check(ImageSpec(base="registry", registry_tag="python:3.11-slim"), sandboxed=False)


def test_without_a_sandbox_only_python_sources_are_put_in_place():
    sources = ImageStep(kind="files", path="/root", digest="d" * 64)
    check(ImageSpec(steps=[sources]), sandboxed=False)
    for step in (ImageStep(kind="files", path="/data", digest="d" * 64), ImageStep(kind="workdir", path="/app")):
        with pytest.raises(ImageError, match="without the sandbox"):
            check(ImageSpec(steps=[step]), sandboxed=False)


def test_an_images_files_are_bound_entry_by_entry_read_only_and_its_workdir_made(tmp_path):
    first = tmp_path / "first"
    (first / "pkg").mkdir(parents=True)
    (first / "mod.py").write_text("")
    second = tmp_path / "second"
    second.mkdir()
    (second / "mod.py").write_text("")
    sandbox = Bubblewrap("bwrap", "bubblewrap", "/s", [])
    argv = sandbox.argv(["python"], extra_roots=["/state/images/layers/k/venv"], workdir="/app",
                        files=[(str(first), "/root"), (str(second), "/root")])
    binds = [(argv[i + 1], argv[i + 2]) for i, a in enumerate(argv) if a == "--ro-bind"]
    assert ("/state/images/layers/k/venv", "/state/images/layers/k/venv") in binds
    placed = [b for b in binds if b[1].startswith("/root/")]
    assert placed == [(str(first / "mod.py"), "/root/mod.py"), (str(first / "pkg"), "/root/pkg"),
                      (str(second / "mod.py"), "/root/mod.py")]  # a later step's file over an earlier one's
    assert argv.index("--tmpfs") < argv.index(str(first / "mod.py"))  # over the private home, which stays
    assert argv[argv.index("--dir") + 1] == "/app" and argv[argv.index("--chdir") + 1] == "/app"
