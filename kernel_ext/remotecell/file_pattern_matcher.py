"""``FilePatternMatcher``: which local files an image leaves out, by dockerignore patterns (as Modal's).

A pattern matches a path relative to the folder being added: ``*`` and ``?``
stay within one path segment, ``**`` spans any number of them (``**/*.py``,
``build/**``), ``[...]`` is a character class, ``\\`` escapes; a path matches
when it or one of its parent folders does.  Patterns apply in order and a
``!pattern`` takes back what earlier ones matched, as in a ``.dockerignore``.
``~matcher`` inverts one (``~FilePatternMatcher("**/*.py")``: all but Python
files).  A matcher is a plain callable on ``Path``, so ``ignore=`` also takes
any function of a relative path.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Callable, Sequence
from pathlib import Path


def _regex(pattern: str) -> re.Pattern[str]:
    """One cleaned pattern as a regular expression over a '/'-separated relative path."""
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):  # '**/': any folders, or none
                i += 1
                out.append("(?:.*/)?")
            else:
                out.append(".*")
            continue
        if ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch in "[]":
            out.append(ch)
        elif ch == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(ch))
        i += 1
    try:
        return re.compile("".join(out) + r"\Z")
    except re.error as exc:
        raise ValueError(f"bad file pattern {pattern!r}: {exc}") from None


class _Pattern:
    def __init__(self, text: str) -> None:
        self.exclusion = text.startswith("!")
        cleaned = text[1:] if self.exclusion else text
        if not cleaned:
            raise ValueError('illegal exclusion pattern "!"')
        self.text = posixpath.normpath(cleaned.replace(os.sep, "/")).strip("/")
        self.regex = _regex(self.text)

    def matches(self, path: str) -> bool:
        """The path, or one of its parent folders, matches."""
        parts = path.split("/")
        return any(self.regex.match("/".join(parts[:n])) for n in range(len(parts), 0, -1))


class FilePatternMatcher:
    """True for a relative path that the patterns match (to leave out).

    >>> matcher = rc.FilePatternMatcher("**/*.pyc", "data/**", "!data/keep.csv")
    >>> matcher(Path("data/big.bin")), matcher(Path("data/keep.csv"))
    (True, False)
    """

    def __init__(self, *pattern: str) -> None:
        self._source: str | Path | None = None
        self._patterns: list[_Pattern] | None = None
        self._strings: Sequence[str] = pattern

    @classmethod
    def from_file(cls, file_path: str | Path) -> FilePatternMatcher:
        """The patterns of an ignore file (one per line, ``#`` comments), read when first used."""
        matcher = cls()
        matcher._source = file_path
        return matcher

    @property
    def patterns(self) -> list[_Pattern]:
        if self._patterns is None:
            lines = Path(self._source).read_text("utf8").splitlines() if self._source is not None else self._strings
            self._patterns = [_Pattern(s.strip()) for s in lines if s.strip() and not s.strip().startswith("#")]
        return self._patterns

    def can_prune_directories(self) -> bool:
        """Whether a matched folder can be skipped whole (no ``!`` pattern could take a file in it back)."""
        return not any(p.exclusion for p in self.patterns)

    def __call__(self, path: Path) -> bool:
        text = posixpath.normpath(Path(path).as_posix())
        if text == ".":
            return False
        matched = False
        for pattern in self.patterns:
            if pattern.exclusion == matched and pattern.matches(text):
                matched = not pattern.exclusion
        return matched

    def __invert__(self) -> Callable[[Path], bool]:
        return _Inverted(self)

    def __repr__(self) -> str:
        where = f".from_file({str(self._source)!r})" if self._source is not None else \
            f"({', '.join(map(repr, self._strings))})"
        return f"FilePatternMatcher{where}"


class _Inverted:
    """``~matcher``: true where the matcher is false."""

    def __init__(self, matcher: Callable[[Path], bool], name: str | None = None) -> None:
        self.matcher = matcher
        self.name = name

    def __call__(self, path: Path) -> bool:
        return not self.matcher(path)

    def __repr__(self) -> str:
        return self.name or f"~{self.matcher!r}"


# add_local_python_source's default: leave out everything but Python files.
NON_PYTHON_FILES = _Inverted(FilePatternMatcher("**/*.py"), "rc.NON_PYTHON_FILES")


def ignore_fn(ignore: Sequence[str] | Callable[[Path], bool]) -> Callable[[Path], bool]:
    """``ignore=`` of ``add_local_dir``/``add_local_python_source``: a callable as it is, patterns as a matcher."""
    if callable(ignore):
        return ignore
    if isinstance(ignore, str) or not all(isinstance(p, str) for p in ignore):
        raise TypeError(f"ignore={ignore!r} must be a list of file patterns (e.g. ['*.venv', '**/*.pyc']) "
                        "or a function of a relative Path that says True to leave it out")
    return FilePatternMatcher(*ignore)
