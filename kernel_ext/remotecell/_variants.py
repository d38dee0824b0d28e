"""Modal's ``Cls.with_options`` / ``with_concurrency`` / ``with_batching``: a class's variants, each in containers
of its own. ``Variants`` checks what each is given and names the variant; the class it is mixed into makes it
(``Cls`` from its decorator's options, ``DeployedCls`` by asking the runtime for ``fn_variant``).

>>> Big = Model.with_options(gpu="any", timeout=600)      # or rc.Cls.from_name("demo", "Model").with_options(...)
>>> Big().predict.remote(x)
"""

from __future__ import annotations

from typing import Any, TypeVar

from .exceptions import InvalidError
from .options import MAX_BATCH_SIZE, MAX_WAIT_MS, check_function_options, check_range, concurrency_of, concurrent

# Modal's with_options parameters (and min_containers), each with the wire options it sets.
WITH_OPTIONS: dict[str, tuple[str, ...]] = {
    "cpu": ("cpu", "cpu_limit"), "memory": ("memory_mib", "memory_limit_mib"), "gpu": ("gpu",), "env": ("env",),
    "secrets": ("secrets",), "volumes": ("volumes",), "retries": ("retries",), "min_containers": ("min_containers",),
    "max_containers": ("max_containers",), "buffer_containers": ("buffer_containers",),
    "scaledown_window": ("scaledown_window_s",), "timeout": ("timeout_s",), "region": (), "cloud": (),
    "routing_region": (),
}


def args(values: dict[str, Any]) -> str:
    """``gpu='any', timeout=60``: what a variant's or an instance's pool name shows of how it differs."""
    return ", ".join(f"{k}={v!r}" for k, v in sorted(values.items()) if v is not None)


def wire_overrides(given: dict[str, Any]) -> dict[str, Any]:
    """The wire options that ``given`` (``with_options`` arguments, checked) sets; None for one to drop (a
    ``cpu=`` without a limit drops the old limit)."""
    checked = check_function_options(given)
    return {key: checked.get(key) for option in given for key in WITH_OPTIONS[option]}


V = TypeVar("V", bound="Variants")


class Variants:
    """``with_options``, ``with_concurrency``, ``with_batching`` of a class; ``_derive`` makes the variant."""

    name: str

    def _derive(self: V, given: dict[str, Any], extra: dict[str, Any], how: str) -> V:
        """The variant with the ``with_options`` arguments ``given`` and the wire options ``extra`` over this
        class's; ``how`` names it (one variant per name)."""
        raise NotImplementedError

    def _batched(self) -> dict[str, Any]:
        """The class's ``@rc.batched`` methods and their limits."""
        raise NotImplementedError

    def with_options(self: V, **options: Any) -> V:
        """The class with other options, as Modal's ``Cls.with_options``: its instances run in containers of
        their own (a pool apart from the class's), with these options over the decorator's.

        >>> Big = Model.with_options(gpu="any", memory=4096, timeout=600)
        >>> Big().predict.remote(x)            # Model().predict.remote(x) still runs as declared

        Options: ``cpu, memory, gpu, env, secrets, volumes, retries, min_containers, max_containers,
        buffer_containers, scaledown_window, timeout, region, cloud, routing_region``; ``secrets`` and ``volumes``
        replace the class's. Calls stack: ``Model.with_options(gpu="any").with_options(timeout=60)``.
        """
        unknown = sorted(set(options) - set(WITH_OPTIONS))
        if unknown:
            raise InvalidError(f"{self.name}.with_options({', '.join(f'{k}=' for k in unknown)}...): not an option "
                               f"of with_options; it takes {', '.join(WITH_OPTIONS)}")
        given = {k: v for k, v in options.items() if v is not None}
        check_function_options(given)  # a bad value fails here, naming it
        return self._derive(given, {}, f"with_options({args(given)})")

    def with_concurrency(self: V, *, max_inputs: int, target_inputs: int | None = None) -> V:
        """The class with ``@rc.concurrent(max_inputs=, target_inputs=)`` in its own containers (Modal's
        ``Cls.with_concurrency``).

        >>> Model.with_concurrency(max_inputs=8)().predict.remote(x)
        """
        marked = concurrent(max_inputs=max_inputs, target_inputs=target_inputs)(type("_", (), {}))
        how = f"with_concurrency({args(dict(max_inputs=max_inputs, target_inputs=target_inputs))})"
        return self._derive({}, concurrency_of(marked), how)

    def with_batching(self: V, *, max_batch_size: int, wait_ms: int) -> V:
        """The class with these batch limits for its ``@rc.batched`` methods, in its own containers (Modal's
        ``Cls.with_batching``).

        >>> Embedder.with_batching(max_batch_size=64, wait_ms=20)().embed.remote("text")
        """
        check_range("max_batch_size", max_batch_size, 1, MAX_BATCH_SIZE)
        check_range("wait_ms", wait_ms, 0, MAX_WAIT_MS)
        batched = self._batched()
        if not batched:
            raise InvalidError(f"{self.name}.with_batching(...): {self.name} has no @rc.batched method; mark the "
                               "methods that take lists @rc.batched(max_batch_size=, wait_ms=) first")
        limits = {"max_batch_size": max_batch_size, "wait_ms": wait_ms}
        return self._derive({}, {"batched": {m: dict(limits) for m in batched}}, f"with_batching({args(limits)})")
