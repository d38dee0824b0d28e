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

import functools
from collections.abc import Callable
from typing import Any

from remotecell_runtime.protocol.spec import ClsSpec

from ._autoscaler import update_autoscaler
from ._bridge import twin
from ._references import shipping_of
from ._variants import Variants, args, wire_overrides
from .exceptions import InvalidError
from .functions import Function
from .options import batching_of, check_function_options
from .registration import AppLike, ImageLike, Lookup, Registration, VariantLookup, code_elsewhere
from .web import class_port_limit, web_methods

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
        attr = getattr(user_cls, name, None)
        # Modal's @batched on a class method makes it a method: @rc.method() beside it is optional.
        role = getattr(attr, _ROLE, "method" if batching_of(attr) is not None else None)
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
            role = getattr(getattr(user_cls, name), _ROLE, "?")
            raise InvalidError(f"{user_cls.__qualname__}.{name} is @rc.batched and @rc.{role}(): a batched method "
                               "is called by callers, not a hook")
        out[name] = spec
    return out


class Cls(Variants):
    """A remote class; call it with keyword parameters to get a handle on instances.

    ``raw``: the options as the decorator was given them (what ``with_options`` starts from).
    """

    def __init__(self, app: AppLike, user_cls: type, options: dict[str, Any], name: str,
                 image: ImageLike | None = None, raw: dict[str, Any] | None = None,
                 parameters: dict[str, _Parameter] | None = None) -> None:
        self.app = app
        self.image = image
        self.user_cls = user_cls
        self.__wrapped__ = user_cls  # what the container takes when the class travels by reference (_references)
        self.name = name
        self.roles = _roles(user_cls)
        web, web_opts = web_methods(user_cls, name, options)
        self.roles["method"] += [m for m in web if m not in self.roles["method"]]
        if not self.roles["method"]:
            raise InvalidError(f"@app.cls {name} has no @rc.method(); mark the methods callers may call")
        batched = _batched_methods(user_cls, self.roles["method"])
        # A variant's batch limits (``with_batching``) come in ``options`` and win over the methods' own marks.
        self.options = ({"batched": batched} if batched else {}) | options | web_opts
        self.parameters = _declare_parameters(user_cls) if parameters is None else parameters
        self._raw = dict(raw or {})
        self._variant = ""  # "" for the class as declared; else what tells its pools' names apart
        self._variants: dict[str, Cls] = {}
        self._objs: dict[tuple, Obj] = {}

    # -- variants (``_variants.Variants``: with_options / with_concurrency / with_batching) ----------

    def _batched(self) -> dict[str, Any]:
        return dict(self.options.get("batched") or {})

    def _derive(self, given: dict[str, Any], extra: dict[str, Any], how: str) -> Cls:
        """A variant: this class with ``given`` over its decorator's options (checked again) and ``extra`` over
        them; one per ``how``."""
        variant = f"{self._variant}.{how}" if self._variant else how
        found = self._variants.get(variant)
        if found is not None:
            return found
        raw = {**self._raw, **given}
        checked = check_function_options(raw)
        base = {k: v for k, v in self.options.items() if k in ("max_inputs", "target_inputs", "batched")}
        full = checked | base | extra | class_port_limit(self.user_cls, self.name, raw)
        derived = Cls(self.app, self.user_cls, full, self.name, self.image, raw=raw,
                      parameters=self.parameters)
        derived._variant = variant
        self._variants[variant] = derived
        return derived

    def registration_name(self, params: dict[str, Any]) -> str:
        """The name of the pool of instances with ``params``: the class's own for the class as declared with its
        default parameters (what a deployed class serves), else with the variant and parameters after it, so
        every set gets its own pool and none replaces another."""
        suffix = f".{self._variant}" if self._variant else ""
        if params and params != self._default_parameters():
            suffix += f"({args(params)})"
        return self.name + suffix

    def _default_parameters(self) -> dict[str, Any] | None:
        try:
            return self._checked_parameters({})
        except InvalidError:
            return None

    def move_to(self, app: AppLike) -> None:
        """``app.include``: this class (its instances and variants) is ``app``'s now."""
        self.app = app
        for obj in self._objs.values():
            obj.registration.app = app
            obj.registration.forget()
        for variant in self._variants.values():
            variant.move_to(app)

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
        for registration in self.registrations():
            registration.forget()

    def registrations(self) -> list[Registration]:
        own = [obj.registration for obj in self._objs.values()]
        return own + [r for variant in self._variants.values() for r in variant.registrations()]

    def __repr__(self) -> str:
        return f"<rc.Cls {self.app.name}.{self.name}>"


class Obj:
    """Instances of a remote class with one set of parameters: one pool on the runtime."""

    def __init__(self, cls: Cls, params: dict[str, Any]) -> None:
        spec = ClsSpec(cls.user_cls, params, cls.roles["method"], cls.roles["enter"], cls.roles["exit"])
        self.registration = Registration(cls.app, spec, cls.options, cls.registration_name(params), cls.image,
                                         **shipping_of(cls.app, cls._raw))
        self._cls = cls
        self._params = params
        self._local: Any = None
        for name in cls.roles["method"]:
            setattr(self, name, Function(self.registration, self._local_method(name), method=name))
        self.update_autoscaler = twin(functools.partial(update_autoscaler, self.registration.name,
                                                        getattr(self, cls.roles["method"][0]).fid_aio))

    def _local_method(self, name: str) -> Callable[..., Any]:
        def call_here(*args: Any, **kwargs: Any) -> Any:
            if self._local is None:  # build the instance here once, as a container would
                self._local = self._cls.user_cls(**self._params)
                for hook in self._cls.roles["enter"]:
                    getattr(self._local, hook)()
            return getattr(self._local, name)(*args, **kwargs)

        call_here.__name__ = name
        return call_here


class DeployedCls(Variants):
    """A deployed class found by name: ``Model()`` gives the handle on its instance, whose methods call it.

    >>> Model = rc.Cls.from_name("demo", "Model")
    >>> Model().predict.remote(x)
    """

    def __init__(self, app_name: str, name: str, variant: str = "", overrides: dict[str, Any] | None = None) -> None:
        self._lookup = VariantLookup(app_name, name, variant, overrides or {}) if variant else Lookup(app_name, name)
        self.name = name
        if not self._lookup.methods:
            raise InvalidError(f"{name!r} in deployed app {app_name!r} is a function, not a class: use "
                               f"rc.Function.from_name({app_name!r}, {name!r})")
        self._variant, self._overrides = variant, dict(overrides or {})
        self._variants: dict[str, DeployedCls] = {}
        self._obj = DeployedObj(self._lookup)

    def _batched(self) -> dict[str, Any]:
        return dict(self._lookup.options.get("batched") or {})

    def _derive(self, given: dict[str, Any], extra: dict[str, Any], how: str) -> DeployedCls:
        """A variant the runtime makes of the deployed class (``fn_variant``), with the wire options ``given``
        sets and ``extra`` over the deployed ones; one per ``how``."""
        variant = f"{self._variant}.{how}" if self._variant else how
        found = self._variants.get(variant)
        if found is None:
            overrides = {**self._overrides, **wire_overrides(given), **extra}
            found = self._variants[variant] = DeployedCls(self._lookup.app.name, self.name, variant, overrides)
        return found

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
        first: Function = getattr(self, lookup.methods[0])
        self.update_autoscaler = twin(functools.partial(update_autoscaler, lookup.name, first.fid_aio))
