"""``@rc.batched``: one call of the function for a ``batch`` message, one result per input.

Each input's ``(args, kwargs)`` is bound to the function's parameters (cached per
method) and the batch is called with one list per parameter.  An input that does not
unpickle or fit fails alone, at once; the others go on.  The returned list must have
one item per input that made it, in order: its items are the inputs' results, and any
other return value fails them all with ``BatchContractError``; so does one error
raised (or a cancel) for the whole batch.  What a batch prints goes to the caller of its
first input.  The results are reported on the I/O thread, many to a message.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from ..protocol import pickling
from ..protocol.errors import ErrorName
from ..protocol.framing import Payload
from ..protocol.messages.calls import ResultMsg
from ..protocol.messages.containers import BatchMsg
from ..protocol.messages.session import ErrorInfo
from .inputs import CURRENT, Cancelled, Returned, Terminated, describe_error, outcome_of, type_name
from .running import Runner


class Batches:
    """Runs ``batch`` messages through the ``Runner``: where the function runs, and how each input ends."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.params: dict[Any, list[inspect.Parameter]] = {}  # method name -> its parameters

    def on_batch(self, msg: BatchMsg, payloads: list[Payload]) -> None:
        """Call the function once for the batch, with one list per parameter; answer per input."""
        method = self.runner.loaded.methods.get(msg.method)
        if method is None or len(payloads) != len(msg.ids):
            exc = self.runner.loaded.no_method(msg.method) if method is None else ValueError(
                f"a batch of {len(msg.ids)} ids came with {len(payloads)} payloads")
            self._report(method, msg, payloads, list(range(min(len(payloads), len(msg.ids)))), exc)
            return
        self.runner.start(method, msg.method, self._run_async, self._run_sync,
                          lambda work: self._run_sync(method, *work), msg, payloads)

    def _run_sync(self, method: Callable[..., Any], msg: BatchMsg, payloads: list[Payload]) -> None:
        token = CURRENT.set(msg.ids[0])  # what a batch prints goes to the caller of its first input
        try:
            live, args, kwargs = self._unpack(method, msg, payloads)
            outcome: Any = None
            if live:
                try:
                    outcome = Returned(method(*args, **kwargs))
                except Terminated:
                    raise
                except BaseException as exc:
                    outcome = exc
            self.runner.outbox.on_io(lambda: self._report(method, msg, payloads, live, outcome))
        finally:
            CURRENT.reset(token)

    async def _run_async(self, method: Callable[..., Any], msg: BatchMsg, payloads: list[Payload]) -> None:
        CURRENT.set(msg.ids[0])  # this task's own context
        live, args, kwargs = self._unpack(method, msg, payloads)
        outcome = await outcome_of(method(*args, **kwargs)) if live else None
        self.runner.outbox.on_io(lambda: self._report(method, msg, payloads, live, outcome))

    def _unpack(self, method: Callable[..., Any], msg: BatchMsg, payloads: list[Payload],
                ) -> tuple[list[int], list[list[Any]], dict[str, list[Any]]]:
        """Each input's (args, kwargs) bound to the parameters, as one list per parameter.

        An input that does not unpickle or does not fit the signature fails alone, at once;
        the others go on. Returns the indexes of the inputs that made it, and the lists.
        """
        params = self.params.get(msg.method)
        if params is None:
            params = self.params[msg.method] = list(inspect.signature(method).parameters.values())
        positional = [p for p in params if p.kind is not inspect.Parameter.KEYWORD_ONLY]
        keyword = [p for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]
        args: list[list[Any]] = [[] for _ in positional]
        kwargs: dict[str, list[Any]] = {p.name: [] for p in keyword}
        live = []
        for index, (input_id, payload) in enumerate(zip(msg.ids, payloads, strict=True)):
            try:
                call_args, call_kwargs = pickling.deserialize(payload, hold=True)
                if not call_kwargs and not keyword and len(call_args) == len(positional):
                    values = list(call_args)  # the common case: one positional item per parameter
                else:
                    bound = inspect.Signature(params).bind(*call_args, **call_kwargs).arguments
                    values = [bound[p.name] for p in positional]
                    for p in keyword:
                        kwargs[p.name].append(bound[p.name])
            except Terminated:
                raise
            except BaseException as exc:
                self.runner.fail(input_id, [payload], exc)
                continue
            for column, value in zip(args, values, strict=True):
                column.append(value)
            live.append(index)
        return live, args, kwargs

    def _report(self, method: Callable[..., Any] | None, msg: BatchMsg, payloads: list[Payload],
                live: list[int], outcome: Any) -> None:
        """One result per input of the batch: its item of the returned list, or the batch's error."""
        ids, shm, finish = msg.ids, msg.shm, self.runner.finish
        if isinstance(outcome, Returned):
            problem = _contract_problem(outcome.value, len(live))
            if problem is None:
                for index, value in zip(live, outcome.value, strict=True):
                    use_shm = bool(shm[index]) if index < len(shm) else False
                    self.runner.succeed(ResultMsg(id=ids[index]), use_shm, [payloads[index]], value)
                return
            name = getattr(method, "__qualname__", "the batched function")
            error = ErrorInfo(type=ErrorName.BATCH_CONTRACT, message=f"{name} {problem}")
            for index in live:
                finish([payloads[index]], ResultMsg(id=ids[index], status="error", error=error))
        elif isinstance(outcome, Cancelled):
            for index in live:
                finish([payloads[index]], ResultMsg(id=ids[index], status="cancelled"))
        elif outcome is not None:
            error, error_payloads = describe_error(outcome)  # once: every input gets the same error
            for index in live:
                finish([payloads[index]], ResultMsg(id=ids[index], status="error", error=error), error_payloads)


def _contract_problem(value: Any, n: int) -> str | None:
    """What is wrong with a batched function's return value for ``n`` inputs, or None."""
    if not isinstance(value, list):
        try:
            size = f" of length {len(value)}"
        except TypeError:  # no length (or a 0-d tensor)
            size = ""
        return (f"returned {type_name(value)}{size} instead of a list of {n} results (one per input, in "
                "order); return a list, e.g. list(outputs)")
    if len(value) != n:
        return (f"returned a list of {len(value)} results for a batch of {n} inputs; it must return "
                "one result per input, in order")
    return None
