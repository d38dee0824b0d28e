"""What ``f.batch_stats()`` returns: the runtime's batching stats as a dict, shown as a short report.

A plain ``dict`` underneath (index it, compare it, ``json.dumps`` it); its
``repr`` is a few readable lines, and in a notebook it is a small live view
(``widgets/batching.py``, imported only when IPython displays it).  This module
imports nothing of IPython, so it works where IPython is not installed.

>>> stats = embed.batch_stats()
>>> stats["batches"], stats["sizes"]
(63, {16: 1, 32: 62})
>>> stats                       # outside a notebook: the report below
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

from . import _views

SIZE_ROWS = 8  # the histogram of batch sizes shows at most this many rows (ranges when sizes vary more)
BAR_WIDTH = 24  # characters of the longest text bar


class BatchStats(dict[str, Any]):
    """How the runtime batched one ``@rc.batched`` function: a dict with a readable repr.

    ``function`` names it; ``fetch`` asks the runtime again (what a live view
    calls), None for a copy that came through pickle.

    >>> embed.batch_stats()
    embed: 63 batches, 2,000 items, 10,230.5 items/s
      mean batch 31.7 of max_batch_size 64 (wait_ms 5); closed: 62 full, 1 waited
      queue wait: mean 4.1 ms, p99 9.8 ms
      batch sizes:
        16 | █                         1
        32 | ████████████████████████ 62
    """

    def __init__(self, stats: dict[str, Any], function: str = "",
                 fetch: Callable[[], BatchStats] | None = None) -> None:
        super().__init__(stats)
        self.function = function
        self.fetch = fetch

    def __reduce__(self) -> tuple[Any, ...]:
        # The fetch callable holds the Function (and its connection): a copy is a snapshot only.
        return (BatchStats, (dict(self), self.function))

    def __repr__(self) -> str:
        return "\n".join(self.lines())

    def _ipython_display_(self) -> None:
        """In a notebook: a live view of these numbers; elsewhere the report."""
        _views.show(self)

    def lines(self) -> list[str]:
        """The report, line by line (also the text view in a notebook without ipywidgets)."""
        name = self.function or "batched function"
        if not self.get("batches"):
            return [f"{name}: no batches yet; {limits(self)}"]
        lines = [f"{name}: {summary(self)}",
                 f"  mean batch {number(self.get('mean_batch_size'))} of {limits(self)}; closed: {closes(self)}",
                 f"  queue wait: {waits(self)}",
                 *([f"  recent batch sizes, oldest first: {trend}"] if (trend := sparkline(self)) else []),
                 "  batch sizes:"]
        rows = size_rows(self.get("sizes") or {}, self.get("max_batch_size"))
        label_width = max(len(label) for label, _ in rows)
        count_width = max(len(f"{n:,}") for _, n in rows)
        most = max(n for _, n in rows)
        for label, n in rows:
            bar = "█" * bar_length(n, most, BAR_WIDTH)
            lines.append(f"    {label:>{label_width}} | {bar:<{BAR_WIDTH}} {n:>{count_width},}")
        return lines


# -- pieces of the report, shared with the notebook view --------------------------------------------


def number(value: float | None, digits: int = 1) -> str:
    """``1,234.5``; ``-`` for a value the runtime does not know yet (None)."""
    return "-" if value is None else f"{value:,.{digits}f}"


def limits(stats: dict[str, Any]) -> str:
    """``max_batch_size 64 (wait_ms 5)``."""
    return f"max_batch_size {stats.get('max_batch_size', '?')} (wait_ms {stats.get('wait_ms', '?')})"


def summary(stats: dict[str, Any]) -> str:
    """``63 batches, 2,000 items, 10,230.5 items/s``; the rate is ``-`` until two batches closed within 60 s."""
    return (f"{counted(stats.get('batches', 0), 'batch', 'batches')}, {counted(stats.get('items', 0), 'item')}, "
            f"{number(stats.get('items_per_s'))} items/s")


def counted(n: int, one: str, many: str = "") -> str:
    """``1 batch``, ``2,000 items``."""
    return f"{n:,} {one if n == 1 else many or one + 's'}"


def closes(stats: dict[str, Any]) -> str:
    """``62 full, 1 waited``: why batches closed."""
    closed = stats.get("closed") or {}
    return f"{closed.get('full', 0):,} full, {closed.get('waited', 0):,} waited"


def waits(stats: dict[str, Any]) -> str:
    """``mean 4.1 ms, p99 9.8 ms``: each input's time in the queue."""
    return f"mean {number(stats.get('wait_ms_mean'))} ms, p99 {number(stats.get('wait_ms_p99'))} ms"


SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(stats: dict[str, Any]) -> str:
    """The sizes of the last batches (``recent``, oldest first) as block characters of ``max_batch_size``.

    >>> sparkline({"max_batch_size": 8, "recent": [{"size": 1}, {"size": 4}, {"size": 8}]})
    '▁▄█'
    """
    top = max(stats.get("max_batch_size") or 1, 1)
    sizes = [int(b.get("size", 0)) for b in reversed(_by_age(stats.get("recent") or []))]
    return "".join(SPARKS[min(len(SPARKS) - 1, max(0, round(n / top * len(SPARKS)) - 1))] for n in sizes)


def _by_age(recent: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Newest first (the runtime sends them oldest first; ``closed_s_ago`` decides when given)."""
    if all("closed_s_ago" in b for b in recent):
        return sorted(recent, key=lambda b: b["closed_s_ago"])
    return list(reversed(recent))


def bar_length(n: int, most: int, width: int) -> int:
    """How long ``n``'s bar is when ``most`` gets ``width``; at least 1 for any n > 0, so none vanishes."""
    return 0 if n <= 0 or most <= 0 else max(1, round(width * n / most))


def size_rows(sizes: dict[int, int], max_batch_size: int | None = None,
              rows: int = SIZE_ROWS) -> list[tuple[str, int]]:
    """The histogram of batch sizes in at most ``rows`` rows: one per size when few, else equal ranges.

    Ranges cover 1 to ``max_batch_size`` (empty ones included, so the shape shows).

    >>> size_rows({16: 1, 32: 62}, 64)
    [('16', 1), ('32', 62)]
    >>> size_rows({s: 1 for s in range(1, 65)}, 64, rows=4)
    [('1-16', 16), ('17-32', 16), ('33-48', 16), ('49-64', 16)]
    """
    if len(sizes) <= rows:
        return [(str(size), n) for size, n in sorted(sizes.items())]
    top = max(max(sizes), max_batch_size or 0)
    width = -(-top // rows)
    counts: collections.Counter[int] = collections.Counter()
    for size, n in sizes.items():
        counts[(size - 1) // width] += n
    return [(f"{b * width + 1}-{min(top, (b + 1) * width)}", counts[b]) for b in range(-(-top // width))]
