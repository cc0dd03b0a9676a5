"""Ctrl-C and SIGTERM during a long computation: one exception, raised again if it was lost.

A command installs :func:`handled` around its work; long loops (training's) call
:func:`check_interrupted` often.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator


class Interrupted(BaseException):
    """SIGTERM, turned into an exception so that the same clean-up runs as for Ctrl-C.

    A ``BaseException``, like ``KeyboardInterrupt``: library code that catches ``Exception``
    (Orbax's save, aejax's own error mapping) must not turn it into an ordinary failure."""


_SIGNALLED: type[BaseException] | None = None  # what the last signal raised, if one came


def _on_signal(signum, frame):
    global _SIGNALLED
    _SIGNALLED = Interrupted if signum == signal.SIGTERM else KeyboardInterrupt
    raise _SIGNALLED


def check_interrupted() -> None:
    """Raises the signal's exception again if it was lost: Python drops (and reports as
    "unraisable") an exception raised while a garbage-collection callback or ``__del__``
    runs, JAX has one, and the command would go on as if nothing had happened. Long loops
    call this often."""
    if _SIGNALLED is not None:
        raise _SIGNALLED


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Interrupted` and SIGINT ``KeyboardInterrupt``
    (each remembered for :func:`check_interrupted`); the previous handlers afterwards."""
    global _SIGNALLED
    _SIGNALLED = None
    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    _quiet_lost_signals()
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _quiet_lost_signals() -> None:
    """Installs (once, in a command's process: library code leaves Python's hooks to its
    user) a ``sys.unraisablehook`` that drops two reports and passes everything else to the
    hook before it:

    * a lost signal exception (the next :func:`check_interrupted` raises it again);
    * "Event loop is closed" from a failed Orbax restore's or save's leftover I/O: Orbax runs
      its reads and writes on an asyncio loop that it closes when it fails, TensorStore
      operations still in flight complete into that closed loop, and Python prints each
      one's traceback around the command's one-line error.

    Left installed: a hook that a command restored on its way out would also remove the
    hooks installed after it."""
    global _quiet_installed
    if _quiet_installed:
        return
    previous = sys.unraisablehook

    def hook(unraisable):
        lost_signal = unraisable.exc_type in (Interrupted, KeyboardInterrupt)
        late_orbax = isinstance(unraisable.exc_value, RuntimeError) and (
            str(unraisable.exc_value) == "Event loop is closed"
        )
        if not (lost_signal or late_orbax):
            previous(unraisable)

    sys.unraisablehook = hook
    _quiet_installed = True


_quiet_installed = False
