"""`python -m remotecell_runtime serve [--bind ADDR]... [--state-dir DIR] [--backend ray] ...`: the daemon.

Also the runtime host's own commands: `token new|list|revoke` and `secret create|list|delete`.

A debugging aid: with ``REMOTECELL_PROFILE=PATH`` in its environment, ``serve`` runs the daemon's
event loop under cProfile and writes the stats to PATH when it stops (read them with ``pstats``).
It counts the CPU time of the loop's thread (``time.thread_time``), not the wall clock: on a busy
host a wall clock would charge a ``send`` with the time the woken peer ran; the job store's
checkpoint thread and ZeroMQ's I/O thread are not in it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

from .backends.choice import BackendChoice, BackendChoiceError

SHARE_ENV = "REMOTECELL_SHARE"  # more --share folders, separated by ":"


def default_state_dir() -> Path:
    return Path(os.environ.get("REMOTECELL_HOME") or Path.home() / ".remotecell")


def serve(binds: list[str], state_dir: Path, log_level: str = "INFO", retention_s: float | None = None,
          shares: Sequence[str] = (), on_demand: bool = False, web_bind: str | None = None,
          web_max_body: int | None = None, web_public: bool = False, backend: BackendChoice | None = None) -> int:
    """Run the daemon; ``shares`` (with those of ``REMOTECELL_SHARE``): folders every container sees;
    ``backend``: where its containers run (local processes unless it says ``ray``)."""
    from .backends.sandbox import ShareRefused, checked_shares

    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    state_dir = state_dir.expanduser().resolve()
    try:
        shared = checked_shares([*shares, *filter(None, os.environ.get(SHARE_ENV, "").split(os.pathsep))],
                                str(state_dir))
    except ShareRefused as exc:
        print(f"remotecell serve: {exc}", file=sys.stderr)
        return 2

    async def main() -> int:
        spares = None
        if (backend or BackendChoice()).name == "local":  # warm containers first: they start as the daemon loads
            from .backends.spares import Spares

            for folder in (state_dir, state_dir / "sock"):  # private, as the daemon makes them (auth imports zmq)
                folder.mkdir(mode=0o700, parents=True, exist_ok=True)
                folder.chmod(0o700)
            spares = await Spares.begin(str(state_dir / "sock"), state_dir, shared)
        from .auth import KeySetupError
        from .daemon import Daemon, StateBusy
        from .services.jobs import RETENTION_S
        from .services.web import WebBindError

        retention = retention_s if retention_s is not None else \
            float(os.environ.get("REMOTECELL_RESULT_RETENTION_S", RETENTION_S))
        try:
            daemon = Daemon(state_dir, binds, retention, shared, on_demand, web_bind, web_max_body, web_public,
                            backend, spares)
            await daemon.serve_forever()
        except (KeySetupError, StateBusy, WebBindError) as exc:
            print(f"remotecell serve: {exc}", file=sys.stderr)
            return 2
        finally:
            if spares is not None:  # also when the daemon never started (its backend closes them otherwise)
                spares.close()
                await spares.wait_closed()
        return 0

    return _run_profiled(main(), os.environ.get("REMOTECELL_PROFILE"))


def _run_profiled(main: Coroutine[Any, Any, int], profile_path: str | None) -> int:
    """``asyncio.run(main)``; under cProfile, its stats written to ``profile_path``, when one is given."""
    if not profile_path:
        return asyncio.run(main)
    import cProfile

    profile = cProfile.Profile(time.thread_time)
    try:
        return int(profile.runcall(asyncio.run, main))
    finally:
        profile.dump_stats(profile_path)


def token(action: str, name: str | None, state_dir: Path, address: str | None, out: Path | None) -> int:
    """`token new NAME` writes a client connection file; `list` and `revoke NAME` manage them."""
    from . import auth
    from .auth import KeySetupError

    state_dir = state_dir.expanduser().resolve()
    try:
        if action == "list":
            for token_name in auth.list_tokens(state_dir):
                print(token_name)
            return 0
        if not name:
            print(f"remotecell token {action}: give the token's NAME", file=sys.stderr)
            return 2
        if action == "revoke":
            auth.revoke_token(state_dir, name)
            print(f"revoked {name}; the runtime refuses it from now on")
            return 0
        info = auth.new_token(state_dir, name, address)
        target = (out or state_dir / "tokens" / f"{name}.json").expanduser()
        auth.ensure_private_dir(target.parent)
        auth.write_private_json(target, info)
        print(f"wrote {target} (mode 600); on the client: export REMOTECELL_RUNTIME={target}")
        if not address:
            print("note: no --address given; put the runtime's tcp://HOST:PORT into the file's \"address\"")
        return 0
    except KeySetupError as exc:
        print(f"remotecell token {action}: {exc}", file=sys.stderr)
        return 2


def web_token(action: str, name: str | None, state_dir: Path, as_json: bool) -> int:
    """`web-token new NAME [--json]` prints a key and its secret (once); `list`; `revoke NAME`."""
    from . import web_tokens
    from .auth import KeySetupError

    state_dir = state_dir.expanduser().resolve()
    try:
        if action == "list":
            for t in web_tokens.names(state_dir):
                print(f"{t['name']}\t{t['key']}")
            return 0
        if not name:
            raise web_tokens.WebTokenError("give the token's NAME")
        if action == "revoke":
            web_tokens.revoke(state_dir, name)
            print(f"revoked web token {name}; the gateway refuses it from the next request on")
            return 0
        made = web_tokens.new(state_dir, name)
        if as_json:
            print(json.dumps({"key": made["key"], "secret": made["secret"]}))
        else:
            print(f"Modal-Key: {made['key']}\nModal-Secret: {made['secret']}\n(the secret is shown only now)")
        return 0
    except (web_tokens.WebTokenError, KeySetupError) as exc:
        print(f"remotecell web-token {action}: {exc}", file=sys.stderr)
        return 2


def secret(action: str, name: str | None, pairs: list[str], state_dir: Path, force: bool,
           from_dotenv: Path | None = None, from_json: Path | None = None, as_json: bool = False) -> int:
    """`secret create NAME [KEY=VALUE...] [--from-dotenv PATH] [--from-json PATH]`, `secret list [--json]`,
    `secret delete NAME` (values are never printed)."""
    from . import vault
    from .auth import KeySetupError

    state_dir = state_dir.expanduser().resolve()
    try:
        if action == "list":
            found = vault.names(state_dir)
            if as_json:
                print(json.dumps([{"name": n, "created_at": vault.created_at(state_dir, n)} for n in found]))
            for secret_name in [] if as_json else found:
                print(secret_name)
            return 0
        if not name:
            raise vault.SecretError("give the secret's NAME")
        if action == "delete":
            vault.delete(state_dir, name)
            print(f"deleted secret {name}; functions registered from now on cannot use it")
            return 0
        values = vault.read_files(from_dotenv, from_json)
        values.update(vault.parse_assignments(pairs, allow_none=bool(values)))
        path = vault.create(state_dir, name, values, force)
        print(f"wrote {path} (mode 600); use it with rc.Secret.from_name({name!r})")
        return 0
    except (vault.SecretError, KeySetupError) as exc:
        print(f"remotecell secret {action}: {exc}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m remotecell_runtime")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="run the runtime daemon in the foreground")
    p.add_argument("--bind", action="append", default=[], help="ipc://PATH or tcp://HOST:PORT (repeatable)")
    p.add_argument("--state-dir", type=Path, default=default_state_dir())
    p.add_argument("--log-level", default="INFO")
    p.add_argument("--result-retention-s", type=float, default=None,
                   help="how long spawned calls' results are kept (default 7 days; env REMOTECELL_RESULT_RETENTION_S)")
    p.add_argument("--share", action="append", default=[], metavar="PATH",
                   help="a host folder every container sees read-write at the same path (repeatable; env "
                        "REMOTECELL_SHARE=PATH[:PATH...]); never one that holds or lies in the state folder")
    p.add_argument("--on-demand", action="store_true",
                   help="started by a client on first use (what clients do): clients start it again after a crash")
    p.add_argument("--web-bind", default=None, metavar="HOST:PORT",
                   help="where the web gateway serves HTTP endpoints (default 127.0.0.1:8190, or a free port when "
                        "that one is taken; port 0: any free port)")
    p.add_argument("--web-max-body", type=int, default=None, metavar="BYTES",
                   help="the largest request body the web gateway takes (default 100 MiB); larger ones get 413")
    p.add_argument("--web-public", action="store_true",
                   help="with --web-bind beyond loopback: endpoints without requires_proxy_auth answer anyone "
                        "(without it they answer 401 to requests without a web token)")
    p.add_argument("--backend", default=None, choices=["local", "ray"],
                   help="where containers run: local processes (default), or Ray actors on a Ray cluster "
                        "(env REMOTECELL_BACKEND; needs `pip install 'remotecell[ray]'`)")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="with --backend ray: the Ray cluster to join (env RAY_ADDRESS; default: a local Ray "
                        "started for the runtime)")
    p.add_argument("--container-bind", default=None, metavar="tcp://HOST:PORT",
                   help="with --backend ray: where containers on the nodes connect back to (env "
                        "REMOTECELL_CONTAINER_BIND; default tcp://127.0.0.1:*, nodes on this host only)")
    p.add_argument("--container-address", default=None, metavar="tcp://HOST:PORT",
                   help="with --backend ray: the address the nodes reach --container-bind at (env "
                        "REMOTECELL_CONTAINER_ADDRESS; needed when it binds every interface)")
    t = sub.add_parser("token", help="client keys for tcp:// listeners")
    t.add_argument("action", choices=["new", "list", "revoke"])
    t.add_argument("name", nargs="?")
    t.add_argument("--state-dir", type=Path, default=default_state_dir())
    t.add_argument("--address", help="tcp://HOST:PORT clients should connect to (written into the file)")
    t.add_argument("--out", type=Path, help="where to write the client's file (default STATE/tokens/NAME.json)")
    w = sub.add_parser("web-token", help="proxy auth tokens of web endpoints (Modal-Key, Modal-Secret headers)")
    w.add_argument("action", choices=["new", "list", "revoke"])
    w.add_argument("name", nargs="?")
    w.add_argument("--json", action="store_true", help="new: print {\"key\": ..., \"secret\": ...}")
    w.add_argument("--state-dir", type=Path, default=default_state_dir())
    c = sub.add_parser("secret", help="named secrets: environment variables for functions")
    c.add_argument("action", choices=["create", "list", "delete"])
    c.add_argument("name", nargs="?")
    c.add_argument("pairs", nargs="*", metavar="KEY=VALUE")
    c.add_argument("--force", action="store_true", help="create: replace an existing secret")
    c.add_argument("--from-dotenv", type=Path, metavar="PATH", help="create: the variables of a .env file too")
    c.add_argument("--from-json", type=Path, metavar="PATH", help="create: the variables of a JSON object too")
    c.add_argument("--json", dest="as_json", action="store_true", help="list: as JSON (names and creation times)")
    c.add_argument("-y", "--yes", action="store_true", help="delete: do not ask (this command never asks)")
    c.add_argument("--state-dir", type=Path, default=default_state_dir())
    args = parser.parse_args(argv)
    if args.command == "secret":
        return secret(args.action, args.name, args.pairs, args.state_dir, args.force, args.from_dotenv,
                      args.from_json, args.as_json)
    if args.command == "web-token":
        return web_token(args.action, args.name, args.state_dir, args.json)
    if args.command == "token":
        return token(args.action, args.name, args.state_dir, args.address, args.out)
    if args.web_max_body is not None and args.web_max_body < 0:
        parser.error(f"--web-max-body {args.web_max_body}: give a number of bytes, 0 or more")
    if args.result_retention_s is not None and args.result_retention_s <= 0:
        parser.error(f"--result-retention-s {args.result_retention_s:g}: must be more than 0 seconds")
    try:
        backend = BackendChoice.read(args.backend, args.ray_address, args.container_bind, args.container_address)
    except BackendChoiceError as exc:
        parser.error(str(exc))
    if backend.name == "ray" and not _has_ray():
        parser.error("--backend ray needs Ray on this host: pip install 'remotecell[ray]'")
    return serve(args.bind, args.state_dir, args.log_level, args.result_retention_s, args.share, args.on_demand,
                 args.web_bind, args.web_max_body, args.web_public, backend)


def _has_ray() -> bool:
    import importlib.util

    return importlib.util.find_spec("ray") is not None


if __name__ == "__main__":
    sys.exit(main())
