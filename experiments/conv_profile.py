"""Where one conv training step spends its time, op by op (XLA:CPU, aejax's CPU backend).

    python experiments/conv_profile.py                # 64 images: one host device's share
    python experiments/conv_profile.py --batch 128

Traces 20 steps (after 3 warm-up steps) with ``jax.profiler`` and sums the durations of the
compiled program's ops (XLA's thunks) by kind: the matrix products (``dot_general``), the
shifted copies (``slice_pad_fusion``: a slice padded back with zeros), their stacking
(``concatenate``), and the rest. Ops run on the machine's threads concurrently, so their sum
exceeds the step's wall time. Writes experiments/results/conv_profile.{md,json}.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import os
import re
import sys
import tempfile
from pathlib import Path

import jax
import numpy as np
from common import cpu_name, write_results
from conv_steps import random_images, timed_steps

from aejax import core, xla

xla.apply_flags()  # XLA:CPU's speed flags, as the commands compute (aejax.xla)

STEPS = 20
# The runtime's events, not the program's ops.
RUNTIME = ("$", "Thunk", "Pjit", "Execute", "ParseArguments", "Threadpool", "end: ", "Wait for")


def step_times_and_trace(
    batch: int, folder: Path, shape=(28, 28, 1), depth: int = 2
) -> tuple[float, dict, dict, dict, str]:
    """The step's median wall seconds, then per op kind and per op: summed microseconds and
    counts over the traced steps, and the compiled program's HLO text."""
    state = core.init_state("conv", jax.random.key(0), channels=shape[-1], depth=depth)
    x = random_images((batch, *shape))
    hlo = core.train_step.lower(state, x).compile().as_text()
    state, _, _ = timed_steps(state, x, 3)  # compiled and warm
    state, walls, _ = timed_steps(state, x, STEPS)  # untraced: the profiler slows steps down
    with jax.profiler.trace(str(folder), create_perfetto_trace=True):
        timed_steps(state, x, STEPS)
    trace = next(folder.rglob("*perfetto_trace.json.gz"))
    events = json.load(gzip.open(trace))
    events = events["traceEvents"] if isinstance(events, dict) else events
    us, count, per_op = collections.Counter(), collections.Counter(), collections.Counter()
    for e in events:
        name = e.get("name", "")
        if e.get("ph") == "X" and "dur" in e and not any(r in name for r in RUNTIME):
            kind = name.split(".")[0]
            us[kind] += e["dur"]
            count[kind] += 1
            per_op[name] += e["dur"]
    return float(np.median(walls)), us, count, per_op, hlo


def describe_op(name: str, hlo: str) -> str:
    """An op's output shape and the JAX operation it came from, from the HLO text."""
    line = re.search(rf"^\s*(?:ROOT )?%?{re.escape(name)} = (\S+) (.*)$", hlo, re.M)
    if not line:
        return ""
    source = re.search(r'op_name="([^"]+)"', line.group(2))
    if not source:
        return line.group(1)
    # The path of JAX operations it came from, less platform_dependent's branch.
    path = [p for p in source.group(1).split("/")[1:] if "branch" not in p and p != "cond"]
    return f"{line.group(1)} {'/'.join(path)[-90:]}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=28, help="image side (default 28)")
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--depth", type=int, default=2, help="the conv net's --model depth")
    args = p.parse_args()
    shape = (args.size, args.size, args.channels)
    with tempfile.TemporaryDirectory() as folder:
        wall, us, count, per_op, hlo = step_times_and_trace(
            args.batch, Path(folder), shape, args.depth
        )
    total = sum(us.values()) / STEPS / 1000
    kinds = [
        {"kind": k, "ms_per_step": round(t / STEPS / 1000, 3), "ops_per_step": count[k] // STEPS}
        for k, t in us.most_common()
    ]
    row = {
        "cpu": cpu_name(),
        "batch": args.batch,
        "image_shape": list(shape),
        "depth": args.depth,
        "devices": 1,
        "wall_ms_median": round(1000 * wall, 2),
        "ops_ms_sum": round(total, 2),
        "ops_per_step": sum(count.values()) // STEPS,
        "kinds": kinds,
        "ops": [
            {"op": op, "ms_per_step": round(t / STEPS / 1000, 3), "is": describe_op(op, hlo)}
            for op, t in per_op.most_common(25)
        ],
    }
    lines = [
        "# The conv net's training step, op by op (XLA:CPU, aejax's CPU backend)",
        "",
        f"`python experiments/conv_profile.py {' '.join(sys.argv[1:])}` on {cpu_name()}: one "
        f"device, {args.batch} images of {'x'.join(map(str, shape))} per step, conv depth "
        f"{args.depth}, {STEPS} steps traced, GLIBC_TUNABLES "
        f"`{os.environ.get('GLIBC_TUNABLES', '')}` (aejax.train's restart sets "
        "glibc.malloc.hugetlb=1 for batches this large: huge_pages.md). Step wall time (median) "
        f"{row['wall_ms_median']} ms (untraced); the traced ops' durations add up to "
        f"{row['ops_ms_sum']} ms "
        f"({row['ops_per_step']} ops per step, run concurrently on the machine's threads).",
        "",
        "| op kind | ms per step (summed) | share | ops per step |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {k['kind']} | {k['ms_per_step']:.3f} | {k['ms_per_step'] / total:.0%} | "
        f"{k['ops_per_step']} |"
        for k in kinds[:15]
    ]
    lines += ["", "The ops that take longest:", "", "| op | ms per step | output, from |",
              "|---|---|---|"]  # fmt: skip
    lines += [f"| {o['op']} | {o['ms_per_step']:.3f} | {o['is']} |" for o in row["ops"]]
    name = f"conv_profile_{args.batch}" + (f"_{args.size}" if args.size != 28 else "")
    write_results(name, [row], lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
