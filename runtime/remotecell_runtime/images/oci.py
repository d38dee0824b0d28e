"""``Image.from_registry``: an OCI (or Docker) image pulled over the registry HTTP API and unpacked into a root
filesystem, with no container engine.

``pull(tag, into, blobs, say)``: the reference is parsed as Docker does
(``python:3.11-slim`` is ``registry-1.docker.io/library/python:3.11-slim``; a
first part with a dot, a colon or ``localhost`` names the registry; loopback
registries are spoken to over http, others over https), the manifest is fetched
(an index picks this host's platform), each layer blob is downloaded once into
``blobs`` (kept by digest, checked against it), and the layers are unpacked in
order into ``into``, honoring whiteouts (``.wh.NAME`` removes ``NAME`` of the layers
below, ``.wh..wh..opq`` empties its folder of them).  A registry asking for a
token (``401`` with ``WWW-Authenticate: Bearer``, as Docker Hub does) gets an
anonymous one, or one for the ``Credentials`` of the image's secret, which a
registry asking for Basic gets as they are.  Layers are tar, gzip or zstd.

Invariants: nothing of a layer is written outside ``into``: every path is
resolved inside it (a symbolic link of the image, absolute or relative, is
followed as the image would see it, never into the host's tree), names with
``..`` are refused; device files are not made (the container gets a fresh
``/dev``); a blob whose bytes do not match its digest is refused.  An image's own
Python packages (``site_folders``) of the venv's Python version are put on its
path after the venv's own (``remotecell-image-site.pth``), so a registry image's
preinstalled packages import while the runtime's pins still win.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import platform
import posixpath
import re
import shutil
import stat
import tarfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

DOCKER_HUB = "registry-1.docker.io"
TIMEOUT_S = 60.0
MANIFESTS = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json",
             "application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json")
INDEXES = MANIFESTS[:2]
LOOPBACK = re.compile(r"^(localhost|127\.\d+\.\d+\.\d+|\[::1\])(:\d+)?$")
MAX_LINKS = 40  # symbolic links followed resolving one path
CHUNK = 1 << 20
IMAGE_SITE_PTH = "remotecell-image-site.pth"  # in a registry image's venv: the image's own package folders


class PullFailed(Exception):
    """Why an image could not be pulled or unpacked: names the registry and the image."""


@dataclass(frozen=True)
class Reference:
    """``[registry/]repository[:tag][@digest]``."""

    registry: str
    repository: str
    tag: str = "latest"
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        rest, _, digest = text.partition("@")
        first, slash, remainder = rest.partition("/")
        if slash and ("." in first or ":" in first or first == "localhost"):
            registry, path = first, remainder
        else:
            registry, path = DOCKER_HUB, rest
        name, colon, tag = path.rpartition(":") if ":" in path.rsplit("/", 1)[-1] else (path, "", "")
        if registry == DOCKER_HUB and "/" not in name:
            name = f"library/{name}"
        if not name or not re.match(r"^[a-z0-9]+([._/-][a-z0-9]+)*$", name):
            raise PullFailed(f"from_registry({text!r}): {name!r} is not an image name (lowercase letters, digits "
                             "and . _ - /)")
        return cls(registry, name, tag if colon else "latest", digest or None)

    @property
    def base_url(self) -> str:
        scheme = "http" if LOOPBACK.match(self.registry) else "https"
        return f"{scheme}://{self.registry}/v2/{self.repository}"

    def __str__(self) -> str:
        return f"{self.registry}/{self.repository}:{self.tag}" + (f"@{self.digest}" if self.digest else "")


@dataclass
class ImageConfig:
    """What a container of the image takes from its config: variables and working directory."""

    env: dict[str, str] = field(default_factory=dict)
    workdir: str | None = None


@dataclass(frozen=True)
class Credentials:
    """A registry user and password (or token), sent as HTTP Basic to the registry or its token service."""

    username: str
    password: str

    def header(self) -> str:
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()


class Registry:
    """One image's requests to its registry: a bearer token fetched when it asks for one (anonymous, or
    with ``credentials``), or ``credentials`` as Basic when it asks for those."""

    def __init__(self, ref: Reference, credentials: Credentials | None = None) -> None:
        self.ref = ref
        self.credentials = credentials
        self.authorization: str | None = None

    def open(self, url: str, accept: str = "*/*") -> Any:
        for attempt in range(2):
            headers = {"Accept": accept, "User-Agent": "remotecell"}
            if self.authorization:
                headers["Authorization"] = self.authorization
            try:
                return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S)
            except urllib.error.HTTPError as exc:
                challenge = exc.headers.get("WWW-Authenticate", "")
                if exc.code == 401 and attempt == 0 and challenge.lower().startswith("bearer"):
                    self.authorization = f"Bearer {self._token(challenge)}"
                    continue
                if exc.code == 401 and attempt == 0 and challenge.lower().startswith("basic") and self.credentials:
                    self.authorization = self.credentials.header()
                    continue
                raise PullFailed(self._http_error(exc, url)) from None
            except (urllib.error.URLError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                raise PullFailed(f"the registry {self.ref.registry} could not be reached for {self.ref} ({reason}); "
                                 "the image cannot be built without it") from None
        raise PullFailed(f"the registry {self.ref.registry} refused the token it gave for {self.ref}")

    def _http_error(self, exc: urllib.error.HTTPError, url: str) -> str:
        if exc.code == 404:
            return f"{self.ref} is not on the registry {self.ref.registry} (404 for {url})"
        if exc.code in (401, 403) and self.credentials:
            return (f"the registry {self.ref.registry} refused {self.ref} ({exc.code}) to user "
                    f"{self.credentials.username!r}: check the secret's REGISTRY_USERNAME and REGISTRY_PASSWORD")
        if exc.code in (401, 403):
            return (f"the registry {self.ref.registry} refused {self.ref} ({exc.code}) without credentials: for a "
                    "private image give from_registry(tag, secret=rc.Secret.from_name(NAME)), a secret holding "
                    "REGISTRY_USERNAME and REGISTRY_PASSWORD")
        return f"the registry {self.ref.registry} answered {exc.code} {exc.reason} for {url}"

    def _token(self, challenge: str) -> str:
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        realm = params.pop("realm", "")
        if not realm:
            raise PullFailed(f"the registry {self.ref.registry} asks for a token without saying where to get it")
        params.setdefault("scope", f"repository:{self.ref.repository}:pull")
        request = urllib.request.Request(f"{realm}?{urllib.parse.urlencode(params)}", headers={
            "User-Agent": "remotecell", **({"Authorization": self.credentials.header()} if self.credentials else {})})
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as reply:
                body = json.loads(reply.read())
        except urllib.error.HTTPError as exc:
            who = f"user {self.credentials.username!r}" if self.credentials else "an anonymous pull"
            raise PullFailed(f"the token service {realm} of {self.ref.registry} refused {who} of {self.ref} "
                             f"({exc.code}): " + ("check the secret's REGISTRY_USERNAME and REGISTRY_PASSWORD"
                                                  if self.credentials else "for a private image give "
                                                  "from_registry(tag, secret=rc.Secret.from_name(NAME))")) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise PullFailed(f"the token service {realm} of {self.ref.registry} could not be reached: {exc}") from None
        return str(body.get("token") or body.get("access_token") or "")

    def json(self, url: str, accept: str) -> tuple[dict[str, Any], bytes]:
        with self.open(url, accept) as reply:
            raw = reply.read()
        try:
            return json.loads(raw), raw
        except ValueError:
            raise PullFailed(f"the registry {self.ref.registry} sent no JSON for {url}") from None

    def manifest(self) -> dict[str, Any]:
        """The image manifest for this host's platform (from an index when the reference names one)."""
        url = f"{self.ref.base_url}/manifests/{self.ref.digest or self.ref.tag}"
        body, raw = self.json(url, ", ".join(MANIFESTS))
        if self.ref.digest:
            _check_digest(self.ref.digest, hashlib.sha256(raw).hexdigest(), url)
        if body.get("mediaType") in INDEXES or "manifests" in body:
            arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
            chosen = [m for m in body.get("manifests", []) if _platform(m) == f"linux/{arch}"]
            if not chosen:
                have = sorted({_platform(m) for m in body.get("manifests", [])})
                raise PullFailed(f"{self.ref} has no image for linux/{arch} (it has {', '.join(have) or 'none'})")
            digest = chosen[0]["digest"]
            body, raw = self.json(f"{self.ref.base_url}/manifests/{digest}", ", ".join(MANIFESTS[2:]))
            _check_digest(digest, hashlib.sha256(raw).hexdigest(), f"its manifest for linux/{arch}")
        if "layers" not in body or "config" not in body:
            raise PullFailed(f"{self.ref}: the registry sent a manifest with no layers or config "
                             f"({body.get('mediaType') or body.get('schemaVersion')})")
        return body

    def blob(self, digest: str, blobs: Path) -> Path:
        """Blob ``digest``, downloaded once into ``blobs`` and checked against its digest."""
        target = blobs / digest.replace(":", "-")
        if target.is_file():
            return target
        blobs.mkdir(parents=True, exist_ok=True)
        part = target.with_name(f"{target.name}.{os.getpid()}.part")
        sha = hashlib.sha256()
        try:
            with self.open(f"{self.ref.base_url}/blobs/{digest}") as reply, open(part, "wb") as out:
                while chunk := reply.read(CHUNK):
                    sha.update(chunk)
                    out.write(chunk)
            _check_digest(digest, sha.hexdigest(), f"blob {digest[:19]} of {self.ref}")
            os.replace(part, target)
        finally:
            part.unlink(missing_ok=True)
        return target


def _platform(entry: dict[str, Any]) -> str:
    return f"{entry.get('platform', {}).get('os')}/{entry.get('platform', {}).get('architecture')}"


def _check_digest(digest: str, sha256: str, what: str) -> None:
    algorithm, _, value = digest.partition(":")
    if algorithm != "sha256":
        raise PullFailed(f"{what}: digest {digest} is not sha256, the only one checked here")
    if value != sha256:
        raise PullFailed(f"{what}: its bytes do not match its digest {digest} (got sha256:{sha256})")


def pull(tag: str, into: Path, blobs: Path, say: Callable[[str], None],
         credentials: Credentials | None = None) -> ImageConfig:
    """Image ``tag`` unpacked into ``into`` (a folder made here); its config's variables and working folder."""
    ref = Reference.parse(tag)
    registry = Registry(ref, credentials)
    manifest = registry.manifest()
    with open(registry.blob(manifest["config"]["digest"], blobs)) as f:
        config = json.load(f).get("config") or {}
    into.mkdir(parents=True, exist_ok=True)
    layers = manifest["layers"]
    for number, layer in enumerate(layers, 1):
        digest = layer["digest"]
        say(f"   layer {number}/{len(layers)}: {digest[:19]} ({int(layer.get('size', 0)) / 1e6:.1f} MB)")
        unpack_layer(registry.blob(digest, blobs), into, f"layer {digest[:19]} of {ref}")
    env = dict(item.partition("=")[::2] for item in config.get("Env") or [] if "=" in item)
    return ImageConfig(env=env, workdir=config.get("WorkingDir") or None)


def site_folders(root: Path) -> list[str]:
    """The Python package folders an unpacked image holds (its own Python's), as paths inside it."""
    patterns = ("usr/local/lib/python3*/site-packages", "usr/lib/python3*/site-packages",
                "usr/lib/python3/dist-packages", "opt/conda/lib/python3*/site-packages")
    found = {"/" + str(p.relative_to(root)) for pattern in patterns for p in root.glob(pattern)
             if p.is_dir() and not p.is_symlink()}
    return sorted(found)


def _open_layer(path: Path, what: str) -> BinaryIO:
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic[:2] == b"\x1f\x8b":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    if magic == b"\x28\xb5\x2f\xfd":
        import zstandard  # only for zstd layers (a dependency of the runtime)

        return zstandard.open(path, "rb")
    return open(path, "rb")


def unpack_layer(path: Path, root: Path, what: str) -> None:
    """One layer's tar over ``root``: whiteouts remove from the layers below, entries land inside ``root`` only."""
    made: set[str] = set()  # this layer's own paths (an opaque folder keeps them)
    with _open_layer(path, what) as stream:
        try:
            with tarfile.open(fileobj=stream, mode="r|") as archive:
                for member in archive:
                    _member(archive, member, root, made, what)
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise PullFailed(f"{what} could not be unpacked: {exc}") from None


def _member(archive: tarfile.TarFile, member: tarfile.TarInfo, root: Path, made: set[str], what: str) -> None:
    name = posixpath.normpath("/" + member.name).lstrip("/")
    if ".." in member.name.split("/"):
        raise PullFailed(f"{what}: entry {member.name!r} leaves the image")
    if not name or name == ".":
        return
    folder, base = posixpath.split(name)
    parent = _resolve(root, folder)
    if base == ".wh..wh..opq":
        for entry in os.listdir(parent) if parent.is_dir() else []:
            if posixpath.join(folder, entry) not in made:
                _remove(parent / entry)
        return
    if base.startswith(".wh."):
        _remove(parent / base[4:])
        return
    made.add(name)
    target = parent / base
    parent.mkdir(parents=True, exist_ok=True)
    if member.isdir():
        if os.path.lexists(target) and (target.is_symlink() or not target.is_dir()):
            _remove(target)
        target.mkdir(exist_ok=True)
    elif member.issym():
        _remove(target)
        os.symlink(member.linkname, target)
    elif member.islnk():
        source = _resolve(root, posixpath.normpath("/" + member.linkname).lstrip("/"))
        _remove(target)
        os.link(source, target)
        return  # a hard link shares its target's owner and mode
    elif member.isfile():
        _remove(target)
        reader = archive.extractfile(member)
        with open(target, "wb") as out:
            if reader is not None:
                shutil.copyfileobj(reader, out, CHUNK)
    else:
        return  # devices, fifos: a container gets a fresh /dev
    if os.geteuid() == 0:
        os.lchown(target, member.uid, member.gid)
    if not member.issym():
        os.chmod(target, stat.S_IMODE(member.mode))
        os.utime(target, (member.mtime, member.mtime))


def _resolve(root: Path, rel: str) -> Path:
    """The host path of folder ``rel`` of the image in ``root``, its links followed as inside the image."""
    parts = [p for p in rel.split("/") if p and p != "."]
    here: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if here:
                here.pop()
            continue
        path = root.joinpath(*here, part)
        if path.is_symlink():
            hops += 1
            if hops > MAX_LINKS:
                raise PullFailed(f"{rel}: too many symbolic links in the image")
            link = os.readlink(path)
            parts = [p for p in link.split("/") if p] + parts
            if link.startswith("/"):
                here = []
            continue
        here.append(part)
    return root.joinpath(*here)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()
