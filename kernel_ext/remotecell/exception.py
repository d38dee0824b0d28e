"""``remotecell.exception``, as Modal's ``modal.exception``: every error type, under Modal's names too.

``remotecell.exceptions`` defines them; this module offers the same classes, so
``from modal.exception import NotFoundError`` works with ``modal`` aliased to ``remotecell``.
The README's "Modal compatibility" table says which of Modal's names are the same class as one
of remotecell's (``DeserializationError`` is ``SerializationError``) and which Modal has alone.
"""

from __future__ import annotations

from .exceptions import (
    AlreadyExistsError,
    AuthError,
    BatchContractError,
    ConflictError,
    ConnectionError,
    ContainerCrashed,
    DeprecationError,
    DeserializationError,
    Error,
    ExecutionError,
    FunctionTimeoutError,
    ImageBuildError,
    InputCancellation,
    InputCancelled,
    InternalError,
    InvalidError,
    NotFoundError,
    OutputExpiredError,
    PayloadTooLarge,
    PermissionDeniedError,
    RemoteError,
    RequestSizeError,
    ResourceExhaustedError,
    RuntimeRestarted,
    SandboxTerminatedError,
    SandboxTimeoutError,
    SerializationError,
    TimeoutError,
    VersionError,
    VersionMismatchError,
    VolumeFileExistsError,
    VolumeFileNotFoundError,
)

__all__ = [
    "AlreadyExistsError", "AuthError", "BatchContractError", "ConflictError", "ConnectionError", "ContainerCrashed",
    "DeprecationError", "DeserializationError", "Error", "ExecutionError", "FunctionTimeoutError", "ImageBuildError",
    "InputCancellation", "InputCancelled", "InternalError", "InvalidError", "NotFoundError", "OutputExpiredError",
    "PayloadTooLarge", "PermissionDeniedError", "RemoteError", "RequestSizeError", "ResourceExhaustedError",
    "RuntimeRestarted", "SandboxTerminatedError", "SandboxTimeoutError", "SerializationError", "TimeoutError",
    "VersionError", "VersionMismatchError",
    "VolumeFileExistsError", "VolumeFileNotFoundError",
]
