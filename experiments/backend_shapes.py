"""The CPU backend against the plain flax layers on shapes other than MNIST's.

    python experiments/backend_shapes.py          # writes experiments/results/backend_shapes.*

For each image shape and conv net, one training step (Adam, BCE, batch 128, random uint8
images) is timed in a fresh process per backend (``AEJAX_BACKEND=cpu`` or ``plain``: the
choice is read when a function is traced), the two backends alternating, each repeated:
median step time after compilation. Ratio < 1: the CPU backend is faster.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from common import cpu_name, write_results

CASES = [  # (H, W, C, model options)
    (28, 28, 1, {"depth": 2, "width": 30}),  # the tutorial's net
    (32, 32, 3, {"depth": 2, "width": 32}),  # CIFAR-sized RGB
    (64, 64, 3, {"depth": 3, "width": 64}),  # README's suggestion for 64x64 RGB
    (30, 30, 1, {"depth": 1, "width": 16}),  # a side the backend's pooling leaves odd
]

CONV_STEPS = Path(__file__).resolve().parent / "conv_steps.py"


def step_times(case, backend: str, steps: int) -> list[float]:
    h, w, c, opts = case
    spec = {"shape": [128, h, w, c], "steps": steps, "init": opts}
    out = subprocess.run(
        [sys.executable, str(CONV_STEPS), json.dumps(spec)],
        env={**os.environ, "AEJAX_BACKEND": backend},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["times"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    rows = []
    for case in CASES:
        times = {"cpu": [], "plain": []}
        for r in range(args.repeats):
            order = ("cpu", "plain") if r % 2 == 0 else ("plain", "cpu")
            for backend in order:
                times[backend] += step_times(case, backend, args.steps)
        h, w, c, opts = case
        row = {
            "shape": f"{h}x{w}x{c}",
            "model": opts,
            **{f"{b}_ms": round(1000 * statistics.median(t), 2) for b, t in times.items()},
        }
        row["cpu_over_plain"] = round(row["cpu_ms"] / row["plain_ms"], 3)
        rows.append(row)
        print(json.dumps(row), flush=True)
    lines = [
        "# The CPU backend vs flax's layers on other shapes",
        "",
        f"Written by `python experiments/backend_shapes.py` on {cpu_name()} (2 cores): one conv",
        "training step (batch 128),",
        "median ms after compilation, each backend in its own process, alternating, "
        f"{args.repeats} x {args.steps} steps. Ratio < 1: the backend is faster.",
        "",
        "| images | model | AEJAX_BACKEND=cpu ms | plain ms | cpu / plain |",
        "|---|---|---|---|---|",
        *(
            f"| {r['shape']} | {r['model']} | {r['cpu_ms']} | {r['plain_ms']} | "
            f"{r['cpu_over_plain']} |"
            for r in rows
        ),
    ]
    write_results("backend_shapes", rows, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
