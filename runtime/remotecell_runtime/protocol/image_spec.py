"""What an image is on the wire: a base, then build steps in order; each step is a layer keyed by content.

``rc.Image`` (the client's builder, Modal's names) turns into an ``ImageSpec``,
sent as the ``image`` function option.  The runtime builds it layer by layer,
each layer keyed by ``layer_keys``: a sha256 over the key before it and the
step's own fields, so two images (of any apps) that start with the same steps
share those layers, and a second run of an unchanged image builds nothing.

Local files travel as blobs (``blob_put``: a tar of the files, named by its
sha256 ``digest``) sent before the spec that names them, so a step's key covers
the files' content, not their path on the client.  A ``files`` step with
``copy=False`` (Modal's default for ``add_local_*``) is not a layer: its files
are put in place when a container starts, so editing them rebuilds nothing;
such steps come after every build step (the client refuses a build step after
one, as Modal does).

Invariant: the spec is data only; nothing in it is unpickled by the daemon.  A
``function`` step (``run_function``) names a blob of the pickled function that
only a build container unpickles.
"""

from __future__ import annotations

import hashlib
import json

from .message import Message, message, wire

BASES = ("debian_slim", "registry")
# pip: pip_install / pip_install_from_requirements / _from_pyproject (packages resolved by the client);
# uv_pip: uv_pip_install; apt: apt_install; run: run_commands; env; workdir; files: add_local_*;
# function: run_function.
STEP_KINDS = ("pip", "uv_pip", "apt", "run", "env", "workdir", "files", "function")
# "1" in a container's environment, set by the container process itself (whatever the backend) before any user
# code runs: code there runs remotely, so ``Image.imports()`` raises the ImportError it swallows on a client.
IN_CONTAINER_ENV = "REMOTECELL_IS_REMOTE"


@message()
class ImageStep(Message):
    """One step of an image; ``kind`` says which, and which of the other fields it reads."""

    kind: str
    packages: list[str] = wire(factory=list)  # pip, uv_pip: requirement specifiers; apt: Debian package names
    index_url: str | None = None  # pip, uv_pip
    extra_index_url: str | None = None  # pip, uv_pip
    find_links: str | None = None  # pip, uv_pip
    pre: bool = False  # pip, uv_pip: pre-releases allowed
    extra_options: str = ""  # pip, uv_pip: more installer flags, as Modal's extra_options
    commands: list[str] = wire(factory=list)  # run: shell commands, each in the image as it is so far
    env: dict[str, str] = wire(factory=dict)  # env: variables set for later steps and the containers
    path: str | None = None  # workdir: the directory; files: where they go in the container
    digest: str | None = None  # files: the blob (tar) of the files; function: the blob of the pickled function
    copy: bool = False  # files: a layer of the image (True), or put in place at container start (False)
    secrets: list[str] = wire(factory=list)  # function: names of the runtime's secrets it runs with
    volumes: dict[str, str] = wire(factory=dict)  # function: mount path -> volume name

    @property
    def is_layer(self) -> bool:
        """Whether this step is built into the image (every step but ``files`` with ``copy=False``)."""
        return self.kind != "files" or self.copy


@message()
class ImageSpec(Message):
    """An image: its base and its steps.

    Example::

        spec = ImageSpec(steps=[ImageStep(kind="uv_pip", packages=["tabulate==0.9.0"])])
        spec.layer_keys("runtime-salt")[-1]  # the key of the finished image
    """

    base: str = "debian_slim"  # one of BASES
    python_version: str | None = None  # "3.11": debian_slim's Python (None: the runtime's own minor version)
    registry_tag: str | None = None  # registry: the OCI image, e.g. "python:3.11-slim"
    add_python: str | None = None  # registry: a Python of this version added to that image
    # registry: the runtime's secret holding REGISTRY_USERNAME/REGISTRY_PASSWORD (not in the key: the tag names
    # the content, whoever's credentials fetch it)
    registry_secret: str | None = None
    steps: list[ImageStep] = wire(factory=list)

    def base_fields(self) -> dict[str, object]:
        """What the first layer is made from."""
        return {"base": self.base, "python_version": self.python_version, "registry_tag": self.registry_tag,
                "add_python": self.add_python}

    def layer_keys(self, salt: str) -> list[str]:
        """The key of the base, then one per layer step, in order; ``salt`` is what the builder mixes in
        (its own version and that of the code it puts in every image), so a new runtime builds anew."""
        key = _digest(salt, self.base_fields())
        keys = [key]
        for step in self.steps:
            if step.is_layer:
                key = _digest(key, step.fields())
                keys.append(key)
        return keys

    @property
    def mounts(self) -> list[ImageStep]:
        """The ``files`` steps put in place at container start (not layers)."""
        return [step for step in self.steps if not step.is_layer]


def _digest(parent: str, fields: dict[str, object]) -> str:
    body = json.dumps([parent, fields], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()[:32]
