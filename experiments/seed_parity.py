"""The reference runs, reproduced: dense and conv on MNIST, 15 epochs, three seeds.

    python experiments/seed_parity.py                 # all runs (conv: ~2.5 min a seed here)
    python experiments/seed_parity.py --archs dense --seeds 0

Runs `python -m aejax.train` with its defaults (one per seed, in runs/parity/; a finished run
is reused, an interrupted one resumed), plus the dense runs under the reference protocol
exactly (`--holdout 0`: all 60k training images; the default keeps 1k out for evaluation),
and writes experiments/results/seed_parity.{md,json} beside the reference numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

from common import RESULTS, ROOT, train

# From DEVELOPERS.md (the Keras tutorial) and ../shared/bench/peers/RESULTS.md.
REFERENCE = {
    "dense": {
        "tutorial": {1: 0.2187, 15: 0.1327},
        "keras": {1: 0.2263, 15: 0.1333},
        "torch": {1: 0.2316, 15: 0.1335},
        "target_15": 0.1337,
    },
    "conv": {
        "tutorial": {1: 0.0792, 3: 0.0730, 15: 0.0676},
        "keras": {1: 0.0813, 3: 0.0727, 15: 0.0672},
        "torch": {1: 0.0803, 3: 0.0726, 15: 0.0673},
        "target_15": 0.0686,
        "target_3": 0.0740,
    },
}


def train_reference(arch: str, seed: int, extra: list[str], tag: str) -> list[dict]:
    return train(
        "--arch",
        arch,
        "--seed",
        str(seed),
        "--epochs",
        "15",
        *extra,
        workdir=ROOT / "runs" / "parity" / f"{arch}-s{seed}{tag}",
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--archs", nargs="+", default=["dense", "conv"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    args = p.parse_args()
    runs = []
    for arch in args.archs:
        protocols = [("default (--holdout 1000)", [], "")]
        if arch == "dense":
            protocols.append(("reference (--holdout 0)", ["--holdout", "0"], "-h0"))
        for name, extra, tag in protocols:
            for seed in args.seeds:
                history = train_reference(arch, seed, extra, tag)
                runs.append(
                    {
                        "arch": arch,
                        "protocol": name,
                        "seed": seed,
                        "val_loss": [round(h["val_loss"], 4) for h in history],
                        "sec_per_epoch_median": round(
                            statistics.median(h["epoch_seconds"] for h in history[1:]), 3
                        ),
                    }
                )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "seed_parity.json").write_text(
        json.dumps({"reference": REFERENCE, "runs": runs}, indent=1) + "\n"
    )
    (RESULTS / "seed_parity.md").write_text(markdown(runs))
    print((RESULTS / "seed_parity.md").read_text())
    return 0


def markdown(runs: list[dict]) -> str:
    lines = [
        "# Seed parity: the reference runs reproduced",
        "",
        "MNIST test BCE (Keras' `val_loss`) after epochs 1, 3 and 15; written by "
        "`python experiments/seed_parity.py`. Default = `python -m aejax.train --arch "
        "ARCH --seed S` as it is; reference protocol = the same on all 60k training images "
        "(`--holdout 0`; by default 1,000 are kept out for `aejax.eval`).",
        "",
        "| arch | protocol | seed | epoch 1 | epoch 3 | epoch 15 | s/epoch |",
        "|---|---|---|---|---|---|---|",
    ]
    for arch, ref in REFERENCE.items():
        for who in ("tutorial", "keras", "torch"):
            r = ref[who]
            lines.append(
                f"| {arch} | {who} (reference) | - | {r[1]} | {r.get(3, '-')} | {r[15]} | - |"
            )
        for run in (r for r in runs if r["arch"] == arch):
            v = run["val_loss"]
            lines.append(
                f"| {arch} | aejax, {run['protocol']} | {run['seed']} | {v[0]} | {v[2]} "
                f"| **{v[14]}** | {run['sec_per_epoch_median']} |"
            )
        targets = f"epoch 15 <= {ref['target_15']}" + (
            f", epoch 3 <= {ref['target_3']}" if "target_3" in ref else ""
        )
        mine = [r["val_loss"][14] for r in runs if r["arch"] == arch]
        if mine:
            lines.append(f"| {arch} | target: {targets} | | | | worst {max(mine)} | |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
