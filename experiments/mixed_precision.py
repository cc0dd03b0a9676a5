"""Mixed precision (bfloat16 forward/backward, float32 parameters and loss) against float32.

    python experiments/mixed_precision.py             # dense and conv, 15 epochs each dtype

Same seed and data; writes experiments/results/mixed_precision.{md,json} with seconds per
epoch and the test BCE reached (evaluated in float32 either way).
"""

from __future__ import annotations

import argparse
import sys

from common import summary, train, write_results


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--archs", nargs="+", default=["dense", "conv"])
    p.add_argument("--epochs", type=int, default=15)
    args = p.parse_args()
    rows = []
    for arch in args.archs:
        for dtype in ("float32", "bfloat16"):
            history = train("--arch", arch, "--epochs", str(args.epochs), "--compute-dtype", dtype)
            rows.append({"arch": arch, "compute_dtype": dtype, **summary(history)})
    lines = [
        "# Mixed precision: bfloat16 compute, float32 parameters",
        "",
        f"`python -m aejax.train --arch ARCH --compute-dtype DTYPE` ({args.epochs} epochs, "
        "seed 0) on this 2-core CPU; written by `python experiments/mixed_precision.py`. "
        "Test BCE evaluated in float32 in both cases.",
        "",
        "| arch | compute dtype | s/epoch (median) | test BCE epoch 1 | final test BCE |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['arch']} | {r['compute_dtype']} | {r['sec_per_epoch_median']} | "
            f"{r['val_loss'][0]} | {r['val_loss'][-1]} |"
        )
    write_results("mixed_precision", rows, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
