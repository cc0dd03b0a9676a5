"""Streaming batches from disk against holding MNIST on the device, same sitting.

    python experiments/streaming.py                       # dense 6 epochs, conv 3, 2 rounds
    python experiments/streaming.py --archs dense --epochs 10 --rounds 3

Runs ``python -m aejax.train`` with ``--stream`` and ``--no-stream`` alternately (each a
fresh process and workdir, all 60k training images) and writes
experiments/results/streaming.{md,json}: seconds per epoch (training pass plus the test
evaluation, median over the epochs after the first) and the ratio. Both must give the same
losses; the table shows the last epoch's test BCE of each.
"""

from __future__ import annotations

import argparse
import statistics
import sys

from common import cpu_name, summary, train, write_results


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--archs", nargs="+", default=["dense", "conv"])
    p.add_argument("--epochs", type=int, default=0, help="default: dense 6, conv 3")
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    rows = []
    for arch in args.archs:
        epochs = str(args.epochs or {"dense": 6}.get(arch, 3))
        for r in range(args.rounds):
            for how in ("--no-stream", "--stream"):
                history = train("--arch", arch, "--epochs", epochs, "--holdout", "0", how)
                rows.append({"arch": arch, "round": r, "how": how.strip("-"), **summary(history)})
    lines = [
        "# Streaming from disk vs holding the data on the device (MNIST)",
        "",
        f"`python experiments/streaming.py`, {cpu_name()}, {rows and len(rows)} runs "
        "alternating, each a fresh process; s/epoch = median over the epochs after the "
        "first (training pass over 60k images plus the 10k test evaluation).",
        "",
        "| arch | no-stream s/epoch | stream s/epoch | stream / no-stream | last test BCE "
        "(no-stream / stream) |",
        "|---|---|---|---|---|",
    ]
    for arch in args.archs:
        mine = [r for r in rows if r["arch"] == arch]
        med = {
            how: statistics.median(r["sec_per_epoch_median"] for r in mine if r["how"] == how)
            for how in ("no-stream", "stream")
        }
        bce = {how: [r["val_loss"][-1] for r in mine if r["how"] == how][0] for how in med}
        lines.append(
            f"| {arch} | {med['no-stream']:.3f} | {med['stream']:.3f} | "
            f"{med['stream'] / med['no-stream']:.3f} | {bce['no-stream']} / {bce['stream']} |"
        )
    write_results("streaming", rows, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
