"""Errors raised by remotecell. Every one says what went wrong and what to do."""

from __future__ import annotations

import builtins

from remotecell_runtime.protocol.errors import ErrorName
from remotecell_runtime.protocol.errors import InputCancellation as _InputCancellation


class Error(Exception):
    """Base class of remotecell's own errors."""


class InvalidError(Error, ValueError):
    """A value given to remotecell is out of range or of the wrong kind."""


class NotFoundError(Error, LookupError):
    """A named object (app, function, call, Dict, Queue) does not exist."""


class AuthError(Error):
    """The runtime refused this client, or key files are unsafe."""


class ConnectionError(Error):
    """The runtime cannot be reached, or its versions cannot run this client's code."""


class VersionMismatchError(ConnectionError):
    """Client and runtime differ in a version that by-value code depends on."""


class RuntimeRestarted(ConnectionError):
    """The runtime restarted while a request waited; what the old process held in memory is lost.

    Spawned calls are not: they are in the job store and run again.
    """


class RemoteError(Error):
    """A remote exception whose type could not be rebuilt here.

    Carries ``type_name``, ``message`` and the remote ``traceback`` text.
    """

    def __init__(self, type_name: str, message: str, traceback: str = "") -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message
        self.traceback = traceback

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (RemoteError, (self.type_name, self.message, self.traceback))

    def __str__(self) -> str:
        text = f"{self.type_name}: {self.message}"
        if not self.traceback:
            return text
        return f"{text}\n\nRemote traceback (most recent call last):\n{self.traceback.rstrip()}"


class TimeoutError(builtins.TimeoutError):
    """Modal's ``modal.exception.TimeoutError``: the base of remotecell's timeouts (a builtin ``TimeoutError``).

    Each timeout remotecell raises is also an ``Error`` (``class X(Error, TimeoutError)``); this base is
    not one itself, so that order of bases stays consistent.
    """


class FunctionTimeoutError(Error, TimeoutError):
    """A call ran past its function's ``timeout``; its container was replaced."""


class SandboxTimeoutError(Error, TimeoutError):
    """A ``Sandbox`` ran past its ``timeout`` and was ended (``sb.wait()`` raises it; its returncode is 124)."""


class SandboxTerminatedError(Error):
    """A ``Sandbox`` was terminated (``sb.terminate()``, its app stopped) before its command ended."""


class ExecutionError(Error):
    """Running user code failed in a way that is not the code's own exception (Modal's ``ExecutionError``)."""


class ContainerCrashed(ExecutionError):
    """The container running a call died under it (signal, exit code, out of memory)."""


class OutputExpiredError(Error, TimeoutError):
    """A spawned call's result is older than the runtime keeps results."""


class InputCancelled(Error):
    """The input was cancelled before it produced a result."""


class BatchContractError(Error):
    """A ``@batched`` function returned something other than a list of the input's length."""


class PayloadTooLarge(Error):
    """A value is larger than the runtime accepts for that use."""


class SerializationError(Error):
    """A value could not be pickled or unpickled; the message names its type."""


class ImageBuildError(Error):
    """A function's ``image`` could not be built on the runtime host; the message quotes pip's output."""


class AlreadyExistsError(Error):
    """Something made by name exists already (``rc.Volume.objects.create`` of a volume that is there)."""


class VolumeFileNotFoundError(NotFoundError, FileNotFoundError):
    """No such file in a volume: a ``FileNotFoundError``, as Modal raises, and a ``NotFoundError``."""


class VolumeFileExistsError(AlreadyExistsError, FileExistsError):
    """A file a volume upload would overwrite without ``force``: a ``FileExistsError``, as Modal raises."""


# -- Modal's other names (``remotecell.exception`` offers them all; README "Modal compatibility") ---------------

InputCancellation = _InputCancellation  # raised inside a function whose input was cancelled (a BaseException)
DeserializationError = SerializationError  # remotecell raises one class for both directions
RequestSizeError = PayloadTooLarge
VersionError = VersionMismatchError


class InternalError(Error):
    """Modal's name for a server-side failure; remotecell's runtime reports its failures by the errors above."""


class ConflictError(InvalidError):
    """Modal's name for a conflicting concurrent change; never raised by this runtime (one host, one writer)."""


class PermissionDeniedError(AuthError):
    """Modal's name for a refused permission: an ``AuthError`` here."""


class ResourceExhaustedError(Error):
    """Modal's name for a quota hit; this runtime has no quotas (it queues what the host cannot run yet)."""


class DeprecationError(UserWarning):
    """Modal warns with it when code uses a removed name."""


# Errors the runtime itself produces travel by name (the daemon pickles nothing): one class per registered name.
BY_NAME: dict[str, type[Exception]] = {name.value: globals()[name.value] for name in ErrorName}
