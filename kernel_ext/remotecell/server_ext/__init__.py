"""The Jupyter server extension: a REST API over the runtime, read by the JupyterLab side panel.

Installing remotecell enables it (``etc/jupyter/jupyter_server_config.d/remotecell.json``);
``jupyter lab`` then serves, under ``/remotecell/api/``::

    GET  status                what the runtime is doing: apps, functions (pools), GPUs, stores
    GET  calls?limit=50        the latest spawned calls, newest first, with their states
    GET  calls/<id>            one call's state
    GET  calls/<id>/logs       what it printed
    POST calls/<id>/cancel     stop it
    GET  stores                Dicts and Queues: names and sizes
    GET  images                the images the runtime built: description, layers, last use, live
    GET  functions/<app>/<function>/logs?after=N   what the function printed after the app's entry N
    GET  schedules             deployed functions' schedules: next run, paused, last run
    POST schedules/<app>/<function>/pause|resume|run

>>> requests.get(f"{url}/remotecell/api/status", headers={"Authorization": f"token {token}"}).json()["pools"]
[{'function': 'square', 'containers': {'idle': 1}, 'queued': 0, 'running': 0, ...}]

The server never starts a runtime: with none running, every endpoint answers 503.
"""

from __future__ import annotations

from typing import Any

from .handlers import setup_handlers


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "remotecell.server_ext"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    setup_handlers(serverapp.web_app)
    serverapp.log.info("remotecell: the side panel's API is served at %sremotecell/api/", serverapp.base_url)
