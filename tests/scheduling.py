"""A deployed app with a scheduled function, for the schedule tests of every layer."""

from __future__ import annotations

import time
from pathlib import Path

from conftest import cli

SCHEDULED = '''
import os, time
import remotecell as rc

app = rc.App({name!r})

@app.function(schedule={schedule})
def tick(gate={gate!r}):
    print("tick at", time.time())
    while gate and not os.path.exists(gate):
        time.sleep(0.01)
    return "ticked"
'''


def deploy_scheduled(tmp_path: Path, name: str, schedule: str = "rc.Period(seconds=1)", gate: str = "",
                     env: dict[str, str] | None = None) -> None:
    path = tmp_path / f"sched_{name.replace('-', '_')}_{time.monotonic_ns()}.py"
    path.write_text(SCHEDULED.format(name=name, schedule=schedule, gate=gate))
    done = cli("deploy", str(path), env=env)
    assert done.returncode == 0, done.stderr
