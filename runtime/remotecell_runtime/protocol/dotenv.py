"""``.env`` files, as python-dotenv reads them, for ``rc.Secret.from_dotenv`` (client) and
``remotecell secret create --from-dotenv`` (runtime host): both sides read the same format.

One ``KEY=VALUE`` per line (``export KEY=VALUE`` too); ``#`` starts a comment (in an unquoted
value, after a space); a value in single quotes is taken as written, one in double quotes may
span lines and has ``\\n``, ``\\t``, ``\\"`` and ``\\\\`` escapes; ``${NAME}`` in an unquoted or
double-quoted value is an earlier key of the file, else the environment's, else empty
(``${NAME:-default}`` gives a default). A key without ``=`` has the empty value.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

_KEY = re.compile(r"[ \t]*(?:export[ \t]+)?([A-Za-z_][A-Za-z0-9_.]*)[ \t]*(=?)[ \t]*")
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "'": "'"}


class DotenvError(ValueError):
    """A line of a ``.env`` file that is not ``KEY=VALUE``: the message names the file and the line."""


def parse(text: str, where: str = ".env", environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables of a ``.env`` file's ``text``, in order."""
    environ = os.environ if environ is None else environ
    values: dict[str, str] = {}
    for _line, key, value, expand in _entries(text, where):
        if expand:
            value = _VARIABLE.sub(lambda m: values.get(m[1], environ.get(m[1], m[2] or "")), value)
        values[key] = value
    return values


def _entries(text: str, where: str) -> Iterator[tuple[int, str, str, bool]]:
    pos, line_no = 0, 1
    while pos < len(text):
        end = text.find("\n", pos)
        line = text[pos:] if end < 0 else text[pos:end]
        if not line.strip() or line.lstrip().startswith("#"):
            pos, line_no = (len(text) if end < 0 else end + 1), line_no + 1
            continue
        key = _KEY.match(text, pos)
        if key is None or (not key[2] and text[key.end():key.end() + 1] not in ("", "\n", "#")):
            raise DotenvError(f"{where}, line {line_no}: {line.strip()[:60]!r} is not KEY=VALUE")
        start, quote = key.end(), text[key.end():key.end() + 1]
        if quote in ("'", '"'):
            close = start + 1
            while True:
                close = text.find(quote, close)
                if close < 0:
                    raise DotenvError(f"{where}, line {line_no}: the value of {key[1]} has no closing {quote}")
                if quote == "'" or text[close - 1] != "\\" or text[close - 2:close] == "\\\\":
                    break
                close += 1
            raw = text[start + 1:close]
            value = raw if quote == "'" else re.sub(r"\\(.)", lambda m: _ESCAPES.get(m[1], "\\" + m[1]), raw)
            rest_end = text.find("\n", close)
            rest = text[close + 1:] if rest_end < 0 else text[close + 1:rest_end]
            if rest.strip() and not rest.strip().startswith("#"):
                raise DotenvError(f"{where}, line {line_no}: {rest.strip()[:40]!r} after the quoted value of "
                                  f"{key[1]}")
            yield line_no, key[1], value, quote == '"'
            line_no += text.count("\n", pos, close) + 1
            pos = len(text) if rest_end < 0 else rest_end + 1
            continue
        value = text[start:] if end < 0 else text[start:end]
        value = re.split(r"[ \t]+#", value, maxsplit=1)[0].strip()
        yield line_no, key[1], value, True
        pos, line_no = (len(text) if end < 0 else end + 1), line_no + 1


def find(start: str | os.PathLike[str] | None, filename: str = ".env") -> Path | None:
    """``filename`` in ``start`` (a folder, or a file's folder; the current folder if None) or the nearest
    folder above it; None if there is none."""
    folder = Path.cwd() if start is None else Path(start).resolve()
    if start is not None and not folder.exists():
        raise FileNotFoundError(f"{start}: no such file or folder to look for {filename} from")
    if folder.is_file():
        folder = folder.parent
    for candidate in [folder, *folder.parents]:
        if (candidate / filename).is_file():
            return candidate / filename
    return None
