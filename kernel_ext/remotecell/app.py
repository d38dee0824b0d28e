"""Apps: a named group of functions that starts on the runtime and stops with its owner."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from remotecell_runtime.protocol.messages.apps import AppCreateMsg, AppCreateReply, AppStopMsg
from remotecell_runtime.protocol.messages.session import EmptyReply, StatusMsg, StatusReply

from . import _client, output
from ._bridge import Twin
from ._references import shipping_of
from .cls import Cls
from .exceptions import InvalidError, NotFoundError
from .functions import Function
from .images import Image, check_image
from .infra import Secret, check_secrets, check_volumes
from .options import batching_of, check_cacheable, check_function_options, check_schedulable, concurrency_of
from .registration import Registration
from .server import server_decorator
from .volumes import Volume
from .web import announce, class_port_limit, web_options


class App:
    """A group of functions deployed together.

    >>> app = rc.App("demo")
    >>> @app.function(timeout=60)
    ... def square(x): return x * x
    >>> with app.run():
    ...     square.remote(3)
    9

    Without ``app.run()`` the first call starts the app as an ephemeral app that
    lives as long as this process (the notebook case). ``app.deploy()`` keeps it
    on the runtime until it is stopped (see ``deploy``). ``image`` is the image of
    every function and class of the app that does not name its own.
    """

    def __init__(self, name: str = "app", *, image: Image | None = None, secrets: Sequence[Secret] = (),
                 volumes: Mapping[str, Volume] | None = None, include_source: bool | None = None) -> None:
        """``image``, ``secrets`` and ``volumes`` are every definition's defaults, as Modal's: a definition's own
        secrets come after the app's, its own volumes over the app's at the same path; ``include_source=False``: the
        app's own modules are not shipped with its definitions that travel by reference (the image has them,
        ``add_local_python_source``; see ``_references``)."""
        self.name = _checked_name(name)
        self.image = check_image(image) if image is not None else None
        check_secrets(list(secrets))
        check_volumes(dict(volumes or {}))
        self.secrets, self.volumes = list(secrets), dict(volumes or {})
        self.include_source = include_source
        self.functions: dict[str, Any] = {}
        self.local_entrypoints: dict[str, Callable[..., Any]] = {}
        self._mode = "ephemeral"
        self._app_id: str | None = None
        self._conn: _client.Connection | None = None
        self._lock = threading.RLock()
        self._implicit = False
        self._runtime_id: str | None = None
        self._looked_up = False  # a handle from App.lookup: starting it again keeps the deployed app's functions
        self.deploy = Twin(self._deploy, self._deploy_aio)

    def function(self, _fn: Callable[..., Any] | None = None, **options: Any) -> Any:
        """Declare a remote function: ``@app.function(gpu="any", timeout=600)``."""
        options = self._with_defaults(options)
        checked = check_function_options(options)

        def wrap(fn: Callable[..., Any]) -> Function:
            if not callable(fn) or isinstance(fn, type):
                raise InvalidError(f"@app.function needs a function, got {fn!r}; use @app.cls for classes")
            name = options.get("name") or fn.__qualname__
            if "schedule" in checked:
                check_schedulable(fn, name)
            batch = batching_of(fn)
            full = (checked | concurrency_of(fn) | ({"batched": {"": batch}} if batch else {})
                    | web_options(fn, name, options))
            if "cache" in full:
                full["cache"] = check_cacheable(fn, name, web="web" in full)
            registration = Registration(self, fn, full, name, self._image_of(options), **shipping_of(self, options))
            f = Function(registration, fn)
            self.functions[f.name] = f
            return f

        return wrap(_fn) if _fn is not None else wrap

    def cls(self, _cls: type | None = None, **options: Any) -> Any:
        """Declare a remote class: ``@app.cls(gpu="any")`` with ``@rc.enter``/``@rc.method``/``@rc.exit``."""
        options = self._with_defaults(options)
        checked = _class_options(check_function_options(options))

        def wrap(user_cls: type) -> Cls:
            if not isinstance(user_cls, type):
                raise InvalidError(f"@app.cls needs a class, got {user_cls!r}")
            name = options.get("name") or user_cls.__qualname__
            full = checked | concurrency_of(user_cls) | class_port_limit(user_cls, name, options)
            c = Cls(self, user_cls, full, name, self._image_of(options), raw=options)
            self.functions[c.name] = c
            return c

        return wrap(_cls) if _cls is not None else wrap

    def server(self, _warn_parentheses_missing: Any = None, *, port: int = 8000, unauthenticated: bool = False,
               target_concurrency: float | None = None, startup_timeout: int = 30, name: str | None = None,
               **options: Any) -> Any:
        """Declare a Modal Server: a class whose ``@rc.enter`` hooks start an HTTP server on ``port``.

        >>> @app.server(port=8000, unauthenticated=True)
        ... class Files:
        ...     @rc.enter()
        ...     def start(self):
        ...         subprocess.Popen(["python", "-m", "http.server", "8000"])
        >>> Files.get_url()

        Takes ``@app.cls``'s options too (``image``, ``gpu``, ``min_containers``...). Requests with the
        same ``Modal-Session-Id`` header go to the same container (best effort). See ``remotecell.server``.
        """
        if _warn_parentheses_missing is not None:
            raise InvalidError("@app.server needs parentheses: @app.server(port=8000)")
        options |= {"port": port, "unauthenticated": unauthenticated, "target_concurrency": target_concurrency,
                    "startup_timeout": startup_timeout} | ({"name": name} if name else {})
        return server_decorator(self, options)

    def _with_defaults(self, options: dict[str, Any]) -> dict[str, Any]:
        """A definition's options with the app's secrets and volumes (its own last, and winning a path)."""
        if self.secrets:
            options = {**options, "secrets": [*self.secrets, *options.get("secrets", [])]}
        if self.volumes:
            options = {**options, "volumes": {**self.volumes, **options.get("volumes", {})}}
        return options

    def _image_of(self, options: dict[str, Any]) -> Image | None:
        """A definition's image: its own ``image=``, else the app's."""
        own = options.get("image")
        return own if own is not None else self.image

    def local_entrypoint(self, _fn: Callable[..., Any] | None = None, *, name: str | None = None) -> Any:
        """Mark the function that ``remotecell run FILE.py`` calls inside ``with app.run():``.

        >>> @app.local_entrypoint()
        ... def main(n: int = 3, label: str = "x"):
        ...     print(label, square.remote(n))

        ``remotecell run file.py --n 4`` parses ``--n`` and ``--label`` from the signature.
        """
        def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
            if not callable(fn):
                raise InvalidError(f"@app.local_entrypoint needs a function, got {fn!r}")
            self.local_entrypoints[name or fn.__name__] = fn
            return fn

        return wrap(_fn) if _fn is not None else wrap

    @property
    def app_id(self) -> str | None:
        return self._app_id

    @property
    def schedules_fire(self) -> bool:
        """Whether its schedules fire: deployed, or in ``with app.run():``; not in the ephemeral app a first call
        starts (a notebook's), which would go on firing for as long as the kernel lives."""
        return not (self._implicit and self._mode == "ephemeral")

    def ensure_running(self) -> tuple[_client.Connection, str]:
        """The app's id on the runtime, starting it as a process-long ephemeral app if needed."""
        with self._lock:
            conn = _client.connection()
            if self._app_id is None or self._conn is not conn or self._runtime_id != conn.runtime_id:
                self._start(conn)
                self._implicit = True
                atexit.register(self._stop_quietly)
                _warn_schedules(self)
            assert self._app_id is not None
            return conn, self._app_id

    def _start(self, conn: _client.Connection) -> None:
        runtime_id = conn.runtime_id
        # A redeploy drops the functions this version no longer has.
        keep = sorted(self.functions) if self._mode == "deployed" and not self._looked_up else None
        reply = conn.ask(AppCreateMsg(name=self.name, mode=self._mode, functions=keep), AppCreateReply)
        self._app_id, self._conn, self._runtime_id = reply.app_id, conn, runtime_id
        conn.on_restart.add(self)
        for f in self.functions.values():
            f.forget_registrations()

    def restart_after_runtime_restart(self, conn: _client.Connection) -> None:
        """The runtime restarted: start the app there again and register what was registered.

        Spawned calls of this app that were unfinished then wait for exactly that.
        """
        with self._lock:
            if self._app_id is None or self._conn is not conn:
                return
            registered = [r for f in self.functions.values() for r in f.registrations() if r.registered]
            self._start(conn)
            for registration in registered:
                registration.fid()

    @contextlib.contextmanager
    def run(self, *, detach: bool = False) -> Iterator[App]:
        """Run the app for the duration of the block (an ephemeral app).

        ``detach=True`` (``remotecell run --detach``): when the block ends the app stays until what it
        was given is done (spawned calls, queued inputs), even if this process exits, then it stops.
        """
        if not isinstance(detach, bool):
            raise InvalidError(f"app.run(detach={detach!r}): detach must be True or False")
        with self._lock:
            if self._app_id is not None and self._implicit:
                self._stop_quietly()
            self._mode = "ephemeral"
            self._start(_client.connection())
            self._implicit = False
        assert self._conn is not None and self._app_id is not None
        follower = output.Follower(self._conn, self._app_id).start() if output.enabled() else None
        try:
            self._build_images()
            self._serve_web()
            _start_schedules(self)
            yield self
        finally:
            if follower is not None:
                follower.stop()
            if detach:
                self._detach()
            else:
                self.stop()

    def _detach(self) -> None:
        """Leave the app its work: the runtime stops it once its inputs are done."""
        with self._lock:
            app_id, conn = self._app_id, self._conn
            self._app_id = self._conn = None
        if app_id is not None and conn is not None and not conn.closed:
            conn.ask(AppStopMsg(app_id=app_id, detach=True), EmptyReply)

    def _build_images(self) -> None:
        """Build every image of the app's definitions now, as Modal does when an app starts: their logs
        show before the block's code runs, and a build that fails ends the run (``ImageBuildError``)."""
        conn, app_id = self._conn, self._app_id
        assert conn is not None and app_id is not None
        images = {id(image): image for f in self.functions.values()
                  if (image := f.image if isinstance(f, Cls) else f.registration.image) is not None}
        for image in images.values():
            image.publish(conn, app_id)

    def _serve_web(self) -> None:
        """Register the web endpoints now, so their URLs serve while the block runs, and say where they are
        (Modal's ``name => URL``)."""
        for f in self.functions.values():
            if isinstance(f, Cls):
                if "web_methods" not in f.options:
                    continue
                obj = f()  # the default instance is the one its endpoints serve
                for method in f.options["web_methods"]:
                    announce(f"{f.name}.{method}", getattr(obj, method).get_web_url())
            elif "web" in f.options:
                announce(f.name, f.get_web_url())

    def _deploy(self, name: str | None = None) -> str:
        """Deploy the app: it stays on the runtime, also after this process and runtime restarts.

        >>> app.deploy()                      # or: await app.deploy.aio(); CLI: remotecell deploy file.py
        >>> rc.Function.from_name("demo", "square").remote(3)    # from any process
        9

        Deploying a name again replaces its definitions: new calls go to the new ones,
        running inputs finish. A class serves its default instance (no parameters).
        ``name`` deploys under another name. Returns the app id; ``app.stop()`` or
        ``rc.App.stop_deployed(name)`` removes it.
        """
        with self._lock:
            if self._app_id is not None and not self._implicit and self._mode == "ephemeral":
                raise InvalidError(f"app {self.name!r} runs in `with app.run():`; deploy it outside that block")
            self._stop_quietly()  # the implicit ephemeral app, if any
            self.name = _checked_name(name) if name is not None else self.name
            self._mode, self._implicit, self._looked_up = "deployed", False, False
            self._start(_client.connection())
            for f in self.functions.values():
                if isinstance(f, Cls):
                    f()  # the default instance is the one a deployed class serves
                for registration in f.registrations():
                    registration.fid()
            self._serve_web()
            assert self._app_id is not None
            return self._app_id

    async def _deploy_aio(self, name: str | None = None) -> str:
        return await asyncio.to_thread(self._deploy, name)

    def stop(self) -> None:
        """Stop the app on the runtime (a deployed one too): its containers stop, waiting inputs are cancelled."""
        with self._lock:
            app_id, conn = self._app_id, self._conn
            self._app_id = self._conn = None
            self._mode = "ephemeral"
        if app_id is not None and conn is not None and not conn.closed:
            conn.ask(AppStopMsg(app_id=app_id), EmptyReply)

    def _stop_quietly(self) -> None:
        """Stop an ephemeral app (at exit, or before another start); a deployed one stays."""
        if self._mode == "deployed":
            return
        try:
            self.stop()
        except Exception:
            pass

    @staticmethod
    def lookup(name: str, *, create_if_missing: bool = False) -> App:
        """A handle on the deployed app ``name``, as Modal's ``App.lookup``; with ``create_if_missing`` an empty
        deployed app is made when there is none (e.g. for ``rc.Sandbox.create(app=...)``).

        >>> app = rc.App.lookup("sandboxes", create_if_missing=True)
        >>> app.app_id
        'ap-...'

        ``NotFoundError`` when there is no such deployed app and ``create_if_missing`` is False.
        """
        app = App(name)
        if not isinstance(create_if_missing, bool):
            raise InvalidError(f"App.lookup(create_if_missing={create_if_missing!r}): give True or False")
        conn = _client.connection()
        if not create_if_missing and name not in {a["name"] for a in App.list_deployed()}:
            known = ", ".join(a["name"] for a in App.list_deployed()) or "none"
            raise NotFoundError(f"no deployed app named {name!r} on this runtime (deployed: {known}); deploy it "
                                f"(remotecell deploy FILE.py) or call App.lookup({name!r}, create_if_missing=True)")
        with app._lock:  # functions=None: an existing deployed app keeps what it has
            app._mode, app._looked_up = "deployed", True
            app._start(conn)
        return app

    def include(self, other: App) -> App:
        """Make ``other``'s functions and classes this app's, as Modal's ``app.include``: they run (and deploy)
        with this app from now on. Returns this app.

        >>> app = rc.App("main").include(other_app)

        ``InvalidError`` when both apps have a function or class of the same name.
        """
        if not isinstance(other, App):
            raise InvalidError(f"app.include({other!r}): give an rc.App")
        clash = sorted(n for n, f in other.functions.items() if self.functions.get(n, f) is not f)
        if clash:
            raise InvalidError(f"app.include({other.name!r}): both apps define {', '.join(clash)}; rename one "
                               "(name= in @app.function / @app.cls)")
        for name, f in other.functions.items():
            f.move_to(self)
            self.functions[name] = f
        return self

    @staticmethod
    def list_deployed() -> list[dict[str, Any]]:
        """The apps deployed on the runtime: name, app_id, functions, created_at (``remotecell app list``).

        >>> [a["name"] for a in rc.App.list_deployed()]
        ['demo']
        """
        apps = _client.connection().ask(StatusMsg(), StatusReply).apps
        return sorted((a for a in apps if a["mode"] == "deployed"), key=lambda a: a["name"])

    @staticmethod
    def stop_deployed(name: str) -> None:
        """Stop the deployed app ``name`` (``remotecell app stop NAME``); NotFoundError if there is none.

        >>> rc.App.stop_deployed("demo")
        """
        _client.connection().ask(AppStopMsg(name=name), EmptyReply)

    def __repr__(self) -> str:
        state = f"{'deployed' if self._mode == 'deployed' else 'running'} as {self._app_id}" if self._app_id \
            else "not running"
        return f"<rc.App {self.name!r}, {len(self.functions)} function(s), {state}>"


def _class_options(checked: dict[str, Any]) -> dict[str, Any]:
    """A class's checked options; ``schedule=`` and ``cache=`` are a function's only."""
    for option, value in (("schedule", "schedule="), ("cache", "cache=True")):
        if option in checked:
            raise InvalidError(f"@app.cls takes no {option}=: put {value} on an @app.function that calls the class")
    return checked


def _checked_name(name: Any) -> str:
    if not isinstance(name, str) or not name or len(name) > 64:
        raise InvalidError(f"App name {name!r} must be a non-empty string of at most 64 characters")
    return name


def _warn_schedules(app: App) -> None:
    """An app a first call started fires no schedules: say so, once, when it has some."""
    scheduled = sorted(n for n, f in app.functions.items() if "schedule" in f.options)
    if scheduled:
        warnings.warn(f"app {app.name!r} was started by a call, not by app.run(): the schedules of "
                      f"{', '.join(scheduled)} fire only in `with app.run():`, `remotecell run` or a deployed "
                      "app", stacklevel=5)


def _start_schedules(app: App) -> None:
    """Register the scheduled functions now: their schedules fire while ``app.run()``'s block runs, and stop with
    it (Modal's ``app.run()`` does the same)."""
    for f in app.functions.values():
        if isinstance(f, Function) and "schedule" in f.options:
            f.registration.fid()
