"""``python -m aejax.eval``: how well a trained autoencoder tells its data from other data.

    python -m aejax.eval --ood fashion_mnist                  # the most recent run
    python -m aejax.eval --workdir runs/conv-fashion_mnist --ood mnist,uniform,black

Scores every image (higher = more anomalous; ``--score``, see :mod:`aejax.scores`) on the
run's own test split, on held-out training images (the run's ``--holdout`` slice, which sets
the detection threshold and the scores' fitted statistics), and on each OOD set's test split;
reports AUROC, AUPR (OOD positive and in-distribution positive), FPR at 95% TPR and the
detection rate at the threshold, with OOD as the positive class. Writes report.json,
scores.csv and figures to ``--out`` (default ``<workdir>/eval/``).

From Python, :func:`evaluate` (a workdir and an :class:`EvalConfig`) returns the same report,
and :func:`write` the same files::

    from aejax.eval import EvalConfig, evaluate, write
    result = evaluate("runs/dense-mnist", EvalConfig(ood=("fashion_mnist", "uniform")))
    write(result, Path("runs/dense-mnist/eval"))
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import sys
from pathlib import Path

import jax
import numpy as np

from aejax import (
    board,
    cli,
    core,
    data,
    files,
    metrics,
    models,
    ood,
    parallel,
    plots,
    run,
    scores,
    thresholds,
)
from aejax.data import folder
from aejax.errors import AejaxError
from aejax.parallel import Placement

OTHER = {"mnist": "fashion_mnist", "fashion_mnist": "mnist"}


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """What to evaluate a trained run on, and how. Defaults are the CLI's."""

    ood: tuple[str, ...] = ()  # OOD sets: TFDS names or aejax.ood.SYNTHETIC; () = OTHER's
    score: str = scores.DEFAULT
    step: int | None = None  # checkpoint (epoch); None = the latest
    # How the detection threshold is set on the held-out scores (aejax.thresholds):
    # ("percentile", P) or ("target-fpr", F). It is saved with the run's statistics, where
    # `python -m aejax.score` and the exported detector take it from.
    threshold: tuple[str, float] = ("percentile", 95.0)
    seed: int = 0  # of the synthetic sets
    refit: bool = False  # fit the scores' statistics anew


def _parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(
        prog="python -m aejax.eval",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--workdir",
        type=Path,
        help="a run of aejax.train (default: the most recent one under runs/)",
    )
    p.add_argument(
        "--step",
        type=cli.integer(1, words=("latest",), noun="an epoch number"),
        default="latest",
        help="checkpoint (epoch) to evaluate (default latest)",
    )
    p.add_argument(
        "--ood",
        help="comma-separated OOD sets: TFDS datasets or "
        f"{', '.join(ood.SYNTHETIC)} (default: the other of mnist/fashion_mnist)",
    )
    p.add_argument(
        "--score",
        default=scores.DEFAULT,
        choices=scores.ALL,
        help=f"OOD score (default {scores.DEFAULT}; see aejax.scores)",
    )
    p.add_argument("--out", type=Path, help="output directory (default <workdir>/eval)")
    p.add_argument("--refit", action="store_true", help="fit the scores' statistics anew")
    p.add_argument(
        "--seed", type=cli.integer(0, 2**32 - 1), default=0, help="seed of the synthetic OOD sets"
    )
    p.add_argument("--data-dir", help="TFDS data dir (default $TFDS_DATA_DIR)")
    cli.add_threshold_args(p, contamination=False)  # default: --threshold-percentile 95
    cli.add_common_args(p)
    return p


@dataclasses.dataclass
class ScoredSet:
    name: str  # as given: a TFDS name, a synthetic set's, a folder's path
    split: str
    images: np.ndarray  # uint8, on the host
    labels: np.ndarray
    terms: dict  # aejax.core.per_image, as numpy
    scores: dict = dataclasses.field(default_factory=dict)  # every score in scores.ALL

    @property
    def label(self) -> str:
        """Its name in tables, titles and legends (a folder's: its last component)."""
        return data.display_name(self.name)


class Scorer:
    """Computes the per-image terms of image sets with one model, over the devices."""

    def __init__(
        self, state, placement: Placement, data_dir: str | None, data_options: dict | None = None
    ):
        """``data_options``: the run's preprocessing of its own dataset (a folder's)."""
        self.state, self.placement, self.data_dir = state, placement, data_dir
        self.data_options = data_options or {}
        self.batch_sharding = placement.batch if placement.size > 1 else None

    def terms(self, images: jax.Array, n: int) -> dict:
        terms = core.per_image(self.state, images, batch_sharding=self.batch_sharding)
        return {k: parallel.to_numpy(v)[:n] for k, v in terms.items()}

    def tfds_set(self, dataset, split, start=None, stop=None, role=None) -> ScoredSet:
        """Rows ``[start, stop)`` of a split of the run's dataset (default all), read once
        and scored."""
        rows = (
            split
            if start is None and stop is None
            else f"{split}[{'' if start is None else start}:{'' if stop is None else stop}]"
        )
        images, labels = data.load(dataset, rows, self.data_dir, **self.data_options)
        return self.array_set(dataset, images, labels, role or split)

    def ood_set(self, name: str, shape: tuple[int, ...]) -> ScoredSet:
        """A TFDS dataset's test split (of ``shape`` images: :func:`ood.check_name`), or
        every image of a folder, converted to ``shape`` (the report's "converted_to")."""
        if folder.is_folder(name):
            options = {"image_size": list(shape[:2]), "channels": shape[2]}
            splits = [
                data.load(name, split, self.data_dir, **options)
                for split in data.split_names(name, self.data_dir, **options)
            ]
            images = np.concatenate([x for x, _ in splits])
            labels = np.concatenate([y for _, y in splits])
            return self.array_set(name, images, labels, "all")
        return self.array_set(name, *data.load(name, "test", self.data_dir))  # shape checked

    def array_set(self, name, images_np, labels, split="test") -> ScoredSet:
        images = self.placement.put_rows(
            len(images_np), lambda a, b: images_np[a:b], row_shape=images_np.shape[1:]
        )
        return ScoredSet(name, split, images_np, labels, self.terms(images, len(images_np)))


def fitted_stats(
    scorer: Scorer,
    workdir: Path,
    step: int,
    config: run.RunConfig,
    ranges: dict,
    holdout: ScoredSet,
    refit: bool = False,
) -> scores.Stats:
    """The scores' statistics for this checkpoint: loaded from next to it, else fitted (on the
    training rows and the held-out slice) and saved there."""
    path = scores.stats_path(workdir, step)
    stats = None if refit else scores.load(path)
    if stats is None:
        train = scorer.tfds_set(config.dataset, *ranges["train"])
        stats = scores.fit(
            train.terms,
            holdout.terms,
            {
                "dataset": config.dataset,
                "checkpoint_step": step,
                "train_rows": list(ranges["train"]),
                "holdout_rows": list(ranges["holdout"]),
                "image_shape": list(holdout.images.shape[1:]),
                "preprocessing": config.data_options(),
            },
        )
        if parallel.is_main_process():
            scores.save(stats, path)
    return stats


def set_threshold(
    stats: scores.Stats, kind: str, policy: tuple[str, float], path: Path
) -> thresholds.Threshold:
    """Sets the run's threshold (``policy`` on score ``kind``'s held-out values) in ``stats``
    and saves them to ``path``: the run's detector, which ``aejax.score`` and ``aejax.export``
    use."""
    try:
        rule = thresholds.on_held_out(*policy, stats.holdout_scores[kind], score=kind)
    except ValueError as e:
        raise AejaxError(str(e)) from None
    if stats.threshold != rule.to_dict():  # a run evaluated as before is only read
        stats.threshold = rule.to_dict()
        if parallel.is_main_process():
            scores.save(stats, path)
    return rule


def fit_detector(
    workdir: str | Path,
    *,
    score: str = scores.DEFAULT,
    threshold: tuple[str, float] = ("percentile", 95.0),
    step: int | None = None,
    placement: Placement | None = None,
    data_dir: str | None = None,
) -> scores.Stats:
    """What ``aejax.eval`` fits for a run's checkpoint, without the evaluation: the scores'
    statistics (on its training rows and held-out slice) and the threshold; saved beside the
    checkpoint and returned."""
    workdir = Path(workdir)
    placement = placement or Placement.create()
    state, config, meta = run.restore(workdir, step, placement)
    _, _, stats, step = _statistics(
        state, config, meta, workdir, placement, data_dir, threshold_policy=threshold
    )
    set_threshold(stats, score, threshold, scores.stats_path(workdir, step))
    return stats


def _statistics(
    state,
    config: run.RunConfig,
    meta: dict,
    workdir: Path,
    placement: Placement,
    data_dir: str | None,
    refit: bool = False,
    threshold_policy: tuple[str, float] | None = None,
) -> tuple[Scorer, ScoredSet, scores.Stats, int]:
    """``(scorer, held-out set, statistics, step)`` of a restored checkpoint: its held-out
    slice scored, and the statistics loaded from beside it or fitted; first, an error if
    the held-out slice cannot support ``threshold_policy``."""
    ranges = config.row_ranges(
        data.num_examples(config.dataset, "train", data_dir, **config.data_options())
    )
    if "holdout" not in ranges:
        raise AejaxError(
            "this run trained on its whole train split (--holdout 0, or fewer than 5 "
            "training images), so nothing is held out to set the threshold on: train again "
            "with --holdout N (N >= 1; more images give a tighter FPR bound), on more images"
        )
    if threshold_policy is not None:  # a threshold the held-out count cannot set: say so now
        _, start, stop = ranges["holdout"]
        try:
            thresholds.check_supported(*threshold_policy, stop - start)
        except ValueError as e:
            raise AejaxError(str(e)) from None
    scorer = Scorer(state, placement, data_dir, config.data_options())
    holdout = scorer.tfds_set(config.dataset, *ranges["holdout"], role="holdout")
    step = meta["history"][-1]["epoch"]  # the checkpoint's own epoch
    return (
        scorer,
        holdout,
        fitted_stats(scorer, workdir, step, config, ranges, holdout, refit),
        step,
    )


@dataclasses.dataclass
class Evaluation:
    """What :func:`evaluate` found: the report (JSON-able) and the scored sets behind it."""

    report: dict
    state: core.TrainState
    test: ScoredSet
    holdout: ScoredSet
    outs: list[ScoredSet]


def evaluate(
    workdir: str | Path,
    config: EvalConfig = EvalConfig(),
    *,
    placement: Placement | None = None,
    data_dir: str | None = None,
) -> Evaluation:
    """Restores checkpoint ``config.step`` of the run in ``workdir`` and evaluates it:
    every score on its test split, its held-out slice and each OOD set (``config.ood``,
    default the other of mnist/fashion_mnist). ``placement``: the devices (default all)."""
    workdir = Path(workdir)
    placement = placement or Placement.create()
    state, run_config, meta = run.restore(workdir, config.step, placement)
    ood_names = list(config.ood) or _default_ood(run_config.dataset)
    result = _evaluate(
        state,
        run_config,
        meta,
        ood_names,
        kind=config.score,
        threshold_policy=config.threshold,
        placement=placement,
        workdir=workdir,
        seed=config.seed,
        data_dir=data_dir,
        refit=config.refit,
    )
    result.report["workdir"] = str(workdir)
    return result


def _evaluate(
    state,
    config: run.RunConfig,
    meta: dict,
    ood_names: list[str],
    *,
    kind: str,
    threshold_policy: tuple[str, float],
    placement: Placement,
    workdir: Path,
    seed: int,
    data_dir: str | None,
    refit: bool,
) -> Evaluation:
    shape = data.image_shape(config.dataset, data_dir, **config.data_options())
    for name in ood_names:  # all names checked before any work
        ood.check_name(name, data_dir, shape)
    scorer, holdout, stats, step = _statistics(
        state, config, meta, workdir, placement, data_dir, refit, threshold_policy
    )
    test = scorer.tfds_set(config.dataset, "test")
    outs = []
    for name in ood_names:
        if name in ood.SYNTHETIC:
            like = test.images if name == "inverted" else np.zeros_like(test.images)
            outs.append(scorer.array_set(name, *ood.synthetic_set(name, like, seed)))
        else:
            outs.append(scorer.ood_set(name, test.images.shape[1:]))
    for s in (test, holdout, *outs):
        s.scores = stats.all_scores(s.terms)

    rule = set_threshold(stats, kind, threshold_policy, scores.stats_path(workdir, step))
    threshold = rule.value
    report = {
        "config": dataclasses.asdict(config),
        "checkpoint_step": step,
        "score": kind,
        "positive_class": "ood",
        "threshold": threshold,
        "threshold_rule": rule.to_dict(),
        "in_distribution": {
            "dataset": config.dataset,
            "name": test.label,
            # As training computes its val_loss (core.eval_loss), so the two agree.
            "test_bce": float(jax.numpy.mean(test.terms["bce"])),
            "training_reported_test_bce": meta["history"][-1]["val_loss"],
            "n_test": len(test.labels),
            "n_holdout": len(holdout.labels),
            "holdout_rows": stats.meta["holdout_rows"],
            # The FPR the threshold achieved on the test split, beside what it promised.
            "test_flagged": metrics.flagged_fraction(test.scores[kind], threshold),
            "mean_score": float(np.mean(test.scores[kind])),
        },
        "ood": {
            out.name: {
                "name": out.label,
                **metrics.ood_metrics(test.scores[kind], out.scores[kind]),
                "detection_rate": metrics.flagged_fraction(out.scores[kind], threshold),
                "n": len(out.labels),
                **({"converted_to": list(out.images.shape[1:])} if out.split == "all" else {}),
                "mean_score": float(np.mean(out.scores[kind])),
            }
            for out in outs
        },
        "auroc_by_score": {
            out.name: {
                name: metrics.ood_metrics(test.scores[name], out.scores[name])["auroc"]
                for name in scores.ALL
            }
            for out in outs
        },
        "stats": stats.meta,
    }
    return Evaluation(report, state, test, holdout, outs)


def write(result: Evaluation, out_dir: Path) -> list[str]:
    """Writes report.json, scores.csv and the figures to ``out_dir``; returns their names."""
    out_dir.mkdir(parents=True, exist_ok=True)
    kind = result.report["score"]
    write_scores_csv(out_dir / "scores.csv", [result.test, result.holdout, *result.outs], kind)
    result.report["files"] = [
        "report.json",
        "scores.csv",
        *write_figures(out_dir, result.state, result.report, result.test, result.outs),
    ]
    files.write_json(out_dir / "report.json", result.report)
    write_board(result, out_dir)
    return result.report["files"]


def write_board(result: Evaluation, out_dir: Path) -> None:
    """The evaluation in the run's TensorBoard events, at the checkpoint's step: each set's
    score histogram, the AUROCs, the ROC figure."""
    from PIL import Image

    workdir = result.report["workdir"]
    kind, step = result.report["score"], result.report["checkpoint_step"]
    events = board.Board(workdir)
    sets = [result.test, result.holdout, *result.outs]
    events.histograms(step, {f"eval/{kind}/{s.label}-{s.split}": s.scores[kind] for s in sets})
    events.scalars(
        step, {f"eval/auroc/{m['name']}": m["auroc"] for m in result.report["ood"].values()}
    )
    with Image.open(out_dir / "roc.png") as roc:
        events.images(step, "eval/roc", np.asarray(roc.convert("RGB"), np.float32) / 255)
    events.close()


def write_scores_csv(path: Path, sets: list[ScoredSet], kind: str) -> None:
    with files.atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["dataset", "split", "index", "label", "score", *scores.ALL])
        for s in sets:
            for i, label in enumerate(s.labels):
                writer.writerow(
                    [
                        s.name,
                        s.split,
                        i,
                        int(label),
                        f"{s.scores[kind][i]:.7g}",
                        *(f"{s.scores[k][i]:.7g}" for k in scores.ALL),
                    ]
                )


def file_stem(dataset: str) -> str:
    """A file-name part for a set: its :func:`aejax.data.display_name`, slashes as '-'
    (``emnist/letters``)."""
    return data.display_name(dataset).replace("/", "-")


def write_figures(
    out_dir: Path, state, report: dict, test: ScoredSet, outs: list[ScoredSet]
) -> list[str]:
    kind, threshold = report["score"], report["threshold"]
    files = []
    for s in [test, *outs]:
        recon = np.asarray(core.reconstruct(state, s.images[:10]))
        path = plots.reconstruction_grid(
            s.images[:10] / 255.0,
            recon,
            out_dir / f"reconstructions_{file_stem(s.name)}.png",
            title=f"{s.label}: inputs (top), reconstructions",
        )
        files.append(path.name)
    for s in outs:
        path = plots.score_histogram(
            test.scores[kind],
            s.scores[kind],
            out_dir / f"hist_{file_stem(s.name)}.png",
            in_name=test.label,
            out_name=s.label,
            score=kind,
            threshold=threshold,
        )
        files.append(path.name)
    curves = {
        s.label: (*metrics.roc(test.scores[kind], s.scores[kind]), report["ood"][s.name]["auroc"])
        for s in outs
    }
    files.append(
        plots.roc_curves(
            curves,
            out_dir / "roc.png",
            title=f"{report['config']['arch']} on {test.label}, {kind} score",
        ).name
    )
    return files


def format_table(report: dict, workdir: Path) -> str:
    ind = report["in_distribution"]
    lines = [
        f"{report['config']['arch']} on {ind['name']}, checkpoint {report['checkpoint_step']}"
        f" ({workdir}; {report['devices']}); score: {report['score']}; positive class: OOD",
        f"{ind['name']} test BCE {ind['test_bce']:.4f} (training reported "
        f"{ind['training_reported_test_bce']:.4f})",
        f"threshold {thresholds.Threshold.from_dict(report['threshold_rule']).describe()}",
        f"it flags {ind['test_flagged']:.1%} of {ind['name']} test (the FPR achieved)",
        f"{'OOD set':<16}{'AUROC':>8}{'AUPR-out':>10}{'AUPR-in':>9}{'FPR@95TPR':>11}"
        f"{'detected':>10}   AUROC with bce / mse",
    ]
    for name, m in report["ood"].items():
        by = report["auroc_by_score"][name]
        lines.append(
            f"{m['name']:<16}{m['auroc']:>8.4f}{m['aupr_out']:>10.4f}{m['aupr_in']:>9.4f}"
            f"{m['fpr_at_95_tpr']:>11.4f}{m['detection_rate']:>10.1%}   "
            f"{by['bce']:.4f} / {by['mse']:.4f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return cli.run_command(
        lambda: evaluate_command(args), verbose=args.verbose, compile_cache=args.compile_cache
    )


def evaluate_command(args) -> int:
    workdir = args.workdir
    if workdir is None:
        workdir = run.latest_workdir()
        print(
            f"evaluating {workdir} (the most recently trained run; --workdir to choose)",
            file=sys.stderr,
        )
    config = EvalConfig(
        ood=_ood_names(args.ood),
        score=args.score,
        step=args.step,
        threshold=cli.threshold_policy(args) or ("percentile", 95.0),
        seed=args.seed,
        refit=args.refit,
    )
    placement = placement_for(cli.device_options(args), [workdir])
    result = evaluate(workdir, config, placement=placement, data_dir=args.data_dir)
    if not parallel.is_main_process():
        return 0
    result.report["devices"] = cli.describe(placement)
    out_dir = args.out or workdir / "eval"
    names = write(result, out_dir)
    print(format_table(result.report, workdir))
    print(f"wrote {', '.join(names)} to {out_dir}")
    return 0


def placement_for(device_options: dict, workdirs: list[Path]) -> Placement:
    """Devices chosen before JAX starts: the conv net splits well over CPU devices."""
    archs = [c.arch for c in map(run.peek_config, workdirs) if c is not None]
    splits_well = any(models.get(a).splits_well_on_cpu for a in archs if a in models.names())
    return cli.setup_devices(**device_options, splits_well=splits_well, batch_size=256)


def _default_ood(in_dataset: str) -> list[str]:
    if in_dataset not in OTHER:
        raise AejaxError(f"--ood is needed for a run on {in_dataset} (e.g. --ood mnist)")
    return [OTHER[in_dataset]]


def _ood_names(arg: str | None) -> tuple[str, ...]:
    if arg is None:
        return ()
    names = tuple(n.strip() for n in arg.split(",") if n.strip())
    if not names:
        raise AejaxError("--ood names no set")
    return names


if __name__ == "__main__":
    cli.exit_process(main())
