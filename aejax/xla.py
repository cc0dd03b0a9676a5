"""aejax's XLA configuration: the one place it is set, applied when ``aejax`` is imported.

Every entry point (the CLIs, ``from aejax import ...``, ``import aejax.core``) imports the
``aejax`` package first, and its ``__init__`` calls :func:`apply_flags`, so a program that
uses the library directly computes with the same XLA settings as the command-line tools.
XLA reads ``XLA_FLAGS`` once, when JAX starts its first backend: a program that ran JAX
computations *before* importing aejax keeps XLA's defaults. aejax's numbers do not depend on
that (every formulation is checked under XLA's defaults too: tests/test_api.py); only its
speed on CPU does.

The flags only touch XLA:CPU; GPU and TPU backends ignore them. A flag the user's own
``XLA_FLAGS`` already sets is left as the user set it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path

from aejax import files

# XLA:CPU flags (numbers: experiments/results/speed.md):
# - YNNPACK fusions off. With them on, XLA fuses a dot, the loss's exp/log and the reduction
#   into one YNN kernel that ran the dense net's loss several times slower; the conv net's
#   dots also ran faster without them. A speed flag only: no aejax result depends on it
#   (experiments/xla_white_pixel_nan.py shows what once made it look otherwise).
# - 512-bit vectors where the CPU has them (XLA prefers 256): the loss's exp and log over a
#   256x784 batch are most of the dense net's elementwise work (a faster training pass).
CPU_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=", "--xla_cpu_prefer_vector_width=512")

# Compiler options for programs that run once per command on a few arrays (initialisation,
# keys): LLVM's optimisation off. Their run time is negligible either way and their compile
# time is what a first run waits for (the conv net's initialisation compiles several times
# faster so: experiments/results/speed.md). A field of XLA's
# DebugOptions, common to every backend. The arrays do not change (LLVM reassociates no
# float arithmetic without fast-math): tests/test_core.py compares with eager flax.
QUICK_COMPILE = {"xla_backend_optimization_level": 0}


def full_precision() -> contextlib.AbstractContextManager:
    """The context aejax evaluates and scores in: float32 matrix products and convolutions at
    float32's full precision (``jax.default_matmul_precision("highest")``).

    On NVIDIA GPUs JAX's default is TF32 (10 bits of mantissa): a detector's scores there
    were up to 1e-3 off the CPU's for the same checkpoint, its k-NN distances and ``joint``
    far more, and a few verdicts changed (experiments/results/gpu_check.md). XLA:CPU computes
    the same bits either way. A context, not a process-wide setting: the user's own JAX code
    keeps its own, and so does the training step (its held-out loss, from
    :func:`aejax.core.per_image`, is at full precision)."""
    import jax

    return jax.default_matmul_precision("highest")


def quick_jit(fn: Callable | None = None, **jit_options) -> Callable:
    """``jax.jit(fn, **jit_options)`` compiled with :data:`QUICK_COMPILE` when called on its
    own; inside another traced function (where JAX refuses compiler options) it is traced
    into the caller's program like any jitted function."""
    if fn is None:
        return functools.partial(quick_jit, **jit_options)
    import jax

    quick = jax.jit(fn, compiler_options=QUICK_COMPILE, **jit_options)
    nested = jax.jit(fn, **jit_options)

    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            return quick(*args, **kwargs)
        except ValueError as e:  # no public query for "am I being traced"; this is its answer
            if "compiler_options" not in str(e):
                raise
            return nested(*args, **kwargs)

    return call


def with_flags(current: str, flags=CPU_FLAGS) -> str:
    """``current`` (an ``XLA_FLAGS`` value) plus each of ``flags`` it does not set already."""
    for flag in flags:
        if flag.split("=")[0] not in current:
            current = f"{current} {flag}".strip()
    return current


def backend_started() -> bool:
    """Whether this process already started a JAX backend (XLA_FLAGS no longer apply)."""
    if "jax" not in sys.modules:  # no JAX, no backend: don't import it just to ask
        return False
    from jax._src import xla_bridge  # no public query for this

    return xla_bridge.backends_are_initialized()


def apply_flags() -> bool:
    """Adds :data:`CPU_FLAGS` to ``XLA_FLAGS``; returns whether they take effect (False once
    a backend has started in this process)."""
    os.environ["XLA_FLAGS"] = with_flags(os.environ.get("XLA_FLAGS", ""))
    return not backend_started()


def compilation_cache_dir() -> Path:
    """Where the commands keep compiled XLA programs: ``$XDG_CACHE_HOME/aejax/jax`` (default
    ``~/.cache/aejax/jax``), beside aejax's decoded datasets."""
    return files.user_cache_dir("jax")


def use_compilation_cache(path: Path | None = None) -> None:
    """Turns on JAX's persistent compilation cache in ``path`` (default
    :func:`compilation_cache_dir`), for every program however quick to compile: a second run
    of a command loads its programs instead of compiling them (on XLA:CPU most of aejax's
    compile in well under JAX's default threshold of 1 s, yet together take seconds). The
    commands call this unless given ``--no-compile-cache``; library code leaves JAX's
    settings to its user. The cache is trusted code: it lives in the user's own directory."""
    import jax

    jax.config.update("jax_compilation_cache_dir", str(path or compilation_cache_dir()))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
