"""The function options schema: what a registered function or class asks of the runtime, field by field.

The client checks what the user wrote (ranges, spellings; ``remotecell.options``)
and sends the normalized options as ``fn_register``'s ``options``, units in names
(``timeout_s``, ``memory_mib``).  The runtime reads them once, at registration,
as a ``FunctionOptions`` (a field of the wrong type is refused there, by name)
and never looks a key up again.  The dict itself is kept as it came: it is
saved with a deployed app, sent to containers in ``load``, and part of the fid.

Defaults here are the runtime's: an option left out means its default.
"""

from __future__ import annotations

from typing import Any

from .framing import WireError
from .image_spec import ImageSpec
from .message import Message, message, wire
from .messages.web import WebSpec

__all__ = ["BatchPolicy", "CachePolicy", "FunctionOptions", "ImageSpec", "RetryPolicy", "ScheduleSpec", "SecretRef",
           "VolumeMount"]

CRASH_RETRY_CAP = 3  # containers that may die under one input before it fails as poison


@message()
class RetryPolicy(Message):
    """``retries=``: how many more tries a failed input gets, and the waits between them."""

    max_retries: int = 0
    backoff_coefficient: float = 2.0
    initial_delay_s: float = 1.0
    max_delay_s: float = 60.0

    def delay_s(self, attempt: int) -> float | None:
        """Seconds before the next try after failed ``attempt``, or None when the budget is spent."""
        if attempt > self.max_retries:
            return None
        return min(self.initial_delay_s * self.backoff_coefficient ** (attempt - 1), self.max_delay_s)


@message()
class BatchPolicy(Message):
    """``@batched``: inputs per call, and how long the first of a batch waits for the rest."""

    max_batch_size: int
    wait_ms: int


@message()
class ScheduleSpec(Message):
    """``schedule=``: ``rc.Period`` (``period_s``) or ``rc.Cron`` (``cron`` in ``timezone``), exactly one."""

    period_s: float | None = None
    cron: str | None = None
    timezone: str = "UTC"

    def describe(self) -> str:
        """One line for logs and the CLI."""
        if self.period_s is not None:
            return f"every {self.period_s:g} s"
        return f"cron {self.cron!r} ({self.timezone})"


@message()
class CachePolicy(Message):
    """``cache=True``: equal calls answered from the runtime's result cache.

    ``code`` is the client's digest of the function's code (its source, else its bytecode), so a changed body
    misses; the runtime adds the image and the pickled arguments to make each call's key.
    """

    code: str


@message()
class VolumeMount(Message):
    """One entry of ``volumes=``: the named volume mounted at its path (created first when ``create``), or an
    ephemeral one by its id (``oid``)."""

    name: str | None = None
    create: bool = False
    oid: str | None = None


@message()
class SecretRef(Message):
    """One entry of ``secrets=``: a named secret of the runtime, or values given in code (``Secret.from_dict``)."""

    name: str | None = None
    variables: dict[str, Any] | None = wire("values", default=None)
    required_keys: list[str] = wire(factory=list)  # a named secret must have these (Modal's required_keys=)


@message()
class FunctionOptions(Message):
    """The options of one registered definition, as the runtime acts on them.

    Example::

        opts = FunctionOptions.from_wire({"timeout_s": 30, "max_containers": 2})
        opts.timeout_s, opts.retries.delay_s(1)  # 30, None
    """

    gpu: Any = None  # "any", "H100:2" or a list of choices; the host's GPU check reads it
    timeout_s: float = 300.0
    min_containers: int = 0
    max_containers: int = 100
    buffer_containers: int = 0
    scaledown_window_s: float = 60.0
    cpu: float | None = None  # cores reserved from the host's budget; None: none reserved
    cpu_limit: float | None = None  # cores a container may use at most (throttled above); None: no cap
    memory_mib: int | None = None  # the request, and the limit too unless memory_limit_mib says otherwise
    memory_limit_mib: int | None = None
    ephemeral_disk_mib: int | None = None  # the size of each of the sandbox's writable folders (/tmp, the home)
    single_use_containers: bool = False  # a container serves one input, then exits
    container_max_inputs: int | None = None  # Modal's max_inputs=: inputs a container serves, then exits
    startup_timeout_s: float | None = None  # a container not ready this long after its start is stopped
    block_network: bool = False  # the container has no network (only with the sandbox)
    retries: RetryPolicy = wire(factory=RetryPolicy)
    crash_retries: int = CRASH_RETRY_CAP  # a %%remote session sets 0: a cell never reruns behind its back
    max_inputs: int = 1  # inputs one container runs at once (@concurrent)
    target_inputs: int | None = None  # the scaler's aim per container; None: max_inputs
    batched: dict[str, Any] = wire(factory=dict)  # method ("" for a function) -> BatchPolicy fields
    env: dict[str, str] = wire(factory=dict)
    secrets: list[SecretRef] = wire(factory=list)
    volumes: dict[str, VolumeMount] = wire(factory=dict)  # mount path -> volume
    image: ImageSpec | None = None
    schedule: ScheduleSpec | None = None
    web: WebSpec | None = None  # a web endpoint (@rc.fastapi_endpoint, @rc.asgi_app, @rc.wsgi_app)
    web_methods: dict[str, WebSpec] = wire(factory=dict)  # a class's: method name -> its endpoint
    cache: CachePolicy | None = None  # results of equal calls kept and answered from the result cache
    not_in_effect: list[str] = wire(factory=list)  # accepted and reported, not enforced yet

    @property
    def memory_cap_mib(self) -> int | None:
        """Memory a container may use before it is killed (``memory=N`` caps at N, Modal's pair at its limit)."""
        return self.memory_limit_mib or self.memory_mib

    @property
    def inputs_per_container(self) -> int:
        """What the scaler aims at per container."""
        return self.target_inputs if self.target_inputs is not None else self.max_inputs

    def web_specs(self) -> dict[str | None, WebSpec]:
        """Every endpoint of the definition by method (None: a plain function's)."""
        specs: dict[str | None, WebSpec] = {name: spec for name, spec in self.web_methods.items()}
        if self.web is not None:
            specs[None] = self.web
        return specs

    def batch_policies(self) -> dict[str, BatchPolicy]:
        """Each ``@batched`` method's policy; WireError on a malformed one."""
        policies = {}
        for method, spec in self.batched.items():
            if type(spec) is not dict:
                raise WireError(f"option 'batched' of {method!r} must be a JSON object, got {spec!r:.80}")
            policies[method] = BatchPolicy.from_wire(spec)
        return policies
