"""``REMOTECELL_PROFILE``: ``serve`` runs the daemon's loop under cProfile and writes the stats where it says."""

from __future__ import annotations

import asyncio
import pstats

from remotecell_runtime.__main__ import _run_profiled


async def _daemon_like() -> int:
    await asyncio.sleep(0)
    sum(range(1000))
    return 0


def test_the_loop_runs_under_cprofile_and_its_stats_are_written(tmp_path):
    path = tmp_path / "daemon.prof"
    assert _run_profiled(_daemon_like(), str(path)) == 0  # serve's exit code
    names = {func for _, _, func in pstats.Stats(str(path)).stats}  # type: ignore[attr-defined]
    assert "_daemon_like" in names


def test_without_a_path_nothing_is_profiled(tmp_path):
    _run_profiled(_daemon_like(), None)
    assert list(tmp_path.iterdir()) == []
