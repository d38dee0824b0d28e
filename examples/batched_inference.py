"""Batched inference: a small torch MLP behind @rc.batched, called with single tensors by many callers.

    .venv/bin/python examples/batched_inference.py [--callers 2000]

Every caller sends one tensor and gets its own prediction back; the runtime groups the
callers' inputs into batches (up to 64, waiting at most 5 ms for a batch to fill) and the
model runs once per batch on ``torch.stack(xs)``. The same model is then called without
batching, one input per call, and the two rates are compared. The model is built in code
(fixed seed: no downloaded weights); on a host with a GPU it runs there, else on the CPU.
The notebook ``notebooks/batched_inference.ipynb`` walks through the same steps.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import remotecell as rc
import torch

DIM, HIDDEN, CLASSES = 64, 512, 10
MAX_BATCH_SIZE, WAIT_MS = 64, 5

app = rc.App("batched-inference")


def build_model(device: str) -> torch.nn.Module:
    """A 3-layer MLP with fixed random weights (the same on every call)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(DIM, HIDDEN), torch.nn.ReLU(),
        torch.nn.Linear(HIDDEN, HIDDEN), torch.nn.ReLU(),
        torch.nn.Linear(HIDDEN, CLASSES),
    )
    return net.to(device).eval()


@app.cls(gpu="any" if torch.cuda.is_available() else None, max_containers=1)
class Classifier:
    @rc.enter()
    def load(self) -> None:
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.net = build_model(self.device)

    @rc.method()
    @rc.batched(max_batch_size=MAX_BATCH_SIZE, wait_ms=WAIT_MS)
    def predict(self, xs: list[torch.Tensor]) -> list[int]:
        """One call per batch: a list of single inputs in, a list of their classes out."""
        with torch.inference_mode():
            logits = self.net(torch.stack(xs).to(self.device))
        return logits.argmax(dim=1).tolist()

    @rc.method()
    def predict_one(self, x: torch.Tensor) -> int:
        """The unbatched baseline: one call per input."""
        with torch.inference_mode():
            return int(self.net(x.unsqueeze(0).to(self.device)).argmax())

    @rc.method()
    def device_name(self) -> str:
        return torch.cuda.get_device_name(0) if self.device == "cuda" else "cpu"


def inputs(n: int) -> list[torch.Tensor]:
    return list(torch.randn(n, DIM, generator=torch.Generator().manual_seed(1)))


async def items_per_s(method: Any, xs: list[torch.Tensor]) -> tuple[float, list[int]]:
    """Every input from its own caller (one asyncio task each), all at once."""
    t0 = time.perf_counter()
    predictions = await asyncio.gather(*(method.remote.aio(x) for x in xs))
    return len(xs) / (time.perf_counter() - t0), list(predictions)


async def compare(callers: int) -> dict[str, Any]:
    """Batched and unbatched rates of the same model, from ``callers`` concurrent callers."""
    model = Classifier()
    device = await model.device_name.remote.aio()  # starts the container and loads the model
    warm = inputs(2 * MAX_BATCH_SIZE)
    await items_per_s(model.predict, warm)
    await items_per_s(model.predict_one, warm)
    before = await model.predict.batch_stats.aio()
    xs = inputs(callers)
    batched_rate, batched = await items_per_s(model.predict, xs)
    after = await model.predict.batch_stats.aio()
    unbatched_rate, unbatched = await items_per_s(model.predict_one, xs)
    if batched != unbatched:
        raise AssertionError("batched and unbatched predictions differ")
    return {
        "device": device,
        "callers": callers,
        "batched_items_per_s": batched_rate,
        "unbatched_items_per_s": unbatched_rate,
        "speedup": batched_rate / unbatched_rate,
        "mean_batch_size": (after["items"] - before["items"]) / max(1, after["batches"] - before["batches"]),
        "batch_stats": after,
    }


def report(result: dict[str, Any]) -> str:
    return (
        f"{result['callers']:,} concurrent callers, model on {result['device']}:\n"
        f"  batched   {result['batched_items_per_s']:>10,.0f} items/s (mean batch {result['mean_batch_size']:.1f})\n"
        f"  unbatched {result['unbatched_items_per_s']:>10,.0f} items/s\n"
        f"  batching: {result['speedup']:.1f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--callers", type=int, default=2000)
    args = parser.parse_args()
    with app.run():
        print(report(asyncio.run(compare(args.callers))))


if __name__ == "__main__":
    main()
