"""What the experiment scripts share: running ``python -m aejax.train`` and reading its history."""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "experiments" / "results"
# The OOD experiments' runs (python -m aejax.train defaults), shared by ood.py and
# ood_suite.py, and their one list of OOD sets: the other dataset and these synthetic ones.
OOD_RUNS = ROOT / "runs" / "ood"
OTHER = {"mnist": "fashion_mnist", "fashion_mnist": "mnist"}
SYNTHETIC_SETS = ["uniform", "gaussian", "black", "grey", "white", "inverted"]


def train(*options: str, workdir: Path | None = None) -> list[dict]:
    """Runs ``python -m aejax.train OPTIONS --workdir WORKDIR`` (a temporary one if None; a
    finished run there is reused, an interrupted one resumed) and returns its per-epoch
    metrics (``metrics.jsonl``)."""
    if workdir is None:
        with tempfile.TemporaryDirectory() as tmp:
            return train(*options, workdir=Path(tmp))
    run_aejax("train", *options, "--workdir", str(workdir))
    return history(workdir)


def run_aejax(tool: str, *options: str) -> None:
    """Runs ``python -m aejax.TOOL OPTIONS`` from the repository root, echoing it."""
    command = [sys.executable, "-m", f"aejax.{tool}", *options]
    print("$", " ".join(command[1:]), flush=True)
    subprocess.run(command, cwd=ROOT, check=True)


def history(workdir: Path) -> list[dict]:
    """A training run's per-epoch metrics, oldest first."""
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def summary(history: list[dict]) -> dict:
    """Seconds per epoch after the first (which compiles) and the test BCE of every epoch."""
    seconds = [h["epoch_seconds"] for h in history[1:]] or [history[0]["epoch_seconds"]]
    return {
        "sec_per_epoch_median": round(statistics.median(seconds), 3),
        "sec_per_epoch_min": round(min(seconds), 3),
        "sec_per_epoch_max": round(max(seconds), 3),
        "val_loss": [round(h["val_loss"], 5) for h in history],
    }


def cpu_name() -> str:
    """The CPU's model name (what ``lscpu`` calls it), for the results' headers."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def write_results(name: str, rows: list[dict], markdown_lines: list[str]) -> None:
    """``experiments/results/NAME.json`` (the rows) and ``NAME.md`` (the lines), then prints
    the table."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(rows, indent=1) + "\n")
    (RESULTS / f"{name}.md").write_text("\n".join(markdown_lines) + "\n")
    print((RESULTS / f"{name}.md").read_text())
