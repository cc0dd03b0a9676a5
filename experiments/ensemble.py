"""``--ensemble 8`` against eight single runs: wall time and test BCE, same sitting.

    python experiments/ensemble.py                  # dense, 15 epochs, 8 members
    python experiments/ensemble.py --arch conv --epochs 3 --members 4

Runs ``python -m aejax.train`` once with ``--ensemble K`` and K times alone (seeds 0..K-1),
alternating ensemble and single runs, each a fresh process and workdir. Reports the whole
command's wall time and the training seconds (epochs after the first, which compiles), the
ensemble's over the median single run's, and the members' test BCE (mean ± sd) beside the
single runs'. Member i starts as the single run with seed i does; all members see the batches
of seed 0, while single run i shuffles with seed i.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import cpu_name, history, run_aejax, write_results


def timed_train(*options: str) -> tuple[float, list[dict]]:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        # Every run compiles (no cache): what the first run of each command costs.
        run_aejax("train", *options, "--no-compile-cache", "--workdir", str(Path(tmp) / "run"))
        return time.perf_counter() - start, history(Path(tmp) / "run")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--arch", default="dense")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--members", type=int, default=8)
    args = p.parse_args()
    common = ("--arch", args.arch, "--epochs", str(args.epochs))
    singles, ensemble = [], None
    for seed in range(args.members):
        if seed == args.members // 2:  # the ensemble in the middle of the singles
            ensemble = timed_train(*common, "--ensemble", str(args.members))
        singles.append(timed_train(*common, "--seed", str(seed)))

    def train_seconds(h: list[dict]) -> float:
        return sum(e["train_seconds"] for e in h[1:])

    single_wall = statistics.median(w for w, _ in singles)
    single_train = statistics.median(train_seconds(h) for _, h in singles)
    single_bce = [h[-1]["val_loss"] for _, h in singles]
    members_bce = ensemble[1][-1]["val_loss_members"]
    row = {
        "arch": args.arch,
        "epochs": args.epochs,
        "members": args.members,
        "cpu": cpu_name(),
        "ensemble_wall_s": round(ensemble[0], 2),
        "single_wall_s_median": round(single_wall, 2),
        "wall_ratio": round(ensemble[0] / single_wall, 2),
        "ensemble_train_s": round(train_seconds(ensemble[1]), 2),
        "single_train_s_median": round(single_train, 2),
        "train_ratio": round(train_seconds(ensemble[1]) / single_train, 2),
        "members_test_bce": [round(v, 5) for v in members_bce],
        "singles_test_bce": [round(v, 5) for v in single_bce],
    }
    print(row)

    def mean_sd(values: list[float]) -> str:
        return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"

    lines = [
        f"# `--ensemble {args.members}` vs {args.members} single runs ({args.arch})",
        "",
        f"Written by `python experiments/ensemble.py --arch {args.arch} --epochs {args.epochs} "
        f"--members {args.members}` on {row['cpu']}: each run a fresh `python -m aejax.train` "
        f"process, {args.epochs} epochs, `--no-compile-cache` (each run compiles, as a first run "
        "does), the ensemble run between single runs "
        f"{args.members // 2 - 1} and {args.members // 2}. Training seconds: epochs 2 on (the "
        "first compiles).",
        "",
        "| | whole command, s | training, s | test BCE (mean ± sd) |",
        "|---|---|---|---|",
        f"| `--ensemble {args.members}` (one process) | {row['ensemble_wall_s']} | "
        f"{row['ensemble_train_s']} | {mean_sd(members_bce)} over its members |",
        f"| one single run (median of {args.members}) | {row['single_wall_s_median']} | "
        f"{row['single_train_s_median']} | {mean_sd(single_bce)} over seeds 0-{args.members - 1} |",
        f"| ensemble / one run | **{row['wall_ratio']}x** | **{row['train_ratio']}x** | |",
        "",
        f"Members' test BCE: {', '.join(f'{v:.4f}' for v in members_bce)}; single runs': "
        f"{', '.join(f'{v:.4f}' for v in single_bce)}.",
    ]
    write_results(f"ensemble_{args.arch}", [row], lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
