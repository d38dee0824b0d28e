"""The `remotecell` command.

    remotecell serve [--bind ADDR]... [--state-dir DIR]   run the runtime in the foreground
    remotecell serve --backend ray [--ray-address ADDR]  ... with its containers as actors on a Ray cluster
    remotecell serve FILE.py                             serve the file's web endpoints; run again on each edit
    remotecell status                                    what the runtime is doing
    remotecell deploy FILE.py [--name NAME]              deploy the file's app (it stays until stopped)
    remotecell app list | app stop NAME                  the deployed apps; stop one
    remotecell app logs NAME [--follow]                  what an app's inputs printed
    remotecell schedule list [APP] | pause|resume|run APP FUNCTION   schedules of deployed functions
    remotecell run [-m] [--detach] FILE.py[::NAME] [--ARG VALUE]...  run an entrypoint, function or Class.method
    remotecell shell [-m] FILE.py[::NAME] [--cmd CMD]    a shell (or one command) in a container of NAME's image
    remotecell stop                                      stop the local runtime
    remotecell token new|list|revoke [NAME]              client keys for tcp:// listeners
    remotecell secret create|list|delete [NAME] [K=V]... named secrets on the runtime host
    remotecell web-token new|list|revoke [NAME] [--json] proxy auth tokens of web endpoints
    remotecell volume create|list|delete NAME             named volumes (Modal's `modal volume`)
    remotecell volume ls NAME [PATH] | put NAME LOCAL [REMOTE] | get NAME REMOTE [LOCAL]
    remotecell volume rm NAME PATH [-r] | cp NAME SRC... DST [-r]   a volume's files
    remotecell image list | prune [--older-than 7d] [--dry-run]   built images; remove those not used lately
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import inspect
import json
import os
import sys
import time

from remotecell_runtime.protocol.messages.apps import AppLogsMsg, AppLogsReply
from remotecell_runtime.protocol.messages.session import EmptyReply, ShutdownMsg
from remotecell_runtime.protocol.versions import versions

from . import _client, _entry, _image_cli, _local, _volume_cli, exceptions, output
from .app import App
from .schedules import Schedule, list_schedules
from .status import status

RUNTIME_COMMANDS = ("serve", "token", "secret", "web-token")


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
    _client.connection().ask(ShutdownMsg(), EmptyReply)
    _client.reset_connection()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if not _local._alive(info.pid):
            print(f"stopped the local runtime (pid {info.pid})")
            return 0
        time.sleep(0.05)
    print(f"the runtime (pid {info.pid}) did not stop within 15 s", file=sys.stderr)
    return 1


def cmd_deploy(args: argparse.Namespace) -> int:
    app = _entry.find_app(_entry.load_file(args.file), args.file)
    app_id = app.deploy(name=args.name)
    print(f"deployed app {app.name!r} ({app_id}): {', '.join(sorted(app.functions)) or 'no functions'}")
    print(f"call it from anywhere: rc.Function.from_name({app.name!r}, NAME); stop it: remotecell app stop {app.name}")
    return 0


def cmd_app(args: argparse.Namespace) -> int:
    if args.action == "logs":
        return cmd_app_logs(args)
    if args.action == "stop":
        App.stop_deployed(args.name)
        print(f"stopped deployed app {args.name!r}")
        return 0
    apps = App.list_deployed()
    if args.json:
        print(json.dumps(apps, indent=2))
    for a in [] if args.json else apps:
        since = datetime.datetime.fromtimestamp(a["created_at"]).strftime("%Y-%m-%d %H:%M:%S")
        print(f"{a['name']}\t{a['app_id']}\tdeployed {since}\t{', '.join(a['functions'])}")
    if not apps and not args.json:
        print("no deployed apps")
    return 0


def cmd_schedule(args: argparse.Namespace) -> int:
    if args.action == "list":
        found = list_schedules(args.app)
        if args.json:
            print(json.dumps([s.state for s in found], indent=2))
        for schedule in [] if args.json else found:
            print(schedule.text())
        if not found and not args.json:
            print("no schedules" + (f" in deployed app {args.app!r}" if args.app else ""))
        return 0
    schedule = Schedule(args.app, args.function, {})
    if args.action == "run":
        call = schedule.run_now()
        print(f"started {call.object_id}; its result: rc.FunctionCall.from_id({call.object_id!r}).get()")
        return 0
    (schedule.pause if args.action == "pause" else schedule.resume)()
    print(schedule.text())
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    path, _, wanted = args.target.partition("::")
    app = _entry.find_app(_entry.load_module(path) if args.module else _entry.load_file(path), path)
    target = _entry.find_entrypoint(app, path, wanted or None)
    kwargs = _entry.parse_arguments(target.signature, args.args, prog=f"remotecell run {args.target}")
    with output.enable_output(), app.run(detach=args.detach):  # all of the app's output, prefixed by whose
        result = target.call(**kwargs)
        if inspect.iscoroutine(result):
            result = asyncio.run(result)
        if args.detach:
            print(f"remotecell run: app {app.name!r} detached: its work goes on after this exits; "
                  f"its output: remotecell app logs {app.name} --follow", file=sys.stderr)
    if args.write_result is not None:
        if not isinstance(result, (str, bytes)):
            print(f"remotecell run: --write-result needs a str or bytes result, {target.name} returned "
                  f"{type(result).__name__}", file=sys.stderr)
            return 1
        with open(args.write_result, "wb" if isinstance(result, bytes) else "w") as out:
            out.write(result)
    return 0


def cmd_app_logs(args: argparse.Namespace) -> int:
    """``remotecell app logs NAME [--follow]``: what the app's inputs printed, each line after its function."""
    conn, after = _client.connection(), 0
    while True:
        reply = conn.ask(AppLogsMsg(app=args.name, after=after, wait_s=20.0 if args.follow else 0.0), AppLogsReply,
                         timeout_s=90.0)
        for function, text, *_ in reply.entries:
            sys.stdout.write("".join(f"[{function}] {line}" for line in text.splitlines(keepends=True)))
            if not text.endswith("\n"):
                sys.stdout.write("\n")
        sys.stdout.flush()
        after = reply.next
        if not args.follow or not reply.live:
            return 0


def cmd_shell(args: argparse.Namespace) -> int:
    from ._shell import cmd_shell as shell  # the sandbox client only for this command

    return shell(args.target, args.cmd, args.timeout, module=args.module, pty=args.pty)


COMMANDS = {"status": cmd_status, "stop": cmd_stop, "deploy": cmd_deploy, "app": cmd_app, "run": cmd_run,
            "schedule": cmd_schedule, "volume": _volume_cli.cmd_volume, "image": _image_cli.cmd_image,
            "shell": cmd_shell}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 2 and argv[0] == "serve" and argv[1].endswith(".py"):  # the dev loop, not the daemon
        from ._serve import serve_file

        return serve_file(argv[1])
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
    deploy = sub.add_parser("deploy", help="deploy a file's app: it stays on the runtime until stopped")
    deploy.add_argument("file", help="a .py file that declares one rc.App")
    deploy.add_argument("--name", help="deploy under this name instead of the app's own")
    app = sub.add_parser("app", help="deployed apps: list, stop NAME")
    app_sub = app.add_subparsers(dest="action", required=True)
    app_list = app_sub.add_parser("list", help="the deployed apps")
    app_list.add_argument("--json", action="store_true")
    app_sub.add_parser("stop", help="stop a deployed app").add_argument("name")
    app_logs = app_sub.add_parser("logs", help="what an app's inputs printed (a running or recently stopped app)")
    app_logs.add_argument("name", help="the app's name or id")
    app_logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines while the app runs")
    schedule = sub.add_parser("schedule", help="schedules of deployed functions: list, pause, resume, run")
    schedule_sub = schedule.add_subparsers(dest="action", required=True)
    schedule_list = schedule_sub.add_parser("list", help="the schedules (of one deployed app, or all)")
    schedule_list.add_argument("app", nargs="?")
    schedule_list.add_argument("--json", action="store_true")
    for action, help_text in (("pause", "stop firing until resumed"), ("resume", "fire again, from now"),
                              ("run", "run it now, whatever its slots")):
        one = schedule_sub.add_parser(action, help=help_text)
        one.add_argument("app")
        one.add_argument("function")
    _volume_cli.add_parser(sub)
    _image_cli.add_parser(sub)
    run = sub.add_parser("run", help="run a file's app (ephemeral) and call its entrypoint or a function")
    run.add_argument("target", help="FILE.py[::NAME] (NAME: a local entrypoint, a function or Class.method), "
                                    "or with -m, package.module[::NAME]")
    run.add_argument("-m", dest="module", action="store_true", help="TARGET is a module name, not a file")
    run.add_argument("-d", "--detach", action="store_true",
                     help="leave the app its spawned work when this exits (it stops once that is done)")
    run.add_argument("-w", "--write-result", metavar="PATH", help="write the result (str or bytes) to PATH")
    run.add_argument("args", nargs=argparse.REMAINDER, help="the entrypoint's arguments: --NAME VALUE ...")
    shell = sub.add_parser("shell", help="an interactive shell, or one command, in a container of a function's image")
    shell.add_argument("target", help="FILE.py[::NAME] (NAME: a function or class), or with -m, package.module[::NAME]")
    shell.add_argument("-m", dest="module", action="store_true", help="TARGET is a module name, not a file")
    shell.add_argument("--cmd", help="run this command (through sh -c) instead of an interactive shell")
    shell.add_argument("--timeout", type=int, default=3600, help="end the container after this many seconds")
    shell.add_argument("--pty", action=argparse.BooleanOptionalAction, default=None,
                       help="run it on a pseudo-terminal (the default when stdin is a terminal)")
    args = parser.parse_args(argv)
    try:
        command = COMMANDS.get(args.command)
        if command is not None:
            return command(args)
        print(json.dumps(versions()))
        return 0
    except (exceptions.Error, OSError) as exc:  # OSError: a local file (volume put/get) is not there, say
        print(f"remotecell {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
