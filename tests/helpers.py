"""What several test modules do alike."""

import subprocess
import sys
import time
from pathlib import Path


def wait_for_checkpoint(process: subprocess.Popen, workdir: Path, step: int,
                        timeout_s: float = 120) -> None:  # fmt: skip
    """Until ``process`` (a training run) has written checkpoint ``step`` in ``workdir``;
    fails if it exits first or takes longer than ``timeout_s``."""
    deadline = time.time() + timeout_s
    while not (workdir / "checkpoints" / str(step)).exists():
        assert time.time() < deadline and process.poll() is None
        time.sleep(0.02)


def start_aejax(tool: str, *options, output=subprocess.DEVNULL) -> subprocess.Popen:
    """``python -m aejax.TOOL OPTIONS`` in the background; ``output``: where its stdout and
    stderr go (``subprocess.PIPE``: kept, as text)."""
    command = [sys.executable, "-m", f"aejax.{tool}", *map(str, options)]
    return subprocess.Popen(command, stdout=output, stderr=output, text=True)
