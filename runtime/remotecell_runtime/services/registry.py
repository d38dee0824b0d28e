"""The registry of apps: ephemeral ones live with their client session, deployed ones until stopped.

An ``AppEntry`` is the runtime's record of one app (not the client's ``App``):
its id, name, owning session and the current fid of each function name.
Deployed apps are unique by name and outlive their client and the runtime
itself: ``DeployStore`` keeps each one's id and function definitions (name,
options, what the client told about it, and the pickled body as opaque bytes)
in SQLite in the state dir, and ``Apps.restore_deployed`` registers them again
at start.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..protocol.framing import Payload
from ..storage import open_db, pack, unpack


@dataclass
class AppEntry:
    app_id: str
    name: str
    sid: str  # the client session that created it
    mode: str  # "ephemeral" or "deployed"
    functions: dict[str, str] = field(default_factory=dict)  # function name -> current fid
    created_at: float = field(default_factory=time.time)
    detached: bool = False  # an ephemeral app whose client left it its work: it stops once that is done

    def describe(self) -> dict[str, object]:
        return {"app_id": self.app_id, "name": self.name, "mode": self.mode,
                "functions": sorted(self.functions), "created_at": self.created_at}


class AppRegistry:
    def __init__(self) -> None:
        self.apps: dict[str, AppEntry] = {}

    def create(self, name: str, sid: str, mode: str, app_id: str | None = None,
               created_at: float | None = None) -> AppEntry:
        app = AppEntry(app_id or f"ap-{secrets.token_hex(6)}", name, sid, mode)
        if created_at is not None:
            app.created_at = created_at
        self.apps[app.app_id] = app
        return app

    def get(self, app_id: str) -> AppEntry | None:
        return self.apps.get(app_id)

    def remove(self, app_id: str) -> AppEntry | None:
        return self.apps.pop(app_id, None)

    def ephemeral_of(self, sid: str) -> list[AppEntry]:
        return [a for a in self.apps.values() if a.sid == sid and a.mode == "ephemeral"]

    def deployed(self, name: str) -> AppEntry | None:
        return next((a for a in self.apps.values() if a.mode == "deployed" and a.name == name), None)

    def deployed_names(self) -> list[str]:
        return sorted(a.name for a in self.apps.values() if a.mode == "deployed")


SCHEMA = """
CREATE TABLE IF NOT EXISTS apps (
    name TEXT PRIMARY KEY,
    app_id TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS functions (
    app_name TEXT NOT NULL,
    name TEXT NOT NULL,
    options TEXT NOT NULL,
    meta TEXT NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (app_name, name)
);
"""


@dataclass
class SavedFunction:
    name: str
    options: dict[str, Any]
    meta: dict[str, Any]
    body: Payload


@dataclass
class SavedApp:
    name: str
    app_id: str
    created_at: float
    functions: list[SavedFunction]


class DeployStore:
    """Deployed apps on disk (SQLite, WAL). Writes are rare (a deploy, a stop): each commits at once."""

    def __init__(self, path: Path) -> None:
        path.touch(mode=0o600)  # definitions may hold secret values (rc.Secret.from_dict options)
        path.chmod(0o600)
        self.db = open_db(path, SCHEMA)

    def save_app(self, app: AppEntry) -> None:
        self.db.execute("INSERT OR REPLACE INTO apps (name, app_id, created_at) VALUES (?, ?, ?)",
                        (app.name, app.app_id, app.created_at))

    def save_function(self, app_name: str, fn: SavedFunction) -> None:
        self.db.execute("INSERT OR REPLACE INTO functions (app_name, name, options, meta, body) VALUES (?, ?, ?, ?, ?)",
                        (app_name, fn.name, json.dumps(fn.options), json.dumps(fn.meta), pack(fn.body.frames)))

    def drop_function(self, app_name: str, name: str) -> None:
        self.db.execute("DELETE FROM functions WHERE app_name = ? AND name = ?", (app_name, name))

    def drop_app(self, name: str) -> None:
        self.db.execute("BEGIN")
        self.db.execute("DELETE FROM functions WHERE app_name = ?", (name,))
        self.db.execute("DELETE FROM apps WHERE name = ?", (name,))
        self.db.execute("COMMIT")

    def load(self) -> list[SavedApp]:
        apps = {name: SavedApp(name, app_id, created_at, []) for name, app_id, created_at
                in self.db.execute("SELECT name, app_id, created_at FROM apps")}
        for app_name, name, options, meta, body in self.db.execute(
                "SELECT app_name, name, options, meta, body FROM functions ORDER BY app_name, name"):
            if app_name in apps:
                frames = [bytes(f) for f in unpack(body)]
                apps[app_name].functions.append(SavedFunction(name, json.loads(options), json.loads(meta),
                                                              Payload(list(frames))))
        return list(apps.values())

    def close(self) -> None:
        self.db.close()
