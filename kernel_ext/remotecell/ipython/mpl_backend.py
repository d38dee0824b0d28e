"""A matplotlib backend for ``%%remote`` sessions: ``plt.show()`` sends the figures to the notebook cell.

The session's container selects it with ``MPLBACKEND=module://remotecell.ipython.mpl_backend``;
figures render with Agg and travel as PNG mime bundles, then close (as the
notebook's inline backend does).
"""

from __future__ import annotations

from typing import Any

from matplotlib._pylab_helpers import Gcf
from matplotlib.backend_bases import FigureManagerBase
from matplotlib.backends.backend_agg import FigureCanvasAgg

from .worker import display

FigureCanvas = FigureCanvasAgg
FigureManager = FigureManagerBase


def show(*args: Any, **kwargs: Any) -> None:
    """Display every open figure in the cell, then close them."""
    for manager in Gcf.get_all_fig_managers():
        display(manager.canvas.figure)
    Gcf.destroy_all()
