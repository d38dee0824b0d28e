"""Retry only the failed inputs of a map: ``f.retry_failed(results)``.

A map with ``return_exceptions=True`` returns each failure as its exception;
the exception remembers the input that raised it (``FailedInput``, on the
exception as ``__remotecell_input__``), so a plain ``list`` of a map's results
is all a retry needs: the positions holding a remembered failure are run again
(one map, in order) and the new outcomes merged into a copy of the list in the
same positions. Values, and exceptions a function returned rather than raised,
are left as they are. A retry's own failures remember their inputs too, so a
retry can be retried. The map widget's "Retry failed" button records what its
rerun got on each failure (``retried``); ``retry_failed`` takes that outcome
rather than running the input again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

from .exceptions import InvalidError

ATTRIBUTE = "__remotecell_input__"
_NOT_YET = object()


@dataclasses.dataclass(eq=False)
class FailedInput:
    """The input of one failed map call: which function, its arguments, and what a later rerun got."""

    function: str
    args: tuple
    kwargs: dict[str, Any]
    retried: Any = _NOT_YET  # the outcome of the widget's rerun, once it ran

    @property
    def has_retry(self) -> bool:
        return self.retried is not _NOT_YET


def remember(exc: BaseException, function: str, args: Sequence[Any], kwargs: dict[str, Any]) -> None:
    """Mark ``exc`` (a map's returned failure) with the input that raised it."""
    try:
        setattr(exc, ATTRIBUTE, FailedInput(function, tuple(args), kwargs))
    except (AttributeError, TypeError):  # an exception class that takes no attributes: not retryable
        pass


def failed_input(value: Any) -> FailedInput | None:
    """The remembered input of a map's failure, or None for anything else."""
    if not isinstance(value, BaseException):
        return None
    found = getattr(value, ATTRIBUTE, None)
    return found if isinstance(found, FailedInput) else None


def latest(value: Any) -> Any:
    """``value``, or what the reruns of its input last came to (a button's rerun, then its own, ...)."""
    seen = 0
    while (failed := failed_input(value)) is not None and failed.has_retry and seen < 10_000:
        value, seen = failed.retried, seen + 1
    return value


def plan(function: str, results: Iterable[Any]) -> tuple[list[Any], list[tuple[int, FailedInput]]]:
    """The results with earlier reruns merged in, and the positions still to run again.

    >>> merged, todo = plan("f", [1, ValueError("no input remembered")])
    >>> todo
    []
    """
    if isinstance(results, (str, bytes, dict)) or not isinstance(results, Iterable):
        raise InvalidError(f"retry_failed takes the list of a map's results (map(..., return_exceptions=True)), "
                           f"not {type(results).__name__}")
    merged = [latest(value) for value in results]
    todo = []
    for position, value in enumerate(merged):
        failed = failed_input(value)
        if failed is None:
            continue
        if failed.function != function:
            raise InvalidError(f"result {position} failed in {failed.function}, not {function}: retry it with "
                               f"{failed.function}.retry_failed(results)")
        todo.append((position, failed))
    return merged, todo


def by_kwargs(todo: list[tuple[int, FailedInput]]) -> list[list[tuple[int, FailedInput]]]:
    """The failures in groups that share one ``kwargs`` (each map had one), so each group is one map."""
    groups: dict[int, list[tuple[int, FailedInput]]] = {}
    for position, failed in todo:
        groups.setdefault(id(failed.kwargs), []).append((position, failed))
    return list(groups.values())
