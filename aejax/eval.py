"""``python -m aejax.eval``: how well a trained autoencoder tells its data from other data.

    python -m aejax.eval --ood fashion_mnist                  # the most recent run
    python -m aejax.eval --workdir runs/conv-fashion_mnist --ood mnist,uniform,black

Scores every image by its reconstruction error (higher = more anomalous) on the run's own
test split, on held-out training images (the run's ``--holdout`` slice, which sets the
detection threshold), and on each OOD set's test split; reports AUROC, AUPR (OOD positive
and in-distribution positive), FPR at 95% TPR and the detection rate at the threshold, with
OOD as the positive class. Writes report.json, scores.csv and figures to ``--out``
(default ``<workdir>/eval/``).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import sys
from pathlib import Path

import jax
import numpy as np

from aejax import cli, core, data, metrics, models, ood, parallel, plots, run
from aejax.errors import AejaxError
from aejax.parallel import Placement
from aejax.run import put_split

OTHER = {"mnist": "fashion_mnist", "fashion_mnist": "mnist"}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m aejax.eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, help="a run of aejax.train (default: the most "
                   "recent one under runs/)")
    p.add_argument("--step", default="latest", help="checkpoint (epoch) to evaluate")
    p.add_argument("--ood", help="comma-separated OOD sets: TFDS datasets or "
                   f"{', '.join(ood.SYNTHETIC)} (default: the other of mnist/fashion_mnist)")
    p.add_argument("--score", default="bce", choices=sorted(core.SCORES))
    p.add_argument("--threshold-percentile", type=float, default=95.0,
                   help="threshold = this percentile of held-out in-distribution scores")
    p.add_argument("--out", type=Path, help="output directory (default <workdir>/eval)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic OOD sets")
    p.add_argument("--data-dir", help="TFDS data dir (default $TFDS_DATA_DIR)")
    cli.add_device_args(p)
    return p


@dataclasses.dataclass
class ScoredSet:
    name: str
    split: str
    images: np.ndarray
    labels: np.ndarray
    scores: np.ndarray


class Scorer:
    """Scores image sets with one restored model, over the placement's devices."""

    def __init__(self, state, placement: Placement, kind: str):
        self.state, self.placement, self.kind = state, placement, kind
        self.batch_sharding = placement.batch if placement.size > 1 else None

    def scores(self, images: jax.Array, n: int) -> np.ndarray:
        scores = core.score(self.state, images, self.kind, batch_sharding=self.batch_sharding)
        return parallel.to_numpy(scores)[:n]

    def tfds_set(self, name, split, dataset, start=None, stop=None, data_dir=None) -> ScoredSet:
        images, n = put_split(self.placement, dataset, split, start, stop, data_dir)
        tfds_split = f"{split}[{start or 0}:{(start or 0) + n}]"
        # Labels and the first images (for figures) are small: read them whole on the host.
        labels = data.load(dataset, tfds_split, data_dir)[1] if parallel.is_main_process() \
            else np.zeros(n, np.int32)
        first = data.load(dataset, f"{split}[{start or 0}:{(start or 0) + 10}]", data_dir)[0]
        return ScoredSet(name, "holdout" if start else split, first, labels,
                         self.scores(images, n))

    def array_set(self, name, images_np, labels) -> ScoredSet:
        images = self.placement.put_rows(len(images_np), lambda a, b: images_np[a:b])
        return ScoredSet(name, "test", images_np[:10], labels,
                         self.scores(images, len(images_np)))


def evaluate(state, config: run.RunConfig, meta: dict, ood_names: list[str], *, kind: str,
             percentile: float, placement: Placement, seed: int = 0,
             data_dir: str | None = None):
    """The report (a JSON-able dict) and the scored sets behind it."""
    for name in ood_names:  # all names checked before any work
        ood.check_name(name, data_dir)
    ranges = config.row_ranges(data.num_examples(config.dataset, "train", data_dir))
    if "holdout" not in ranges:
        raise AejaxError("this run trained on its whole train split (--holdout 0), so nothing "
                         "is held out to set the threshold on: train with --holdout 1000")
    scorer = Scorer(state, placement, kind)
    test = scorer.tfds_set(config.dataset, "test", config.dataset, data_dir=data_dir)
    holdout = scorer.tfds_set(config.dataset, "train", config.dataset, *ranges["holdout"][1:],
                              data_dir=data_dir)
    outs = []
    for name in ood_names:
        if name in ood.SYNTHETIC:
            like = np.zeros((len(test.scores), *data.IMAGE_SHAPE), np.uint8)
            if name == "inverted":
                like = data.load(config.dataset, "test", data_dir)[0]
            outs.append(scorer.array_set(name, *ood.load(name, like, seed, data_dir)))
        else:
            outs.append(scorer.tfds_set(name, "test", name, data_dir=data_dir))

    threshold = metrics.threshold_at(holdout.scores, percentile)
    last_epoch = meta["history"][-1]  # the checkpoint's own epoch
    report = {
        "config": dataclasses.asdict(config),
        "checkpoint_step": last_epoch["epoch"],
        "score": kind,
        "positive_class": "ood",
        "threshold_percentile": percentile,
        "threshold": threshold,
        "in_distribution": {
            "dataset": config.dataset,
            "test_bce": _test_bce(scorer, test, kind, placement, config, data_dir),
            "training_reported_test_bce": last_epoch["val_loss"],
            "n_test": len(test.scores),
            "n_holdout": len(holdout.scores),
            "holdout_rows": list(ranges["holdout"]),
            "test_flagged": metrics.flagged_fraction(test.scores, threshold),
            "mean_score": float(test.scores.mean()),
        },
        "ood": {
            out.name: {
                **metrics.ood_metrics(test.scores, out.scores),
                "detection_rate": metrics.flagged_fraction(out.scores, threshold),
                "n": len(out.scores),
                "mean_score": float(out.scores.mean()),
            }
            for out in outs
        },
    }
    return report, test, holdout, outs


def _test_bce(scorer, test, kind, placement, config, data_dir) -> float:
    """The test BCE, computed exactly as training computed its val_loss."""
    if kind == "bce":
        return float(np.mean(test.scores, dtype=np.float32))
    images, n = put_split(placement, config.dataset, "test", data_dir=data_dir)
    return float(core.eval_loss(scorer.state, images, num_examples=n,
                                batch_sharding=scorer.batch_sharding))


def write_scores_csv(path: Path, sets: list[ScoredSet]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["dataset", "split", "index", "label", "score"])
        for s in sets:
            for i, (label, score) in enumerate(zip(s.labels, s.scores, strict=True)):
                writer.writerow([s.name, s.split, i, int(label), f"{score:.7g}"])


def write_figures(out_dir: Path, state, report: dict, test: ScoredSet,
                  outs: list[ScoredSet]) -> list[str]:
    kind, threshold = report["score"], report["threshold"]
    files = []
    for s in [test, *outs]:
        originals = s.images[:10]
        recon = np.asarray(core.reconstruct(state, originals))
        path = plots.reconstruction_grid(originals / 255.0, recon,
                                         out_dir / f"reconstructions_{s.name}.png",
                                         title=f"{s.name}: inputs (top), reconstructions")
        files.append(path.name)
    for s in outs:
        path = plots.score_histogram(test.scores, s.scores, out_dir / f"hist_{s.name}.png",
                                     in_name=test.name, out_name=s.name, score=kind,
                                     threshold=threshold)
        files.append(path.name)
    curves = {s.name: (*metrics.roc(test.scores, s.scores), report["ood"][s.name]["auroc"])
              for s in outs}
    files.append(plots.roc_curves(curves, out_dir / "roc.png",
                                  title=f"{report['config']['arch']} on {test.name}, "
                                        f"{kind} score").name)
    return files


def format_table(report: dict, workdir: Path) -> str:
    ind = report["in_distribution"]
    check = ind["training_reported_test_bce"]
    lines = [
        f"{report['config']['arch']} on {ind['dataset']}, checkpoint {report['checkpoint_step']}"
        f" ({workdir}; {report['devices']}); score: {report['score']}; positive class: OOD",
        f"{ind['dataset']} test BCE {ind['test_bce']:.4f}"
        + (f" (training reported {check:.4f})" if check is not None else "")
        + f"; threshold {report['threshold']:.4g} = {report['threshold_percentile']:g}th "
          f"percentile of {ind['n_holdout']} held-out train images; flags "
          f"{ind['test_flagged']:.1%} of {ind['dataset']} test",
        f"{'OOD set':<16}{'AUROC':>8}{'AUPR-out':>10}{'AUPR-in':>9}{'FPR@95TPR':>11}"
        f"{'detected':>10}",
    ]
    for name, m in report["ood"].items():
        lines.append(f"{name:<16}{m['auroc']:>8.4f}{m['aupr_out']:>10.4f}{m['aupr_in']:>9.4f}"
                     f"{m['fpr_at_95_tpr']:>11.4f}{m['detection_rate']:>10.1%}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        workdir = args.workdir
        if workdir is None:
            workdir = run.latest_workdir()
            print(f"evaluating {workdir} (the most recently trained run; --workdir to choose)",
                  file=sys.stderr)
        peeked = run.peek_config(workdir)
        model = models.get(peeked.arch) if peeked else None
        placement = cli.setup_devices(args, splits_well=bool(model and model.splits_well_on_cpu),
                                      batch_size=1000)
        step = None if args.step == "latest" else _int(args.step, "--step")
        state, config, meta = run.restore(workdir, step, placement)
        ood_names = _ood_names(args.ood, config.dataset)
        report, test, holdout, outs = evaluate(
            state, config, meta, ood_names, kind=args.score, placement=placement,
            percentile=args.threshold_percentile, seed=args.seed, data_dir=args.data_dir)
    except AejaxError as e:
        return cli.fail(e)
    if not parallel.is_main_process():
        return 0
    out_dir = args.out or workdir / "eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    report["workdir"] = str(workdir)
    report["devices"] = cli.describe(placement)
    write_scores_csv(out_dir / "scores.csv", [test, holdout, *outs])
    report["files"] = ["report.json", "scores.csv", *write_figures(out_dir, state, report,
                                                                    test, outs)]
    run.write_json_atomic(out_dir / "report.json", report)
    print(format_table(report, workdir))
    print(f"wrote {', '.join(report['files'])} to {out_dir}")
    return 0


def _int(text: str, flag: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise AejaxError(f"{flag} takes an epoch number or 'latest', not {text!r}") from None


def _ood_names(arg: str | None, in_dataset: str) -> list[str]:
    if arg is None:
        if in_dataset not in OTHER:
            raise AejaxError(f"--ood is needed for a run on {in_dataset} (e.g. --ood mnist)")
        return [OTHER[in_dataset]]
    names = [n.strip() for n in arg.split(",") if n.strip()]
    if not names:
        raise AejaxError("--ood names no set")
    return names


if __name__ == "__main__":
    sys.exit(main())
