"""Image builds: the first build and a cached rebuild of a three-package image, next to ``pip install --target``
of the same three packages (what the runtime's builder did before), in one run, rounds interleaved.

    .venv/bin/python benchmarks/image_build.py            # 3 rounds and an apt round (~2 min)
    .venv/bin/python benchmarks/image_build.py --rounds 5

Each round starts a runtime on a fresh state folder (so the first build finds nothing: no layer, an empty
uv cache) and measures, in wall seconds:

* ``first build``: ``with app.run():`` entered, i.e. the image built (base venv with the runtime's pins, then
  the install layer), from the local package index of this machine's pip config;
* ``cached rebuild``: a second ``with app.run():`` of the unchanged image (every layer cached);
* ``first call, cached image`` / ``first call, no image``: the first ``.remote()`` of a function of that image
  (a container started from the cached venv), and of a function without an image (the runtime's Python);
* ``pip --target`` / ``pip --target, no cache``: ``pip install --target`` of the same three into an empty
  folder, with pip's own cache (warm after round 1) and without it.

Then ``--apt-rounds`` (1) rounds of an ``apt_install`` image, each on a fresh state folder: its first build (the
base system made with mmdebstrap, then the apt step), its cached rebuild, its first call (a container with the
image's own root filesystem as its /), and a second image's apt step over the cached base system.

Then, on the runtime's own uv command lines with a warm cache, the two ways a layer could be made: a hard-link
copy of the venv below plus one ``uv pip install`` of the step (what the builder does), against a fresh venv
with every requirement so far installed again.  Docker is measured when it is installed (it is said if not).
Prints a markdown table of medians (min-max); writes ``benchmarks/results/images-<time>.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGES = ["tabulate==0.10.0", "six==1.17.0", "humanize==4.16.0"]
APT_PACKAGE, APT_OTHER = "figlet", "sl"  # small Debian packages (from Debian's mirrors)


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


class Runtime:
    """A runtime on a fresh state folder, the client of this process pointed at it."""

    def __init__(self) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="rc-bench-images-"))
        self.log = open(self.home.parent / f"{self.home.name}.log", "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "remotecell_runtime", "serve", "--state-dir",
                                      str(self.home)], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not self._up():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"the runtime did not start; see {self.log.name}")
            time.sleep(0.02)
        os.environ["REMOTECELL_HOME"] = str(self.home)
        os.environ.pop("REMOTECELL_RUNTIME", None)
        from remotecell import _client

        _client.reset_connection()

    def _up(self) -> bool:
        path = self.home / "connection.json"
        return path.exists() and json.loads(path.read_text()).get("pid") == self.proc.pid

    def stop(self) -> None:
        from remotecell import _client

        _client.reset_connection()
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        shutil.rmtree(self.home, ignore_errors=True)


def remotecell_round() -> dict[str, float]:
    import remotecell as rc

    runtime = Runtime()
    try:
        app = rc.App("bench-images")
        imaged = app.function(image=rc.Image.debian_slim().uv_pip_install(*PACKAGES), name="imaged")(_interpreter)
        plain = app.function(name="plain")(_interpreter)
        out: dict[str, float] = {}
        said = io.StringIO()
        started = time.perf_counter()
        with contextlib.redirect_stdout(said), app.run():  # the build log goes to ``said``
            out["first build"] = time.perf_counter() - started
        assert "Built image" in said.getvalue(), said.getvalue()
        started = time.perf_counter()
        with app.run():
            out["cached rebuild"] = time.perf_counter() - started
            out["first call, cached image"] = timed(imaged.remote)
            out["first call, no image"] = timed(plain.remote)
        return out
    finally:
        runtime.stop()


def apt_round() -> dict[str, float]:
    """An apt image on a fresh state folder: the base system made (mmdebstrap) and the step; the same image
    again (cached); a second apt step over the cached base system; the first call of a container with its own /."""
    import remotecell as rc

    runtime = Runtime()
    try:
        app = rc.App("bench-apt")
        imaged = app.function(image=rc.Image.debian_slim().apt_install(APT_PACKAGE), name="apt")(_interpreter)
        out: dict[str, float] = {}
        said = io.StringIO()
        started = time.perf_counter()
        with contextlib.redirect_stdout(said), app.run():
            out["apt image: first build (base system + step)"] = time.perf_counter() - started
        assert "making a base system" in said.getvalue(), said.getvalue()
        started = time.perf_counter()
        with app.run():
            out["apt image: cached rebuild"] = time.perf_counter() - started
            out["apt image: first call (its own /)"] = timed(imaged.remote)
        other = rc.App("bench-apt-2")
        other.function(image=rc.Image.debian_slim().apt_install(APT_OTHER), name="apt2")(_interpreter)
        started = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()), other.run():
            out["apt step over a cached base system"] = time.perf_counter() - started
        return out
    finally:
        runtime.stop()


def _interpreter() -> str:
    import sys

    return sys.executable


def pip_round() -> dict[str, float]:
    out = {}
    for name, extra in (("pip --target", []), ("pip --target, no cache", ["--no-cache-dir"])):
        target = tempfile.mkdtemp(prefix="rc-bench-pip-")
        try:
            command = [sys.executable, "-m", "pip", "install", "--no-input", "--disable-pip-version-check",
                       "--quiet", *extra, "--target", target, *PACKAGES]
            out[name] = timed(lambda c=command: subprocess.run(c, check=True, capture_output=True))
        finally:
            shutil.rmtree(target, ignore_errors=True)
    return out


def docker() -> tuple[str | None, str]:
    """The docker binary when a daemon answers it, and what to say when none does."""
    binary = shutil.which("docker")
    if binary is None:
        return None, "docker is not installed on this machine"
    try:
        subprocess.run([binary, "info"], check=True, capture_output=True, timeout=20)
    except (subprocess.SubprocessError, OSError):
        return None, "docker's client is installed here but no Docker daemon answers it"
    return binary, ""


def docker_round() -> dict[str, float]:
    binary, _ = docker()
    if binary is None:
        return {}
    folder = Path(tempfile.mkdtemp(prefix="rc-bench-docker-"))
    (folder / "Dockerfile").write_text(f"FROM python:3.11-slim\nRUN pip install {' '.join(PACKAGES)}\n")
    out = {}
    for name, extra in (("docker build", ["--no-cache"]), ("docker build, cached", [])):
        out[name] = timed(lambda e=extra: subprocess.run([binary, "build", "-q", *e, str(folder)], check=True,
                                                         capture_output=True))
    shutil.rmtree(folder, ignore_errors=True)
    return out


def layer_strategies(rounds: int) -> dict[str, list[float]]:
    """Copy-then-step against fresh-and-cumulative, on the builder's own uv command lines, warm cache."""
    from remotecell_runtime.images import runtime_code
    from remotecell_runtime.images.layers import copy_venv
    from remotecell_runtime.images.pipconf import read_pip_config
    from remotecell_runtime.images.uv import Uv, find_binary

    root = Path(tempfile.mkdtemp(prefix="rc-bench-layers-"))
    code = runtime_code.prepare(root)
    uv = Uv(find_binary(), root / "uv-cache", read_pip_config(), code)
    env = uv.environment({})

    def run(argv: list[str]) -> None:
        subprocess.run(argv, check=True, capture_output=True, env=env, cwd=root)

    parent = root / "parent"
    run(uv.venv(None, parent))
    run(uv.install(parent, [*code.pins, *PACKAGES[:2]]))  # the venv below: pins and two packages
    out: dict[str, list[float]] = {"layer: hard-link copy + the step": [], "layer: fresh venv, all again": []}
    for i in range(rounds + 1):  # the first of each warms uv's cache for the step's package
        copied, fresh = root / f"copied{i}", root / f"fresh{i}"
        a = timed(lambda c=copied: (copy_venv(parent, c), run(uv.install(c, PACKAGES[2:]))))
        b = timed(lambda f=fresh: (run(uv.venv(None, f)), run(uv.install(f, [*code.pins, *PACKAGES]))))
        if i:
            out["layer: hard-link copy + the step"].append(a)
            out["layer: fresh venv, all again"].append(b)
    shutil.rmtree(root, ignore_errors=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--apt-rounds", type=int, default=1, help="apt image rounds (each makes a base system)")
    args = parser.parse_args()
    results: dict[str, list[float]] = {}
    for number in range(args.rounds):
        first = (remotecell_round, pip_round) if number % 2 == 0 else (pip_round, remotecell_round)
        for measure in (*first, docker_round):
            for name, seconds in measure().items():
                results.setdefault(name, []).append(seconds)
        print(f"round {number + 1}/{args.rounds} done", file=sys.stderr)
    for _ in range(args.apt_rounds):
        for name, seconds in apt_round().items():
            results.setdefault(name, []).append(seconds)
    results.update(layer_strategies(args.rounds))
    print(f"\n{', '.join(PACKAGES)}; {args.rounds} rounds; load {os.getloadavg()[0]:.1f}\n")
    print("| what | median s | min-max s |\n|---|---|---|")
    for name, values in results.items():
        print(f"| {name} | {statistics.median(values):.3f} | {min(values):.3f}-{max(values):.3f} |")
    binary, why_not = docker()
    if binary is None:
        print(f"\n({why_not}: no `docker build` to compare)")
    out = HERE / "results" / f"images-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"packages": PACKAGES, "rounds": args.rounds, "seconds": results}, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
