"""`python -m remotecell_runtime serve [--bind ADDR]... [--state-dir DIR]`: the daemon, in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from .auth import KeySetupError


def default_state_dir() -> Path:
    return Path(os.environ.get("REMOTECELL_HOME") or Path.home() / ".remotecell")


def serve(binds: list[str], state_dir: Path, log_level: str = "INFO") -> int:
    from .daemon import Daemon

    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(Daemon(state_dir.expanduser().resolve(), binds).serve_forever())
    except KeySetupError as exc:
        print(f"remotecell serve: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m remotecell_runtime")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="run the runtime daemon in the foreground")
    p.add_argument("--bind", action="append", default=[], help="ipc://PATH or tcp://HOST:PORT (repeatable)")
    p.add_argument("--state-dir", type=Path, default=default_state_dir())
    p.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    return serve(args.bind, args.state_dir, args.log_level)


if __name__ == "__main__":
    sys.exit(main())
