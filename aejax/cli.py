"""What the command-line tools share: parsing with checked values, device options, and
turning every expected failure into one ``error:`` line and exit code 2."""

from __future__ import annotations

import argparse
import dataclasses
import errno
import logging
import math
import os
import re
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from aejax import interrupts
from aejax.errors import AejaxError
from aejax.interrupts import Interrupted

if TYPE_CHECKING:
    from aejax import parallel, thresholds
    from aejax.detector import Detector

# JAX is imported inside the functions that need it: `python -m aejax.data` parses and
# reports errors through this module without loading JAX.


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad option is one line (``error: ...``), exit code 2, like every other
    aejax error (argparse's own prints the usage block first); ``--help`` prints the
    commands' docstrings as a terminal shows text (:func:`plain`)."""

    def format_help(self) -> str:
        return plain(super().format_help())

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"error: {message} (see {self.prog} --help)\n")
        sys.exit(2)


def plain(text: str) -> str:
    """reStructuredText's markup as a terminal reader would want it: a role's target
    (``:mod:`aejax.ood``` -> ``aejax.ood``) and literals without their backquotes.

    >>> plain("see :mod:`aejax.inputs` and ``--out``; :class:`~aejax.Detector`")
    'see aejax.inputs and --out; Detector'
    """
    text = re.sub(r":[a-z]+:`~[\w.]*?(\w+)`", r"\1", text)  # ~a.b.C: the last part, as Sphinx
    text = re.sub(r":[a-z]+:`([^`]+)`", r"\1", text)
    return text.replace("``", "")


@dataclasses.dataclass(frozen=True)
class Numeric:
    """An argparse ``type``, and the option's declaration: a number (``integral``: an
    integer) in an interval, ``None`` unbounded; ``words`` it also takes, parsed to None
    (``latest``). Its error names the interval. ``--help`` and the tests read it."""

    integral: bool
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    words: tuple[str, ...] = ()
    noun: str = ""  # what the number is, for its error ("an epoch number")

    def interval(self) -> str:
        """E.g. ``an integer >= 1``, ``a number in (0, 1)``."""
        kind = self.noun or ("an integer" if self.integral else "a number")
        if self.high is None:
            return f"{kind} {'>' if self.low_open else '>='} {self.low:g}"
        return (
            f"{kind} in {'(' if self.low_open else '['}{self.low:g}, "
            f"{self.high:g}{')' if self.high_open else ']'}"
        )

    def __call__(self, text: str) -> int | float | None:
        if text in self.words:
            return None
        valid = self.interval() + "".join(f" or {w!r}" for w in self.words)
        try:
            value = int(text) if self.integral else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"takes {valid}, not {text!r}") from None
        inside = (
            math.isfinite(value)
            and (self.low is None or (value > self.low if self.low_open else value >= self.low))
            and (self.high is None or (value < self.high if self.high_open else value <= self.high))
        )
        if not inside:
            raise argparse.ArgumentTypeError(f"must be {valid}, not {text}")
        return value


def integer(
    minimum: int, maximum: int | None = None, words: tuple[str, ...] = (), noun: str = ""
) -> Numeric:
    """An argparse ``type``: an integer in ``[minimum, maximum]``, the range in its error."""
    return Numeric(True, minimum, maximum, words=words, noun=noun)


def number(
    low: float, high: float | None = None, *, low_open: bool = False, high_open: bool = False
) -> Numeric:
    """An argparse ``type``: a finite float in the interval given, the interval in its error."""
    return Numeric(False, low, high, low_open, high_open)


def local_path(text: str) -> Path:
    """An argparse ``type``: a path on a local or shared filesystem, ``~`` expanded. A URL
    (``gs://bucket/runs``) is refused: aejax writes its runs, reports and exports with the
    operating system's file calls (atomic renames, locks), which object stores lack."""
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", text):
        raise argparse.ArgumentTypeError(
            f"takes a path on a local or shared filesystem, not a URL ({text}): mount the "
            "bucket (e.g. gcsfuse, or a shared disk) and give the mounted path"
        )
    return Path(text).expanduser()


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Device options and --verbose."""
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="also show the log lines of the libraries underneath (Orbax, absl)",
    )
    add_compile_cache_arg(parser)
    group = parser.add_argument_group("devices (see README, 'Scaling out')")
    group.add_argument("--devices", type=integer(1), help="use the first N devices (default: all)")
    group.add_argument(
        "--cpu-devices",
        type=integer(1),
        help="split the CPU into N host "
        "devices (default: one per core where the model gains from it, else 1)",
    )
    group.add_argument(
        "--coordinator-address", help="host:port of process 0 of a multi-process job"
    )
    group.add_argument("--num-processes", type=integer(1), help="processes in the job")
    group.add_argument("--process-id", type=integer(0), help="this process's index in the job")
    group.add_argument(
        "--distributed",
        action="store_true",
        help="join a multi-process job "
        "that jax.distributed.initialize() detects (TPU pods, SLURM, ...)",
    )


def add_compile_cache_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-compile-cache",
        dest="compile_cache",
        action="store_false",
        help="compile every XLA program anew (default: keep them in ~/.cache/aejax/jax/<jaxlib "
        "version>, or under $XDG_CACHE_HOME, so that a repeated command does not compile again)",
    )


def add_threshold_args(parser: argparse.ArgumentParser, *, contamination: bool) -> None:
    """How the detection threshold is set (:mod:`aejax.thresholds`); one of them at most."""
    group = parser.add_argument_group("threshold (see aejax.thresholds)")
    choice = group.add_mutually_exclusive_group()
    choice.add_argument(
        "--threshold-percentile",
        type=number(0, 100),
        metavar="P",
        help="flag scores above the P-th percentile of the held-out in-distribution images'",
    )
    choice.add_argument(
        "--target-fpr",
        type=number(0, 1, low_open=True, high_open=True),
        metavar="F",
        help="flag at most a fraction F of in-distribution images (expected; the "
        "confidence bound the held-out count allows is reported)",
    )
    if contamination:
        choice.add_argument(
            "--contamination",
            type=number(0, 1, low_open=True, high_open=True),
            metavar="C",
            help="the expected fraction of anomalies in the images scored (PyOD's idiom): "
            "flags their top C",
        )


def add_detector_args(parser: argparse.ArgumentParser, *, contamination: bool) -> None:
    """The options of a tool that uses a run as a detector (``aejax.score``,
    ``aejax.export``): which run and checkpoint, which score, which threshold."""

    from aejax import ood

    parser.add_argument(
        "--workdir",
        type=local_path,
        help="a run of aejax.train with fitted statistics (default: the most recent one)",
    )
    parser.add_argument("--step", type=integer(1), help="checkpoint (epoch; default latest)")
    parser.add_argument(
        "--score",
        choices=ood.names(),
        help="score to decide on (default: the run's; its threshold set by the run's policy)",
    )
    add_threshold_args(parser, contamination=contamination)


def threshold_policy(args: argparse.Namespace) -> thresholds.Policy | None:
    """The threshold policy :func:`add_threshold_args` parsed, None if none given."""
    from aejax import thresholds

    for option in ("threshold_percentile", "target_fpr", "contamination"):
        value = getattr(args, option, None)
        if value is not None:
            return thresholds.Policy(option.replace("threshold_", "").replace("_", "-"), value)
    return None


def detector_lines(used: Detector, runs: Detector, fitted_now: bool) -> str:
    """Which detector a command used: the run's (fitted now with the defaults, where the
    run had none), or one the command's options set."""
    lines = [f"detector: {used.describe()}"]
    if fitted_now:
        lines.append(
            "(the run had no detector yet: the default one was fitted now and saved with the "
            "checkpoint; python -m aejax.eval --score/--save-detector chooses another)"
        )
    if used.threshold != runs.threshold:
        lines.append(f"(set by this command's options; the run's: {runs.threshold.describe()})")
    return "\n".join(lines)


def devices(args: argparse.Namespace) -> parallel.Devices:
    """The device options :func:`add_common_args` parsed. A job of several processes (not
    ``--verbose``) gets its standard output filtered of gloo's lines (:func:`drop_gloo_lines`)."""
    from aejax import parallel

    if (args.coordinator_address or args.distributed) and not args.verbose:
        drop_gloo_lines()
    return parallel.Devices(
        devices=args.devices,
        cpu_devices=args.cpu_devices,
        coordinator_address=args.coordinator_address,
        num_processes=args.num_processes,
        process_id=args.process_id,
        distributed=args.distributed,
    )


# What gloo (the CPU collectives of a multi-process job) prints to standard output from C++
# for each communicator it connects: "[Gloo] Rank 0 is connected to 1 peer ranks. Expected
# number of connected peer ranks is : 1". It has no setting to turn that off.
GLOO_LINES = b"[Gloo] "
_stdout_filter: list = []  # the drain of the filter drop_gloo_lines installed, if any


def drop_gloo_lines() -> None:
    """Passes this process's standard output (file descriptor 1, where C++ libraries write
    too) through a pipe whose reader thread drops :data:`GLOO_LINES` and writes every other
    line, in order, to the real output. Commands only, once per process; at exit (atexit,
    :func:`exit_process`) the pipe is drained and fd 1 restored. A reader that cannot write
    (a closed terminal) keeps reading, so no writer ever blocks on a full pipe."""
    import atexit
    import threading

    if _stdout_filter:
        return
    sys.stdout.flush()
    read, write = os.pipe()
    real = os.dup(1)
    os.dup2(write, 1)
    os.close(write)

    def pump() -> None:
        with os.fdopen(read, "rb") as lines, os.fdopen(real, "wb", closefd=False) as out:
            for line in lines:
                if line.startswith(GLOO_LINES):
                    continue
                try:
                    out.write(line)
                    out.flush()
                except OSError:
                    pass

    reader = threading.Thread(target=pump, name="stdout filter", daemon=True)
    reader.start()

    def drain() -> None:
        try:
            sys.stdout.flush()
        except (OSError, ValueError):
            pass
        os.dup2(real, 1)  # the pipe's last write end closes: the reader sees its end
        reader.join(timeout=2)

    atexit.register(drain)
    _stdout_filter.append(drain)


def exit_process(code: int) -> NoReturn:
    """Ends a command's process with ``code``: the atexit handlers run and the streams are
    flushed, then the process exits without the interpreter tearing down every object
    (XLA's client and buffers, Orbax's and TensorStore's state), a measurable part of the
    dense command (experiments/results/speed.md), which saves nothing: every
    file is written and closed before a command returns. Only for a command's ``__main__``:
    a Python caller of ``main()`` keeps its process."""
    import atexit

    atexit._run_exitfuncs()  # no public call runs them; os._exit alone would skip them
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing left to say
            pass
    os._exit(code)


def fail(error: Exception) -> int:
    # One write, flushed: Orbax's background threads may print to stderr at the same moment
    # (print() writes the text and its newline separately, and theirs landed in between).
    sys.stderr.write(f"error: {error}\n")
    sys.stderr.flush()
    return 2


_FIXES = {
    errno.ENOSPC: "no space left on the device: free some space, then run the same command "
    "again (training resumes from its last checkpoint)",
    errno.EDQUOT: "disk quota exceeded: free some space, then run the same command again "
    "(training resumes from its last checkpoint)",
    errno.EROFS: "it is on a read-only filesystem: give a path on a writable one (--workdir, "
    "--out or --data-dir)",
    errno.EACCES: "permission denied: give a path you can write to (--workdir, --out or "
    "--data-dir), or fix its permissions",
    errno.EPERM: "operation not permitted: give a path you can write to (--workdir, --out or "
    "--data-dir)",
    errno.ENOTDIR: "it (or a folder above it) is a file, not a directory: give another path",
    errno.EEXIST: "a file of that name is in the way: move it, or give another path",
    errno.EISDIR: "it is a directory where a file was expected",
}


def explain_os_error(error: OSError) -> str:
    """One line naming the path and what to do about a filesystem error."""
    path = error.filename or "a file"
    fix = _FIXES.get(error.errno, f"{error.strerror or error}")
    return f"cannot write {path}: {fix}"


def run_command(
    body: Callable[[], int],
    *,
    verbose: bool = False,
    interrupted: str = "interrupted",
    compile_cache: bool = True,
    decode_apart: bool = True,
) -> int:
    """Runs a CLI's ``body``; an AejaxError or a filesystem error becomes one ``error:`` line
    and exit code 2, Ctrl-C or SIGTERM one line saying what was kept (exit 130 / 143).
    Anything else escaping is a bug in aejax and keeps its traceback. ``compile_cache``:
    JAX's persistent compilation cache on (:func:`aejax.xla.use_compilation_cache`).
    ``decode_apart``: a dataset not yet prepared and decoded is, by a child process
    (:func:`aejax.data.sources.tfds.decode_apart`: TensorFlow stays out of the command's
    memory)."""
    from aejax import xla
    from aejax.data.sources.tfds import decode_apart as decoding_apart

    xla.apply_flags()  # the commands' speed flags, before JAX starts its backend
    xla.release_memory_after_compiles()
    if compile_cache:
        xla.use_compilation_cache()
    decoding_apart(decode_apart)
    # Orbax logs through absl, and a failed restore's abandoned reads end as asyncio's "Task
    # exception was never retrieved" when collected: library noise around aejax's one line.
    for name in ("absl", "asyncio"):
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.CRITICAL)
    if not verbose:  # the same reads, collected before they ran: "coroutine ... never awaited"
        for message in (r"coroutine .* was never awaited", r"Enable tracemalloc"):
            warnings.filterwarnings("ignore", message=message, category=RuntimeWarning)
    try:
        with interrupts.handled():
            return body()
    except AejaxError as e:
        return fail(e)
    except OSError as e:
        return fail(AejaxError(explain_os_error(e)))
    except (KeyboardInterrupt, Interrupted) as e:
        # A progress bar may hold the line: start a new one on a terminal.
        sys.stderr.write(f"{chr(10) if sys.stderr.isatty() else ''}{interrupted}\n")
        sys.stderr.flush()
        return 143 if isinstance(e, Interrupted) else 130
