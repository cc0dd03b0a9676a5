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


def step_times_and_trace(batch: int, folder: Path) -> tuple[float, dict, dict]:
    state = core.init_state("conv", jax.random.key(0))
    x = random_images((batch, 28, 28, 1))
    state, _, _ = timed_steps(state, x, 3)  # compiled and warm
    state, walls, _ = timed_steps(state, x, STEPS)  # untraced: the profiler slows steps down
    with jax.profiler.trace(str(folder), create_perfetto_trace=True):
        timed_steps(state, x, STEPS)
    trace = next(folder.rglob("*perfetto_trace.json.gz"))
    events = json.load(gzip.open(trace))
    events = events["traceEvents"] if isinstance(events, dict) else events
    us, count = collections.Counter(), collections.Counter()
    for e in events:
        name = e.get("name", "")
        if e.get("ph") == "X" and "dur" in e and not any(r in name for r in RUNTIME):
            kind = name.split(".")[0]
            us[kind] += e["dur"]
            count[kind] += 1
    return float(np.median(walls)), us, count


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--batch", type=int, default=64)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        wall, us, count = step_times_and_trace(args.batch, Path(folder))
    total = sum(us.values()) / STEPS / 1000
    kinds = [
        {"kind": k, "ms_per_step": round(t / STEPS / 1000, 3), "ops_per_step": count[k] // STEPS}
        for k, t in us.most_common()
    ]
    row = {
        "cpu": cpu_name(),
        "batch": args.batch,
        "devices": 1,
        "wall_ms_median": round(1000 * wall, 2),
        "ops_ms_sum": round(total, 2),
        "ops_per_step": sum(count.values()) // STEPS,
        "kinds": kinds,
    }
    lines = [
        "# The conv net's training step, op by op (XLA:CPU, aejax's CPU backend)",
        "",
        f"`python experiments/conv_profile.py --batch {args.batch}` on {cpu_name()}: one device,"
        f" {args.batch} images per step, {STEPS} steps traced. Step wall time (median) "
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
    write_results(f"conv_profile_{args.batch}", [row], lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
