"""``python -m aejax.eval``: how well a trained autoencoder tells its data from other data.

    python -m aejax.eval --ood fashion_mnist                  # the most recent run
    python -m aejax.eval --workdir runs/conv-fashion_mnist --ood mnist,uniform,black
    python -m aejax.eval --suite                              # every score, 4 models, 7 sets
    python -m aejax.eval --suite --archs sparse denoising vae # the same for other models

Scores every image (higher = more anomalous; ``--score``, see :mod:`aejax.scores`) on the
run's own test split, on held-out training images (the run's ``--holdout`` slice, which sets
the detection threshold and the scores' fitted statistics), and on each OOD set's test split;
reports AUROC, AUPR (OOD positive and in-distribution positive), FPR at 95% TPR and the
detection rate at the threshold, with OOD as the positive class. Writes report.json,
scores.csv and figures to ``--out`` (default ``<workdir>/eval/``).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import sys
from pathlib import Path

import jax
import numpy as np

from aejax import cli, core, data, files, metrics, models, ood, parallel, plots, run, scores
from aejax.errors import AejaxError
from aejax.parallel import Placement
from aejax.run import put_split

OTHER = {"mnist": "fashion_mnist", "fashion_mnist": "mnist"}
SUITE_SYNTHETIC = ["uniform", "gaussian", "black", "grey", "white", "inverted"]
SUITE_ARCHS = ["dense", "conv"]  # the reference models; --archs for others


def _parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(prog="python -m aejax.eval", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, help="a run of aejax.train (default: the most "
                   "recent one under runs/)")
    p.add_argument("--step", type=_step, default="latest",
                   help="checkpoint (epoch) to evaluate (default latest)")
    p.add_argument("--ood", help="comma-separated OOD sets: TFDS datasets or "
                   f"{', '.join(ood.SYNTHETIC)} (default: the other of mnist/fashion_mnist)")
    p.add_argument("--score", default=scores.DEFAULT, choices=scores.ALL,
                   help=f"OOD score (default {scores.DEFAULT}; see aejax.scores)")
    p.add_argument("--threshold-percentile", type=cli.number(0, 100), default=95.0,
                   help="threshold = this percentile of held-out in-distribution scores")
    p.add_argument("--out", type=Path, help="output directory (default <workdir>/eval; "
                   "with --suite, experiments/results)")
    p.add_argument("--suite", action="store_true", help="every score on the other dataset and "
                   "the synthetic sets, for the runs <runs-dir>/<arch>-{mnist,fashion_mnist}")
    p.add_argument("--runs-dir", type=Path, default=run.RUNS_DIR, help="with --suite")
    p.add_argument("--archs", nargs="+", default=SUITE_ARCHS, help="with --suite: the "
                   f"architectures (default {' '.join(SUITE_ARCHS)}; others write "
                   "ood_suite_<archs>.*)")
    p.add_argument("--refit", action="store_true", help="fit the scores' statistics anew")
    p.add_argument("--seed", type=cli.integer(0, 2**32 - 1), default=0,
                   help="seed of the synthetic OOD sets")
    p.add_argument("--data-dir", help="TFDS data dir (default $TFDS_DATA_DIR)")
    cli.add_common_args(p)
    return p


@dataclasses.dataclass
class ScoredSet:
    name: str
    split: str
    first_images: np.ndarray  # the first 10, for figures
    labels: np.ndarray
    terms: dict  # aejax.scores.image_terms, as numpy
    scores: dict = dataclasses.field(default_factory=dict)  # every score in scores.ALL


class Scorer:
    """Computes the per-image terms of image sets with one model, over the devices."""

    def __init__(self, state, placement: Placement, data_dir: str | None):
        self.state, self.placement, self.data_dir = state, placement, data_dir
        self.batch_sharding = placement.batch if placement.size > 1 else None

    def terms(self, images: jax.Array, n: int) -> dict:
        terms = scores.image_terms(self.state, images, batch_sharding=self.batch_sharding)
        return {k: parallel.to_numpy(v)[:n] for k, v in terms.items()}

    def tfds_set(self, dataset, split, start=None, stop=None, role=None,
                 placed=None) -> ScoredSet:
        """Rows ``[start, stop)`` of a TFDS split, scored; ``placed``: the ``(images, n)`` that
        :func:`put_split` already gave for them."""
        images, n = placed or put_split(self.placement, dataset, split, start, stop,
                                        self.data_dir)
        first = start or 0
        # Labels and the first images are small: every process reads them whole.
        labels = data.load(dataset, f"{split}[{first}:{first + n}]", self.data_dir)[1]
        head = data.load(dataset, f"{split}[{first}:{first + 10}]", self.data_dir)[0]
        return ScoredSet(dataset, role or split, head, labels, self.terms(images, n))

    def array_set(self, name, images_np, labels) -> ScoredSet:
        images = self.placement.put_rows(len(images_np), lambda a, b: images_np[a:b])
        return ScoredSet(name, "test", images_np[:10], labels,
                         self.terms(images, len(images_np)))


def fitted_stats(scorer: Scorer, workdir: Path, step: int, config: run.RunConfig,
                 ranges: dict, holdout: ScoredSet, refit: bool = False) -> scores.Stats:
    """The scores' statistics for this checkpoint: loaded from next to it, else fitted (on the
    training rows and the held-out slice) and saved there."""
    path = scores.stats_path(workdir, step)
    stats = None if refit else scores.load(path)
    if stats is None:
        train = scorer.tfds_set(config.dataset, *ranges["train"])
        stats = scores.fit(train.terms, holdout.terms, {
            "dataset": config.dataset, "checkpoint_step": step,
            "train_rows": list(ranges["train"]), "holdout_rows": list(ranges["holdout"])})
        if parallel.is_main_process():
            scores.save(stats, path)
    return stats


def evaluate(state, config: run.RunConfig, meta: dict, ood_names: list[str], *, kind: str,
             percentile: float, placement: Placement, workdir: Path, seed: int = 0,
             data_dir: str | None = None, refit: bool = False):
    """The report (a JSON-able dict) and the scored sets behind it."""
    for name in ood_names:  # all names checked before any work
        ood.check_name(name, data_dir)
    ranges = config.row_ranges(data.num_examples(config.dataset, "train", data_dir))
    if "holdout" not in ranges:
        raise AejaxError("this run trained on its whole train split (--holdout 0), so nothing "
                         "is held out to set the threshold on: train with --holdout 1000")
    scorer = Scorer(state, placement, data_dir)
    test_images, n_test = put_split(placement, config.dataset, "test", data_dir=data_dir)
    test = scorer.tfds_set(config.dataset, "test", placed=(test_images, n_test))
    holdout = scorer.tfds_set(config.dataset, *ranges["holdout"], role="holdout")
    step = meta["history"][-1]["epoch"]  # the checkpoint's own epoch
    stats = fitted_stats(scorer, workdir, step, config, ranges, holdout, refit)
    outs = []
    for name in ood_names:
        if name in ood.SYNTHETIC:
            like = np.zeros((len(test.labels), *data.IMAGE_SHAPE), np.uint8)
            if name == "inverted":
                like = data.load(config.dataset, "test", data_dir)[0]
            outs.append(scorer.array_set(name, *ood.synthetic_set(name, like, seed)))
        else:
            outs.append(scorer.tfds_set(name, "test"))
    for s in (test, holdout, *outs):
        s.scores = stats.all_scores(s.terms)

    threshold = metrics.threshold_at(holdout.scores[kind], percentile)
    report = {
        "config": dataclasses.asdict(config),
        "checkpoint_step": step,
        "score": kind,
        "positive_class": "ood",
        "threshold_percentile": percentile,
        "threshold": threshold,
        "in_distribution": {
            "dataset": config.dataset,
            # Exactly as training computed its val_loss, so the two agree.
            "test_bce": float(core.eval_loss(state, test_images, num_examples=n_test,
                                             batch_sharding=scorer.batch_sharding)),
            "training_reported_test_bce": meta["history"][-1]["val_loss"],
            "n_test": len(test.labels),
            "n_holdout": len(holdout.labels),
            "holdout_rows": list(ranges["holdout"]),
            "test_flagged": metrics.flagged_fraction(test.scores[kind], threshold),
            "mean_score": float(np.mean(test.scores[kind])),
        },
        "ood": {
            out.name: {
                **metrics.ood_metrics(test.scores[kind], out.scores[kind]),
                "detection_rate": metrics.flagged_fraction(out.scores[kind], threshold),
                "n": len(out.labels),
                "mean_score": float(np.mean(out.scores[kind])),
            }
            for out in outs
        },
        "auroc_by_score": {
            out.name: {name: metrics.ood_metrics(test.scores[name], out.scores[name])["auroc"]
                       for name in scores.ALL}
            for out in outs
        },
        "stats": stats.meta,
    }
    return report, test, holdout, outs


def write_scores_csv(path: Path, sets: list[ScoredSet], kind: str) -> None:
    with files.atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["dataset", "split", "index", "label", "score", *scores.ALL])
        for s in sets:
            for i, label in enumerate(s.labels):
                writer.writerow([s.name, s.split, i, int(label), f"{s.scores[kind][i]:.7g}",
                                 *(f"{s.scores[k][i]:.7g}" for k in scores.ALL)])


def write_figures(out_dir: Path, state, report: dict, test: ScoredSet,
                  outs: list[ScoredSet]) -> list[str]:
    kind, threshold = report["score"], report["threshold"]
    files = []
    for s in [test, *outs]:
        recon = np.asarray(core.reconstruct(state, s.first_images))
        path = plots.reconstruction_grid(s.first_images / 255.0, recon,
                                         out_dir / f"reconstructions_{s.name}.png",
                                         title=f"{s.name}: inputs (top), reconstructions")
        files.append(path.name)
    for s in outs:
        path = plots.score_histogram(test.scores[kind], s.scores[kind],
                                     out_dir / f"hist_{s.name}.png", in_name=test.name,
                                     out_name=s.name, score=kind, threshold=threshold)
        files.append(path.name)
    curves = {s.name: (*metrics.roc(test.scores[kind], s.scores[kind]),
                       report["ood"][s.name]["auroc"]) for s in outs}
    files.append(plots.roc_curves(curves, out_dir / "roc.png",
                                  title=f"{report['config']['arch']} on {test.name}, "
                                        f"{kind} score").name)
    return files


def format_table(report: dict, workdir: Path) -> str:
    ind = report["in_distribution"]
    lines = [
        f"{report['config']['arch']} on {ind['dataset']}, checkpoint {report['checkpoint_step']}"
        f" ({workdir}; {report['devices']}); score: {report['score']}; positive class: OOD",
        f"{ind['dataset']} test BCE {ind['test_bce']:.4f} (training reported "
        f"{ind['training_reported_test_bce']:.4f}); threshold {report['threshold']:.4g} = "
        f"{report['threshold_percentile']:g}th percentile of {ind['n_holdout']} held-out train "
        f"images; flags {ind['test_flagged']:.1%} of {ind['dataset']} test",
        f"{'OOD set':<16}{'AUROC':>8}{'AUPR-out':>10}{'AUPR-in':>9}{'FPR@95TPR':>11}"
        f"{'detected':>10}   AUROC with bce / mse",
    ]
    for name, m in report["ood"].items():
        by = report["auroc_by_score"][name]
        lines.append(f"{name:<16}{m['auroc']:>8.4f}{m['aupr_out']:>10.4f}{m['aupr_in']:>9.4f}"
                     f"{m['fpr_at_95_tpr']:>11.4f}{m['detection_rate']:>10.1%}   "
                     f"{by['bce']:.4f} / {by['mse']:.4f}")
    return "\n".join(lines)


def evaluate_run(args, workdir: Path, placement: Placement, ood_names: list[str] | None,
                 kind: str):
    state, config, meta = run.restore(workdir, args.step, placement)
    names = ood_names or _ood_names(args.ood, config.dataset)
    return state, evaluate(state, config, meta, names, kind=kind, placement=placement,
                           percentile=args.threshold_percentile, workdir=workdir,
                           seed=args.seed, data_dir=args.data_dir, refit=args.refit)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return cli.run_command(lambda: suite(args) if args.suite else evaluate_command(args),
                           verbose=args.verbose)


def evaluate_command(args) -> int:
    workdir = args.workdir
    if workdir is None:
        workdir = run.latest_workdir()
        print(f"evaluating {workdir} (the most recently trained run; --workdir to choose)",
              file=sys.stderr)
    placement = _placement(args, [workdir])
    state, (report, test, holdout, outs) = evaluate_run(args, workdir, placement, None,
                                                        args.score)
    if not parallel.is_main_process():
        return 0
    out_dir = args.out or workdir / "eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    report["workdir"] = str(workdir)
    report["devices"] = cli.describe(placement)
    write_scores_csv(out_dir / "scores.csv", [test, holdout, *outs], args.score)
    report["files"] = ["report.json", "scores.csv", *write_figures(out_dir, state, report,
                                                                    test, outs)]
    files.write_json(out_dir / "report.json", report)
    print(format_table(report, workdir))
    print(f"wrote {', '.join(report['files'])} to {out_dir}")
    return 0


def _placement(args, workdirs: list[Path]) -> Placement:
    """Devices chosen before JAX starts: the conv net splits well over CPU devices."""
    archs = [c.arch for c in map(run.peek_config, workdirs) if c is not None]
    splits_well = any(models.get(a).splits_well_on_cpu for a in archs if a in models.names())
    return cli.setup_devices(args, splits_well=splits_well, batch_size=256)


def suite(args) -> int:
    """Every score on the 7 OOD sets, for each of ``--archs`` trained on MNIST and on
    Fashion-MNIST; writes ood_suite.* (ood_suite_<archs>.* for other architectures)."""
    for arch in args.archs:
        models.get(arch)  # an unknown name is one clear error
    workdirs = {(arch, dataset): args.runs_dir / f"{arch}-{dataset}"
                for dataset in ("mnist", "fashion_mnist") for arch in args.archs}
    missing = [f"python -m aejax.train --arch {a} --dataset {d} --workdir {w}"
               for (a, d), w in workdirs.items() if not (w / "checkpoints").is_dir()]
    if missing:
        raise AejaxError(f"--suite needs these {len(workdirs)} runs; train the missing ones "
                         f"first: {'; '.join(missing)}")
    placement = _placement(args, list(workdirs.values()))
    results = []
    for (arch, dataset), workdir in workdirs.items():
        _, (report, test, holdout, outs) = evaluate_run(
            args, workdir, placement, [OTHER[dataset], *SUITE_SYNTHETIC], scores.DEFAULT)
        selection = {  # held-out in-distribution images vs each synthetic set, every score
            out.name: {name: metrics.ood_metrics(holdout.scores[name], out.scores[name])["auroc"]
                       for name in scores.ALL}
            for out in outs if out.name in SUITE_SYNTHETIC}
        results.append({"arch": arch, "dataset": dataset, "workdir": str(workdir),
                        "test_bce": report["in_distribution"]["test_bce"],
                        "auroc": report["auroc_by_score"], "selection_auroc": selection,
                        "default": report["ood"]})
        print(f"{arch} on {dataset}: worst AUROC under {scores.DEFAULT} "
              f"{min(m['auroc'] for m in report['ood'].values()):.4f}", flush=True)
    if parallel.is_main_process():
        out = args.out or Path("experiments/results")
        name = suite_name(args.archs)
        out.mkdir(parents=True, exist_ok=True)
        files.write_json(out / f"{name}.json", {"default": scores.DEFAULT,
                                                     "models": results})
        files.write_text(out / f"{name}.md", suite_markdown(results, args.archs))
        print(f"wrote {out / name}.md and {out / name}.json")
    return 0


def suite_name(archs: list[str]) -> str:
    """``ood_suite`` for the reference models, ``ood_suite_<arch>_...`` for others."""
    return "ood_suite" if archs == SUITE_ARCHS else "_".join(["ood_suite", *archs])


def suite_markdown(results: list[dict], archs: list[str] = SUITE_ARCHS) -> str:
    sets = [OTHER["mnist"], *SUITE_SYNTHETIC]  # column order; "other" varies per model
    command = "python -m aejax.eval --suite" + (
        "" if archs == SUITE_ARCHS else f" --archs {' '.join(archs)}")
    lines = [f"# OOD suite: every score, {', '.join(archs)} on MNIST and Fashion-MNIST, "
             "seven OOD sets", "",
             f"Written by `{command}`. AUROC with OOD as the positive class; "
             "in-distribution = the model's own test split (10k), each OOD set 10k images. "
             f"Default score: `{scores.DEFAULT}` (see aejax/scores.py).", "",
             "## How the default was chosen", "",
             "Only on data a user has without any OOD test set: the 1,000 held-out training "
             "images against the six synthetic sets, per model. Worst and mean of those "
             f"{6 * len(results)} AUROCs per score (the real OOD sets below played no part"
             + ("" if archs == SUITE_ARCHS else "; the default was chosen on the reference "
                "models, dense and conv, and is kept here") + "):", "",
             "| score | worst | mean |", "|---|---|---|"]
    for name in scores.ALL:
        values = [r["selection_auroc"][s][name] for r in results for s in r["selection_auroc"]]
        lines.append(f"| `{name}` | {min(values):.4f} | {np.mean(values):.4f} |")
    lines += ["", "## Results on the OOD test sets", "",
              "| model | trained on | its test BCE | score | other dataset | "
              + " | ".join(sets[1:]) + " | worst |",
              "|---|---|---|---|---|" + "---|" * (len(sets) - 1) + "---|"]
    for r in results:
        other = OTHER[r["dataset"]]
        # elbo is bce for a model without a prior on its code: shown only where it differs.
        has_prior = any(by["elbo"] != by["bce"] for by in r["auroc"].values())
        for name in ("bce", "mse", *(["elbo"] if has_prior else []), scores.DEFAULT):
            row = [r["auroc"][other][name], *(r["auroc"][s][name] for s in sets[1:])]
            bold = "**" if name == scores.DEFAULT else ""
            lines.append(f"| {r['arch']} | {r['dataset']} | {r['test_bce']:.4f} | "
                         f"{bold}`{name}`{bold} | "
                         + " | ".join(f"{v:.4f}" for v in row) + f" | {bold}{min(row):.4f}"
                         f"{bold} |")
    lines += ["", f"Every score's AUROC on every set: `{suite_name(archs)}.json`."]
    return "\n".join(lines) + "\n"


def _step(text: str) -> int | None:
    """``--step``: an epoch number, or ``latest`` (None)."""
    if text == "latest":
        return None
    try:
        return cli.integer(1)(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"takes an epoch number >= 1 or 'latest', not "
                                         f"{text!r}") from None


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
