"""The conv net on 1 and on 2 CPU host devices: speed per epoch and the loss reached.

    python experiments/cpu_devices.py                 # 15 epochs each, one after the other

Same seed, same global batch (128): on 2 devices each takes 64 images of every batch and the
gradients are all-reduced. Writes experiments/results/cpu_devices.{md,json}.
"""

from __future__ import annotations

import argparse
import sys

from common import summary, train, write_results


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--devices", nargs="+", type=int, default=[1, 2])
    args = p.parse_args()
    rows = []
    for devices in args.devices:
        history = train(
            "--arch", "conv", "--epochs", str(args.epochs), "--cpu-devices", str(devices)
        )
        rows.append({"cpu_devices": devices, **summary(history)})
    lines = [
        "# The conv net on 1 vs 2 CPU host devices (2-core machine)",
        "",
        f"`python -m aejax.train --arch conv --cpu-devices N` ({args.epochs} epochs, seed "
        "0, batch 128), one run after the other; written by "
        "`python experiments/cpu_devices.py`. Seconds per epoch: training + validation "
        "pass, median [min-max] over epochs 2 onwards.",
        "",
        "| --cpu-devices | s/epoch | test BCE epoch 1 | epoch 3 | final |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        v = r["val_loss"]
        lines.append(
            f"| {r['cpu_devices']} | {r['sec_per_epoch_median']:.2f} "
            f"[{r['sec_per_epoch_min']:.2f}-{r['sec_per_epoch_max']:.2f}] | {v[0]} | "
            f"{v[min(2, len(v) - 1)]} | {v[-1]} |"
        )
    if len(rows) == 2:
        a, b = rows
        lines += [
            "",
            f"Speed-up {a['sec_per_epoch_median'] / b['sec_per_epoch_median']:.2f}x; "
            f"final losses differ by {abs(a['val_loss'][-1] - b['val_loss'][-1]):.1e} "
            "(the sums over the batch are added in another order).",
        ]
    write_results("cpu_devices", rows, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
