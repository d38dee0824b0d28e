"""The host's package index settings, read as pip reads them, given to uv (which ignores pip's config).

pip's configuration is files and ``PIP_*`` variables: the global files
(``$XDG_CONFIG_DIRS/pip/pip.conf``, default ``/etc/xdg/pip/pip.conf``, then
``/etc/pip.conf``), the user's (``~/.pip/pip.conf``, ``$XDG_CONFIG_HOME/pip/pip.conf``;
skipped when ``PIP_CONFIG_FILE`` names a file that exists), the site's
(``sys.prefix/pip.conf``) and ``PIP_CONFIG_FILE``, each later one over the earlier
ones (``PIP_CONFIG_FILE=/dev/null``: no files at all).  For ``pip install`` an
option is its ``PIP_<NAME>`` variable, else its ``[install]`` value, else its
``[global]`` one, as pip orders them.  Read here: ``index-url``,
``extra-index-url``, ``find-links``, ``no-index``, ``constraint`` (lists are
whitespace-separated, as pip splits them) and ``cert``.

Invariant: pip merges every index and takes the best version among them; uv takes
a package from the first index that has it unless told otherwise, so more than one
index is passed with ``--index-strategy unsafe-best-match`` (pip's behaviour,
which the operator configured).
"""

from __future__ import annotations

import configparser
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

LISTS = ("extra-index-url", "find-links", "constraint")  # whitespace-separated lists in pip's config
TRUE = ("1", "true", "yes", "on", "y", "t")


@dataclass(frozen=True)
class IndexSettings:
    """Where packages come from: pip's options, as uv flags (``uv_args``) and variables (``uv_env``)."""

    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()
    no_index: bool = False
    constraints: tuple[str, ...] = ()
    cert: str | None = None

    def with_step(self, index_url: str | None, extra_index_url: str | None, find_links: str | None
                  ) -> IndexSettings:
        """These settings under a step's own: its index replaces the host's, its others come first."""
        extra = tuple(extra_index_url.split()) if extra_index_url else ()
        links = tuple(find_links.split()) if find_links else ()
        return IndexSettings(index_url or self.index_url, extra + self.extra_index_urls, links + self.find_links,
                             self.no_index and not (index_url or extra), self.constraints, self.cert)

    def uv_args(self) -> list[str]:
        args: list[str] = []
        if self.no_index:
            args.append("--no-index")
        else:
            if self.index_url:
                args += ["--index-url", self.index_url]
            for url in self.extra_index_urls:
                args += ["--extra-index-url", url]
            if self.extra_index_urls:  # pip takes the best version among all its indexes
                args += ["--index-strategy", "unsafe-best-match"]
        for link in self.find_links:
            args += ["--find-links", link]
        for path in self.constraints:
            args += ["--constraint", path]
        return args

    def uv_env(self) -> dict[str, str]:
        """pip's ``cert`` is a CA bundle: uv reads one from ``SSL_CERT_FILE``."""
        return {"SSL_CERT_FILE": self.cert} if self.cert else {}

    def describe(self) -> str:
        """For the build log: where packages come from."""
        if self.no_index:
            where = ["no index"]
        else:
            where = [self.index_url or "PyPI", *self.extra_index_urls]
        return ", ".join(where + [f"find-links {link}" for link in self.find_links])


def config_files(environ: Mapping[str, str], home: str, prefix: str, etc: str = "/etc") -> list[Path]:
    """pip's configuration files in the order it reads them (a later one over an earlier one)."""
    chosen = environ.get("PIP_CONFIG_FILE")
    if chosen == os.devnull:
        return []
    dirs = [d for d in environ.get("XDG_CONFIG_DIRS", "/etc/xdg").split(os.pathsep) if d]
    files = [Path(d) / "pip" / "pip.conf" for d in dirs] + [Path(etc) / "pip.conf"]
    if not (chosen and Path(chosen).exists()):
        config_home = environ.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
        files += [Path(home) / ".pip" / "pip.conf", Path(config_home) / "pip" / "pip.conf"]
    files.append(Path(prefix) / "pip.conf")
    if chosen:
        files.append(Path(chosen))
    return files


def read_pip_config(environ: Mapping[str, str] | None = None, home: str | None = None,
                    prefix: str = sys.prefix, etc: str = "/etc") -> IndexSettings:
    """The index settings ``pip install`` would use here (``prefix``: the runtime's ``sys.prefix``)."""
    environ = os.environ if environ is None else environ
    merged = _file_values(config_files(environ, home or os.path.expanduser("~"), prefix, etc))
    for name, text in environ.items():
        if name.startswith("PIP_") and name != "PIP_CONFIG_FILE":
            merged[":env:." + _normalized(name[4:])] = text

    def value(key: str) -> str | None:
        """A variable over ``[install]`` over ``[global]``, as pip orders them for ``pip install``."""
        return next((merged[f"{s}.{key}"] for s in (":env:", "install", "global") if f"{s}.{key}" in merged), None)

    lists = {key: tuple((value(key) or "").split()) for key in LISTS}
    return IndexSettings(index_url=value("index-url"), extra_index_urls=lists["extra-index-url"],
                         find_links=lists["find-links"], no_index=(value("no-index") or "").lower() in TRUE,
                         constraints=lists["constraint"], cert=value("cert"))


def _file_values(files: Iterable[Path]) -> dict[str, str]:
    """``section.option`` -> value over ``files``, a later file over an earlier one (unreadable ones skipped)."""
    merged: dict[str, str] = {}
    for path in files:
        parser = configparser.RawConfigParser()
        try:
            parser.read(path, encoding="utf-8")
        except (OSError, configparser.Error, UnicodeDecodeError):
            continue  # pip stops on a broken file; a build should not: the other settings still hold
        for section in parser.sections():
            for option, value in parser.items(section):
                merged[f"{section}.{_normalized(option)}"] = value
    return merged


def _normalized(name: str) -> str:
    """pip's option names: lower case, ``-`` for ``_``, no leading dashes."""
    return name.lower().replace("_", "-").lstrip("-")
