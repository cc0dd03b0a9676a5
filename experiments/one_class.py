"""The field's one-class table: train on one class of MNIST or Fashion-MNIST as normal, score
the whole test set (that class in distribution, the other nine OOD), AUROC per class, mean over
the ten classes; beside the published from-scratch rows.

    python experiments/one_class.py                        # every row not yet measured
    python experiments/one_class.py --archs conv --seeds 0  # some rows (the others kept)
    python experiments/one_class.py --table-only           # the saved rows' table again

Protocol (Ruff et al. 2018's, which the published rows follow): the normal class's images of
the train split (about 6,000), through the public estimator exactly as a user with normal
images only would call it: ``AutoencoderDetector(arch, seed=s, **variant).fit(X)`` with every
other option at its default (the training length, batch size and held-out slice come from the
data, aejax.config.resolve; the held-out slice is the last fifth of the class's images, at most
1,000, and sets the score's statistics). Then ``detector_.detect(test images, every=True)``:
every registered score of the 10,000 test images. Pixels are the datasets' uint8 values, read
as x / 255; no other preprocessing. Nothing is chosen on test labels: the table's score is
the default (``aejax.ood.DEFAULT``, chosen by the leave-one-family-out protocol of
``ood_general.py``, which never sees these sets); the other scores' AUROCs are saved in the
JSON for reference, not chosen from. Seeds 0, 1, 2: the mean over seeds and their spread
(max - min of the ten-class mean).

Rows are kept in experiments/results/one_class.json across sittings (keyed by dataset,
variant, arch, seed and class), so a long table is filled in several sittings.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
from common import RESULTS, cpu_name
from sklearn.metrics import roc_auc_score

DATASETS = ("mnist", "fashion_mnist")
CLASSES = {
    "mnist": [str(d) for d in range(10)],
    "fashion_mnist": ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                      "sneaker", "bag", "boot"],
}  # fmt: skip
# What each variant gives the estimator besides the architecture and the seed.
VARIANTS = {"reconstruction": {}, "self-supervised": {"transform_head": True}}
PUBLISHED = [  # (method, MNIST mean AUROC, Fashion-MNIST mean AUROC, source)
    ("convolutional autoencoder, reconstruction error", 89.7, None, "Ruff et al. 2018, Table 1"),
    ("VAE", 97.0, None, "Golan & El-Yaniv 2018 (GEOM), Table 1"),
    ("Deep SVDD", 94.8, None, "Ruff et al. 2018, Table 1"),
    ("GEOM", 98.0, 93.5, "Golan & El-Yaniv 2018, Tables 1-2"),
    ("ARNet", 98.3, 93.9, "Fei et al. 2020 (Attribute Restoration), Table 1"),
    ("GOAD", None, 94.1, "Bergman & Hoshen 2020, Table 2"),
    ("contrastive + distribution augmentation", None, 94.8, "Sohn et al. 2021, Table 1"),
]
SHIRT_PUBLISHED = {"GEOM": 83.3, "ARNet": 85.0}
PATH = RESULTS / "one_class.json"


def key(row: dict) -> str:
    return f"{row['dataset']}/{row['variant']}/{row['arch']}/seed{row['seed']}/{row['class']}"


def measure(dataset: str, variant: str, arch: str, seed: int, label: int, splits) -> dict:
    from aejax import AutoencoderDetector, ood

    (train_x, train_y), (test_x, test_y) = splits
    normal = train_x[train_y == label]
    detector = AutoencoderDetector(arch, seed=seed, **VARIANTS[variant])
    start = time.perf_counter()
    detector.fit(normal)
    fit_seconds = time.perf_counter() - start
    found = detector.detector_.detect(test_x, every=True)
    is_ood = (test_y != label).astype(int)
    aurocs = {
        name: round(100 * roc_auc_score(is_ood, np.asarray(found[name], np.float64)), 2)
        for name in ood.names()
    }
    return {
        "dataset": dataset, "variant": variant, "arch": arch, "seed": seed, "class": label,
        "class_name": CLASSES[dataset][label], "n_train": int(len(normal)),
        "epochs": len(detector.history_), "fit_seconds": round(fit_seconds, 1),
        "score": ood.DEFAULT, "auroc": aurocs[ood.DEFAULT], "auroc_bce": aurocs["bce"],
        "aurocs": aurocs,
    }  # fmt: skip


def table(rows: dict[str, dict]) -> list[str]:
    lines = [
        "# One-class MNIST and Fashion-MNIST",
        "",
        "One class of the train split is normal; the whole test split is scored (the other nine",
        "classes OOD); AUROC (%) per class, mean over the ten classes. Protocol and command:",
        "`experiments/one_class.py` (its docstring). Each cell: mean over the seeds measured;",
        "`spread`: max - min over seeds of the ten-class mean. Rows: the default score (the one",
        "the estimator decides on, chosen by ood_general.py's protocol), `bce` (the",
        "reconstruction error alone, the classic autoencoder row) and, for the self-supervised",
        "option, its `transform` score alone (for reference: nothing is chosen on these).",
        "",
    ]
    groups: dict[tuple, list[dict]] = {}
    for row in rows.values():
        groups.setdefault((row["dataset"], row["variant"], row["arch"]), []).append(row)
    for dataset in DATASETS:
        names = CLASSES[dataset]
        lines += [f"## {dataset}", ""]
        head = "| method | " + " | ".join(names) + " | mean | spread | seeds |"
        lines += [head, "|" + "---|" * (len(names) + 4)]
        for (d, variant, arch), group in sorted(groups.items()):
            if d != dataset:
                continue
            shown = [("auroc", "default score"), ("auroc_bce", "bce")]
            if variant == "self-supervised":  # the head's own score, for reference
                shown.append(("transform", "transform"))
            for column, label in shown:
                cells, means = _cells(group, column)
                if cells is None:
                    continue
                seeds = sorted({r["seed"] for r in group})
                spread = max(means) - min(means) if len(means) > 1 else 0.0
                lines.append(
                    f"| aejax {arch}, {variant}, {label} | "
                    + " | ".join(cells)
                    + f" | **{statistics.mean(means):.1f}** | {spread:.1f} | {len(seeds)} |"
                )
        column = 1 if dataset == "mnist" else 2
        for method, *numbers, source in PUBLISHED:
            if numbers[column - 1] is not None:
                shirt = SHIRT_PUBLISHED.get(method) if dataset == "fashion_mnist" else None
                cells = ["" if name != "shirt" or shirt is None else f"{shirt}" for name in names]
                lines.append(
                    f"| {method} ({source}) | " + " | ".join(cells)
                    + f" | {numbers[column - 1]} | | |"
                )  # fmt: skip
        lines.append("")
    seconds = [r["fit_seconds"] for r in rows.values()]
    if seconds:
        lines += [
            f"Fit time per class (train + detector): median {statistics.median(seconds):.0f} s,",
            f"on {', '.join(sorted({r.get('cpu', '?') for r in rows.values()}))}.",
            "",
        ]
    return lines


def _cells(group: list[dict], column: str):
    """Per class the mean over seeds, and each seed's ten-class mean (None if incomplete)."""
    by_seed: dict[int, dict[int, float]] = {}
    for row in group:
        value = row[column] if column in row else row["aurocs"][column]
        by_seed.setdefault(row["seed"], {})[row["class"]] = value
    complete = {s: v for s, v in by_seed.items() if len(v) == 10}
    if not complete:
        return None, None
    cells = [f"{statistics.mean(v[c] for v in complete.values()):.1f}" for c in range(10)]
    return cells, [statistics.mean(v.values()) for v in complete.values()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--variants", nargs="+", default=["reconstruction"], choices=VARIANTS)
    parser.add_argument("--archs", nargs="+", default=["dense", "conv"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--classes", nargs="+", type=int, default=list(range(10)))
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args()
    rows = {key(r): r for r in json.loads(PATH.read_text())} if PATH.exists() else {}
    if not args.table_only:
        from aejax import data

        cpu = cpu_name()
        for dataset in args.datasets:
            splits = data.load(dataset, "train"), data.load(dataset, "test")
            for variant in args.variants:
                for arch in args.archs:
                    for seed in args.seeds:
                        for label in args.classes:
                            spec = {"dataset": dataset, "variant": variant, "arch": arch,
                                    "seed": seed, "class": label}  # fmt: skip
                            if key(spec) in rows:
                                continue
                            row = {**measure(dataset, variant, arch, seed, label, splits),
                                   "cpu": cpu}  # fmt: skip
                            rows[key(row)] = row
                            print(json.dumps({k: row[k] for k in (*spec, "auroc", "auroc_bce",
                                  "epochs", "fit_seconds")}), flush=True)  # fmt: skip
                            PATH.write_text(json.dumps(list(rows.values()), indent=1) + "\n")
    lines = table(rows)
    (RESULTS / "one_class.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
