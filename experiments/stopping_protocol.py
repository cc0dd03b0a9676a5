"""How long a run on someone's own images trains by default: the protocol that chose the
stopping rule's constants (aejax.stopping), from held-out losses only.

    python experiments/stopping_protocol.py curves     # long runs, every epoch's held-out loss
    python experiments/stopping_protocol.py choose     # the rule, from those curves

``curves`` trains the conv net (and dense once) with the default batch size
(:func:`aejax.config.data_batch_size`) for a fixed :data:`LONG_STEPS` optimizer steps on
protocol datasets of 100 to 3,000 images of several kinds: MNIST digits and Fashion-MNIST
articles (grey 28x28), crops of scikit-image's fundus, cell and sky images (32x32 and 64x64,
RGB and grey). None of them is a photo of the kind ``experiments/own_data_defaults.py``
judges the rule on, and no OOD set is looked at: a rule is scored by the held-out KL it
reaches (BCE less the held-out images' own entropy, the part training can remove) against
the best of the whole long run, and by the steps it spends.

``choose`` replays each candidate rule on the recorded curves, as the trainer would decide
epoch by epoch, and keeps the cheapest rule whose chosen epoch's held-out KL is within
:data:`TOLERANCE` of each long run's best. Writes experiments/results/stopping_protocol.*.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from pathlib import Path

import numpy as np
from common import ROOT, cpu_name, crops, skimage_image, train, write_results

LONG_STEPS = 12_000
TOLERANCE = 0.02  # the chosen epoch's held-out KL at most 2% above the long run's best
WORK = ROOT / "runs" / "stopping"

# name: (kind, source, images, side, channels, arch)
DATASETS = {
    "mnist-100": ("tfds", "mnist", 100, 28, 1, "conv"),
    "mnist-3000": ("tfds", "mnist", 3000, 28, 1, "conv"),
    "mnist-1000-dense": ("tfds", "mnist", 1000, 28, 1, "dense"),
    "fashion-300": ("tfds", "fashion_mnist", 300, 28, 1, "conv"),
    "fashion-1000": ("tfds", "fashion_mnist", 1000, 28, 1, "conv"),
    "retina-300-rgb32": ("skimage", "retina", 300, 32, 3, "conv"),
    "retina-3000-rgb32": ("skimage", "retina", 3000, 32, 3, "conv"),
    "cell-1000-grey32": ("skimage", "cell", 1000, 32, 1, "conv"),
    "hubble-300-rgb64": ("skimage", "hubble_deep_field", 300, 64, 3, "conv"),
    "cell-100-grey64": ("skimage", "cell", 100, 64, 1, "conv"),
}


def dataset_file(name: str) -> Path:
    """The protocol dataset ``name`` as a ``.npy`` array (made once)."""
    kind, source, n, side, channels, _ = DATASETS[name]
    path = WORK / f"{name}.npy"
    if path.is_file():
        return path
    if kind == "tfds":
        from aejax import data

        images = data.load(source, f"train[:{n}]")[0]
    else:
        images = crops(skimage_image(source), n, side, np.random.default_rng(0))
        if channels == 1:
            images = np.round(images @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)
    WORK.mkdir(parents=True, exist_ok=True)
    np.save(path, images)
    return path


def held_out_entropy(path: Path, holdout: int) -> float:
    """The mean binary entropy of a run's held-out images: the BCE no model goes below."""
    from aejax import data, losses

    source = data.source(str(path))
    n_train = source.num_examples("train")
    rows = source.load(f"train[{n_train - holdout}:{n_train}]")[0]
    return float(np.mean(losses.entropy_per_example(rows)))


def curves() -> None:
    from aejax import config as aejax_config
    from aejax import data

    rows = []
    for name, (_, _, _, _, _, arch) in DATASETS.items():
        path = dataset_file(name)
        source = data.source(str(path))
        n_train = source.num_examples("train")
        holdout = aejax_config.default_holdout(n_train)
        batch = aejax_config.data_batch_size(arch, n_train - holdout)
        steps_per_epoch = math.ceil((n_train - holdout) / batch)
        epochs = math.ceil(LONG_STEPS / steps_per_epoch)
        workdir = WORK / f"{arch}-{name}"
        options = ["--arch", arch, "--dataset", str(path), "--epochs", str(epochs)]
        options += ["--batch-size", str(batch), "--checkpoint-every", "600"]
        hist = train(*options, workdir=workdir)
        floor = held_out_entropy(path, holdout)
        rows.append({
            "dataset": name, "arch": arch, "n_train": n_train - holdout, "holdout": holdout,
            "batch_size": batch, "steps_per_epoch": steps_per_epoch, "entropy": floor,
            "holdout_loss": [h["holdout_loss"] for h in hist],
            "epoch_seconds": [h["epoch_seconds"] for h in hist],
        })  # fmt: skip
        (WORK / "curves.json").write_text(json.dumps(rows))


def choose() -> None:
    from aejax import stopping

    runs = json.loads((WORK / "curves.json").read_text())
    grid = [
        stopping.Rule(
            min_steps=m, patience=p, min_patience_steps=q, min_delta=d, max_steps=LONG_STEPS
        )  # fmt: skip
        for m, p, q, d in itertools.product(
            (250, 500, 1000),
            (0.1, 0.25, 0.5, 1.0),
            (100, 250, 500, 1000),
            (0.002, 0.005, 0.01, 0.02, 0.05),
        )
    ]
    results = []
    for rule in grid:
        outcome = [_replay(rule, run) for run in runs]
        gaps = [o["gap"] for o in outcome]
        steps = sum(o["steps"] for o in outcome)
        results.append({"rule": rule, "worst_gap": max(gaps), "steps": steps, "outcome": outcome})
    good = [r for r in results if r["worst_gap"] <= TOLERANCE]
    best = min(good or results, key=lambda r: (r["steps"], r["worst_gap"]))
    chosen = stopping.DEFAULT_RULE
    mine = next((r for r in results if r["rule"] == chosen), None) or {
        "rule": chosen,
        "outcome": [_replay(chosen, run) for run in runs],
    }
    lines = [
        "# The stopping rule's protocol (`python experiments/stopping_protocol.py`)",
        "",
        f"CPU: {cpu_name()}. Held-out KL = held-out BCE less the held-out images' own "
        f"entropy. {len(runs)} protocol runs of {LONG_STEPS:,} steps; {len(grid)} candidate "
        f"rules; a rule passes when every run's chosen epoch is within {TOLERANCE:.0%} of "
        "that run's best held-out KL.",
        "",
        f"Cheapest passing rule: {_describe(best['rule'])} ({best['steps']:,} steps in all, "
        f"worst gap {best['worst_gap']:.2%}); {len(good)} of {len(grid)} rules pass.",
        f"aejax's default (`aejax.stopping.DEFAULT_RULE`): {_describe(chosen)}.",
        "",
        "| run | images | batch | steps/epoch | best KL (step) | default stops at step "
        "| its KL | gap | why |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run, o in zip(runs, mine["outcome"], strict=True):
        lines.append(
            f"| {run['arch']} {run['dataset']} | {run['n_train']} | {run['batch_size']} | "
            f"{run['steps_per_epoch']} | {o['best_kl']:.5f} ({o['best_step']:,}) | "
            f"{o['steps']:,} | {o['kl']:.5f} | {o['gap']:.2%} | {o['reason']} |"
        )
    from aejax import config as aejax_config

    for run in runs:
        now = aejax_config.data_batch_size(run["arch"], run["n_train"])
        if now != run["batch_size"]:
            lines += ["", f"{run['arch']} {run['dataset']}'s curve was recorded at batch "
                      f"{run['batch_size']}; today's default batch for it is {now}."]  # fmt: skip
    payload = [{"rule": r["rule"].__dict__, "worst_gap": r["worst_gap"], "steps": r["steps"]}
               for r in results]  # fmt: skip
    write_results("stopping_protocol", payload, lines)


def _replay(rule, run: dict) -> dict:
    """What ``rule`` decides on one recorded curve, epoch by epoch, as the trainer would."""
    from aejax import stopping

    kl = np.asarray(run["holdout_loss"]) - run["entropy"]
    spe = run["steps_per_epoch"]
    decision = None
    for epoch in range(1, len(kl) + 1):
        decision = stopping.decide(list(kl[:epoch]), spe, rule)
        if decision.stop:
            break
    chosen = decision.best_epoch
    best = int(np.argmin(kl))
    return {
        "steps": decision.epochs * spe, "kl": float(kl[chosen - 1]),
        "best_kl": float(kl[best]), "best_step": (best + 1) * spe,
        "gap": float(kl[chosen - 1] / kl[best] - 1), "reason": decision.reason,
    }  # fmt: skip


def _describe(rule) -> str:
    return (
        f"at least {rule.min_steps:,} steps; stop once {rule.patience:.0%} of the steps to the "
        f"best (at least {rule.min_patience_steps:,}) pass without the held-out KL falling "
        f"{rule.min_delta:.1%} below its best"
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=["curves", "choose"])
    args = p.parse_args(argv)
    {"curves": curves, "choose": choose}[args.what]()


if __name__ == "__main__":
    sys.exit(main())
