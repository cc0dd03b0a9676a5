"""The split form of the 3x3 convolution (aejax.backend.conv3x3) against the forms before it.

    python experiments/conv_split.py

A conv net's training step (:mod:`conv_steps`: random images, one device) and the scoring
of the same images (``core.per_image``, ``bce``: the forward pass alone), with the kernels
as they are and with ``conv3x3._form`` patched back to the rule before the split form (im2col
where ``Ci <= Co``, else the output shift). Each setting in its own process, six processes
each, in the order ABBA...; ms per step and per scoring (medians of 10 after one that
compiles), then the median over the processes. glibc's huge pages as ``python -m aejax.train`` would
set them for that batch (``aejax.train.HUGE_PAGES_FROM_VALUES``). Writes
experiments/results/conv_split.{md,json}.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys

from common import cpu_name, write_results

# (image shape, depth, batch): the tutorial's (128 a step, 64 on each of two devices), then
# users' sizes at the batches aejax picks for them (own_images.md, one device's share).
CASES = [
    ((28, 28, 1), 2, 128),
    ((28, 28, 1), 2, 64),
    ((32, 32, 3), 2, 64),
    ((128, 128, 3), 3, 8),
    ((256, 256, 3), 4, 8),
]
SETTINGS = ("before", "split")
REPEATS = 6  # this machine's step times vary by a third from process to process

CHILD = r"""
import json, sys, time
import jax
import numpy as np
sys.path.insert(0, "experiments")
import conv_steps
from aejax import core
from aejax.backend import conv3x3
shape, depth, batch, setting = json.loads(sys.argv[1])
if setting == "before":
    conv3x3._form = lambda k, plan: "output shift" if k.shape[3] < k.shape[2] else "im2col"
state = core.init_state("conv", jax.random.key(0), channels=shape[-1], depth=depth)
images = conv_steps.random_images((batch, *shape))
state, _, _ = conv_steps.timed_steps(state, images, 1)
state, seconds, metrics = conv_steps.timed_steps(state, images, 10)
scoring = []
for _ in range(11):
    start = time.perf_counter()
    jax.block_until_ready(core.per_image(state, images, terms=("bce",)))
    scoring.append(time.perf_counter() - start)
print(json.dumps({"ms": 1000 * float(np.median(seconds)), "loss": float(metrics["loss"]),
                  "score_ms": 1000 * float(np.median(scoring[1:]))}))
"""


def measure(case, setting: str) -> dict:
    from aejax import train

    shape, _, batch = case
    huge = batch * math.prod(shape) >= train.HUGE_PAGES_FROM_VALUES
    env = {**os.environ, "GLIBC_TUNABLES": f"glibc.malloc.hugetlb={int(huge)}"}
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps([*case, setting])], env=env,
                         capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    rows = []
    for case in CASES:
        got = {name: [] for name in SETTINGS}
        for i in range(REPEATS):  # ABBA...: the second process of a pair measured slower
            for name in SETTINGS if i % 2 == 0 else SETTINGS[::-1]:
                got[name].append(measure(case, name))
        shape, depth, batch = case
        row = {"image_shape": list(shape), "depth": depth, "batch": batch, "cpu": cpu_name()}
        for name, runs in got.items():
            row[name] = {"ms": round(statistics.median(r["ms"] for r in runs), 2),
                         "score_ms": round(statistics.median(r["score_ms"] for r in runs), 2),
                         "loss": runs[0]["loss"]}  # fmt: skip
        row["ratio"] = round(row["split"]["ms"] / row["before"]["ms"], 3)
        row["score_ratio"] = round(row["split"]["score_ms"] / row["before"]["score_ms"], 3)
        rows.append(row)
        print(json.dumps(row), flush=True)
    lines = [
        "# The split form of the 3x3 convolution, a training step",
        "",
        f"`python experiments/conv_split.py` on {rows[0]['cpu']}, one device (its docstring "
        f"has the protocol): ms per conv-net training step, median over {REPEATS} processes "
        "a setting, alternating (ABBA); scoring: the forward pass of the same batch. "
        "`before`: every convolution in the im2col or output-shift "
        "form; `split`: aejax's rule now (the split form for plain convolutions whose channel "
        "counts differ by less than a factor 2, and for the forward pass alone of a fused "
        "convolution-pool of such counts). Loss: the last step's, the same sums in another "
        "order.",
        "",
        "| images | depth | batch | step ms before | split | ratio | scoring ms before | split "
        "| ratio | loss before | loss split |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {'x'.join(map(str, r['image_shape']))} | {r['depth']} | {r['batch']} | "
            f"{r['before']['ms']:.1f} | {r['split']['ms']:.1f} | {r['ratio']:.2f}x | "
            f"{r['before']['score_ms']:.1f} | {r['split']['score_ms']:.1f} | "
            f"{r['score_ratio']:.2f}x | "
            f"{r['before']['loss']:.6f} | {r['split']['loss']:.6f} |"
        )
    write_results("conv_split", rows, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
