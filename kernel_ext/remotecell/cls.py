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


_enter = _marker("enter")
exit = _marker("exit")
method = _marker("method")
_SNAP = "__remotecell_snap__"


def enter(*, snap: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark a method of an ``@app.cls`` class to run when a container starts, before it serves inputs.

    ``snap=True`` (Modal's memory-snapshot hooks): it runs before every ``snap=False`` hook; there are
    no memory snapshots here, so it runs in every container. Hooks run in the order they are defined.
    """
    if not isinstance(snap, bool):
        raise InvalidError(f"@rc.enter(snap={snap!r}): snap must be True or False")
    mark = _enter()

    def marked(fn: Callable[..., Any]) -> Callable[..., Any]:
        mark(fn)
        setattr(fn, _SNAP, snap)
        return fn

    return marked


_PARAMETERS = "__remotecell_parameters__"
class _NoDefault:
    def __repr__(self) -> str:
        return "<no default>"


_NO_DEFAULT: Any = _NoDefault()
PARAMETER_TYPES = (str, int, bool, bytes)  # Modal's: what a parameter's annotation may be


class _Parameter:
    """A ``rc.parameter()`` field of an ``@app.cls`` class (the class attribute until the class is declared)."""

    def __init__(self, default: Any, init: bool) -> None:
        self.default = default
        self.init = init
        self.kind: type = object  # its annotation, read when the class is declared


def parameter(*, default: Any = _NO_DEFAULT, init: bool = True) -> Any:
    """A parameter of a remote class, as Modal's ``modal.parameter``: ``size: int = rc.parameter(default=10)``.

    ``Model(size=20)`` is an instance with its own containers (one pool per set of parameters); in the
    container (and in ``.local``) ``self.size`` is 20 by the time ``@rc.enter`` hooks run. Types: str, int,
    bool, bytes. ``init=False``: not a constructor argument, only its default.

    >>> @app.cls()
    ... class Model:
    ...     name: str = rc.parameter()
    ...     size: int = rc.parameter(default=10)
    >>> Model(name="small").predict.remote(x)
    """
    if not isinstance(init, bool):
        raise InvalidError(f"rc.parameter(init={init!r}): init must be True or False")
    if default is not _NO_DEFAULT and not isinstance(default, PARAMETER_TYPES):
        raise InvalidError(f"rc.parameter(default={default!r}): a parameter is a str, int, bool or bytes")
    return _Parameter(default, init)


def _init_parameters(self: Any, **kwargs: Any) -> None:
    """The constructor of a class with ``rc.parameter`` fields (its values checked by ``Cls.__call__``)."""
    for name, spec in getattr(type(self), _PARAMETERS).items():
        setattr(self, name, kwargs[name] if name in kwargs else spec.default)


def _declare_parameters(user_cls: type) -> dict[str, _Parameter]:
    """Find the class's ``rc.parameter`` fields and give it their constructor, as Modal does."""
    found = {n: v for n, v in vars(user_cls).items() if isinstance(v, _Parameter)}
    if not found:
        return {}
    if "__init__" in vars(user_cls):
        raise InvalidError(f"@app.cls {user_cls.__qualname__} has rc.parameter fields and its own __init__: "
                           "drop __init__ (the parameters make the constructor) or the parameters")
    hints = getattr(user_cls, "__annotations__", {})
    for name in found:
        kind = hints.get(name)
        if isinstance(kind, str):
            kind = {t.__name__: t for t in PARAMETER_TYPES}.get(kind, kind)
        if kind not in PARAMETER_TYPES:
            raise InvalidError(f"{user_cls.__qualname__}.{name}: annotate a parameter as str, int, bool or bytes "
                               f"(got {kind!r})")
        found[name].kind = kind
    setattr(user_cls, _PARAMETERS, found)
    user_cls.__init__ = _init_parameters  # type: ignore[misc]
    return found


def _roles(user_cls: type) -> dict[str, list[str]]:
    """The methods of each role, in the order they are defined (base classes first); ``@enter(snap=True)``
    hooks before the others."""
    roles: dict[str, list[str]] = {"method": [], "enter": [], "exit": []}
    names = list(dict.fromkeys(n for klass in reversed(user_cls.__mro__) for n in vars(klass)))
    for name in names:
        role = getattr(getattr(user_cls, name, None), _ROLE, None)
        if role in roles:
            roles[role].append(name)
    roles["enter"].sort(key=lambda n: not getattr(getattr(user_cls, n), _SNAP, False))  # stable: order kept
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
        self.parameters = _declare_parameters(user_cls)
        self._objs: dict[tuple, Obj] = {}

    def _checked_parameters(self, params: dict[str, Any]) -> dict[str, Any]:
        """With ``rc.parameter`` fields: every one given or defaulted, of its type, and no others."""
        if not self.parameters:
            return params
        allowed = [n for n, p in self.parameters.items() if p.init]
        unknown = sorted(set(params) - set(allowed))
        if unknown:
            raise InvalidError(f"{self.name}({', '.join(f'{k}=' for k in unknown)}...): no such parameter; it has "
                               f"{', '.join(allowed) or 'none'}")
        out = {}
        for name, spec in self.parameters.items():
            value = params.get(name, spec.default) if spec.init else spec.default
            if value is _NO_DEFAULT:
                raise InvalidError(f"{self.name}() needs the parameter {name}= (it has no default)")
            kind = spec.kind
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise InvalidError(f"{self.name}({name}={value!r}): the parameter {name} must be of type "
                                   f"{kind.__name__}")
            out[name] = value
        return out

    def __call__(self, **params: Any) -> Obj:
        params = self._checked_parameters(params)
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
