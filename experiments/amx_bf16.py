"""Does XLA:CPU use the CPU's bfloat16 matrix units (AMX)? Matmuls and the conv step, vs PyTorch.

    python experiments/amx_bf16.py          # writes experiments/results/amx_bf16.{md,json}

Each measurement runs in a fresh process with ``ONEDNN_VERBOSE=1``, so oneDNN names every
primitive it executes and the instruction set it chose (``brg_matmul:avx10_1_512_amx`` is
AMX, ``...:avx512_core`` is AVX-512 in float32). Measured, same sitting:

* a 2048x2048 matmul in float32 and in bfloat16: JAX under aejax's XLA flags, JAX with
  XLA's oneDNN path on (``ONEDNN_FLAGS``), PyTorch (``~/.peer-venvs/torch``, if there);
  GFLOP/s (best of 10), oneDNN's primitives, and whether XLA's optimised program converts
  the bfloat16 operands to float32 before the product;
* one conv training step (aejax's CPU backend, 128 MNIST-sized images, one device) in float32
  and ``--compute-dtype bfloat16``, under aejax's flags and with the oneDNN path.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from common import ROOT, cpu_name, write_results

ONEDNN_FLAGS = (
    "--xla_cpu_use_onednn=true --xla_cpu_experimental_onednn_custom_call=true "
    "--xla_cpu_experimental_onednn_fusion_type=dot"
)
TORCH = Path(os.environ.get("PEER_VENVS", Path.home() / ".peer-venvs")) / "torch/bin/python"

JAX_MATMUL = r"""
import json, re, sys, time, jax, jax.numpy as jnp, numpy as np
n, dtype = 2048, sys.argv[1]
a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), dtype)
b = jnp.asarray(np.random.default_rng(1).standard_normal((n, n)), dtype)
f = jax.jit(lambda a, b: a @ b)
hlo = f.lower(a, b).compile().as_text()
f(a, b).block_until_ready()
best = min(
    (lambda t: (f(a, b).block_until_ready(), time.perf_counter() - t)[1])(time.perf_counter())
    for _ in range(10)
)
# The element type of every product in the optimised program (a dot, or oneDNN's matmul).
products = sorted(set(re.findall(r"= (\w+)\[[\d,]*\]\S* (?:dot\(|custom-call\(.*matmul)", hlo)))
print(json.dumps({"gflops": round(2 * n**3 / best / 1e9), "xla_product_type": products}))
"""

TORCH_MATMUL = r"""
import json, sys, time, torch
torch.manual_seed(0)
n, dtype = 2048, getattr(torch, sys.argv[1])
a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
a @ b
best = min((lambda t: (a @ b, time.perf_counter() - t)[1])(time.perf_counter()) for _ in range(10))
print(json.dumps({"gflops": round(2 * n**3 / best / 1e9), "threads": torch.get_num_threads()}))
"""

CONV_STEPS = Path(__file__).resolve().parent / "conv_steps.py"


def run(command: list[str], flags: str | None) -> dict:
    """``command`` in a fresh process; its JSON line plus the oneDNN primitives it executed."""
    env = {**os.environ, "ONEDNN_VERBOSE": "1", "PYTHONPATH": str(ROOT)}
    env.pop("XLA_FLAGS", None)
    if flags:
        env["XLA_FLAGS"] = flags
    out = subprocess.run(command, capture_output=True, text=True, env=env)
    lines = out.stdout.splitlines() + out.stderr.splitlines()
    result = next((json.loads(x) for x in reversed(lines) if x.startswith("{")), None)
    if result is None:  # the message XLA or oneDNN ended with
        last = next((x for x in reversed(lines) if x.strip()), f"exit {out.returncode}")
        result = {"error": last}
    # "onednn_verbose,v1,primitive,exec,cpu,matmul,brg_matmul:avx512_core,undef,src:f32:..."
    kernels = {}
    for line in lines:
        m = re.match(r"onednn_verbose,(?:v1,)?primitive,exec,cpu,(\w+),([^,]+),\w*,src:(\w+)", line)
        if m and m.group(1) != "reorder":
            key = f"{m.group(1)} {m.group(2)} ({m.group(3)})"
            kernels[key] = kernels.get(key, 0) + 1
    return {**result, "onednn_primitives": kernels}


def cpu_flags() -> list[str]:
    flags = Path("/proc/cpuinfo").read_text().split("flags", 1)[1].split("\n", 1)[0].split()
    return sorted(f for f in flags if f.startswith(("amx", "avx512_bf16", "avx512f")))


def main() -> int:
    rows = []
    for framework, python, code in (
        ("jax", sys.executable, JAX_MATMUL),
        ("torch", str(TORCH), TORCH_MATMUL),
    ):
        if framework == "torch" and not TORCH.exists():
            print(f"no {TORCH}: PyTorch rows left out", file=sys.stderr)
            continue
        for flags_name, flags in (("aejax", None), ("oneDNN", ONEDNN_FLAGS)):
            if framework == "torch" and flags:
                continue
            for dtype in ("float32", "bfloat16"):
                r = run([python, "-c", code, dtype], flags)
                rows.append({"what": "matmul 2048", "framework": framework, "flags": flags_name,
                             "dtype": dtype, **r})  # fmt: skip
                print(json.dumps(rows[-1]), flush=True)
    for flags_name, flags in (("aejax", None), ("oneDNN", ONEDNN_FLAGS)):
        for dtype in ("float32", "bfloat16"):
            spec = {"shape": [128, 28, 28, 1], "steps": 30, "init": {"compute_dtype": dtype}}
            r = run([sys.executable, str(CONV_STEPS), json.dumps(spec)], flags)
            if "times" in r:
                times = sorted(r.pop("times"))
                r["ms_median"] = round(1000 * times[len(times) // 2], 2)
            rows.append({"what": "conv train step, 128 images", "framework": "jax",
                         "flags": flags_name, "dtype": dtype, **r})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    machine = {"cpu": cpu_name(), "cpu_flags": cpu_flags()}
    write_results("amx_bf16", [machine, *rows], markdown(rows))
    return 0


def markdown(rows: list[dict]) -> list[str]:
    lines = [
        "# bfloat16 and the CPU's matrix units (AMX): XLA:CPU vs PyTorch",
        "",
        f"`python experiments/amx_bf16.py` on {cpu_name()} ({', '.join(cpu_flags())}), 2 "
        "cores, one sitting. oneDNN's primitives as `ONEDNN_VERBOSE=1` names them (kernel "
        "(source type): times run); `avx10_1_512_amx` / `amx` in a name is the matrix unit. "
        f"`oneDNN` flags: `{ONEDNN_FLAGS}`.",
        "",
        "| what | framework | XLA flags | dtype | result | XLA's product computed in | "
        "oneDNN primitives run |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            result = f"failed: {r['error'][:80]}"
        elif "gflops" in r:
            result = f"{r['gflops']} GFLOP/s"
        else:
            result = f"{r['ms_median']} ms (loss {r['loss']:.4f})"
        upcast = ", ".join(r.get("xla_product_type", [])) or "-"
        kernels = "; ".join(f"{k}: {n}" for k, n in r["onednn_primitives"].items()) or "none"
        flags = r["flags"] if r["framework"] == "jax" else "-"
        lines.append(
            f"| {r['what']} | {r['framework']} | {flags} | {r['dtype']} | {result} | {upcast} | "
            f"{kernels} |"
        )
    return lines


if __name__ == "__main__":
    sys.exit(main())
