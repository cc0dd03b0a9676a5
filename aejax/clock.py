"""Where a command's time goes: wall seconds by phase (``timings.json``), from the process's
own start."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

_IMPORTED = time.perf_counter()


def seconds_since_start() -> float:
    """Wall seconds since this process started (Linux's /proc; elsewhere since aejax.clock
    was imported)."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.perf_counter() - _IMPORTED


class PhaseClock:
    """Wall seconds per phase of a command, for ``timings.json``: where a run's time went."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.epochs_before = 0  # a resumed run's finished epochs, not this command's

    @contextlib.contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start
