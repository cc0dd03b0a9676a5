"""How well a trained autoencoder tells its data from other data: :func:`evaluate` (a workdir
and an :class:`EvalConfig`) and :func:`fit_detector` (the statistics and threshold alone);
``python -m aejax.eval`` calls :func:`evaluate`, then :func:`aejax.eval.report.write`.

Every registered score (:mod:`aejax.ood`) is computed on the run's own test split, on its
held-out training images (the run's ``--holdout`` slice, which sets the threshold and the
scores' fitted statistics) and on each OOD set: a synthetic set (:mod:`aejax.ood.synthetic`),
a TFDS dataset's test split, or every image of a folder or ``.npy`` file, converted to the
model's shape. The report gives AUROC, AUPR (OOD positive and in-distribution positive), FPR
at 95% TPR and the detection rate at the threshold, with OOD as the positive class;
:mod:`aejax.eval.report` writes it and its figures::

    from aejax.eval import EvalConfig, evaluate
    from aejax.eval import report
    result = evaluate("runs/dense-mnist", EvalConfig(ood=("fashion_mnist", "uniform")))
    report.write(result, Path("runs/dense-mnist/eval"))
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import numpy as np

from aejax import config as configs
from aejax import core, data, inputs, metrics, models, ood, parallel, run, thresholds
from aejax import detector as detection
from aejax.config import RunConfig
from aejax.detector import Detector
from aejax.errors import AejaxError
from aejax.ood import synthetic
from aejax.parallel import Placement

OTHER = {"mnist": "fashion_mnist", "fashion_mnist": "mnist"}  # the default OOD set
DEFAULT_SCORE = ood.DEFAULT  # (EvalConfig's field "ood" hides the module in its body)


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """What to evaluate a trained run on, and how. Defaults are the CLI's.

    Attributes:
      ood: the OOD sets: TFDS names, folders, ``.npy`` files or synthetic sets
        (:data:`aejax.ood.synthetic.SYNTHETIC`); empty: the other reference dataset.
      score: the score to evaluate the threshold on (:func:`aejax.ood.names`); None: the
        run's detector's.
      step: the checkpoint (its epoch); None: the run's model (the latest, or the best epoch
        of a run that stopped early).
      threshold: the threshold policy (:mod:`aejax.thresholds`); None: the run's detector's.
      seed: the seed of the synthetic sets.
      refit: fit the scores' statistics anew instead of loading them.
      save_detector: make the evaluated score and threshold the run's detector, the one
        ``aejax.score`` and the export use; without it, evaluating changes nothing.
    """

    ood: tuple[str, ...] = ()  # OOD sets: data sources or synthetic sets; () = OTHER's
    # The score and the threshold policy to evaluate; None: the run's detector's (the
    # defaults, DEFAULT_SCORE and thresholds.DEFAULT_POLICY, on a run that has none yet).
    score: str | None = None
    step: int | None = None  # checkpoint (epoch); None = the latest
    threshold: thresholds.Policy | None = None
    seed: int = 0  # of the synthetic sets
    refit: bool = False  # fit the scores' statistics anew
    # Make the evaluated score and threshold the run's detector, the one `python -m
    # aejax.score` and the exported detector use. Without it evaluating changes nothing.
    save_detector: bool = False


@dataclasses.dataclass
class ScoredSet:
    name: str  # as given: a TFDS name, a synthetic set's, a folder's path
    split: str
    images: np.ndarray  # uint8, on the host
    labels: np.ndarray
    terms: dict  # aejax.core.per_image, as numpy
    scores: dict = dataclasses.field(default_factory=dict)  # every score of aejax.ood.names()
    label: str = ""  # its name in tables, titles and legends (a folder's: its last component)
    converted: bool = False  # converted to the model's shape (a folder, an array)

    def __post_init__(self):
        self.label = self.label or self.name


KEPT_IMAGES = 10  # images of a folder or .npy OOD set kept for the report's figures


class Scorer:
    """Computes the per-image terms of image sets with one model, over the devices."""

    def __init__(self, state, placement: Placement):
        self.state, self.placement = state, placement
        self.batch_sharding = placement.batch if placement.size > 1 else None

    def terms(self, images: jax.Array, n: int) -> dict:
        terms = core.per_image(self.state, images, batch_sharding=self.batch_sharding)
        return {k: parallel.to_numpy(v)[:n] for k, v in terms.items()}

    def rows(self, source: data.Source, split: str, start=None, stop=None, role=None) -> ScoredSet:
        """Rows ``[start, stop)`` of a split of ``source`` (default all), read once and
        scored."""
        rows = (
            split
            if start is None and stop is None
            else f"{split}[{'' if start is None else start}:{'' if stop is None else stop}]"
        )
        images, labels = source.load(rows)
        return self.array_set(source.name, images, labels, role or split, source.label)

    def ood_set(self, source: data.Source, stats: ood.Stats, shape) -> ScoredSet:
        """A dataset's test split, or every image of a folder or array, converted to the
        model's ``shape`` and streamed (:meth:`streamed_set`)."""
        if source.converts:
            return self.streamed_set(source, stats, shape)
        return self.array_set(source.name, *source.load("test"), "test", source.label)

    def streamed_set(self, source: data.Source, stats: ood.Stats, shape) -> ScoredSet:
        """Every image of a folder or ``.npy`` file, decoded and scored a chunk at a time
        (:func:`aejax.core.chunk_rows`, the chunks of :mod:`aejax.inputs` that ``aejax.score``
        reads), converted to ``shape``: memory holds a chunk of images whatever the set's
        size, and of each image its scores and per-image errors (not its code);
        :data:`KEPT_IMAGES` images are kept for the report's figures."""
        every = inputs.items([source.spec])
        silent = frozenset({"resize", "channels"})  # an OOD set's conversion is reported
        kept, terms, scores = [], [], []
        # The detector's chunks, the last padded: one compiled shape (Detector.detect_async).
        rows = core.chunk_size(len(every), stats.chunk_rows(shape))
        for given in inputs.prefetched(inputs.chunks(every, shape, rows, silent=silent)):
            n = len(given.images)
            chunk = self.array_terms(core.padded(given.images, rows))
            scores.append({k: v[:n] for k, v in stats.all_scores(chunk).items()})
            terms.append({k: v[:n] for k, v in chunk.items() if v.ndim == 1})
            kept.append(given.images[: KEPT_IMAGES - sum(len(k) for k in kept)])
        joined = {k: np.concatenate([t[k] for t in terms]) for k in terms[0]}
        labels = np.zeros(len(every), np.int32)  # unlabelled
        scored = ScoredSet(source.name, "all", np.concatenate(kept), labels, joined,
                           label=source.label, converted=True)  # fmt: skip
        scored.scores = {k: np.concatenate([s[k] for s in scores]) for k in scores[0]}
        return scored

    def array_set(self, name, images_np, labels, split="test", label="") -> ScoredSet:
        return ScoredSet(name, split, images_np, labels, self.array_terms(images_np), label=label)

    def array_terms(self, images_np: np.ndarray) -> dict:
        """The terms of host images, placed over the devices row-wise."""
        images = self.placement.put_rows(
            len(images_np), lambda a, b: images_np[a:b], row_shape=images_np.shape[1:]
        )
        return self.terms(images, len(images_np))


@dataclasses.dataclass
class Statistics:
    """A checkpoint's statistics, and what fitting them read."""

    scorer: Scorer
    source: data.Source
    holdout: ScoredSet
    stats: ood.Stats
    step: int
    # The run's detector as saved for this checkpoint (aejax.thresholds.Threshold.to_dict()),
    # None where none was fitted yet; kept when the statistics are fitted anew.
    saved_rule: dict | None


def _statistics(
    state,
    config: RunConfig,
    meta: dict,
    workdir: Path,
    placement: Placement,
    data_dir: str | None,
    refit: bool = False,
    policy: thresholds.Policy | None = None,
    source: data.Source | None = None,
) -> Statistics:
    """A restored checkpoint's held-out slice scored, and its statistics loaded from beside
    it or fitted (and saved there); first, an error if the held-out slice cannot support
    ``policy``. ``source``: the run's data, resolved (default: resolved here)."""
    source = source or data.source(config.dataset, data_dir, **config.data_options())
    ranges = config.row_ranges(source.num_examples("train"))
    if "holdout" not in ranges:
        raise AejaxError(
            "this run trained on its whole train split (--holdout 0, or fewer than 5 "
            "training images), so nothing is held out to set the threshold on: train again "
            "with --holdout N (N >= 1; more images give a tighter FPR bound), on more images"
        )
    if policy is not None:  # a threshold the held-out count cannot set: say so now
        _, start, stop = ranges["holdout"]
        try:
            policy.check_supported(stop - start)
        except ValueError as e:
            raise AejaxError(str(e)) from None
    scorer = Scorer(state, placement)
    holdout = scorer.rows(source, *ranges["holdout"], role="holdout")
    step = meta["history"][-1]["epoch"]  # the checkpoint's own epoch
    path = ood.stats_path(workdir, step)
    saved = ood.load(path)
    stale = saved is not None and "image_shape" not in saved.meta  # an older aejax's
    stats = None if refit or stale else saved
    if stats is None:
        train = scorer.rows(source, *ranges["train"])
        stats = ood.fit(
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
            ood.save(stats, path)
    saved_rule = None if saved is None or stale else saved.threshold
    return Statistics(scorer, source, holdout, stats, step, saved_rule)


def _save_detector(detector: Detector, found: Statistics) -> None:
    """The one writer of a run's detector: ``detector``'s threshold saved with the
    checkpoint's statistics, where ``aejax.score`` and ``aejax.export`` read it."""
    rule = detector.threshold.to_dict()
    if found.stats.threshold != rule:  # a detector fitted as before is only read
        found.stats.threshold = rule
        if parallel.is_main_process():
            ood.save(found.stats, ood.stats_path(detector.workdir, found.step))


def _run_detector(state, config, workdir, found: Statistics) -> Detector:
    """The run's detector on ``found``'s statistics: the score and policy saved for the
    checkpoint, else the defaults."""
    score, policy = DEFAULT_SCORE, thresholds.DEFAULT_POLICY
    if found.saved_rule is not None:
        saved = thresholds.Threshold.from_dict(found.saved_rule)
        score, policy = saved.score, saved.as_policy()
    return Detector.set_by(state, found.stats, config, found.step, workdir, policy, score)


def fit_detector(
    workdir: str | Path,
    *,
    score: str = ood.DEFAULT,
    threshold: thresholds.Policy = thresholds.DEFAULT_POLICY,
    step: int | None = None,
    placement: Placement | None = None,
    data_dir: str | None = None,
) -> Detector:
    """Fits the run's detector for a checkpoint: the scores' statistics (on its training
    rows and held-out slice, unless fitted before) and the threshold ``threshold`` sets on
    score ``score``; saved beside the checkpoint (replacing the detector saved there), and
    returned as the run's :class:`~aejax.detector.Detector`."""
    workdir = Path(workdir)
    placement = placement or Placement.create()
    state, config, meta = run.restore(workdir, step, placement)
    found = _statistics(state, config, meta, workdir, placement, data_dir, policy=threshold)
    detector = Detector.set_by(state, found.stats, config, found.step, workdir, threshold, score)
    _save_detector(detector, found)
    return detector


def run_detector(
    workdir: str | Path,
    step: int | None = None,
    placement: Placement | None = None,
    data_dir: str | None = None,
) -> tuple[Detector, bool]:
    """The run's detector for checkpoint ``step`` (default the latest) as saved, or, where
    none was fitted yet, the default one (score :data:`DEFAULT_SCORE`, threshold
    :data:`aejax.thresholds.DEFAULT_POLICY`) fitted now and saved (:func:`fit_detector`).
    Returns it and whether it was fitted now."""
    try:
        return Detector.load(workdir, step, placement), False
    except detection.NotFitted:
        return fit_detector(workdir, step=step, placement=placement, data_dir=data_dir), True


@dataclasses.dataclass
class Evaluation:
    """What :func:`evaluate` found: the report (JSON-able), the scored sets behind it, and
    what the figures show (:mod:`aejax.eval.report` writes them, computing nothing)."""

    report: dict
    state: core.TrainState
    test: ScoredSet
    holdout: ScoredSet
    outs: list[ScoredSet]
    # Each set's first FIGURE_IMAGES images and their reconstructions, by label (test first).
    reconstructions: dict[str, tuple[np.ndarray, np.ndarray]] = dataclasses.field(
        default_factory=dict
    )
    # Each OOD set's ROC curve on the evaluated score: (FPR, TPR, AUROC), by label.
    roc: dict[str, tuple[np.ndarray, np.ndarray, float]] = dataclasses.field(default_factory=dict)


FIGURE_IMAGES = 10  # images per set in the report's reconstruction figures


def evaluate(
    workdir: str | Path,
    config: EvalConfig = EvalConfig(),
    *,
    placement: Placement | None = None,
    data_dir: str | None = None,
) -> Evaluation:
    """Restores checkpoint ``config.step`` of the run in ``workdir`` and evaluates it:
    every score on its test split, its held-out slice and each OOD set (``config.ood``,
    default the other of mnist/fashion_mnist). ``placement``: the devices (default all);
    ``data_dir``: TFDS's data directory (default ``$TFDS_DATA_DIR``)."""
    workdir = Path(workdir)
    placement = placement or Placement.create()
    state, run_config, meta = run.restore(workdir, config.step, placement)
    ood_names = list(config.ood) or _default_ood(run_config.dataset)
    source = data.source(run_config.dataset, data_dir, **run_config.data_options())
    # Every OOD set resolved (and checked) before any work.
    sources = {name: _ood_source(name, data_dir, source.image_shape()) for name in ood_names}
    found = _statistics(
        state, run_config, meta, workdir, placement, data_dir, config.refit, config.threshold,
        source,
    )  # fmt: skip
    # The run's detector (the default one, fitted now where it has none) and the one
    # evaluated: the run's, unless another score or threshold was asked for. Only an explicit
    # save_detector makes that one the run's.
    runs = _run_detector(state, run_config, workdir, found)
    evaluated = runs.with_threshold(config.threshold, config.score)
    kept = evaluated if config.save_detector else runs
    _save_detector(kept, found)
    scorer = found.scorer
    test = scorer.rows(found.source, "test")
    outs = []
    for name, source in sources.items():
        if source is None:  # a synthetic set, shaped like the test split
            like = test.images if name == "inverted" else np.zeros_like(test.images)
            outs.append(scorer.array_set(name, *synthetic.synthetic_set(name, like, config.seed)))
        else:
            outs.append(scorer.ood_set(source, found.stats, test.images.shape[1:]))
    for s in (test, found.holdout, *outs):
        if not s.scores:  # a streamed set's are computed as it is read
            s.scores = found.stats.all_scores(s.terms)
    report = _report(run_config, meta, found, evaluated.threshold, test, outs)
    report["workdir"] = str(workdir)
    report["detector"] = {  # what the run's detector is now, and was before
        "saved": kept.threshold.to_dict(),
        "before": found.saved_rule,
        "evaluated_is_saved": evaluated.threshold == kept.threshold,
    }
    score = evaluated.threshold.score
    reconstructions = {
        s.label: (
            s.images[:FIGURE_IMAGES],
            np.asarray(core.reconstruct(state, s.images[:FIGURE_IMAGES])),
        )
        for s in (test, *outs)
    }
    roc = {
        s.label: (*metrics.roc(test.scores[score], s.scores[score]), report["ood"][s.name]["auroc"])
        for s in outs
    }
    return Evaluation(report, state, test, found.holdout, outs, reconstructions, roc)


def _report(config, meta, found: Statistics, rule, test, outs) -> dict:
    score, threshold = rule.score, rule.value
    return {
        "config": dataclasses.asdict(config),
        "checkpoint_step": found.step,
        "score": score,
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
            "n_holdout": len(found.holdout.labels),
            "holdout_rows": found.stats.meta["holdout_rows"],
            # The FPR the threshold achieved on the test split, beside what it promised.
            "test_flagged": metrics.flagged_fraction(test.scores[score], threshold),
            "mean_score": float(np.mean(test.scores[score])),
        },
        "ood": {
            out.name: {
                "name": out.label,
                **metrics.ood_metrics(test.scores[score], out.scores[score]),
                "detection_rate": metrics.flagged_fraction(out.scores[score], threshold),
                "n": len(out.labels),
                **({"converted_to": list(out.images.shape[1:])} if out.converted else {}),
                "mean_score": float(np.mean(out.scores[score])),
            }
            for out in outs
        },
        "auroc_by_score": {
            out.name: {
                name: metrics.ood_metrics(test.scores[name], out.scores[name])["auroc"]
                for name in ood.names()
            }
            for out in outs
        },
        "stats": found.stats.meta,
    }


def _ood_source(name: str, data_dir: str | None, shape) -> data.Source | None:
    """An OOD set's source, converted to (or checked against) the model's ``shape``; None
    for a synthetic set. One clear error for a name that is neither."""
    if name in synthetic.SYNTHETIC:
        return None
    try:
        return data.source(name, data_dir).converted_to(shape)
    except data.UnknownDataset as e:  # what data.source found (a path it expanded, ...)
        raise AejaxError(
            f"unknown OOD set {name!r}: {e}; or a synthetic set: {', '.join(synthetic.SYNTHETIC)}"
        ) from None


def _default_ood(in_dataset: str) -> list[str]:
    if in_dataset not in OTHER:
        raise AejaxError(f"--ood is needed for a run on {in_dataset} (e.g. --ood mnist)")
    return [OTHER[in_dataset]]


def placement_for(devices: parallel.Devices, workdirs: list[Path]) -> Placement:
    """Devices chosen before JAX starts, for evaluating these runs: split over the CPU's
    cores where the model gains from it at the run's batch size."""
    configs_found = [c for c in map(run.peek_config, workdirs) if c is not None]
    known = [c for c in configs_found if c.arch in models.names()]
    splits_well = any(models.get(c.arch).splits_well_on_cpu for c in known)
    batch = min((configs.batch_size(c.arch, c.batch_size) for c in known), default=None)
    batch = batch or configs.batch_size(RunConfig.arch)
    return parallel.setup(devices, splits_well=splits_well, batch_size=batch)
