"""Remote classes: a container builds the instance once, runs ``@enter`` hooks, then serves methods.

>>> @app.cls(gpu="any")
... class Model:
...     @rc.enter()
...     def load(self): self.net = build()
...     @rc.method()
...     def predict(self, x): return self.net(x)
>>> Model().predict.remote(x)

Constructor keyword arguments are parameters: each distinct set gets its own pool.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from remotecell_runtime.protocol.spec import ClsSpec

from .exceptions import InvalidError
from .functions import Function
from .options import batching_of
from .registration import AppLike, ImageLike, Lookup, Registration, code_elsewhere
from .web import web_methods

_ROLE = "__remotecell_role__"


def _marker(role: str) -> Callable[[], Callable[[Callable[..., Any]], Callable[..., Any]]]:
    def decorator() -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def mark(fn: Callable[..., Any]) -> Callable[..., Any]:
            if not callable(fn):
                raise InvalidError(f"@rc.{role}() goes on a method, got {fn!r}")
            setattr(fn, _ROLE, role)
            return fn

        return mark

    decorator.__name__ = role
    decorator.__doc__ = f"Mark a method of an ``@app.cls`` class as ``{role}``."
    return decorator


enter = _marker("enter")
exit = _marker("exit")
method = _marker("method")


def _roles(user_cls: type) -> dict[str, list[str]]:
    roles: dict[str, list[str]] = {"method": [], "enter": [], "exit": []}
    for name in dir(user_cls):
        role = getattr(getattr(user_cls, name, None), _ROLE, None)
        if role in roles:
            roles[role].append(name)
    return roles


def _batched_methods(user_cls: type, methods: list[str]) -> dict[str, dict[str, int]]:
    """``{method name: batch limits}`` of the class's ``@rc.batched`` methods."""
    out = {}
    for name in dir(user_cls):
        spec = batching_of(getattr(user_cls, name, None))
        if spec is None:
            continue
        if name not in methods:
            raise InvalidError(f"{user_cls.__qualname__}.{name} is @rc.batched but not @rc.method(): mark it "
                               "@rc.method() too so callers can call it")
        out[name] = spec
    return out


class Cls:
    """A remote class; call it with keyword parameters to get a handle on instances."""

    def __init__(self, app: AppLike, user_cls: type, options: dict[str, Any], name: str,
                 image: ImageLike | None = None) -> None:
        self.app = app
        self.image = image
        self.user_cls = user_cls
        self.name = name
        self.roles = _roles(user_cls)
        web, web_opts = web_methods(user_cls, name, options)
        self.roles["method"] += [m for m in web if m not in self.roles["method"]]
        if not self.roles["method"]:
            raise InvalidError(f"@app.cls {name} has no @rc.method(); mark the methods callers may call")
        batched = _batched_methods(user_cls, self.roles["method"])
        self.options = options | ({"batched": batched} if batched else {}) | web_opts
        self._objs: dict[tuple, Obj] = {}

    def __call__(self, **params: Any) -> Obj:
        key = tuple(sorted((k, repr(v)) for k, v in params.items()))
        obj = self._objs.get(key)
        if obj is None:
            obj = self._objs[key] = Obj(self, params)
        return obj

    @staticmethod
    def from_name(app_name: str, name: str) -> DeployedCls:
        """A handle on class ``name`` of the deployed app ``app_name``, from any process.

        >>> Model = rc.Cls.from_name("demo", "Model")
        >>> Model().predict.remote(x)

        A deployed class serves its default instance (no parameters). ``NotFoundError`` when
        no such app or class is deployed.
        """
        return DeployedCls(app_name, name)

    def forget_registrations(self) -> None:
        for obj in self._objs.values():
            obj.registration.forget()

    def registrations(self) -> list[Registration]:
        return [obj.registration for obj in self._objs.values()]

    def __repr__(self) -> str:
        return f"<rc.Cls {self.app.name}.{self.name}>"


class Obj:
    """Instances of a remote class with one set of parameters: one pool on the runtime."""

    def __init__(self, cls: Cls, params: dict[str, Any]) -> None:
        spec = ClsSpec(cls.user_cls, params, cls.roles["method"], cls.roles["enter"], cls.roles["exit"])
        self.registration = Registration(cls.app, spec, cls.options, cls.name, cls.image)
        self._cls = cls
        self._params = params
        self._local: Any = None
        for name in cls.roles["method"]:
            setattr(self, name, Function(self.registration, self._local_method(name), method=name))

    def _local_method(self, name: str) -> Callable[..., Any]:
        def call_here(*args: Any, **kwargs: Any) -> Any:
            if self._local is None:  # build the instance here once, as a container would
                self._local = self._cls.user_cls(**self._params)
                for hook in self._cls.roles["enter"]:
                    getattr(self._local, hook)()
            return getattr(self._local, name)(*args, **kwargs)

        call_here.__name__ = name
        return call_here


class DeployedCls:
    """A deployed class found by name: ``Model()`` gives the handle on its instance, whose methods call it.

    >>> Model = rc.Cls.from_name("demo", "Model")
    >>> Model().predict.remote(x)
    """

    def __init__(self, app_name: str, name: str) -> None:
        self._lookup = Lookup(app_name, name)
        self.name = name
        if not self._lookup.methods:
            raise InvalidError(f"{name!r} in deployed app {app_name!r} is a function, not a class: use "
                               f"rc.Function.from_name({app_name!r}, {name!r})")
        self._obj = DeployedObj(self._lookup)

    def __call__(self, **params: Any) -> DeployedObj:
        if params:
            raise InvalidError(f"deployed class {self.name} serves its default instance only: call {self.name}() "
                               "without parameters (deploy one class per parameter set)")
        return self._obj

    def __repr__(self) -> str:
        return f"<rc.Cls {self._lookup.app.name}.{self.name} (deployed)>"


class DeployedObj:
    """The instance of a deployed class: one ``Function`` per ``@rc.method``."""

    def __init__(self, lookup: Lookup) -> None:
        for method in lookup.methods:
            setattr(self, method, Function(lookup, code_elsewhere(f"{lookup.name}.{method}"), method=method))
