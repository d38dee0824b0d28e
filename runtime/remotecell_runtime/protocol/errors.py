"""The errors the runtime makes itself, by name: one registry for both sides.

The daemon pickles nothing, so an error it makes (a timeout, a crash, a bad request)
travels as ``{"type": name, "message": text}``; the client turns the name back into
the class of the same name in ``remotecell.exceptions`` (a test checks every name has one).
"""

from __future__ import annotations

from enum import Enum


class ErrorName(str, Enum):
    """An error's name on the wire; the value is the client's exception class name."""

    INVALID = "InvalidError"
    NOT_FOUND = "NotFoundError"
    AUTH = "AuthError"
    CONNECTION = "ConnectionError"
    VERSION_MISMATCH = "VersionMismatchError"
    RUNTIME_RESTARTED = "RuntimeRestarted"
    TIMEOUT = "FunctionTimeoutError"
    CRASHED = "ContainerCrashed"
    OUTPUT_EXPIRED = "OutputExpiredError"
    CANCELLED = "InputCancelled"
    BATCH_CONTRACT = "BatchContractError"
    PAYLOAD_TOO_LARGE = "PayloadTooLarge"
    SERIALIZATION = "SerializationError"
    IMAGE_BUILD = "ImageBuildError"
    ALREADY_EXISTS = "AlreadyExistsError"
    FILE_NOT_FOUND = "VolumeFileNotFoundError"  # a FileNotFoundError on the client, as Modal raises
    FILE_EXISTS = "VolumeFileExistsError"  # a FileExistsError on the client

    def __str__(self) -> str:  # f-strings and JSON show the name itself
        return self.value


class InputCancellation(BaseException):
    """Raised inside user code when its input is cancelled (Modal's ``modal.exception.InputCancellation``).

    A BaseException, so ``except Exception`` in user code does not swallow it; the
    container raises its subclass ``container.inputs.Cancelled``.
    """
