"""How many of Modal's public examples run unchanged here, with ``modal`` aliased to remotecell.

    python tools/modal_examples.py --git-dir /work/.mirror/modal-labs+modal-examples/...git
    python tools/modal_examples.py --folder /path/to/a/checkout          # a checkout, or a folder of those files
    python tools/modal_examples.py --folder DIR --only hello_world --timeout 300
    python tools/modal_examples.py --list                                  # the list and what was left out, why

The examples are read at run time from Modal's examples repository (modal-labs/modal-examples), never
copied into this repository: from a git directory at each one's pinned commit (``git show COMMIT:PATH``),
or from a folder, where each file must be that version (its git blob id is checked; ``--no-verify`` skips it).

Each runs in a fresh folder of its own, laid out as the repository is, as Modal's own CI runs it: its
front matter's ``cmd`` (``modal run PATH`` by default, ``modal run`` → ``remotecell run``, a dotted target
→ ``-m``; ``python ...`` as is) from the folder's top. How ``modal`` is aliased: a package ``modal/`` written
beside the example and at the top (``SHIM``) re-exports remotecell's names and maps ``modal.X`` to
``remotecell.X``; as a module of the example's own folder, ``remotecell run`` ships it to the containers with
the example's source (functions travel by reference there), so ``import modal`` works there too.

Without ``REMOTECELL_RUNTIME``/``REMOTECELL_HOME`` set, the runs share a fresh local runtime in a temporary
state folder, stopped at the end. Prints PASS/FAIL per example (with the last lines of a failure) and the share.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = "modal-labs/modal-examples"


@dataclass(frozen=True)
class Example:
    path: str
    commit: str  # the commit of the version read (its git blob id below)
    blob: str
    needs: str  # why it fits: no GPU, no model download, no internet beyond the package index


EXAMPLES = [
    Example("01_getting_started/get_started.py", "eae60fd6e593e4cb31b4d2ca38188a7ca751669c",
            "fff13fbf5102c551b5066236fe39fbb36c31b805", "a function, .remote"),
    Example("01_getting_started/hello_world.py", "86cc496ed2804ccef2c60ad89f1c104d0aa7a8d2",
            "6c381d51d2f9bc0176b2257fcdf9413bb0b76c0c", ".local, .remote, .map, stderr"),
    Example("01_getting_started/generators.py", "ee53c184848f9200424d478f5d0f5fcb3f02a1b7",
            "d6df729c1ecb32d21122f46322270f81cd5dbf58", "a generator, .remote_gen"),
    Example("08_advanced/generators_async.py", "34b3bd2b334301f2107362d618c2463928cf7a75",
            "46663eda1c1f8d0e25cd625181c11a22019952d0", "an async entrypoint, .remote_gen.aio"),
    Example("08_advanced/hello_world_async.py", "2f2f8a91fe8d3ad01d5643746adbd2abc0ef9928",
            "2d40b1496ec3ae9b69bb15b836edf4e5506ec81f", ".remote.aio, .map.aio"),
    Example("08_advanced/parallel_execution.py", "c15fd12375bd04e2186cb1509a8a3bdb27bf84ce",
            "a10240dd581037d2e05e3939bf0e3349f4d1d71c", ".spawn, FunctionCall.gather, a remote error"),
    Example("05_scheduling/custom_retries.py", "e6e249f7e75086bf18347494c8651a8c1cba8b8d",
            "9a137351cdb5c21f2c8d44a0a7ecc585044bb0a4", "Retries, a named Dict, `modal run` of a module name"),
    Example("05_scheduling/schedule_simple.py", "34b3bd2b334301f2107362d618c2463928cf7a75",
            "47d498c5defb6c05984d66ae3b3dbc9241ddfd81", "Period and Cron in an ephemeral app.run() (60 s)"),
    Example("03_scaling_out/dynamic_batching.py", "3a94fef705069d0aa9594dba5651a4938b1394bc",
            "fa2567971d206286aa7440ef1c5818d978eea030", "@batched function and class method, an image"),
    Example("03_scaling_out/basic_grid_search.py", "20fae2bd49ea24cd8239bbd654f6624301d92d34",
            "7fdb0afc30738d2b770bea62bd9583e6bb83db79", "pip_install from the index, .map of 99"),
    Example("02_building_containers/import_sklearn.py", "caf5661a3ce27c0650ba5ad8bb13efe76b6b129e",
            "59622dd7a02c13441b1ce20da6252e74b855b259", "apt_install (Debian's index), image.imports()"),
    Example("misc/queue_simple.py", "598a7b313fc0c8432d8a503b00975d2648f4524c",
            "e7d5c2a1d114b37cab7b9246054f0a89adf2b3bf", "an ephemeral Queue, its .aio methods"),
    Example("misc/say_hello_cron.py", "fc5dc3bb860f524da66d8f6232246185bba5dca4",
            "9fe75327ca1d900133d46f3c19547a7fbf9e7b21", "`modal run` of a scheduled function"),
    Example("misc/hello_shebang.py", "187b3631735b5e2156877798ce50eac3b4ea0306",
            "fdd6187cf2ecac5dfc8e32af3a244741bb264a54", ".local, .remote, .map"),
    Example("13_sandboxes/simple_code_interpreter.py", "677f15b07f9d268cbb4decd13afc3a4d99f6c5a3",
            "8f870012d65195dbd46481d0adc0cc4ad6a607b9", "App.lookup, Sandbox.create/exec, stdin/stdout"),
    Example("09_job_queues/scatter_gather.py", "7de64d0158694c2e3c532efd20e9502c62ba60a0",
            "82ada1a5e4854554d4479b16f5da7ce2096e083d", "spawn_map, spawns in containers, Dict, --detach"),
]

# Looked at and left out, with why (none of these is counted).
LEFT_OUT = {
    "03_scaling_out/cls_with_options.py": "its variant asks for gpu='T4'",
    "misc/function_chaining.py": "a GPU class and a Hugging Face dataset download",
    "09_job_queues/dicts_and_queues.py": "crawls wikipedia.org (internet)",
    "09_job_queues/pipeline_orchestration.py": "runs Modal's own CLI (`modal app history`, version-pinned lookups)",
    "01_getting_started/sandboxes.py": "harbor pulls Docker images from the internet",
    "08_advanced/poll_delayed_result.py": "a `modal serve` web app: nothing to run to an end",
    "08_advanced/restricted_volumes.py": "adduser/chown as root in the sandbox (apt, run_commands as root)",
    "13_sandboxes/safe_code_execution.py": "runs `rm -rfv / --no-preserve-root` in its sandbox: not on a shared host",
}

SHIM = '''"""``modal`` as remotecell (written by tools/modal_examples.py beside the example it runs)."""

import importlib
import importlib.abc
import importlib.util
import sys

import remotecell
from remotecell import *  # noqa: F403


def __getattr__(name):
    return getattr(remotecell, name)


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """``modal.X`` is ``remotecell.X`` (the very module, not a copy)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname.startswith(__name__ + "."):
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        sys.modules[module.__name__] = importlib.import_module("remotecell" + module.__name__[len(__name__):])


sys.meta_path.insert(0, _Alias())
'''


def blob_id(data: bytes) -> str:
    """Git's id of a file's content (``git hash-object``)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def read_example(example: Example, git_dir: str | None, folder: str | None, verify: bool) -> bytes:
    if git_dir is not None:
        return subprocess.run(["git", "--git-dir", git_dir, "show", f"{example.commit}:{example.path}"],
                              check=True, capture_output=True).stdout
    data = (Path(str(folder)) / example.path).read_bytes()
    if verify and blob_id(data) != example.blob:
        raise ValueError(f"{example.path} in {folder} is not the pinned version (git blob {example.blob} at "
                         f"{example.commit}); check that commit out, or pass --no-verify")
    return data


def front_matter(text: str) -> dict:
    """The ``# ---`` block at the top of an example (``cmd``, ``args``, ...), as Modal's CI reads it."""
    match = re.match(r"(?:#![^\n]*\n)?# ---\n((?:#[^\n]*\n)*?)# ---\n", text)
    found: dict = {}
    for line in (match.group(1).splitlines() if match else []):
        key, _, value = line.lstrip("# ").partition(":")
        try:
            found[key.strip()] = json.loads(value.strip())
        except json.JSONDecodeError:
            found[key.strip()] = value.strip()
    return found


def command_of(example: Example, text: str) -> list[str]:
    """What to run: the front matter's ``cmd`` with ``modal run`` as ``remotecell run``."""
    meta = front_matter(text)
    cmd = list(meta.get("cmd") or ["modal", "run", example.path]) + [str(a) for a in meta.get("args") or []]
    if cmd[0] == "python":
        return [sys.executable, *cmd[1:]]
    if cmd[:2] != ["modal", "run"]:
        raise ValueError(f"{example.path}: its cmd {cmd} is not `modal run` or `python`")
    rest = cmd[2:]
    target = next(i for i, a in enumerate(rest) if not a.startswith("-"))
    if not rest[target].split("::")[0].endswith(".py"):
        rest.insert(target, "-m")  # Modal's `modal run package.module`
    return [sys.executable, "-m", "remotecell", "run", *rest]


def run_one(example: Example, data: bytes, timeout_s: float, env: dict[str, str]) -> tuple[bool, float, str]:
    with tempfile.TemporaryDirectory(prefix="modal-example-") as top:
        file = Path(top) / example.path
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(data)
        for where in {Path(top), file.parent}:
            (where / "modal").mkdir(exist_ok=True)
            (where / "modal" / "__init__.py").write_text(SHIM)
        cmd = command_of(example, data.decode())
        started = time.monotonic()
        try:
            out = subprocess.run(cmd, cwd=top, capture_output=True, text=True, timeout=timeout_s, env=env)
        except subprocess.TimeoutExpired as exc:
            text = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout
            return False, time.monotonic() - started, f"timed out after {timeout_s:.0f} s\n{text or ''}"
        return out.returncode == 0, time.monotonic() - started, out.stdout + out.stderr


def tail(text: str, lines: int = 12) -> str:
    return "\n".join("      " + line for line in text.strip().splitlines()[-lines:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--git-dir", help=f"a git directory of {REPO} (each example read at its pinned commit)")
    source.add_argument("--folder", help=f"a checkout of {REPO}, or a folder with those files at their paths")
    parser.add_argument("--only", nargs="*", help="run only the examples whose path contains one of these")
    parser.add_argument("--timeout", type=float, default=600, help="seconds each example may take")
    parser.add_argument("--no-verify", action="store_true", help="do not check a folder's files are the pinned ones")
    parser.add_argument("--list", action="store_true", help="print the list and what was left out, then exit")
    args = parser.parse_args(argv)
    if args.list or not (args.git_dir or args.folder):
        for e in EXAMPLES:
            print(f"  {e.path} @ {e.commit[:12]}: {e.needs}")
        print("left out:")
        for path, why in LEFT_OUT.items():
            print(f"  {path}: {why}")
        return 0 if args.list else 2
    chosen = [e for e in EXAMPLES if not args.only or any(o in e.path for o in args.only)]
    env = dict(os.environ)
    home = None
    if not env.get("REMOTECELL_RUNTIME") and not env.get("REMOTECELL_HOME"):
        home = tempfile.mkdtemp(prefix="modal-examples-home-")
        env["REMOTECELL_HOME"] = home
    passed = 0
    try:
        for example in chosen:
            data = read_example(example, args.git_dir, args.folder, not args.no_verify)
            ok, took, output = run_one(example, data, args.timeout, env)
            passed += ok
            print(f"{'PASS' if ok else 'FAIL'}  {example.path}  ({took:.1f} s)", flush=True)
            if not ok:
                print(tail(output), flush=True)
    finally:
        if home is not None:
            subprocess.run([sys.executable, "-m", "remotecell", "stop"], env=env, capture_output=True, timeout=60)
            shutil.rmtree(home, ignore_errors=True)
    print(f"\n{passed}/{len(chosen)} passed ({100 * passed / max(len(chosen), 1):.0f}%) of {REPO} examples "
          "that need no GPU, no model download and no internet beyond the package index")
    return 0 if passed == len(chosen) else 1


if __name__ == "__main__":
    sys.exit(main())
