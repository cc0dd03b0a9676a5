"""OOD detection in both directions: dense and conv, trained on MNIST and on Fashion-MNIST.

    python experiments/ood.py                      # trains what is missing, then evaluates
    python experiments/ood.py --score mse

Trains (or reuses, in runs/ood/, as ood_suite.py does) the four models with
`python -m aejax.train` defaults, runs `python -m aejax.eval` on each against the other
dataset and the synthetic sets (common.SYNTHETIC_SETS), and writes
experiments/results/ood.{md,json} with every metric; copies the figures the README shows to
experiments/results/figures/.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys

from common import OOD_RUNS, OTHER, RESULTS, SYNTHETIC_SETS, run_aejax, train

README_FIGURES = {  # (arch, dataset): figures the README shows
    ("dense", "mnist"): [
        "reconstructions_mnist.png",
        "reconstructions_fashion_mnist.png",
        "hist_fashion_mnist.png",
        "roc.png",
    ],
    ("conv", "fashion_mnist"): ["hist_mnist.png"],
}
# With --score S, the hard direction's figures under S, named hist_mnist_S.png and roc_S.png.
SCORE_FIGURES = {("conv", "fashion_mnist"): ["hist_mnist.png", "roc.png"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--archs", nargs="+", default=["dense", "conv"])
    p.add_argument("--datasets", nargs="+", default=["mnist", "fashion_mnist"])
    p.add_argument("--score", default="bce")
    args = p.parse_args()
    reports = []
    for dataset in args.datasets:
        for arch in args.archs:
            workdir = OOD_RUNS / f"{arch}-{dataset}"
            train("--arch", arch, "--dataset", dataset, workdir=workdir)
            out = workdir / f"eval-{args.score}"
            run_aejax(
                "eval",
                "--workdir",
                str(workdir),
                "--score",
                args.score,
                "--ood",
                ",".join([OTHER[dataset], *SYNTHETIC_SETS]),
                "--out",
                str(out),
            )
            reports.append(json.loads((out / "report.json").read_text()))
            figures = RESULTS / "figures" / f"{arch}-{dataset}"
            bce = args.score == "bce"
            for name in (README_FIGURES if bce else SCORE_FIGURES).get((arch, dataset), []):
                figures.mkdir(parents=True, exist_ok=True)
                stem, ext = name.rsplit(".", 1)
                shutil.copy(out / name, figures / (name if bce else f"{stem}_{args.score}.{ext}"))
    suffix = "" if args.score == "bce" else f"_{args.score}"
    (RESULTS / f"ood{suffix}.json").write_text(json.dumps(reports, indent=1) + "\n")
    (RESULTS / f"ood{suffix}.md").write_text(markdown(reports))
    print((RESULTS / f"ood{suffix}.md").read_text())
    return 0


def markdown(reports: list[dict]) -> str:
    score = reports[0]["score"]
    lines = [
        f"# OOD detection with the `{score}` reconstruction score",
        "",
        "Written by `python experiments/ood.py"
        + ("" if score == "bce" else f" --score {score}")
        + "`: each model trained 15 "
        "epochs with `python -m aejax.train` defaults, evaluated with `python -m "
        "aejax.eval` on its test split (10k) against each OOD set (10k). Positive class: "
        "OOD. Detection rate: share of the OOD set above the threshold set at the 95th "
        "percentile of 1,000 held-out training images (the in-distribution test split's "
        "own rate is in the last column).",
        "",
        "| model | trained on | test BCE | OOD set | AUROC | AUPR-out | AUPR-in | "
        "FPR@95TPR | detected | test flagged |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        ind = r["in_distribution"]
        for name, m in r["ood"].items():
            lines.append(
                f"| {r['config']['arch']} | {ind['dataset']} | {ind['test_bce']:.4f} | {name} | "
                f"{m['auroc']:.4f} | {m['aupr_out']:.4f} | {m['aupr_in']:.4f} | "
                f"{m['fpr_at_95_tpr']:.4f} | {m['detection_rate']:.1%} | "
                f"{ind['test_flagged']:.1%} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
