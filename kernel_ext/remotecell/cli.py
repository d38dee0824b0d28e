"""The `remotecell` command.

    remotecell serve [--bind ADDR]... [--state-dir DIR]   run the runtime in the foreground
    remotecell status                                    what the runtime is doing
    remotecell stop                                      stop the local runtime
    remotecell token new|list|revoke [NAME]              client keys for tcp:// listeners
    remotecell secret create|list|delete [NAME] [K=V]... named secrets on the runtime host
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from . import _client, _local, exceptions
from .status import status

RUNTIME_COMMANDS = ("serve", "token", "secret")


def _forward_to_runtime(argv: list[str]) -> int:
    # The runtime-host commands live in remotecell_runtime; exec keeps this package
    # free of runtime imports (the runtime imports remotecell, never the reverse).
    os.execv(sys.executable, [sys.executable, "-m", "remotecell_runtime", *argv])
    return 0  # not reached


def cmd_status(args: argparse.Namespace) -> int:
    if not os.environ.get("REMOTECELL_RUNTIME") and _local.local_info() is None:
        print(f"no local runtime is running (state in {_local.home()}); it starts on first use")
        return 1
    current = status()
    print(json.dumps(current, indent=2) if args.json else repr(current))
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    info = _local.local_info()
    if info is None:
        print("no local runtime is running")
        return 0
    _client.connection().request({"t": "shutdown"})
    _client.reset_connection()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if not _local._alive(info.pid):
            print(f"stopped the local runtime (pid {info.pid})")
            return 0
        time.sleep(0.05)
    print(f"the runtime (pid {info.pid}) did not stop within 15 s", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in RUNTIME_COMMANDS:
        return _forward_to_runtime(argv)
    parser = argparse.ArgumentParser(prog="remotecell", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in RUNTIME_COMMANDS:
        sub.add_parser(name, help=f"see `remotecell {name} --help`", add_help=False)
    status = sub.add_parser("status", help="what the runtime is doing")
    status.add_argument("--json", action="store_true")
    sub.add_parser("stop", help="stop the local runtime")
    sub.add_parser("version", help="print versions")
    args = parser.parse_args(argv)
    try:
        if args.command == "status":
            return cmd_status(args)
        if args.command == "stop":
            return cmd_stop(args)
        print(json.dumps(_client.client_versions()))
        return 0
    except exceptions.Error as exc:
        print(f"remotecell {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
