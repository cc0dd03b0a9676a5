"""What "half of PyTorch's time" asks of this CPU: the conv net's arithmetic against its peak.

    python experiments/own_images.py      # first: the epochs timed, same sitting
    python experiments/conv_roofline.py

For each size of experiments/results/own_images.json (300 RGB images; aejax's conv net and
the PyTorch peer, channels-last, same batch and rows), an epoch's nominal arithmetic,
counted from the net's layers: each 3x3 convolution ``2 * 9 * Ci * Co * H * W`` FLOPs an
image forward, twice that again backward (the first layer's input gradient left out), for
every training image, and the forward pass for every test image. Divided by each side's
s/epoch, that is the rate each gets through the net's work; beside it, this CPU's ceiling
for such work: a large float32 matrix product (4096x4096, both cores) in PyTorch and in
XLA (under aejax's flags), best of 5 after a warm-up. Run it right after own_images.py, on
the same machine: the script refuses results from another CPU. Writes
experiments/results/conv_roofline.{md,json}.

aejax's backend does less arithmetic than the nominal count on the up-sampled
convolutions (it convolves the coarse image with 2x2 phase kernels), so its rates are
nominal: how fast it gets through the net's work, not what its kernels compute.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from common import RESULTS, ROOT, cpu_name, write_results
from flax import nnx

from aejax import models
from aejax.models.layers import MaxPool, UpSample

PEER = Path(os.environ.get("PEER_VENVS", Path.home() / ".peer-venvs")) / "torch/bin/python"
MATMUL = 4096

XLA_MATMUL = r"""
import json, sys, time
import jax, jax.numpy as jnp
from aejax import xla
xla.apply_flags()  # as the commands compute
n = int(sys.argv[1])
a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
f = jax.jit(lambda a: a @ a)
f(a).block_until_ready()
times = []
for _ in range(5):
    start = time.perf_counter()
    f(a).block_until_ready()
    times.append(time.perf_counter() - start)
print(json.dumps({"gflops": 2 * n**3 / min(times) / 1e9}))
"""

TORCH_MATMUL = r"""
import json, sys, time
import torch
n = int(sys.argv[1])
a = torch.randn(n, n)
a @ a
times = []
for _ in range(5):
    start = time.perf_counter()
    a @ a
    times.append(time.perf_counter() - start)
print(json.dumps({"gflops": 2 * n**3 / min(times) / 1e9}))
"""


def layer_gflop(side: int, channels: int, depth: int) -> list[float]:
    """Each 3x3 convolution's nominal GFLOP for one image's forward pass, in order, read
    off aejax's conv net as ``models.create`` builds it (poolings halve the side, up-samplings
    double it)."""
    model = models.create("conv", rngs=nnx.Rngs(0), channels=channels, depth=depth)
    gflop = []
    for layer in [*model.encoder.layers, *model.decoder.layers]:
        if isinstance(layer, nnx.Conv):
            gflop.append(2 * 9 * layer.in_features * layer.out_features * side * side / 1e9)
        elif isinstance(layer, MaxPool):
            side //= 2
        elif isinstance(layer, UpSample):
            side *= 2
    return gflop


def epoch_gflop(row: dict) -> float:
    """One epoch's nominal GFLOP: forward and backward of every training image, forward of
    every test image."""
    forward = layer_gflop(row["size"], 3, row["depth"])
    train = 3 * sum(forward) - forward[0]  # no gradient for the input image itself
    return row["train_images"] * train + row["test_images"] * sum(forward)


def ceiling(code: str, python: str) -> float:
    out = subprocess.run([python, "-c", code, str(MATMUL)], capture_output=True, text=True,
                         check=True, cwd=ROOT)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])["gflops"]


def main() -> int:
    timed = json.loads((RESULTS / "own_images.json").read_text())
    if timed[0]["cpu"] != cpu_name() or "test_images" not in timed[0]:
        raise SystemExit("run python experiments/own_images.py on this machine first")
    peak = {"torch": ceiling(TORCH_MATMUL, str(PEER)), "xla": ceiling(XLA_MATMUL, sys.executable)}
    peak = {k: round(v, 1) for k, v in peak.items()}  # as the JSON keeps them
    best = max(peak.values())
    rows = []
    for t in timed:
        gflop = epoch_gflop(t)
        sides = {"aejax": t["aejax_sec_per_epoch"], "torch": t["torch_channels_last_sec_per_epoch"]}
        rows.append({
            "size": t["size"], "depth": t["depth"], "batch": t["batch"],
            "train_images": t["train_images"], "test_images": t["test_images"],
            "nominal_gflop_per_epoch": round(gflop, 2),
            **{f"{k}_sec_per_epoch": v for k, v in sides.items()},
            **{f"{k}_gflops": round(gflop / v, 1) for k, v in sides.items()},
            "half_torch_gflops": round(2 * gflop / sides["torch"], 1),
            "matmul_gflops": peak,
            "cpu": cpu_name(),
        })  # fmt: skip
        rows[-1]["half_torch_of_ceiling"] = round(rows[-1]["half_torch_gflops"] / best, 3)
    lines = [
        "# Half of PyTorch's time, against this CPU's ceiling",
        "",
        f"`python experiments/conv_roofline.py` on {rows[0]['cpu']}, 2 cores, right after "
        "`experiments/own_images.py` (its s/epoch; this script's docstring has the count). "
        f"Ceiling: a {MATMUL}x{MATMUL} float32 matrix product on both cores, "
        f"{peak['torch']:.0f} GFLOP/s in PyTorch, {peak['xla']:.0f} GFLOP/s in XLA under "
        "aejax's flags.",
        "",
        "| images | depth | batch | nominal GFLOP an epoch | aejax s/epoch | GFLOP/s | PyTorch "
        "channels-last s/epoch | GFLOP/s | half PyTorch's time needs | of the ceiling |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| 300 RGB {r['size']}x{r['size']} | {r['depth']} | {r['batch']} | "
            f"{r['nominal_gflop_per_epoch']:.0f} | {r['aejax_sec_per_epoch']:g} | "
            f"{r['aejax_gflops']:.0f} | {r['torch_sec_per_epoch']:g} | {r['torch_gflops']:.0f} | "
            f"{r['half_torch_gflops']:.0f} GFLOP/s | {100 * r['half_torch_of_ceiling']:.0f}% |"
        )
    write_results("conv_roofline", rows, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
