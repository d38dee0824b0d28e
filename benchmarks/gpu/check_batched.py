"""@rc.batched on a GPU, end to end: batched vs unbatched items/s of a torch MLP from 2,000 callers.

    .venv/bin/python benchmarks/gpu/check_batched.py [--callers 2000] [--rounds 3] [--json OUT]

Starts a runtime of its own (a fresh REMOTECELL_HOME in a temp dir; stopped at the end) and runs
``examples/batched_inference.py``'s model: a 3-layer MLP built in code, as a ``@app.cls`` with
``gpu="any"`` and ``max_containers=1``, its ``predict`` method ``@rc.batched(max_batch_size=64,
wait_ms=5)`` (``torch.stack`` of the single inputs, one forward pass per batch) and ``predict_one``
unbatched (one forward pass per call). Each round sends ``--callers`` single tensors at once
(one asyncio task per caller) to each method, checks both give the same predictions, and prints
items/s for both, the mean batch size and the ratio; the medians over the rounds are the result.
Target (issue 5): batched ≥ 10× the unbatched end-to-end rate. Exit code 1 when the target is
missed on a GPU, 2 when the model did not run on the GPU although one is present.

Without a GPU (torch.cuda.is_available() is false) it runs the same on the CPU and says so: the
numbers then show the harness works, not what a GPU does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
from pathlib import Path

import torch
from private_runtime import HOME, stop_runtime

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
import batched_inference as example

TARGET_SPEEDUP = 10.0


def run(callers: int, rounds: int) -> dict:
    results = []
    with example.app.run():
        for i in range(rounds):
            result = asyncio.run(example.compare(callers))
            result.pop("batch_stats")
            print(f"round {i + 1}/{rounds}: " + example.report(result).replace("\n", "\n  "), flush=True)
            results.append(result)
    keys = ("batched_items_per_s", "unbatched_items_per_s", "speedup", "mean_batch_size")
    return {"device": results[0]["device"], "callers": callers, "rounds": results,
            **{k: statistics.median(r[k] for r in results) for k in keys}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--callers", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args()
    gpu = torch.cuda.is_available()
    if not gpu:
        print("NO GPU: torch.cuda.is_available() is false; running the same check on the CPU "
              "(numbers show the harness works, not what a GPU does)")
    print(f"runtime home {HOME}; torch {torch.__version__}", flush=True)
    try:
        result = run(args.callers, args.rounds)
    finally:
        stop_runtime()
    result["gpu_available"] = gpu
    print(f"\nmedian of {args.rounds} rounds, {args.callers:,} concurrent callers, model on {result['device']}: "
          f"batched {result['batched_items_per_s']:,.0f} items/s (mean batch {result['mean_batch_size']:.1f}), "
          f"unbatched {result['unbatched_items_per_s']:,.0f} items/s: {result['speedup']:.1f}x "
          f"(target >= {TARGET_SPEEDUP:g}x{'' if gpu else '; not judged on the CPU'})")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    if gpu and result["device"] == "cpu":
        print("FAIL: a GPU is present but the model ran on the CPU")
        return 2
    if gpu and result["speedup"] < TARGET_SPEEDUP:
        print("FAIL: batching is below the target")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
