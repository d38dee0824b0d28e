"""``rc.Image``: Modal's image builder. Each method returns a new image; none changes the one it is called on.

>>> image = (rc.Image.debian_slim(python_version="3.11")
...          .apt_install("git")
...          .uv_pip_install("torch==2.7.1", "numpy")
...          .env({"HF_HOME": "/cache"})
...          .add_local_python_source("mylib"))
>>> app = rc.App("demo", image=image)          # every function's image, unless @app.function(image=...)

An image is a base and steps (``protocol.image_spec``).  It travels as the
``image`` function option, made when its app starts: then local files are read
and tarred (``_image_sources``), each tar and each ``run_function`` body is a blob
named by its sha256, the runtime is asked which blobs it lacks (``blob_has``) and
only those are sent (``blob_put``), then the runtime builds the image
(``image_build``: its log printed here as it comes, a failure raised as
``ImageBuildError`` naming the step), once per image per app run, before the first
function that uses the image is registered (``app.run()`` builds every image of
its app when it starts).

Invariants: an image is immutable (its steps are a tuple; derived images share
them); a build step after an ``add_local_*`` with ``copy=False`` is refused, as
Modal refuses it (those files are put in place when a container starts, so they
come last); the default image (``debian_slim()`` with no steps) sends no option.
Inside a container (``IN_CONTAINER_ENV``) methods that read local files only
record the step: the files are on the client, and a container never publishes the
image it runs in.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from remotecell_runtime.protocol.framing import Payload
from remotecell_runtime.protocol.image_spec import IN_CONTAINER_ENV, ImageSpec, ImageStep
from remotecell_runtime.protocol.messages.blobs import BLOB_MAX_BYTES, BlobHasMsg, BlobHasReply, BlobPutMsg
from remotecell_runtime.protocol.messages.images import ImageBuildMsg, ImageBuildReply
from remotecell_runtime.protocol.messages.session import EmptyReply

from . import _client, _terminal
from . import _image_sources as sources
from .exceptions import ImageBuildError, InvalidError
from .file_pattern_matcher import NON_PYTHON_FILES, ignore_fn
from .infra import Secret, Volume

_PYTHON_VERSION = re.compile(r"^3\.\d{1,2}(\.\d{1,2})?$")
_APT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9+.:~=/_-]*$")
_PUBLISHING = threading.Lock()  # one image published at a time: two registrations of one image upload once

_BUILD_AFTER_MOUNT = (
    "An image tried to run a build step after using `image.add_local_*` to include local files.\n\n"
    "Run `image.add_local_*` commands last in your image build to avoid rebuilding images with every local file "
    "change. remotecell will then add these files to containers on startup instead, saving build time.\n"
    "If you need to run other build steps after adding local files, set `copy=True` to copy the files directly "
    "into the image, at the expense of some added build time.\n\n"
    "Example:\n\n"
    "my_image = (\n"
    "    Image.debian_slim()\n"
    '    .add_local_file("data.json", "/root/data.json", copy=True)\n'
    '    .run_commands("python -m mypak")  # this now works!\n'
    ")\n"
)


def in_container() -> bool:
    """Whether this process is a remotecell container (set by the container process, whatever the backend)."""
    return os.environ.get(IN_CONTAINER_ENV) == "1"


class _Elsewhere:
    """A step that reads local files, recorded in a container: the files are on the client."""

    def __init__(self, what: str, is_layer: bool) -> None:
        self.what = what
        self.is_layer = is_layer

    def materialize(self) -> tuple[ImageStep, bytes]:
        raise InvalidError(f"{self.what}: this image was made in a container, where its local files are not; "
                           "publish it from the machine that has them")


_Step = ImageStep | sources.LocalFiles | sources.BuildFunction | _Elsewhere


def _flatten(method: str, arg: str, args: Sequence[Any]) -> list[str]:
    """Strings, or lists of strings, as one list (Modal's packages may be nested lists)."""
    out: list[str] = []
    for item in args:
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, (list, tuple)) and all(isinstance(x, str) for x in item):
            out.extend(item)
        else:
            raise InvalidError(f"{method}: {arg} must be strings or lists of strings, got {item!r}")
    return out


def _secret_name(secret: Secret | None, method: str) -> str | None:
    """The runtime's name of ``secret`` (a build step's key holds no secret values: only named ones go)."""
    if secret is None:
        return None
    if not isinstance(secret, Secret) or secret.name is None:
        raise InvalidError(f"{method}(secret={secret!r}): give a named secret, rc.Secret.from_name('name') "
                           "(create it with `remotecell secret create NAME REGISTRY_USERNAME=... "
                           "REGISTRY_PASSWORD=...`)")
    return str(secret.name)


def _specifiers(method: str, packages: list[str]) -> list[str]:
    """Requirement specifiers, checked: an installer option in the list is refused, naming it."""
    for package in packages:
        if not package.strip() or package.lstrip().startswith("-") or "\n" in package:
            raise InvalidError(f"{method}: {package!r} is not a requirement specifier (pip options are not accepted "
                               "in the package list: give them as index_url=, extra_index_url=, find_links=, pre= "
                               "or extra_options=)")
    return sorted(set(packages))


def _merged(flags: dict[str, Any], read: sources.Requirements) -> dict[str, Any]:
    """The index settings given in code, and for those not given, what the requirements file says."""
    return flags | {k: v for k, v in read.options.items() if not flags.get(k)}


def _python_version(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _PYTHON_VERSION.match(value):
        raise InvalidError(f"{where}={value!r}: give a Python version as a string, such as '3.11' or '3.12.4'"
                           + (" (a float loses digits: 3.10 is 3.1)" if isinstance(value, float) else ""))
    return value


def _installer_step(kind: str, method: str, packages: list[str], **flags: Any) -> ImageStep:
    for name in ("index_url", "extra_index_url", "find_links"):
        if flags[name] is not None and (not isinstance(flags[name], str) or not flags[name].strip()):
            raise InvalidError(f"{method}: {name}={flags[name]!r} must be a URL (or a path for find_links) or None")
    if not isinstance(flags["extra_options"], str):
        raise InvalidError(f"{method}: extra_options={flags['extra_options']!r} must be a string of installer flags")
    return ImageStep(kind=kind, packages=_specifiers(method, packages), pre=bool(flags["pre"]),
                     index_url=flags["index_url"], extra_index_url=flags["extra_index_url"],
                     find_links=flags["find_links"], extra_options=flags["extra_options"])


class Image:
    """A container image: a base (``debian_slim``, ``from_registry``) and build steps, built on the runtime host.

    ``rc.Image(python_packages=[...])`` is ``rc.Image.debian_slim().pip_install(...)``.
    """

    def __init__(self, python_packages: Sequence[str] = ()) -> None:
        if isinstance(python_packages, str) or not all(isinstance(p, str) for p in python_packages):
            raise InvalidError(f"Image(python_packages={python_packages!r}): give a list of requirement "
                               "specifiers, e.g. ['numpy>=2', 'tabulate']")
        self._base: dict[str, Any] = {"base": "debian_slim"}
        self._steps: tuple[_Step, ...] = ()
        self._published: tuple[tuple[str, str], dict[str, Any] | None | ImageBuildError] | None = None
        if python_packages:
            self._steps = (_installer_step("pip", "Image", list(python_packages), index_url=None, pre=False,
                                           extra_index_url=None, find_links=None, extra_options=""),)

    @staticmethod
    def _made(base: dict[str, Any], steps: tuple[_Step, ...]) -> Image:
        image = Image()
        image._base, image._steps = base, steps
        return image

    def _then(self, step: _Step) -> Image:
        """A new image: this one and ``step``."""
        if step.is_layer and any(not s.is_layer for s in self._steps):
            raise InvalidError(_BUILD_AFTER_MOUNT)
        return Image._made(self._base, (*self._steps, step))

    def _reading(self, what: str, is_layer: bool, make: Callable[[], _Step]) -> Image:
        """A new image with a step that reads local files: made now, or only recorded in a container (where the
        files are not: they are on the client that publishes the image)."""
        return self._then(_Elsewhere(what, is_layer) if in_container() else make())

    @staticmethod
    def debian_slim(python_version: str | None = None) -> Image:
        """The default image: Debian with Python ``python_version`` (None: the runtime's own minor version)."""
        return Image._made({"base": "debian_slim",
                            "python_version": _python_version(python_version, "debian_slim(python_version")}, ())

    @staticmethod
    def from_registry(tag: str, secret: Secret | None = None, *, add_python: str | None = None) -> Image:
        """An image from a registry (``"python:3.11-slim"``, ``"nvidia/cuda:12.4.1-runtime-ubuntu22.04"``), with a
        Python of version ``add_python`` added when the image has none; a private one with ``secret``, a named
        secret holding ``REGISTRY_USERNAME`` and ``REGISTRY_PASSWORD``.

        Example::

            image = rc.Image.from_registry("ghcr.io/acme/base:2", secret=rc.Secret.from_name("ghcr"))
        """
        if not isinstance(tag, str) or not tag.strip() or any(c.isspace() for c in tag):
            raise InvalidError(f"from_registry({tag!r}): give an image reference such as 'python:3.11-slim'")
        return Image._made({"base": "registry", "registry_tag": tag,
                            "add_python": _python_version(add_python, "from_registry(add_python"),
                            "registry_secret": _secret_name(secret, "from_registry")}, ())

    # Google's Artifact Registry: the same pull, its secret holding SERVICE_ACCOUNT_JSON (sent as the
    # ``_json_key`` user) instead of REGISTRY_USERNAME/REGISTRY_PASSWORD
    from_gcp_artifact_registry = from_registry

    def pip_install(self, *packages: str | list[str], find_links: str | None = None, index_url: str | None = None,
                    extra_index_url: str | None = None, pre: bool = False, extra_options: str = "") -> Image:
        """Python packages, installed with pip: ``.pip_install("click", "httpx~=0.23.3")``."""
        pkgs = _flatten("pip_install", "packages", packages)
        if not pkgs:
            return self
        return self._then(_installer_step("pip", "pip_install", pkgs, find_links=find_links, index_url=index_url,
                                          extra_index_url=extra_index_url, pre=pre, extra_options=extra_options))

    def uv_pip_install(self, *packages: str | list[str], requirements: list[str] | None = None,
                       find_links: str | None = None, index_url: str | None = None,
                       extra_index_url: str | None = None, pre: bool = False, extra_options: str = "") -> Image:
        """Python packages, installed with uv; ``requirements`` names requirements files, read here."""
        pkgs = _flatten("uv_pip_install", "packages", packages)
        if requirements is not None and (isinstance(requirements, str) or not isinstance(requirements, list)):
            raise InvalidError(f"uv_pip_install: requirements={requirements!r} must be None or a list of paths")
        if not pkgs and not requirements:
            return self
        flags = {"find_links": find_links, "index_url": index_url, "extra_index_url": extra_index_url, "pre": pre}

        def make() -> ImageStep:
            every = pkgs.copy()
            merged = flags
            for path in requirements or []:
                read = sources.read_requirements(path, f"uv_pip_install(requirements=[{path!r}])")
                every += read.packages
                merged = _merged(merged, read)
            return _installer_step("uv_pip", "uv_pip_install", every, extra_options=extra_options, **merged)

        if not requirements:
            return self._then(make())
        return self._reading(f"uv_pip_install(requirements={requirements!r})", True, make)

    def pip_install_from_requirements(self, requirements_txt: str, find_links: str | None = None, *,
                                      index_url: str | None = None, extra_index_url: str | None = None,
                                      pre: bool = False, extra_options: str = "") -> Image:
        """The packages of a local ``requirements.txt`` (read here: the step carries its specifiers)."""
        what = f"pip_install_from_requirements({requirements_txt!r})"
        flags = {"find_links": find_links, "index_url": index_url, "extra_index_url": extra_index_url, "pre": pre}

        def make() -> ImageStep:
            read = sources.read_requirements(requirements_txt, what)
            return _installer_step("pip", what, read.packages, extra_options=extra_options, **_merged(flags, read))

        return self._reading(what, True, make)

    def pip_install_from_pyproject(self, pyproject_toml: str, optional_dependencies: Sequence[str] = (), *,
                                   find_links: str | None = None, index_url: str | None = None,
                                   extra_index_url: str | None = None, pre: bool = False,
                                   extra_options: str = "") -> Image:
        """The ``[project] dependencies`` of a local ``pyproject.toml``, and those of the optional groups named."""
        what = f"pip_install_from_pyproject({pyproject_toml!r})"

        def make() -> ImageStep:
            pkgs = sources.read_pyproject(pyproject_toml, list(optional_dependencies), what)
            return _installer_step("pip", what, pkgs, find_links=find_links, index_url=index_url,
                                   extra_index_url=extra_index_url, pre=pre, extra_options=extra_options)

        return self._reading(what, True, make)

    def apt_install(self, *packages: str | list[str]) -> Image:
        """Debian packages: ``.apt_install("git", "ffmpeg")``."""
        pkgs = _flatten("apt_install", "packages", packages)
        for package in pkgs:
            if not _APT_NAME.match(package):
                raise InvalidError(f"apt_install: {package!r} is not a Debian package name (apt options are not "
                                   "accepted; e.g. 'git', 'libpq-dev', 'curl=7.88.1-10')")
        return self._then(ImageStep(kind="apt", packages=pkgs)) if pkgs else self

    def run_commands(self, *commands: str | list[str]) -> Image:
        """Shell commands, each run in the image as it is so far: ``.run_commands("git clone ... /app")``."""
        cmds = _flatten("run_commands", "commands", commands)
        if any(not c.strip() for c in cmds):
            raise InvalidError(f"run_commands: {cmds!r} holds an empty command")
        return self._then(ImageStep(kind="run", commands=cmds)) if cmds else self

    def env(self, vars: dict[str, str]) -> Image:
        """Environment variables for the later steps and the containers: ``.env({"HF_HOME": "/cache"})``."""
        if not isinstance(vars, Mapping):
            raise InvalidError(f"env({vars!r}): give a dict of variable names to str values")
        bad = [k for k, v in vars.items() if not isinstance(v, str)]
        if bad:
            raise InvalidError(f"Image ENV variables must be strings. Invalid keys: {bad}")
        names = [k for k in vars if not isinstance(k, str) or not k or "=" in k or "\0" in k]
        if names:
            raise InvalidError(f"env: {names} are not environment variable names")
        return self._then(ImageStep(kind="env", env=dict(vars)))

    def workdir(self, path: str | PurePosixPath) -> Image:
        """The working directory of the later steps and of the functions: ``.workdir("/app")``."""
        text = str(path)
        if not text.startswith("/"):
            raise InvalidError(f"workdir({text!r}): give an absolute path in the image, such as '/app'")
        return self._then(ImageStep(kind="workdir", path=text))

    def add_local_file(self, local_path: str | Path, remote_path: str, *, copy: bool = False) -> Image:
        """A local file at ``remote_path`` (absolute; ending in '/': a folder, the name kept) in the containers."""
        return self._reading(f"add_local_file({str(local_path)!r})", copy,
                             lambda: sources.local_file(local_path, remote_path, copy))

    def add_local_dir(self, local_path: str | Path, remote_path: str, *, copy: bool = False,
                      ignore: Sequence[str] | Callable[[Path], bool] = ()) -> Image:
        """A local folder's files under ``remote_path``; ``ignore``: patterns (``["*.venv", "**/*.pyc"]``) or a
        function of each file's path relative to the folder, True to leave it out."""
        return self._reading(f"add_local_dir({str(local_path)!r})", copy,
                             lambda: sources.local_dir(local_path, remote_path, copy, ignore_fn(ignore)))

    def add_local_python_source(self, *modules: str, copy: bool = False,
                                ignore: Sequence[str] | Callable[[Path], bool] = NON_PYTHON_FILES) -> Image:
        """Local Python packages or modules, found here by name, importable in the containers (under /root).
        Only ``.py`` files unless ``ignore`` says otherwise; bytecode and dot-prefixed paths never."""
        if not all(isinstance(m, str) for m in modules):
            raise InvalidError(f"add_local_python_source{modules!r}: give module names as strings")
        return self._reading(f"add_local_python_source{modules!r}", copy,
                             lambda: sources.python_source(modules, copy, ignore_fn(ignore)))

    def run_function(self, raw_f: Callable[..., Any], *, secrets: Sequence[Secret] = (),
                     volumes: Mapping[str, Volume] = {}) -> Image:
        """Run ``raw_f`` once in the image as it is so far; what it writes becomes part of the image."""
        if not callable(raw_f):
            raise InvalidError(f"Argument to Image.run_function must be a function, not {type(raw_f).__name__}.")
        if getattr(raw_f, "__name__", "") == "<lambda>":
            raise InvalidError("Image.run_function does not support lambda functions.")
        if any(not isinstance(s, Secret) or s.name is None for s in secrets):
            raise InvalidError(f"run_function(secrets={list(secrets)!r}): give named secrets, "
                               "rc.Secret.from_name('name') (a build step's key must not hold secret values)")
        if not all(isinstance(p, str) and p.startswith("/") and isinstance(v, Volume) for p, v in volumes.items()):
            raise InvalidError(f"run_function(volumes={volumes!r}): give a dict of absolute paths to rc.Volume")
        return self._then(sources.BuildFunction(raw_f, tuple(str(s.name) for s in secrets),
                                                tuple(sorted((p, str(v.name)) for p, v in volumes.items()))))

    @contextlib.contextmanager
    def imports(self) -> Iterator[None]:
        """Imports of packages that only the image has: failures are swallowed here, raised in a container.

        >>> with image.imports():
        ...     import torch
        """
        try:
            yield
        except Exception as exc:
            if in_container():
                raise
            if not isinstance(exc, ImportError):
                warnings.warn(f"Warning: caught a non-ImportError exception in an `imports()` block: {exc!r}",
                              stacklevel=3)

    def materialize(self) -> tuple[ImageSpec, dict[str, bytes]]:
        """The spec as it travels, and the blobs it names by digest (local files read now)."""
        steps: list[ImageStep] = []
        blobs: dict[str, bytes] = {}
        for step in self._steps:
            if isinstance(step, ImageStep):
                steps.append(step)
                continue
            made, data = step.materialize()
            steps.append(made)
            blobs[str(made.digest)] = data
        return ImageSpec(**self._base, steps=steps), blobs

    def publish(self, conn: _client.Connection, app_id: str) -> dict[str, Any] | None:
        """The ``image`` option for app ``app_id``: its missing blobs sent, then the image built on the runtime
        (its build log printed here as it comes; ``ImageBuildError`` when it fails); once per app run, a
        failure too (a new run builds again).

        None for the default image (nothing to build)."""
        with _PUBLISHING:
            key = (conn.runtime_id, app_id)
            if self._published is None or self._published[0] != key:
                self._published = (key, self._build(conn))
            outcome = self._published[1]
            if isinstance(outcome, ImageBuildError):
                raise outcome
            return outcome

    def _build(self, conn: _client.Connection) -> dict[str, Any] | None | ImageBuildError:
        spec, blobs = self.materialize()
        upload(conn, blobs)
        if spec == ImageSpec():
            return None
        view = _terminal.build_view(repr(self))  # on a terminal: the log above a bar of its layers
        built = False
        try:  # as long as it takes: the connection's heartbeat says whether the runtime is still there
            conn.ask(ImageBuildMsg(image=spec), ImageBuildReply, timeout_s=None,
                     on_output=view.output if view is not None else None)
            built = True
        except ImageBuildError as exc:
            return exc
        finally:
            if view is not None:
                view.close(ok=built)
        return spec.fields()

    @property
    def declared_python(self) -> str | None:
        """The Python version the image asks for (None: the runtime's own)."""
        return self._base.get("python_version") or self._base.get("add_python")

    def __getstate__(self) -> dict[str, Any]:  # what was published where stays with this process
        return {"_base": self._base, "_steps": self._steps, "_published": None}

    def __repr__(self) -> str:
        base = self._base.get("registry_tag") or f"debian_slim({self._base.get('python_version') or ''})"
        return f"<rc.Image {base}{''.join(f' +{_kind(s)}' for s in self._steps)}>"


def _kind(step: _Step) -> str:
    if isinstance(step, ImageStep):
        return step.kind
    return "function" if isinstance(step, sources.BuildFunction) else "files"


def upload(conn: _client.Connection, blobs: dict[str, bytes]) -> None:
    """Send the blobs the runtime lacks (``blob_has``, then one ``blob_put`` each)."""
    if not blobs:
        return
    for digest in conn.ask(BlobHasMsg(digests=sorted(blobs)), BlobHasReply).missing:
        data = blobs[digest]
        if len(data) > BLOB_MAX_BYTES:
            raise InvalidError(f"an image step's blob is {len(data)} bytes, more than the {BLOB_MAX_BYTES} the "
                               "runtime takes")
        conn.ask(BlobPutMsg(digest=digest, size=len(data)), EmptyReply, [Payload([data])],
                 timeout_s=30.0 + len(data) / 20e6)


def check_image(value: Any) -> Image:
    """``image=`` of ``rc.App``, ``@app.function`` and ``@app.cls``: an ``rc.Image``."""
    if not isinstance(value, Image):
        raise InvalidError(f"image={value!r} must be an rc.Image, e.g. rc.Image.debian_slim().pip_install('tabulate')")
    return value
