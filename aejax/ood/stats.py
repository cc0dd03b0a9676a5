"""The statistics a run's scores are fitted with, and every score computed from them.

:func:`fit` fits every registered score's statistics for one checkpoint (on its training
images' terms and its held-out slice) and keeps every score of the held-out images (p-values
and thresholds are set on them); :func:`save` writes them beside the checkpoint
(``ood_stats/<epoch>.npz``), so scoring later needs no training data. :func:`every_score`
computes every score from them: the CLIs, the Python API and the exported detector all
compute scores with this one function.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from aejax import files, xla
from aejax.core.evaluator import TERMS, chunk_rows
from aejax.ood.registry import Score, names, registered

# What ood_stats files hold: 6, each score's fitted arrays under its name, Gaussians as a
# whitening (aejax.ood.latent.mahalanobis), fitted to per-image means taken by
# aejax.reductions.accurate_mean, kl computed per pixel (aejax.losses.kl_per_example), and
# joint over eleven statistics (z-transform among them). Files of another format (5: joint
# over ten; 4: kl as a float32 bce - entropy; 3: plain float32 means; 2: precisions; none:
# before the score registry) are fitted anew.
FORMAT = 6
# Ten folds: each fit sees 90% of the held-out images, so cross-fitted scores are nearly those
# of the fit to all of them, at ten small fits' cost.
CROSS_FIT_FOLDS = 10


def every_score(fitted: dict, terms: dict, scores: list[Score] | None = None) -> dict:
    """Every reported score (:func:`aejax.ood.names`) from :func:`aejax.core.per_image`'s
    terms and the fitted arrays (``{score: {name: array}}``, :meth:`Stats.arrays`); with
    ``scores``, those scores only (and each one's values, reported or not). Traceable,
    float32."""
    values, out = dict(terms), {}
    for score in registered() if scores is None else scores:
        values[score.name] = score.compute(
            fitted.get(score.name, {}), {n: values[n] for n in score.needs}
        )
        if score.reported or scores is not None:
            out[score.name] = values[score.name]
    return out


_every_score = xla.jit(every_score, static_argnames="scores")


@dataclasses.dataclass
class Stats:
    """What scoring needs from the training data, fitted once per checkpoint.

    Attributes:
      fitted: each score's fitted arrays, by score name.
      meta: where it was fitted: dataset, rows, checkpoint step, image shape.
      holdout_scores: the held-out images' scores (cross-fitted where a score is fitted on
        them), what thresholds and p-values are set on.
      threshold: the detector's threshold (``aejax.thresholds.Threshold.to_dict()``).
    """

    fitted: dict[str, dict[str, np.ndarray]]  # score -> its fitted arrays
    meta: dict  # where it was fitted: dataset, rows, checkpoint step, image shape
    holdout_scores: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    threshold: dict | None = None  # aejax.thresholds.Threshold.to_dict(), set by eval

    def arrays(self) -> dict[str, dict[str, np.ndarray]]:
        """The fitted statistics as float32 arrays, what :func:`every_score` takes."""
        return {
            score: {k: np.asarray(v, np.float32) for k, v in arrays.items()}
            for score, arrays in self.fitted.items()
        }

    def row_bytes(self) -> int:
        """The bytes of the largest buffer scoring makes per image: a kNN score's
        similarities to its bank (float32), 0 without one (:func:`aejax.core.chunk_rows`)."""
        banks = [len(arrays["bank"]) for arrays in self.fitted.values() if "bank" in arrays]
        return 4 * max(banks, default=0)

    def chunk_rows(self, image_shape: tuple[int, ...]) -> int:
        """The images of ``image_shape`` one scoring call takes with these statistics
        (:func:`aejax.core.chunk_rows` of :meth:`row_bytes`): what a detector scores per
        call and what an evaluation's streamed set reads per chunk."""
        return chunk_rows(tuple(image_shape), self.row_bytes())

    def all_scores(self, terms: dict) -> dict[str, np.ndarray]:
        """Every score, per image (float32), from the images' ``terms``
        (:func:`aejax.core.per_image`'s)."""
        terms = {k: terms[k] for k in TERMS if k in terms}
        return {k: np.asarray(v) for k, v in _every_score(self.arrays(), terms).items()}


def fit(train_terms: dict, holdout_terms: dict, meta: dict) -> Stats:
    """Fits every score's statistics from the training images' ``train_terms`` and the
    held-out images' ``holdout_terms`` (``meta`` is kept with them), in stages: a stage fits
    the scores whose needs are known (terms, and scores already fitted or fitting nothing),
    the held-out values of those needs computed by one jitted program of the scores before
    it."""
    pending = [s for s in registered() if s.fit is not None]
    fitted, notes, cross_fitted = {}, {}, {}
    while pending:
        ready = _computable(fitted)
        stage = [s for s in pending if all(n in TERMS or n in ready for n in s.needs)]
        if not stage:
            raise ValueError(f"cannot fit {[s.name for s in pending]}: their needs never fit")
        needed = [s for s in registered() if s.name in ready and any(
            s.name in stage_score.needs for stage_score in stage)]  # fmt: skip
        held_out = dict(holdout_terms)
        if needed:  # the scores the stage needs, on the held-out images
            computed = [s for s in registered() if s.name in ready]
            arrays = Stats(fitted, {}).arrays()
            held_out.update(_every_score(arrays, _terms(holdout_terms), tuple(computed)))
        for score in stage:
            train = {n: train_terms[n] for n in score.needs if n in TERMS}
            needs = {n: np.asarray(held_out[n]) for n in score.needs}
            result = score.fit(train, needs)
            fitted[score.name] = {k: v for k, v in result.items() if not k.startswith("_")}
            notes.update({f"{score.name}{k}": v for k, v in result.items() if k.startswith("_")})
            if score.cross_fitted:
                cross_fitted[score.name] = _cross_fit(score, train, needs)
        pending = [s for s in pending if s not in stage]
    stats = Stats(fitted, {**meta, **notes})
    stats.holdout_scores = {**stats.all_scores(holdout_terms), **cross_fitted}
    return stats


def _cross_fit(
    score: Score, train: dict, held_out: dict, folds: int = CROSS_FIT_FOLDS
) -> np.ndarray:
    """The score of each held-out image from a fit to the folds it is not in."""
    n = len(next(iter(held_out.values())))
    fold_N = np.arange(n) % min(folds, n)
    out = np.zeros(n, np.float32)
    for fold in np.unique(fold_N):
        rest, here = fold_N != fold, fold_N == fold
        result = score.fit(train, {k: v[rest] for k, v in held_out.items()})
        arrays = {k: np.asarray(v, np.float32) for k, v in result.items() if not k.startswith("_")}
        out[here] = np.asarray(score.compute(arrays, {k: v[here] for k, v in held_out.items()}))
    return out


def _computable(fitted: dict) -> set[str]:
    """The scores that can be computed with ``fitted``: fitted (or fitting nothing), and
    needing only terms and computable scores."""
    ready: set[str] = set()
    for score in registered():
        fits = score.fit is None or score.name in fitted
        if fits and all(n in TERMS or n in ready for n in score.needs):
            ready.add(score.name)
    return ready


def _terms(terms: dict) -> dict:
    return {k: terms[k] for k in TERMS if k in terms}


def stats_path(workdir: str | Path, step: int) -> Path:
    """Where the run in ``workdir`` keeps the statistics of its checkpoint ``step``."""
    return Path(workdir) / "ood_stats" / f"{step}.npz"


def save(stats: Stats, path: Path) -> None:
    """Writes ``stats`` to ``path`` (atomically: :mod:`aejax.files`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {
        f"fitted/{score}/{name}": value
        for score, values in stats.fitted.items()
        for name, value in values.items()
    }
    with files.atomic_path(path) as tmp:
        np.savez(
            tmp,
            format=FORMAT,
            meta=json.dumps(stats.meta),
            threshold=json.dumps(stats.threshold),
            **arrays,
            **{f"holdout/{k}": v for k, v in stats.holdout_scores.items()},
        )


def load(path: Path) -> Stats | None:
    """The statistics saved at ``path``; None when there are none, or when an aejax with
    other scores (or an older file layout) wrote them: they are then fitted anew."""
    if not path.is_file():
        return None
    with np.load(path) as f:
        if "format" not in f or int(f["format"]) != FORMAT:
            return None
        fitted: dict[str, dict[str, np.ndarray]] = {}
        for key in f.files:
            if key.startswith("fitted/"):
                _, score, name = key.split("/", 2)
                fitted.setdefault(score, {})[name] = f[key]
        holdout = {k.split("/", 1)[1]: f[k] for k in f.files if k.startswith("holdout/")}
        fits = {s.name for s in registered() if s.fit is not None}
        if set(fitted) != fits or set(holdout) != set(names()):
            return None
        return Stats(fitted, json.loads(str(f["meta"])), holdout, json.loads(str(f["threshold"])))
