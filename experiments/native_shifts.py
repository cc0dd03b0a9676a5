"""The conv backend's shifted copies as native XLA FFI kernels: how much of a step they cost.

    python experiments/native_shifts.py            # 64 images per step, one device

`experiments/conv_profile.py` finds ~30% of a conv training step in the shifted copies of
the activations (XLA's slice-and-pad fusions over rows of 7-28 values) and their stacking
(`concatenate`). This builds `experiments/native/shifts.cc` (g++, `-O3 -march=native`,
against jaxlib's FFI headers) into a temporary folder, swaps it in for
`aejax.backend.conv3x3._stack_shifts` / `_sum_shifts` (float32 only), and times one device's
training step both ways, interleaved, after checking that three steps give the same
parameters to the last bit. Writes experiments/results/native_shifts.{md,json}.

An experiment, not part of aejax: shipping it would mean building C++ on the user's
machine (or wheels per CPU), a fallback where no compiler is, and keeping the kernels out
of the exported detector (which must load with JAX alone).
"""

from __future__ import annotations

import argparse
import ctypes
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from common import cpu_name, write_results
from conv_steps import random_images

from aejax import core, xla
from aejax.backend import conv3x3

xla.apply_flags()  # XLA:CPU's speed flags, as the commands compute (aejax.xla)

SOURCE = Path(__file__).resolve().parent / "native" / "shifts.cc"
XLA_SHIFTS = (conv3x3._stack_shifts, conv3x3._sum_shifts)


def build(folder: Path) -> Path:
    library = folder / "libshifts.so"
    command = ["g++", "-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-w",
               f"-I{jax.ffi.include_dir()}", str(SOURCE), "-o", str(library)]  # fmt: skip
    subprocess.run(command, check=True)
    return library


def register(library: Path) -> None:
    lib = ctypes.cdll.LoadLibrary(str(library))
    for name in ("StackShifts", "SumShifts"):
        jax.ffi.register_ffi_target(f"aejax_{name}", jax.ffi.pycapsule(getattr(lib, name)),
                                    platform="cpu")  # fmt: skip


def _offsets(offsets, sign):
    return {
        "oy": np.array([sign * oy for oy, _ in offsets], np.int64),
        "ox": np.array([sign * ox for _, ox in offsets], np.int64),
    }


def native_stack_shifts(x_CxBxHxW, offsets, sign: int = 1):
    if x_CxBxHxW.dtype != jnp.float32:
        return XLA_SHIFTS[0](x_CxBxHxW, offsets, sign)
    c, *rest = x_CxBxHxW.shape
    out = jax.ShapeDtypeStruct((len(offsets) * c, *rest), x_CxBxHxW.dtype)
    return jax.ffi.ffi_call("aejax_StackShifts", out)(x_CxBxHxW, **_offsets(offsets, sign))


def native_sum_shifts(z_TCxBxHxW, offsets, sign: int = 1):
    if z_TCxBxHxW.dtype != jnp.float32:
        return XLA_SHIFTS[1](z_TCxBxHxW, offsets, sign)
    tc, *rest = z_TCxBxHxW.shape
    out = jax.ShapeDtypeStruct((tc // len(offsets), *rest), z_TCxBxHxW.dtype)
    return jax.ffi.ffi_call("aejax_SumShifts", out)(z_TCxBxHxW, **_offsets(offsets, sign))


def use(kind: str) -> None:
    """Sets the backend's shift functions (read when a step is traced)."""
    pair = XLA_SHIFTS if kind == "xla" else (native_stack_shifts, native_sum_shifts)
    conv3x3._stack_shifts, conv3x3._sum_shifts = pair


def make_step(kind: str, x):
    """The training step compiled with ``kind``'s shifts, and how many native calls it has."""
    use(kind)
    jax.clear_caches()  # traced anew: the backend's functions read the shifts when traced
    state = core.init_state("conv", jax.random.key(0))
    lowered = jax.jit(core.train_step.__wrapped__, donate_argnums=0).lower(state, x)
    return lowered.compile(), lowered.as_text().count("aejax_StackShifts")


def params_after(step, x, steps: int = 3) -> list[np.ndarray]:
    state = core.init_state("conv", jax.random.key(0))
    for _ in range(steps):
        state, _ = step(state, x)
    return [np.asarray(v) for v in jax.tree.leaves(state.params)]


def step_ms(step, x, calls: int) -> float:
    state = core.init_state("conv", jax.random.key(0))
    for _ in range(3):
        state, m = step(state, x)
    jax.block_until_ready(m)
    start = time.perf_counter()
    for _ in range(calls):
        state, m = step(state, x)
    jax.block_until_ready(m)
    return (time.perf_counter() - start) / calls * 1000


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--calls", type=int, default=40)
    args = p.parse_args()
    x = random_images((args.batch, 28, 28, 1))
    with tempfile.TemporaryDirectory() as folder:
        register(build(Path(folder)))
        steps, native_calls = {}, {}
        for kind in ("xla", "native"):
            steps[kind], native_calls[kind] = make_step(kind, x)
        assert native_calls["xla"] == 0 and native_calls["native"] > 0, native_calls
        same = all(
            np.array_equal(a, b)
            for a, b in zip(
                params_after(steps["xla"], x), params_after(steps["native"], x), strict=True
            )  # fmt: skip
        )
        times = {kind: [] for kind in steps}
        for _ in range(args.rounds):  # interleaved: drift hits both alike
            for kind, step in steps.items():
                times[kind].append(step_ms(step, x, args.calls))
    med = {k: float(np.median(v)) for k, v in times.items()}
    row = {
        "cpu": cpu_name(),
        "batch": args.batch,
        "devices": 1,
        "same_parameters_after_3_steps": same,
        "native_calls_per_step": native_calls["native"],
        "step_ms_median": {k: round(v, 3) for k, v in med.items()},
        "step_ms_all": {k: [round(t, 3) for t in v] for k, v in times.items()},
        "native_over_xla": round(med["native"] / med["xla"], 3),
    }
    lines = [
        "# The conv backend's shifted copies as native FFI kernels",
        "",
        f"`python experiments/native_shifts.py --batch {args.batch}` on {row['cpu']}: one "
        f"device, {args.batch} images per training step, median of {args.rounds} interleaved "
        f"rounds of {args.calls} steps. Parameters after 3 steps identical to the last bit: "
        f"{same}.",
        "",
        "| shifted copies by | ms per step (median) | all rounds |",
        "|---|---|---|",
        *(f"| {k} | {med[k]:.2f} | {', '.join(f'{t:.2f}' for t in times[k])} |" for k in times),
        "",
        f"native / XLA: {row['native_over_xla']:.3f}",
    ]
    write_results(f"native_shifts_{args.batch}", [row], lines)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
