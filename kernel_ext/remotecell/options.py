"""Declared infrastructure: function options, checked where they are given.

Every check names the bad value and the allowed range.  The runtime receives
the normalized options (units in names: ``timeout_s``, ``memory_mib``).
"""

from __future__ import annotations

import datetime
import hashlib
import inspect
import re
import warnings
import zoneinfo
from dataclasses import dataclass
from typing import Any

from .exceptions import InvalidError
from .images import check_image
from .infra import Proxy, check_secrets, check_volumes

# Options the runtime acts on today; the others are stored and reported, and a
# warning says they are not in effect yet, rather than ignoring them silently.
IN_EFFECT = {
    "gpu", "timeout", "retries", "memory", "min_containers", "max_containers", "buffer_containers",
    "scaledown_window", "env", "name", "secrets", "image", "volumes", "cpu", "schedule",
    "single_use_containers", "block_network", "max_inputs", "startup_timeout", "ephemeral_disk",
    "serialized", "include_source",  # read here: how the definition travels (``_references``), not sent
}
# Modal's options that mean nothing on one self-hosted runtime: accepted (their values checked), not sent, and
# no warning; each reason is the README's (its compatibility table is checked against this dict).
NO_EFFECT = {
    "region": "one runtime host: there is no region to choose",
    "cloud": "one runtime host: there is no cloud provider to choose",
    "routing_region": "one runtime host: inputs are routed to it",
    "nonpreemptible": "nothing preempts containers here",
    "enable_memory_snapshot": "no memory snapshots yet; `@rc.enter(snap=True)` hooks run first, in order, "
                              "in every container",
    "proxy": "containers reach the network as the host does; there is no static outbound IP to give",
    "restrict_modal_access": "a container can always reach its own runtime (that is how it serves inputs)",
    "is_generator": "generators are recognized from the function itself",
    "experimental_options": "no experimental options here",
}
KNOWN = IN_EFFECT | NO_EFFECT.keys()
# remotecell's own options, which Modal has no name for: ``cache=True`` (the result cache).
OWN = {"cache"}

_GPU_ITEM = re.compile(r"^[A-Za-z0-9_-]+!?(:[1-8])?$")


def check_range(name: str, value: Any, low: float, high: float, kind: type = int) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
        raise InvalidError(f"{name}={value!r} must be {'a number' if kind is float else 'an integer'} "
                           f"from {low:g} to {high:g}")
    if not low <= value <= high:
        raise InvalidError(f"{name}={value!r} is out of range: allowed {low:g} to {high:g}")
    return value


def check_request_limit(name: str, value: Any, low: float, high: float, kind: type = int) -> tuple[Any, Any]:
    """``cpu=``/``memory=``: a request, or Modal's ``(request, limit)``; the limit is None when not given."""
    if not isinstance(value, tuple):
        return check_range(name, value, low, high, kind), None
    if len(value) != 2:
        raise InvalidError(f"{name}={value!r} must be a number or a (request, limit) pair")
    request = check_range(f"{name} request", value[0], low, high, kind)
    limit = check_range(f"{name} limit", value[1], low, high, kind)
    if limit < request:
        raise InvalidError(f"{name}={value!r}: the limit {limit:g} is below the request {request:g}")
    return request, limit


def check_gpu(gpu: Any) -> str | list[str] | None:
    if gpu is None:
        return None
    items = [gpu] if isinstance(gpu, str) else gpu
    if not isinstance(items, (list, tuple)) or not items:
        raise InvalidError(f"gpu={gpu!r} must be a string like 'any', 'H100', 'any:2' or a list of them")
    for item in items:
        if not isinstance(item, str) or not _GPU_ITEM.match(item):
            raise InvalidError(
                f"gpu={gpu!r}: {item!r} is not a GPU spec; use 'any', a type such as 'H100', "
                "optionally with a count from 1 to 8 ('any:2')"
            )
    # Modal's "H100!" asks for exactly an H100, never an upgrade: a host here gives exactly what is named anyway.
    plain = [item.replace("!", "") for item in items]
    return plain[0] if isinstance(gpu, str) else plain


def _check_no_effect(options: dict[str, Any]) -> None:
    """The values of Modal's options that have no effect here are still checked: a typo there is a typo."""
    for name in ("region", "cloud", "routing_region"):
        value = options.get(name)
        if value is not None and not (isinstance(value, str) or (isinstance(value, (list, tuple))
                                                                and all(isinstance(v, str) for v in value))):
            raise InvalidError(f"{name}={value!r} must be a string or a list of strings, e.g. 'us-east'")
    for name in ("nonpreemptible", "enable_memory_snapshot", "restrict_modal_access", "serialized",
                 "is_generator", "include_source"):
        if options.get(name) is not None and not isinstance(options[name], bool):
            raise InvalidError(f"{name}={options[name]!r} must be True or False")
    if options.get("proxy") is not None and not isinstance(options["proxy"], Proxy):
        raise InvalidError(f"proxy={options['proxy']!r} must be rc.Proxy.from_name('name')")
    if options.get("experimental_options") is not None and not isinstance(options["experimental_options"], dict):
        raise InvalidError(f"experimental_options={options['experimental_options']!r} must be a dict")


@dataclass(frozen=True)
class Retries:
    """How often a failed input is tried again, with exponential backoff.

    >>> @app.function(retries=rc.Retries(max_retries=3, initial_delay=0.5))
    ... def flaky(x): ...
    """

    max_retries: int
    backoff_coefficient: float = 2.0
    initial_delay: float = 1.0
    max_delay: float = 60.0

    def __post_init__(self) -> None:
        check_range("max_retries", self.max_retries, 0, 10)
        check_range("backoff_coefficient", self.backoff_coefficient, 1.0, 10.0, float)
        check_range("initial_delay", self.initial_delay, 0.0, 60.0, float)
        check_range("max_delay", self.max_delay, 1.0, 60.0, float)

    def to_wire(self) -> dict[str, float]:
        return {"max_retries": self.max_retries, "backoff_coefficient": self.backoff_coefficient,
                "initial_delay_s": self.initial_delay, "max_delay_s": self.max_delay}


@dataclass(frozen=True)
class Cron:
    """Run a deployed function on a cron schedule, in a time zone (daylight saving time included).

    >>> @app.function(schedule=rc.Cron("0 3 * * *", timezone="Europe/Berlin"))
    ... def nightly(): ...

    Five fields (minute hour day month weekday), or six with seconds last. A wall
    time that happens twice when the clocks go back fires once (unless the hour
    field is ``*``); one that is skipped when they go forward fires at the next
    valid time. Schedules fire for deployed apps and while ``with app.run():`` runs.
    """

    cron_string: str
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        from croniter import croniter  # here, not at the top: it costs ``import remotecell`` ~14 ms

        if not isinstance(self.cron_string, str) or not croniter.is_valid(self.cron_string):
            raise InvalidError(f"rc.Cron({self.cron_string!r}) is not a cron expression: give five fields "
                               "'minute hour day month weekday' such as '0 3 * * *' (a sixth, seconds, is optional)")
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
            raise InvalidError(f"rc.Cron(timezone={self.timezone!r}) is not a time zone: use an IANA name "
                               "such as 'UTC' or 'Europe/Berlin'") from None

    def to_wire(self) -> dict[str, str]:
        return {"cron": self.cron_string, "timezone": self.timezone}


@dataclass(frozen=True, kw_only=True)
class Period:
    """Run a deployed function every so often, counted from its last run (or from the deploy).

    >>> @app.function(schedule=rc.Period(hours=6))
    ... def refresh(): ...

    At least one second in all; Modal's keywords, less ``years`` and ``months``
    (not a fixed length: use ``rc.Cron``). Schedules fire for deployed apps and in ``app.run()``.
    """

    weeks: float = 0
    days: float = 0
    hours: float = 0
    minutes: float = 0
    seconds: float = 0

    def __post_init__(self) -> None:
        for name in ("weeks", "days", "hours", "minutes", "seconds"):
            check_range(name, getattr(self, name), 0, 1e6, float)
        if self.period_s < 1:
            raise InvalidError(f"rc.{self!r} is {self.period_s:g} s: a period must be at least 1 s")

    @property
    def period_s(self) -> float:
        return float(datetime.timedelta(weeks=self.weeks, days=self.days, hours=self.hours, minutes=self.minutes,
                                        seconds=self.seconds).total_seconds())

    def to_wire(self) -> dict[str, float]:
        return {"period_s": self.period_s}


def check_schedule(value: Any) -> dict[str, Any]:
    if not isinstance(value, (Cron, Period)):
        raise InvalidError(f"schedule={value!r} must be rc.Cron(...) or rc.Period(...)")
    return value.to_wire()


def check_schedulable(fn: Any, name: str) -> None:
    """A scheduled function is called with no arguments: every parameter needs a default."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return
    required = [p.name for p in params if p.default is inspect.Parameter.empty
                and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]
    if required:
        raise InvalidError(f"{name} has a schedule, so it is called with no arguments, but it requires "
                           f"{', '.join(required)}: give them defaults or drop the schedule")


_CONCURRENCY_ATTR = "__remotecell_concurrency__"


def concurrent(_fn: Any = None, *, max_inputs: int, target_inputs: int | None = None) -> Any:
    """Let one container run up to ``max_inputs`` inputs at once (threads, or tasks for ``async def``).

    The autoscaler aims at ``target_inputs`` per container and bursts to ``max_inputs``.

    >>> @app.function()
    ... @rc.concurrent(max_inputs=8)
    ... async def fetch(url): ...
    """
    check_range("max_inputs", max_inputs, 1, 1000)
    if target_inputs is not None:
        check_range("target_inputs", target_inputs, 1, max_inputs)

    def attach(target: Any) -> Any:
        if hasattr(target, "registration") or hasattr(target, "roles"):
            raise InvalidError("@rc.concurrent goes below @app.function / @app.cls (closer to the def)")
        setattr(target, _CONCURRENCY_ATTR, {"max_inputs": max_inputs, "target_inputs": target_inputs or max_inputs})
        return target

    return attach(_fn) if _fn is not None else attach


def concurrency_of(target: Any) -> dict[str, int]:
    return dict(getattr(target, _CONCURRENCY_ATTR, {"max_inputs": 1, "target_inputs": 1}))


_BATCHED_ATTR = "__remotecell_batched__"
MAX_BATCH_SIZE = 1000
MAX_WAIT_MS = 600_000


def batched(_fn: Any = None, *, max_batch_size: int | None = None, wait_ms: int | None = None) -> Any:
    """Callers pass single items; the runtime runs the function once per batch of them.

    A batch closes when it holds ``max_batch_size`` inputs, or when its oldest input
    has waited ``wait_ms``. The function receives one list per parameter and must
    return a list with one result per input, in order.

    >>> @app.function()
    ... @rc.batched(max_batch_size=32, wait_ms=10)
    ... def embed(texts: list[str]) -> list[list[float]]:
    ...     return model.encode(texts).tolist()
    >>> embed.remote("hello")        # one caller, one item, one result
    """
    if _fn is not None:
        raise InvalidError("use @rc.batched(max_batch_size=N, wait_ms=T) with both limits, not bare @rc.batched")
    check_range("max_batch_size", max_batch_size, 1, MAX_BATCH_SIZE)
    check_range("wait_ms", wait_ms, 0, MAX_WAIT_MS)

    def attach(target: Any) -> Any:
        if hasattr(target, "registration") or hasattr(target, "roles"):
            raise InvalidError("@rc.batched goes below @app.function / @rc.method (closer to the def)")
        check_batchable(target)
        setattr(target, _BATCHED_ATTR, {"max_batch_size": max_batch_size, "wait_ms": wait_ms})
        return target

    return attach


def check_batchable(fn: Any) -> None:
    """A batched function takes one list per parameter: no defaults, no *args/**kwargs, no generators."""
    name = getattr(fn, "__qualname__", repr(fn))
    if not inspect.isfunction(fn):
        raise InvalidError(f"@rc.batched goes on a function or a method, got {fn!r}")
    if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
        raise InvalidError(f"@rc.batched cannot go on the generator {name}: it must return a list")
    params = list(inspect.signature(fn).parameters.values())
    for p in params:
        if p.default is not inspect.Parameter.empty:
            raise InvalidError(f"@rc.batched {name}: parameter {p.name}={p.default!r} has a default; "
                               "batched functions take no default arguments (each parameter gets a list)")
        if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise InvalidError(f"@rc.batched {name}: *{p.name} is not allowed; name each parameter")
    if not params:
        raise InvalidError(f"@rc.batched {name} takes no parameters: it needs at least one (a list of inputs)")


def batching_of(target: Any) -> dict[str, int] | None:
    """``{"max_batch_size", "wait_ms"}`` when ``target`` is ``@rc.batched``."""
    spec = getattr(target, _BATCHED_ATTR, None)
    return dict(spec) if spec else None


def check_function_options(options: dict[str, Any]) -> dict[str, Any]:
    """Validate ``@app.function(...)`` options; return them normalized for the runtime."""
    unknown = set(options) - KNOWN - OWN
    if unknown:
        raise InvalidError(f"unknown function option(s) {sorted(unknown)}; known: {sorted(KNOWN | OWN)}")
    out: dict[str, Any] = {}
    gpu = check_gpu(options.get("gpu"))
    if gpu is not None:
        out["gpu"] = gpu
    out["timeout_s"] = check_range("timeout", options.get("timeout", 300), 1, 86400, float)
    out["min_containers"] = check_range("min_containers", options.get("min_containers", 0), 0, 1000)
    out["max_containers"] = check_range("max_containers", options.get("max_containers", 100), 1, 1000)
    if out["min_containers"] > out["max_containers"]:
        raise InvalidError(f"min_containers={out['min_containers']} is more than "
                           f"max_containers={out['max_containers']}")
    out["scaledown_window_s"] = check_range("scaledown_window", options.get("scaledown_window", 60), 2, 3600, float)
    if options.get("startup_timeout") is not None:
        out["startup_timeout_s"] = check_range("startup_timeout", options["startup_timeout"], 1, 86400, float)
    if options.get("max_inputs") is not None:  # Modal's: inputs a container serves before it exits
        out["container_max_inputs"] = check_range("max_inputs", options["max_inputs"], 1, 1_000_000)
    _check_no_effect(options)
    if "buffer_containers" in options:
        out["buffer_containers"] = check_range("buffer_containers", options["buffer_containers"], 0, 1000)
    if "cpu" in options:
        out["cpu"], cpu_limit = check_request_limit("cpu", options["cpu"], 0.125, 512, float)
        if cpu_limit is not None:
            out["cpu_limit"] = cpu_limit
    if "memory" in options:
        out["memory_mib"], memory_limit = check_request_limit("memory", options["memory"], 64, 4 * 1024 * 1024)
        if memory_limit is not None:
            out["memory_limit_mib"] = memory_limit
    for flag in ("single_use_containers", "block_network"):
        if flag in options:
            if not isinstance(options[flag], bool):
                raise InvalidError(f"{flag}={options[flag]!r} must be True or False")
            if options[flag]:
                out[flag] = True
    if "ephemeral_disk" in options:
        out["ephemeral_disk_mib"] = check_range("ephemeral_disk", options["ephemeral_disk"], 1, 3 * 1024 * 1024)
    if "retries" in options:
        out["retries"] = _check_retries(options["retries"]).to_wire()
    env = options.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        raise InvalidError(f"env={env!r} must be a dict of str to str")
    if env:
        out["env"] = env
    if options.get("secrets"):
        out["secrets"] = check_secrets(options["secrets"])
    if options.get("volumes"):
        out["volumes"] = check_volumes(options["volumes"])
    if options.get("image") is not None:  # it travels with its registration, made when the app starts
        check_image(options["image"])
    if options.get("schedule") is not None:
        out["schedule"] = check_schedule(options["schedule"])
    if _check_cache(options):
        out["cache"] = True  # the code digest is filled in by @app.function, which has the function
    not_yet = sorted(set(options) - IN_EFFECT - NO_EFFECT.keys() - OWN)
    if not_yet:
        warnings.warn(
            f"function option(s) {not_yet} are accepted and stored but not enforced by this version yet",
            stacklevel=3,
        )
    out["not_in_effect"] = not_yet
    return out


def _check_cache(options: dict[str, Any]) -> bool:
    """``cache=``: True or False; refused beside ``schedule=``, which says the function runs for its effects."""
    value = options.get("cache", False)
    if not isinstance(value, bool):
        raise InvalidError(f"cache={value!r} must be True or False")
    if value and options.get("schedule") is not None:
        raise InvalidError("cache=True cannot go with schedule=: a scheduled function runs for what it does, and a "
                           "cached run would do nothing; drop one of them")
    return value


def check_cacheable(fn: Any, name: str, web: bool) -> dict[str, str]:
    """The ``cache`` option of a ``cache=True`` function: ``{"code": digest}``; refused for generators (a stream)
    and web endpoints (requests have effects and headers)."""
    if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
        raise InvalidError(f"cache=True: {name} is a generator; only functions that return a value are cached")
    if web:
        raise InvalidError(f"cache=True: {name} is a web endpoint; a request is answered by running it, "
                           "so drop cache=True")
    return {"code": code_digest(fn)}


def code_digest(fn: Any) -> str:
    """What a changed body changes: the function's module, name and source (its bytecode where there is no
    source). Helpers it calls are not part of it: ``f.cache_clear()`` after changing one."""
    digest = hashlib.sha256(f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', '')}\0".encode())
    try:
        digest.update(inspect.getsource(fn).encode())
    except (OSError, TypeError):
        _digest_code(digest, getattr(fn, "__code__", None))
    defaults = (getattr(fn, "__defaults__", None), getattr(fn, "__kwdefaults__", None))
    digest.update(repr(defaults).encode())
    return digest.hexdigest()


def _digest_code(digest: Any, code: Any) -> None:
    if code is None:
        return
    digest.update(code.co_code)
    digest.update(repr(code.co_names).encode())
    for const in code.co_consts:
        if hasattr(const, "co_code"):
            _digest_code(digest, const)
        else:
            digest.update(repr(const).encode())


def _check_retries(value: Any) -> Retries:
    if isinstance(value, Retries):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        check_range("retries", value, 0, 10)
        return Retries(max_retries=value, backoff_coefficient=1.0, initial_delay=1.0)  # as Modal does
    raise InvalidError(f"retries={value!r} must be an integer from 0 to 10 or rc.Retries(...)")
