"""aejax's XLA configuration: the one place it is set.

The commands add :data:`CPU_FLAGS` to ``XLA_FLAGS`` before JAX starts its backend
(:func:`apply_flags`, from :func:`aejax.cli.run_command`); importing aejax sets nothing, so a
program that uses the library keeps XLA's defaults, or its own flags. aejax's numbers do not
depend on them (every formulation is checked under XLA's defaults: tests/test_api.py); only
its speed on CPU does.

The flags only touch XLA:CPU; GPU and TPU backends ignore them. A flag the user's own
``XLA_FLAGS`` already sets is left as the user set it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable, Mapping
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
# The same flags as fields of XLA's DebugOptions, given to each of aejax's programs when it
# is compiled (:func:`jit`): a program that uses the library computes as fast as the commands,
# and the same bits, with no process-wide setting. GPU and TPU compilers ignore them.
SPEED = dict(flag.removeprefix("--").split("=", 1) for flag in CPU_FLAGS)

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


class Program:
    """``jax.jit(fn, **jit_options)``, compiled with :data:`SPEED` (and
    :data:`QUICK_COMPILE` where ``quick``) when called on its own; inside another traced
    function (where JAX refuses compiler options) it is traced into the caller's program like
    any jitted function. Everything else (``lower``, ``trace``, ``eval_shape``, what
    :func:`jax.export.export` uses) is the jitted function's."""

    def __init__(self, fn: Callable, quick: bool = False, **jit_options):
        import jax

        options = {**SPEED, **(QUICK_COMPILE if quick else {})}
        self._compiled = jax.jit(fn, compiler_options=options, **jit_options)
        self._nested = jax.jit(fn, **jit_options)
        functools.update_wrapper(self, fn)

    def __call__(self, *args, **kwargs):
        try:
            return self._compiled(*args, **kwargs)
        except ValueError as e:  # no public query for "am I being traced"; this is its answer
            if "compiler_options" not in str(e):
                raise
            return self._nested(*args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self._compiled, name)


def jit(fn: Callable | None = None, *, quick: bool = False, **jit_options) -> Callable:
    """:class:`Program`: ``jax.jit`` for aejax's own programs, as a decorator with or
    without options (``@xla.jit``, ``@xla.jit(static_argnames=...)``)."""
    if fn is None:
        return functools.partial(jit, quick=quick, **jit_options)
    return Program(fn, quick, **jit_options)


def quick_jit(fn: Callable | None = None, **jit_options) -> Callable:
    """:func:`jit` with :data:`QUICK_COMPILE`: for programs that run once per command."""
    return jit(fn, quick=True, **jit_options)


def with_flags(current: str, flags=CPU_FLAGS) -> str:
    """``current`` (an ``XLA_FLAGS`` value) plus each of ``flags`` it does not set already."""
    for flag in flags:
        if flag.split("=")[0] not in current:
            current = f"{current} {flag}".strip()
    return current


def apply_flags() -> None:
    """Adds :data:`CPU_FLAGS` to this process's ``XLA_FLAGS``: for a command, before its first
    JAX computation (XLA reads them when JAX starts its backend; later they change nothing)."""
    os.environ["XLA_FLAGS"] = with_flags(os.environ.get("XLA_FLAGS", ""))


# The event JAX records after each XLA compilation (jax.monitoring).
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


def release_memory_after_compiles() -> None:
    """After each XLA compilation in this process, the C library hands the memory the
    compiler freed back to the operating system (glibc's ``malloc_trim``), for the commands.

    XLA:CPU's compiler (LLVM) allocates and frees hundreds of MB per program from glibc's
    per-thread arenas, which keep the freed pages: the programs' runs then came on top of
    them, and a command's peak memory was nearly the sum of its compilations', not the
    largest one's (experiments/results/own_images.md). Nothing where the C library is not
    glibc. A listener for the whole process (installed once however often this is called),
    so the library never installs it itself."""
    import ctypes
    import ctypes.util

    if _trimming:
        return
    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl)
        return
    import jax.monitoring

    def after(event: str, duration: float, **kwargs) -> None:
        if event == COMPILE_EVENT:
            trim(0)

    jax.monitoring.register_event_duration_secs_listener(after)
    _trimming.append(after)


_trimming: list = []  # the listener release_memory_after_compiles installed, if any

# glibc's malloc (2.35 or newer) asks the kernel for transparent huge pages (2 MB) for the
# large blocks it maps. XLA:CPU allocates a program's temporary buffers anew on every run, and
# the kernel mapped and zeroed them 4 KB at a time, a fault per page: a quarter to a third of
# a conv-net training step on large batches (experiments/results/huge_pages.md). glibc reads
# this only when a process starts.
HUGE_PAGES = "glibc.malloc.hugetlb=1"
THP_SETTING = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def huge_pages_would_help(environ: Mapping[str, str] | None = None) -> bool:
    """Whether a process started with ``environ`` (default: this one's) would get huge pages
    for XLA's buffers only by asking: glibc 2.35 or newer, a kernel that gives them to memory
    that asks (THP ``[madvise]``; with ``[always]`` every process has them already), and
    ``GLIBC_TUNABLES`` not saying otherwise (``glibc.malloc.hugetlb=0`` turns this off)."""
    environ = os.environ if environ is None else environ
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()
        thp = THP_SETTING.read_text()
    except (ValueError, OSError, AttributeError):  # not glibc, or no THP (macOS, musl)
        return False
    newer = tuple(int(p) for p in version.split(".")[:2]) >= (2, 35)
    told = "glibc.malloc.hugetlb" in environ.get("GLIBC_TUNABLES", "")
    return name == "glibc" and newer and "[madvise]" in thp and not told


def restart_with_huge_pages() -> None:
    """Runs this command again from its start, the same arguments in the same process (its id,
    streams and signals kept), with :data:`HUGE_PAGES` added to ``GLIBC_TUNABLES``, where
    :func:`huge_pages_would_help`. Costs the imports once more (a second or two): for
    ``aejax.train`` on images large enough to gain more than that
    (:func:`aejax.train.huge_pages_pay`). Never from a Python caller: it replaces the
    process."""
    if not huge_pages_would_help():
        return
    tunables = [t for t in os.environ.get("GLIBC_TUNABLES", "").split(":") if t]
    os.environ["GLIBC_TUNABLES"] = ":".join([*tunables, HUGE_PAGES])
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    # argv[0] the interpreter's own path: Python finds its environment (a venv) from it.
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


def compilation_cache_dir() -> Path:
    """Where aejax keeps compiled XLA programs: ``$XDG_CACHE_HOME/aejax/jax/<jaxlib
    version>`` (default under ``~/.cache``), beside aejax's decoded datasets. JAX's keys
    already hold the jaxlib version and the device's platform version, so an upgraded jax
    never loads an older one's program; a directory per version also lets a user delete
    the old ones whole."""
    import jaxlib

    return files.user_cache_dir("jax") / jaxlib.__version__


# The most the cache holds (JAX evicts the least recently used entries beyond it). Bounded,
# JAX also locks the cache's files (filelock) around each read and write: processes that
# share it never read an entry another is writing.
CACHE_BYTES = 2 * 2**30


def use_compilation_cache(path: Path | None = None) -> None:
    """Turns on JAX's persistent compilation cache in ``path`` (default
    :func:`compilation_cache_dir`), for every program however quick to compile: a second run
    of a command loads its programs instead of compiling them (on XLA:CPU most of aejax's
    compile in well under JAX's default threshold of 1 s, yet together take seconds). The
    commands call this unless given ``--no-compile-cache``, :class:`aejax.AutoencoderDetector`
    unless ``compile_cache=False``; a cache directory the user set already
    (``jax_compilation_cache_dir``) is left as it is. The cache is trusted code: it lives in
    the user's own directory."""
    import jax

    if jax.config.jax_compilation_cache_dir and path is None:
        return  # the user's own cache
    jax.config.update("jax_compilation_cache_dir", str(path or compilation_cache_dir()))
    jax.config.update("jax_compilation_cache_max_size", CACHE_BYTES)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
