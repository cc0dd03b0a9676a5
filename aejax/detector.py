"""A trained run used as a detector on new images: every score, p-values, verdicts and
anomaly maps.

:class:`Detector` is a run's checkpoint with its fitted statistics (``ood_stats/``, written by
:func:`aejax.eval.fit_detector` alone): the held-out images' scores, the score, the
threshold and how it was set.
Every number comes from one jitted function of the state and the statistics,
:func:`decide`, which the exported detector (:mod:`aejax.export`) runs too::

    from aejax.detector import Detector
    detector = Detector.load("runs/dense-mnist")
    out = detector.detect(images)        # uint8 [N, H, W, C] -> score, p_value, ood, ...
    maps = detector.maps(images)         # reconstruction [N, H, W, C], anomaly [N, H, W]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from aejax import core, losses, ood, run, thresholds, xla
from aejax.config import RunConfig
from aejax.errors import AejaxError
from aejax.parallel import Placement


def decide(fitted: dict, terms: dict, score: str, every: bool = True) -> dict[str, jax.Array]:
    """From :func:`aejax.core.image_terms`' terms and the detector's fitted arrays
    (:meth:`Detector.fitted`): ``score`` (the values of score ``score``), ``p_value``,
    ``ood`` (score above the threshold) and every score of :func:`aejax.ood.names`; without
    ``every``, the first three only, from the scores ``score`` needs
    (:func:`aejax.ood.needed_by`). Traceable, float32."""
    scores = None if every else ood.needed_by(score)[0]
    values = ood.every_score(fitted["scores"], terms, scores)
    value = values[score]
    verdict = {
        "score": value,
        "p_value": thresholds.p_values(fitted["holdout"], value),
        "ood": value > fitted["threshold"],
    }
    return {**verdict, **values} if every else verdict


@xla.jit(static_argnames=("score", "batch_sharding", "every"))
def _detect(state, fitted, images_NxHxWxC, score, batch_sharding=None, every=True):
    """:func:`decide`'s outputs stacked ``[outputs, N]``, float32 (``ood`` as 0/1): one
    array to copy to the host per call, not one per output. Without ``every``, only the
    terms ``score`` needs are computed: what one score costs, not every score's work."""
    terms = core.TERMS if every else ood.needed_by(score)[1]
    values = core.per_image(state, images_NxHxWxC, terms, batch_sharding=batch_sharding)
    decided = decide(fitted, values, score, every)
    return jnp.stack([v.astype(jnp.float32) for v in decided.values()])


def outputs() -> tuple[str, ...]:
    """The keys of :func:`decide`, in its order: the rows of a detection, an exported
    model's outputs, a CSV's columns after ``source``."""
    return ("score", "p_value", "ood", *ood.names())


def anomaly_maps(model, images_BxHxWxC: jax.Array) -> dict[str, jax.Array]:
    """``reconstruction`` ``[B, H, W, C]`` in [0, 1] and ``anomaly`` ``[B, H, W]``: each
    pixel's KL of the input from its reconstruction (:func:`aejax.losses.kl_per_pixel`),
    averaged over the channels, in nats (0: reconstructed exactly)."""
    logits = model(core.to_float(images_BxHxWxC)).astype(jnp.float32)
    return {
        "reconstruction": jax.nn.sigmoid(logits),
        "anomaly": jnp.mean(losses.kl_per_pixel(logits, images_BxHxWxC), axis=-1),
    }


@xla.jit
def _maps(state, images_NxHxWxC):
    def maps(x):  # an ensemble's: its members' reconstructions and anomalies averaged
        one = core.over_members(lambda s: anomaly_maps(s.model, x))(state)
        return jax.tree.map(lambda v: jnp.mean(v, axis=0), one) if state.members else one

    rows = core.eval_rows(state.model, images_NxHxWxC.shape[1:])
    return core.batched(maps, images_NxHxWxC, rows)


def _threshold(stats: ood.Stats, policy: thresholds.Policy, score: str, scored=None):
    """The one place a detector's threshold is set: ``policy`` on ``score``'s held-out values
    (and ``scored``, for a contamination policy)."""
    if score not in ood.names():
        raise AejaxError(f"unknown score {score!r}: choose from {', '.join(ood.names())}")
    try:
        return policy.threshold(stats.holdout_scores[score], score=score, scored=scored)
    except ValueError as e:
        raise AejaxError(str(e)) from None


class NotFitted(AejaxError):
    """A checkpoint whose detector (statistics and threshold) was never fitted."""


@dataclasses.dataclass(frozen=True)
class Detector:
    """A run's checkpoint with its fitted statistics and threshold: what ``aejax.score``
    and the export apply. Made by :meth:`load` (or :func:`aejax.eval.fit_detector`).

    Attributes:
      state: the checkpoint's :class:`aejax.core.TrainState`.
      stats: every score's statistics, fitted on the run's images (:class:`aejax.ood.Stats`).
      threshold: the threshold rule and its value on the detector's score.
      config: the run's resolved :class:`aejax.config.RunConfig`.
      step: the checkpoint's epoch.
      workdir: the run's directory.
    """

    state: core.TrainState
    stats: ood.Stats
    threshold: thresholds.Threshold
    config: RunConfig
    step: int
    workdir: Path

    @classmethod
    def load(
        cls, workdir: str | Path, step: int | None = None, placement: Placement | None = None
    ) -> Detector:
        """Checkpoint ``step`` (default the latest) of the run in ``workdir``, with the
        statistics ``python -m aejax.eval`` fitted for it."""
        workdir = Path(workdir)
        state, config, meta = run.restore(workdir, step, placement)
        step = meta["history"][-1]["epoch"]
        stats = ood.load(ood.stats_path(workdir, step))
        if stats is None or stats.threshold is None or "image_shape" not in stats.meta:
            raise NotFitted(
                f"checkpoint {step} of {workdir} has no fitted detector (or one an older "
                f"aejax fitted): `aejax.eval.run_detector` fits the default one"
            )
        threshold = thresholds.Threshold.from_dict(stats.threshold)
        return cls(state, stats, threshold, config, step, workdir)

    @property
    def policy(self) -> thresholds.Policy:
        """The policy that set this detector's threshold."""
        return self.threshold.as_policy()

    def describe(self) -> str:
        """One line: the score, its threshold and what it promises, and the checkpoint."""
        return f"{self.threshold.describe()}; checkpoint {self.step} of {self.workdir}"

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(H, W, C)`` of the images the model takes."""
        return tuple(self.stats.meta["image_shape"])

    @property
    def chunk_rows(self) -> int:
        """The images :meth:`detect` scores per call (:func:`aejax.core.chunk_rows`): the kNN
        scores compare every image with the whole bank of training codes, so the rows are
        bounded here rather than inside the scorer."""
        return self.stats.chunk_rows(self.image_shape)

    @classmethod
    def set_by(
        cls, state, stats: ood.Stats, config: RunConfig, step: int, workdir: Path,
        policy: thresholds.Policy, score: str,
    ) -> Detector:  # fmt: skip
        """A detector whose threshold ``policy`` sets on score ``score``'s held-out values."""
        threshold = _threshold(stats, policy, score)
        return cls(state, stats, threshold, config, step, Path(workdir))

    def with_threshold(
        self, policy: thresholds.Policy | None = None, score: str | None = None, scored=None
    ) -> Detector:
        """This detector with its threshold set anew by ``policy`` (default: the run's) on
        score ``score`` (default: the run's), from the held-out scores (and ``scored``, the
        scores of the images being scored, for a contamination policy:
        :meth:`aejax.thresholds.Policy.threshold`)."""
        policy = policy or self.policy
        threshold = _threshold(self.stats, policy, score or self.threshold.score, scored)
        return dataclasses.replace(self, threshold=threshold)

    def fitted(self) -> dict:
        """What :func:`decide` takes: the statistics' arrays, the held-out scores of the
        detector's score and the threshold, all float32."""
        return {
            "scores": self.stats.arrays(),
            "holdout": np.sort(self.stats.holdout_scores[self.threshold.score]).astype(np.float32),
            "threshold": np.float32(self.threshold.value),
        }

    def check_images(self, images: np.ndarray) -> None:
        """One clear error unless ``images`` are uint8 ``[N, *image_shape]``."""
        if images.dtype != np.uint8 or tuple(images.shape[1:]) != self.image_shape:
            raise AejaxError(
                f"the detector takes uint8 images [N, {', '.join(map(str, self.image_shape))}]"
                f", not {images.dtype} {list(images.shape)}: convert them first "
                "(aejax.inputs.read does what `python -m aejax.score` does)"
            )

    def detect(
        self,
        images_NxHxWxC: np.ndarray,
        batch_sharding: jax.sharding.Sharding | None = None,
        every: bool = True,
    ) -> dict[str, np.ndarray]:
        """``score``, ``p_value``, ``ood`` and every score, per image ``[N]``.

        Args:
          images_NxHxWxC: uint8 images of the run's shape (:meth:`check_images`).
          batch_sharding: split each batch over these devices (default: one device).
          every: every registered score too; False: the first three only, at the cost of
            the detector's score alone (a ``bce`` detector then reconstructs the images and
            searches no neighbours).
        """
        return self.detect_async(images_NxHxWxC, batch_sharding, every)()

    def detect_async(
        self,
        images_NxHxWxC: np.ndarray,
        batch_sharding: jax.sharding.Sharding | None = None,
        every: bool = True,
        rows: int | None = None,
    ) -> Callable[[], dict[str, np.ndarray]]:
        """:meth:`detect` of ``images_NxHxWxC`` (with ``batch_sharding`` and ``every`` as
        there), started: returns at once (JAX's asynchronous dispatch), and the function it
        returns waits for the scores. ``aejax.score`` writes one chunk's rows while the next
        one is scored. The images go in chunks of ``rows`` (default:
        :func:`aejax.core.chunk_size` of them and :attr:`chunk_rows`), the last one padded
        with black images whose scores are dropped: one compiled program for all."""
        images_NxHxWxC = np.asarray(images_NxHxWxC)
        self.check_images(images_NxHxWxC)
        fitted, n = self.fitted(), len(images_NxHxWxC)
        rows = rows or core.chunk_size(n, self.chunk_rows)
        names = outputs() if every else outputs()[:3]

        with xla.full_precision():
            parts = [
                _detect(
                    self.state,
                    fitted,
                    core.padded(images_NxHxWxC[i : i + rows], rows),
                    self.threshold.score,
                    batch_sharding,
                    every,
                )  # fmt: skip
                for i in range(0, max(n, 1), rows)
            ]

        def collected() -> dict[str, np.ndarray]:
            stacked = np.concatenate([np.asarray(p) for p in parts], axis=1)[:, :n]
            out = dict(zip(names, stacked, strict=True))
            out["ood"] = out["ood"].astype(bool)
            return out

        return collected

    def score(self, images_NxHxWxC: np.ndarray) -> np.ndarray:
        """The run's score of each of ``images_NxHxWxC`` ``[N]`` (higher: more anomalous)."""
        return self.detect(images_NxHxWxC)["score"]

    def p_value(self, images_NxHxWxC: np.ndarray) -> np.ndarray:
        """The conformal p-value of each of ``images_NxHxWxC``
        (:func:`aejax.thresholds.p_values`)."""
        return self.detect(images_NxHxWxC)["p_value"]

    def predict(self, images_NxHxWxC: np.ndarray) -> np.ndarray:
        """Whether each of ``images_NxHxWxC`` is flagged as OOD, bool ``[N]``."""
        return self.detect(images_NxHxWxC)["ood"]

    def maps(self, images_NxHxWxC: np.ndarray) -> dict[str, np.ndarray]:
        """The reconstructions and per-pixel anomaly maps of ``images_NxHxWxC``
        (:func:`anomaly_maps`)."""
        images_NxHxWxC = np.asarray(images_NxHxWxC)
        self.check_images(images_NxHxWxC)
        with xla.full_precision():
            maps = _maps(self.state, images_NxHxWxC)
        return {k: np.asarray(v) for k, v in maps.items()}
