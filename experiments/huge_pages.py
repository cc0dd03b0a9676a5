"""Training steps with and without transparent huge pages for XLA's buffers.

    python experiments/huge_pages.py

XLA:CPU allocates a program's temporary buffers anew on each run; glibc maps the large ones
from the kernel, which faults and zeroes them in 4 KB pages unless malloc asks for huge
pages (``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``, glibc 2.35+, THP ``madvise``), which is
what ``python -m aejax.train`` restarts itself with (:func:`aejax.xla.restart_with_huge_pages`).
Each setting runs in its own process (glibc reads the tunable at start-up), alternating,
twice: ms per step (median of 10 after 3 warm-up steps), the page faults per step, and the
process's peak RSS. Writes experiments/results/huge_pages.{md,json}.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

from common import RESULTS, cpu_name, write_results

# (arch, image shape, depth, batch): the tutorial's sizes, then users' (own_images.md's).
CASES = [
    ("dense", (28, 28, 1), None, 256),
    ("conv", (28, 28, 1), 2, 128),
    ("conv", (28, 28, 1), 2, 64),  # one of the command's two devices' share
    ("conv", (48, 48, 1), 2, 64),
    ("conv", (32, 32, 3), 2, 128),
    ("conv", (64, 64, 3), 3, 32),
    ("conv", (128, 128, 3), 3, 16),
    ("conv", (256, 256, 3), 4, 16),
]
SETTINGS = {"4 KB pages": "glibc.malloc.hugetlb=0", "huge pages": "glibc.malloc.hugetlb=1"}
REPEATS = 3

CHILD = r"""
import json, resource, sys, time
import jax, numpy as np
from aejax import core, xla
xla.apply_flags()
arch, shape, depth, batch = json.loads(sys.argv[1])
options = {} if depth is None else {"depth": depth, "channels": shape[-1]}
state = core.init_state(arch, jax.random.key(0), **options)
x = jax.device_put(np.random.default_rng(0).integers(0, 256, (batch, *shape), np.uint8))
for _ in range(3):
    state, m = core.train_step(state, x)
    jax.block_until_ready(m)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
seconds = []
for _ in range(10):
    start = time.perf_counter()
    state, m = core.train_step(state, x)
    jax.block_until_ready(m)
    seconds.append(time.perf_counter() - start)
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / 10
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"ms": 1000 * float(np.median(seconds)), "faults": faults, "peak_mb": peak}))
"""


def measure(case, tunable: str) -> dict:
    env = {**os.environ, "GLIBC_TUNABLES": tunable}
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(case)], env=env,
                         capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    if sys.argv[1:] == ["--table-only"]:
        render(json.loads((RESULTS / "huge_pages.json").read_text()))
        return 0
    rows = []
    for case in CASES:
        runs = {name: [] for name in SETTINGS}
        for _ in range(REPEATS):
            for name, tunable in SETTINGS.items():
                runs[name].append(measure(case, tunable))
        arch, shape, depth, batch = case
        row = {"arch": arch, "image_shape": list(shape), "depth": depth, "batch": batch}
        for name, got in runs.items():
            row[name] = {k: round(statistics.median(r[k] for r in got), 1) for k in got[0]}
        row["ratio"] = round(row["huge pages"]["ms"] / row["4 KB pages"]["ms"], 3)
        row["thp"] = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text().strip()
        row["libc"], row["cpu"] = os.confstr("CS_GNU_LIBC_VERSION"), cpu_name()
        rows.append(row)
        print(json.dumps(row), flush=True)
    render(rows)
    return 0


def render(rows: list[dict]) -> None:
    libc, thp, cpu = rows[0]["libc"], rows[0]["thp"], rows[0]["cpu"]
    lines = [
        "# Training steps with and without huge pages for XLA's buffers",
        "",
        f"`python experiments/huge_pages.py` on {cpu}, {libc}, THP `{thp}`, one device. "
        f"Each setting in its own process, alternating, {REPEATS} processes each (medians): "
        "ms per training step (median of 10 after 3 warm-up steps), minor page faults per "
        "step, the process's peak RSS.",
        "",
        "| net | images | batch | values a batch | ms/step 4 KB | ms/step huge | ratio | "
        "faults/step 4 KB | faults/step huge | peak MB 4 KB | peak MB huge |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        small, huge = r["4 KB pages"], r["huge pages"]
        net = r["arch"] + (f" depth {r['depth']}" if r["depth"] else "")
        lines.append(
            f"| {net} | {'x'.join(map(str, r['image_shape']))} | {r['batch']} | "
            f"{r['batch'] * math.prod(r['image_shape']):,} | "
            f"{small['ms']:.1f} | {huge['ms']:.1f} | {r['ratio']:.2f}x | "
            f"{small['faults']:,.0f} | {huge['faults']:,.0f} | {small['peak_mb']:,.0f} | "
            f"{huge['peak_mb']:,.0f} |"
        )
    lines += [
        "",
        "`python -m aejax.train` restarts itself with huge pages where a device's batch holds "
        "at least 2**18 values (`aejax.train.HUGE_PAGES_FROM_VALUES`): every row from "
        "393,216 values on stepped 27-33% faster; the rows below 2**18 were slower about as "
        "often as faster (28x28 digits at 64 a device, the reference conv run's share, "
        "lost), and a restart costs its imports again (about 1.4 s: MNIST's conv epoch took "
        "the same s/epoch either way, the command 1.4 s longer with the restart, farm-bench).",
        "",
        "The command, by hand in the same sitting (`/usr/bin/time`; `python -m aejax.train "
        "--arch conv --dataset <300 RGB 128x128 PNGs> --model depth=3 --epochs 6`, 2 CPU "
        "devices, 8 images a device): with `GLIBC_TUNABLES=glibc.malloc.hugetlb=0` 2,549,836 "
        "page faults, 2.75 s/epoch, 22.3 s; restarting itself (no variable set) 210,480 and "
        "213,790 faults, 2.49 and 2.23 s/epoch, 21.8 and 21.2 s; started with the variable "
        "set 183,617 faults, 2.17 s/epoch, 19.9 s. This machine's s/epoch varies by about "
        "10% run to run; the faults do not.",
    ]
    write_results("huge_pages", rows, lines)


if __name__ == "__main__":
    sys.exit(main())
