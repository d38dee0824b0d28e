"""The IPython extension: ``%load_ext remotecell``.

It registers ``%%remote``, ``%remote_session`` and ``%remote_stop`` and the
notebook views (the map progress widget).  Nothing connects until the first
remote call or cell: then the configured runtime (``REMOTECELL_RUNTIME``) or
the local one is used.

This package's ``worker`` and ``mpl_backend`` modules run inside containers,
so this file must not import IPython at module level.
"""

from __future__ import annotations

from typing import Any


def load_ipython_extension(shell: Any) -> None:
    from .. import _progress
    from ..widgets.progress import progress_view
    from .magics import RemoteMagics

    shell.register_magics(RemoteMagics(shell))
    _progress.set_notebook_view(progress_view)


def unload_ipython_extension(shell: Any) -> None:
    from .. import _progress

    _progress.set_notebook_view(None)
