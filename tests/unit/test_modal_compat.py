"""The README's "Modal compatibility" table against Modal's names and against the code, both ways.

The data below is Modal's Python client 1.5.4 (modal-labs/modal-client, py/modal/: ``__init__.py``'s
``__all__``, the public classes of ``exception.py``, the names of its submodules that Modal's
examples import, the parameters of ``App.function``). Every one of them has a row in the table;
a name the table says works (or is accepted) must exist in ``remotecell``, one it says is not
there yet must not, so adding a name without updating the table fails here.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
import remotecell
from remotecell.exceptions import InvalidError
from remotecell.options import IN_EFFECT, KNOWN, NO_EFFECT, check_function_options

ROOT = Path(__file__).resolve().parents[2]
MODAL_VERSION = "1.5.4"

MODAL_ALL = [
    "__version__", "App", "Client", "Cls", "Cron", "Dict", "Environment", "Error", "FilePatternMatcher",
    "Function", "FunctionCall", "Image", "NetworkFileSystem", "Period", "Probe", "Proxy", "Queue", "Retries",
    "CloudBucketMount", "Sandbox", "SandboxSnapshot", "SchedulerPlacement", "Secret", "Server", "Tunnel", "Volume",
    "Workspace", "asgi_app", "batched", "billing", "concurrent", "current_function_call_id", "current_input_id",
    "enable_output", "enter", "exit", "fastapi_endpoint", "forward", "is_local", "interact", "method", "parameter",
    "types", "web_endpoint", "web_server", "wsgi_app",
]
MODAL_EXCEPTIONS = [  # py/modal/exception.py, public classes (UserCodeException is deprecated there)
    "Error", "AlreadyExistsError", "AuthError", "InternalError", "InvalidError", "ConflictError", "DataLossError",
    "NotFoundError", "PermissionDeniedError", "ResourceExhaustedError", "ServiceError", "UnimplementedError",
    "RemoteError", "WorkspaceManagementError", "TimeoutError", "SandboxTimeoutError", "SnapshotCreationError",
    "ExecTimeoutError", "SandboxTerminatedError", "FunctionTimeoutError", "MountUploadTimeoutError",
    "VolumeUploadTimeoutError", "LogsFetchError", "InteractiveTimeoutError", "OutputExpiredError", "ConnectionError",
    "VersionError", "ExecutionError", "DeserializationError", "SerializationError", "RequestSizeError",
    "DeprecationError", "ServerWarning", "AsyncUsageWarning", "InternalFailure", "InputCancellation",
    "ModuleNotMountable", "ClientClosed", "FilesystemExecutionError", "SandboxFilesystemError",
    "SandboxFilesystemNotFoundError", "SandboxFilesystemDirectoryNotEmptyError", "SandboxFilesystemIsADirectoryError",
    "SandboxFilesystemNotADirectoryError", "SandboxFilesystemPermissionError", "SandboxFilesystemFileTooLargeError",
    "SandboxFilesystemPathAlreadyExistsError", "ImageBuildError",
]
MODAL_SUBMODULE_NAMES = [  # what Modal's examples import from submodules
    "functions.Function", "functions.FunctionCall", "app.App", "cls.Cls", "cls.parameter", "dict.Dict",
    "queue.Queue", "image.Image", "secret.Secret", "volume.Volume", "volume.FileEntry", "retries.Retries",
    "schedule.Cron", "schedule.Period", "file_pattern_matcher.FilePatternMatcher", "output.enable_output",
    "partial_function.method", "partial_function.enter", "partial_function.exit", "partial_function.batched",
    "partial_function.concurrent", "partial_function.asgi_app", "partial_function.fastapi_endpoint",
    "partial_function.web_server", "partial_function.wsgi_app", "sandbox.Sandbox", "runner.deploy_app",
    "config.config", "container_process.ContainerProcess",
]
MODAL_FUNCTION_OPTIONS = [  # App.function's parameters
    "image", "schedule", "env", "secrets", "gpu", "serialized", "network_file_systems", "volumes", "cpu", "memory",
    "ephemeral_disk", "min_containers", "max_containers", "buffer_containers", "scaledown_window", "proxy",
    "retries", "timeout", "startup_timeout", "name", "is_generator", "cloud", "region", "routing_region",
    "nonpreemptible", "enable_memory_snapshot", "block_network", "restrict_modal_access", "single_use_containers",
    "include_source", "experimental_options", "_experimental_restrict_output", "max_inputs",
]
MODAL_NAMES = (MODAL_ALL + [f"exception.{n}" for n in MODAL_EXCEPTIONS] + MODAL_SUBMODULE_NAMES)


def _table() -> list[tuple[list[str], str]]:
    """(names in the first cell, status cell) of each row of the README's Modal compatibility table."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Modal compatibility", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0].startswith("`"):
            rows.append((re.findall(r"`([^`]+)`", cells[0]), cells[1]))
    return rows


def _status(cell: str) -> str:
    for status in ("works", "accepted", "not yet"):
        if cell.startswith(status):
            return status
    raise AssertionError(f"status {cell!r} must start with works, accepted or not yet")


def _exists(name: str) -> bool:
    """Whether ``modal.NAME`` (``NAME`` may be ``sub.attr``) resolves with remotecell in modal's place."""
    parts = name.split(".")
    try:
        obj = importlib.import_module("remotecell." + parts[0]) if len(parts) > 1 else remotecell
    except ImportError:
        return False
    try:
        return getattr(obj, parts[-1]) is not None
    except AttributeError:
        pass
    try:  # a submodule not imported yet (``modal.types``)
        importlib.import_module(f"{obj.__name__}.{parts[-1]}")
        return True
    except ImportError:
        return False


def _names_by_status() -> dict[str, str]:
    out = {}
    for names, cell in _table():
        for name in names:
            if name.startswith("modal."):
                assert name not in out, f"{name} has two rows in the table"
                out[name.removeprefix("modal.")] = _status(cell)
    return out


def test_every_modal_name_has_one_row_and_every_row_is_a_modal_name():
    table = _names_by_status()
    missing = sorted(set(MODAL_NAMES) - set(table))
    assert not missing, f"README's Modal compatibility table lacks Modal {MODAL_VERSION}'s {missing}"
    extra = sorted(set(table) - set(MODAL_NAMES))
    assert not extra, f"the table names {extra}, which are not in this test's list of Modal {MODAL_VERSION} names"


@pytest.mark.parametrize("name", MODAL_NAMES)
def test_each_name_is_there_exactly_when_the_table_says_so(name):
    status = _names_by_status()[name]
    if status == "not yet":
        assert not _exists(name), f"remotecell has modal.{name} now: mark its row in README.md works or accepted"
    else:
        assert _exists(name), f"README.md says modal.{name} {status}, but remotecell has no such name"


def _option_rows() -> dict[str, str]:
    out = {}
    for names, cell in _table():
        for name in names:
            if name.startswith("@app.function("):
                for option in re.findall(r"(\w+)=", name):
                    out[option] = _status(cell)
    return out


def test_every_function_option_of_modal_has_a_row_that_matches_the_code():
    rows = _option_rows()
    assert sorted(rows) == sorted(MODAL_FUNCTION_OPTIONS)
    for option, status in rows.items():
        if status == "works":
            assert option in IN_EFFECT, f"README says @app.function({option}=) works; options.IN_EFFECT lacks it"
        elif status == "accepted":
            assert option in KNOWN and option not in IN_EFFECT, option
        else:
            assert option not in KNOWN, f"remotecell accepts {option}= now: update its row in README.md"
    assert KNOWN <= set(MODAL_FUNCTION_OPTIONS), "an option remotecell accepts that Modal does not have"


def test_options_without_effect_are_accepted_checked_and_not_sent():
    out = check_function_options({"region": "us-east", "cloud": "aws", "nonpreemptible": True,
                                  "enable_memory_snapshot": True, "restrict_modal_access": True,
                                  "proxy": remotecell.Proxy.from_name("static-ip"), "serialized": True})
    assert not set(NO_EFFECT) & set(out) and out["not_in_effect"] == []
    with pytest.raises(InvalidError, match="region=5 must be a string or a list of strings"):
        check_function_options({"region": 5})
    with pytest.raises(InvalidError, match=r"proxy='ip' must be rc.Proxy.from_name\('name'\)"):
        check_function_options({"proxy": "ip"})
    unknown = r"unknown function option\(s\) \['network_file_systems'\]; known: \[.*'region'"
    with pytest.raises(InvalidError, match=unknown):
        check_function_options({"network_file_systems": {}})


def test_gpu_specs_as_modal_writes_them():
    assert check_function_options({"gpu": "H100!"})["gpu"] == "H100"
    assert check_function_options({"gpu": "H100!:2"})["gpu"] == "H100:2"
    assert check_function_options({"gpu": ["H100", "A100-80GB"]})["gpu"] == ["H100", "A100-80GB"]
    out = check_function_options({"max_inputs": 3, "startup_timeout": 30, "cpu": (1.0, 2.0), "memory": (256, 512)})
    assert (out["container_max_inputs"], out["startup_timeout_s"]) == (3, 30)
    assert (out["cpu"], out["cpu_limit"], out["memory_mib"], out["memory_limit_mib"]) == (1.0, 2.0, 256, 512)
    with pytest.raises(InvalidError, match="max_inputs=0 is out of range"):
        check_function_options({"max_inputs": 0})


def test_gpu_types_match_inventory_names_by_their_words():
    from remotecell_runtime.gpus import Gpu, GpuAllocator

    gpus = GpuAllocator([Gpu(0, "NVIDIA A100-SXM4-80GB", minor=0), Gpu(1, "NVIDIA H100 80GB HBM3", minor=1)])
    assert gpus.acquire("A100-80GB") == [0]
    assert gpus.unsatisfiable("A10") is not None  # not an A100
    assert gpus.acquire(["L4", "H100"]) == [1]  # the first of the list that the host has
    assert gpus.acquire("H100") is None  # taken
