"""Apps and deployments: ``app_create``, ``app_stop``, ``fn_register``, ``fn_lookup``.

An ephemeral app lives as long as its client session; a deployed one is
unique by name, saved in ``deployed.db`` and registered again at start
(``restore_deployed``, with the same app ids and so the same fids).

A registered definition gets a fid from its app, name, body and options, and
a pool.  Before that, the host check refuses what this host can never give it
(GPUs, CPUs, an image, a schedule that cannot fire, a secret or volume that is
not here): a refusal at registration, not a call that waits forever.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from .. import vault
from ..backends.base import SpecRefused
from ..images import ImageError, check
from ..pools import FunctionDef, Pool
from ..protocol import framing
from ..protocol.errors import ErrorName
from ..protocol.framing import Payload, WireError
from ..protocol.message import Message
from ..protocol.messages.apps import (
    AppCreateMsg,
    AppCreateReply,
    AppLogsMsg,
    AppLogsReply,
    AppStopMsg,
    FnAutoscalerMsg,
    FnAutoscalerReply,
    FnLookupMsg,
    FnLookupReply,
    FnRegisterMsg,
    FnRegisterReply,
    FnVariantMsg,
)
from ..protocol.messages.session import EmptyReply
from ..protocol.options import FunctionOptions
from .base import Handler, Host, Request, RequestError, Service, refusal
from .functions import Functions
from .jobs import Jobs
from .registry import AppEntry, AppRegistry, DeployStore, SavedFunction
from .schedules import Scheduler, check_spec
from .volumes import Volumes
from .web import Gateway

log = logging.getLogger("remotecell.runtime")

MAX_VARIANT = 1000  # characters of a deployed class's variant name (``fn_variant``)
VOLUMES_ENV = "REMOTECELL_VOLUMES"  # a container's volume links: {absolute path: host folder}, as JSON


class Apps(Service):
    def __init__(self, host: Host, registry: AppRegistry, store: DeployStore, functions: Functions, jobs: Jobs,
                 scheduler: Scheduler, volumes: Volumes) -> None:
        self.host = host
        self.registry = registry
        self.store = store
        self.functions = functions
        self.jobs = jobs
        self.scheduler = scheduler
        self.volumes = volumes
        self.gateway: Gateway | None = None  # set by ``build``: web endpoints are routed there

    def handlers(self) -> dict[type[Message], Handler]:
        return {AppCreateMsg: self.on_create, AppStopMsg: self.on_stop, FnRegisterMsg: self.on_register,
                FnLookupMsg: self.on_lookup, AppLogsMsg: self.on_logs, FnAutoscalerMsg: self.on_autoscaler,
                FnVariantMsg: self.on_variant}

    # -- apps ---------------------------------------------------------------------------------

    def on_create(self, req: Request[AppCreateMsg]) -> AppCreateReply:
        msg = req.msg
        if msg.mode == "deployed":
            return AppCreateReply(app_id=self._deploy(msg.name, req.sid, msg.functions).app_id)
        if msg.mode != "ephemeral":
            raise refusal(ErrorName.INVALID, f"app mode {msg.mode!r} must be 'ephemeral' or 'deployed'")
        return AppCreateReply(app_id=self.registry.create(msg.name, req.sid, msg.mode).app_id)

    def _deploy(self, name: str, sid: str, functions: list[str] | None) -> AppEntry:
        """The deployed app ``name``, made if new; a redeploy keeps only the functions it names.

        The functions it keeps are replaced as they are registered again; queued and
        running inputs of a replaced or dropped definition finish on its old pool.
        """
        app = self.registry.deployed(name)
        if app is None:
            app = self.registry.create(name, sid, "deployed")
            self.store.save_app(app)
            return app
        if functions is not None:
            for dropped in set(app.functions) - set(functions):
                self.functions.retire(app.functions.pop(dropped))
                self.store.drop_function(name, dropped)
                self.scheduler.remove(name, dropped)
        return app

    def _app(self, app_id: str | None) -> AppEntry:
        app = self.registry.get(app_id) if app_id is not None else None
        if app is None:
            raise refusal(ErrorName.NOT_FOUND, f"no app with id {app_id!r} (it was stopped, or the runtime restarted)")
        return app

    def _deployed_app(self, name: str) -> AppEntry:
        app = self.registry.deployed(name)
        if app is None:
            known = ", ".join(self.registry.deployed_names()) or "none"
            raise refusal(ErrorName.NOT_FOUND, f"no deployed app named {name!r} on this runtime (deployed: {known}); "
                          "deploy it with `remotecell deploy FILE.py` or app.deploy()")
        return app

    def on_stop(self, req: Request[AppStopMsg]) -> EmptyReply:
        """Stop an app by ``app_id``, or a deployed one by ``name``."""
        name, app_id = req.msg.name, req.msg.app_id
        if name is None and app_id is None:
            raise refusal(ErrorName.INVALID, "app_stop needs 'app_id' (an app's id) or 'name' (a deployed app's)")
        app = self._deployed_app(name) if name is not None else self._app(app_id)
        if req.msg.detach and app.mode == "ephemeral":
            app.detached, app.sid = True, ""  # no session owns it now: its client may leave
            log.info("app %s detached: it stops once its inputs are done", app.name)
            self.tick(0.0)
        else:
            self.stop_app(app, f"app {app.name!r} was stopped")
        return EmptyReply()

    def tick(self, now: float) -> None:
        """Stop the detached apps whose inputs (queued, running, waiting to retry) are all done."""
        for app in [a for a in self.registry.apps.values() if a.detached]:
            pools = [self.functions.pools.get(fid) for fid in app.functions.values()]
            if not any(pool is not None and pool.inputs for pool in pools):
                log.info("detached app %s has no work left: stopping it", app.name)
                self.stop_app(app, f"app {app.name!r} finished its detached work")

    def on_logs(self, req: Request[AppLogsMsg]) -> AppLogsReply | None:
        """``remotecell app logs``: what the app's inputs printed after ``after``; a follower waits for more."""
        ref = req.msg.app
        app = self.registry.get(ref) or self.registry.deployed(ref) or next(
            (a for a in reversed(self.registry.apps.values()) if a.name == ref), None)
        logs = self.functions.app_logs
        found = logs.of(app.app_id, app.name) if app is not None else logs.find(ref, ref)
        if found is None:
            running = ", ".join(sorted({a.name for a in self.registry.apps.values()})) or "none"
            raise refusal(ErrorName.NOT_FOUND, f"no app {ref!r} on this runtime, running or recently stopped "
                          f"(running: {running})")
        live = app is not None and app.app_id == found.app_id
        msg = req.msg
        entries = found.after(msg.after, msg.unsent_only)
        if entries or msg.wait_s <= 0 or not live:
            return AppLogsReply(entries=entries, next=found.seq, live=live)
        logs.wait(req.peer, req.id, found, msg.after, min(msg.wait_s, 60.0), live, msg.unsent_only)
        return None

    def stop_app(self, app: AppEntry, reason: str) -> None:
        self.registry.remove(app.app_id)
        if app.mode == "deployed":
            self.store.drop_app(app.name)
            self.scheduler.remove_app(app.name)
        else:
            self.scheduler.remove_app(app.app_id)
        for fid in app.functions.values():
            self.functions.stop(fid, reason)

    def session_ended(self, sid: str) -> None:
        for app in self.registry.ephemeral_of(sid):
            log.info("client %s went quiet: stopping its ephemeral app %s", sid, app.name)
            self.stop_app(app, f"app {app.name!r} stopped: its client stopped sending heartbeats")

    # -- functions ----------------------------------------------------------------------------

    def on_register(self, req: Request[FnRegisterMsg]) -> FnRegisterReply:
        msg = req.msg
        app = self._app(msg.app_id)
        if len(req.payloads) != 1:
            raise refusal(ErrorName.INVALID, "fn_register needs exactly one payload: the function body")
        body = Payload([bytes(framing.buffer_of(f)) for f in req.payloads[0].frames])
        fid = self.register(app, SavedFunction(msg.name, msg.options, msg.meta or {}, body))
        urls = self.web_urls(app.name, fid)
        return FnRegisterReply(fid=fid, web_url=urls.pop(None, None),
                             web_urls={str(m): url for m, url in urls.items()})

    def web_urls(self, app_name: str, fid: str) -> dict[str | None, str]:
        """Where the gateway serves ``fid``'s endpoints, by method (None: a plain function's)."""
        pool = self.functions.pools.get(fid)
        if pool is None or self.gateway is None:
            return {}
        return {m: self.gateway.url_of(app_name, spec.label) for m, spec in pool.fn.opts.web_specs().items()}

    def check_host(self, raw: dict[str, Any]) -> dict[str, str]:
        """Refuse what this host cannot give a definition or a sandbox (its GPUs, its image); its containers'
        variables."""
        try:
            options = FunctionOptions.from_wire(raw)
            options.batch_policies()
        except WireError as exc:
            raise refusal(ErrorName.INVALID, f"function options: {exc}") from None
        try:
            self.functions.containers.check(options)
        except SpecRefused as exc:
            raise refusal(ErrorName.INVALID, str(exc)) from None
        if options.schedule is not None:
            check_spec(options.schedule)
        if options.image:
            try:
                check(options.image, sandboxed=self.functions.sandbox is not None)
            except ImageError as exc:
                raise refusal(ErrorName.INVALID, str(exc)) from None
        return self._environment(options)

    def _environment(self, options: FunctionOptions) -> dict[str, str]:
        """A function's containers' variables: its ``env``, then its secrets (named ones read here),
        and where its volumes are (``REMOTECELL_VOLUMES``: the container links them before loading)."""
        env = dict(options.env)
        try:
            env.update(vault.environment(self.host.state_dir, options.secrets))
        except vault.SecretNotFound as exc:
            raise refusal(ErrorName.NOT_FOUND, str(exc)) from None
        except vault.SecretError as exc:
            raise refusal(ErrorName.INVALID, str(exc)) from None
        if options.volumes:
            env[VOLUMES_ENV] = json.dumps(self.volumes.mounts(options.volumes))
        return env

    def register(self, app: AppEntry, fn: SavedFunction) -> str:
        """Make ``fn`` the app's current definition of its name (a new pool, unless it is the same one)."""
        env = self.check_host(fn.options)
        digest = hashlib.sha256(b"".join(fn.body.frames) + repr(sorted(fn.options.items())).encode()).hexdigest()[:16]
        fid = f"fn-{app.app_id}-{fn.name}-{digest}"
        old = app.functions.get(fn.name)
        if old == fid:  # registered again: an update_autoscaler's changes end (as a redeploy does in Modal)
            pool = self.functions.pools.get(fid)
            if pool is not None and app.mode == "deployed":
                pool.fn.opts = FunctionOptions.from_wire(pool.fn.options)
            return fid
        web = FunctionOptions.from_wire(fn.options).web_specs()
        deployed = app.mode == "deployed"
        if old is not None:  # a new definition replaces the old one; its queued inputs still finish
            self.functions.retire(old)
        # A deployed function's key outlives its deploying client: spawned calls come back after a restart.
        owner = "deployed" if deployed else app.sid
        pool = self.functions.add(FunctionDef(fid, app.app_id, fn.name, fn.options, fn.body,
                                              f"{owner}:{app.name}:{fn.name}:{digest}", env, fn.meta))
        app.functions[fn.name] = fid
        if deployed:
            self.functions.deployed_fids[fid] = (app.name, fn.name)
            self.store.save_function(app.name, fn)
            self.scheduler.sync(app.name, fn.name, pool.fn.opts.schedule)
        else:  # an ephemeral app's schedule fires while it runs (keyed by its id: names repeat)
            self.scheduler.sync(app.app_id, fn.name, pool.fn.opts.schedule, persist=False)
        if self.gateway is not None:
            for method, spec in web.items():
                self.gateway.route(app.name, fid, spec, method)
        pool.scale()
        self.jobs.adopt(pool)
        return fid

    def restore_deployed(self) -> None:
        """Register the deployed apps saved by an earlier run of the runtime (same app ids, same fids)."""
        for saved in self.store.load():
            app = self.registry.create(saved.name, "", "deployed", saved.app_id, saved.created_at)
            for fn in saved.functions:
                try:
                    self.register(app, fn)
                except RequestError as exc:  # e.g. the GPUs it asks for are not here any more
                    log.warning("could not restore %s of deployed app %s: %s", fn.name, app.name, exc)
            log.info("restored deployed app %s (%d functions)", app.name, len(app.functions))

    def on_lookup(self, req: Request[FnLookupMsg]) -> FnLookupReply:
        """A deployed function or class by app and function name: its fid and what a caller needs to know."""
        app = self._deployed_app(req.msg.app)
        name = req.msg.name
        pool = self.functions.pools.get(app.functions.get(name, ""))
        if pool is None:
            has = ", ".join(sorted(app.functions)) or "nothing"
            raise refusal(ErrorName.NOT_FOUND, f"deployed app {app.name!r} has no function or class {name!r} "
                          f"(it has: {has})")
        return self._lookup_reply(app, pool)

    def _lookup_reply(self, app: AppEntry, pool: Pool) -> FnLookupReply:
        urls = self.web_urls(app.name, pool.fn.fid)
        return FnLookupReply(fid=pool.fn.fid, options=pool.fn.options, meta=pool.fn.meta,
                             web_url=urls.pop(None, None),
                             web_urls={str(m): url for m, url in urls.items()})

    def on_variant(self, req: Request[FnVariantMsg]) -> FnLookupReply:
        """``Cls.from_name(...).with_options(...)``: the deployed class's definition again, as ``name.variant``, with
        the given options over its own (checked as any registration's); a variant already there is found again."""
        msg = req.msg
        app = self._deployed_app(msg.app)
        pool = self.functions.pools.get(app.functions.get(msg.name, ""))
        if pool is None or not pool.fn.meta.get("methods"):
            has = ", ".join(sorted(app.functions)) or "nothing"
            raise refusal(ErrorName.NOT_FOUND, f"deployed app {app.name!r} has no class {msg.name!r} (it has: {has})")
        if not msg.variant or len(msg.variant) > MAX_VARIANT or not msg.variant.isprintable():
            raise refusal(ErrorName.INVALID, f"fn_variant: variant {msg.variant[:80]!r} must be 1 to {MAX_VARIANT} "
                          "printable characters")
        options = dict(pool.fn.options)
        for key, value in msg.options.items():
            if value is None:
                options.pop(key, None)
            else:
                options[key] = value
        fid = self.register(app, SavedFunction(f"{msg.name}.{msg.variant}", options, pool.fn.meta, pool.fn.body))
        return self._lookup_reply(app, self.functions.pools[fid])

    def on_autoscaler(self, req: Request[FnAutoscalerMsg]) -> FnAutoscalerReply:
        """``update_autoscaler``: the live pool's autoscaler changes now, until the function is registered again."""
        msg = req.msg
        pool = self.functions.live_pool(msg.fid)
        try:
            pool.scaler.update(msg.min_containers, msg.max_containers, msg.buffer_containers, msg.scaledown_window_s)
        except ValueError as exc:
            raise refusal(ErrorName.INVALID, f"update_autoscaler of {pool.fn.name}: {exc}") from None
        opts = pool.fn.opts
        log.info("autoscaler of %s: min %d, max %d, buffer %d, scaledown window %g s", pool.fn.name,
                 opts.min_containers, opts.max_containers, opts.buffer_containers, opts.scaledown_window_s)
        return FnAutoscalerReply(min_containers=opts.min_containers, max_containers=opts.max_containers,
                                 buffer_containers=opts.buffer_containers, scaledown_window_s=opts.scaledown_window_s)

    def close(self) -> None:
        self.store.close()

    def stats(self) -> list[dict[str, object]]:
        """For ``status``: every app."""
        return [a.describe() for a in self.registry.apps.values()]
