"""Mixed precision (bfloat16 forward/backward, float32 parameters and loss) against float32.

    python experiments/mixed_precision.py             # dense and conv, 15 epochs each dtype

Same seed and data; writes experiments/results/mixed_precision.{md,json} with seconds per
epoch and the test BCE reached (evaluated in float32 either way).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "experiments" / "results"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--archs", nargs="+", default=["dense", "conv"])
    p.add_argument("--epochs", type=int, default=15)
    args = p.parse_args()
    rows = []
    for arch in args.archs:
        for dtype in ("float32", "bfloat16"):
            with tempfile.TemporaryDirectory() as workdir:
                command = [sys.executable, "-m", "aejax.train", "--arch", arch, "--epochs",
                           str(args.epochs), "--compute-dtype", dtype, "--workdir", workdir]
                print("$", " ".join(command[1:]), flush=True)
                subprocess.run(command, cwd=ROOT, check=True)
                history = [json.loads(line) for line in
                           (Path(workdir) / "metrics.jsonl").read_text().splitlines()]
            rows.append({"arch": arch, "compute_dtype": dtype, "sec_per_epoch_median": round(
                statistics.median(h["epoch_seconds"] for h in history[1:]), 3),
                "val_loss": [round(h["val_loss"], 5) for h in history]})
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "mixed_precision.json").write_text(json.dumps(rows, indent=1) + "\n")
    lines = ["# Mixed precision: bfloat16 compute, float32 parameters", "",
             f"`python -m aejax.train --arch ARCH --compute-dtype DTYPE` ({args.epochs} epochs, "
             "seed 0) on this 2-core CPU; written by `python experiments/mixed_precision.py`. "
             "Test BCE evaluated in float32 in both cases.", "",
             "| arch | compute dtype | s/epoch (median) | test BCE epoch 1 | final test BCE |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['arch']} | {r['compute_dtype']} | {r['sec_per_epoch_median']} | "
                     f"{r['val_loss'][0]} | {r['val_loss'][-1]} |")
    (RESULTS / "mixed_precision.md").write_text("\n".join(lines) + "\n")
    print((RESULTS / "mixed_precision.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
