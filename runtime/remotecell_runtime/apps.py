"""The registry of apps: ephemeral ones live with their client session, deployed ones until stopped."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field


@dataclass
class App:
    app_id: str
    name: str
    sid: str  # the client session that created it
    mode: str  # "ephemeral" or "deployed"
    functions: dict[str, str] = field(default_factory=dict)  # function name -> current fid
    created_at: float = field(default_factory=time.time)

    def describe(self) -> dict[str, object]:
        return {"app_id": self.app_id, "name": self.name, "mode": self.mode,
                "functions": sorted(self.functions), "created_at": self.created_at}


class AppRegistry:
    def __init__(self) -> None:
        self.apps: dict[str, App] = {}

    def create(self, name: str, sid: str, mode: str) -> App:
        app = App(f"ap-{secrets.token_hex(6)}", name, sid, mode)
        self.apps[app.app_id] = app
        return app

    def get(self, app_id: str) -> App | None:
        return self.apps.get(app_id)

    def remove(self, app_id: str) -> App | None:
        return self.apps.pop(app_id, None)

    def ephemeral_of(self, sid: str) -> list[App]:
        return [a for a in self.apps.values() if a.sid == sid and a.mode == "ephemeral"]
