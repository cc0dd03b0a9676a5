"""An estimator in the PyOD / scikit-learn style, built on aejax's training and scoring.

::

    from aejax import AutoencoderDetector
    det = AutoencoderDetector("conv", target_fpr=0.01)
    det.fit(normal_images)                 # uint8 [N, H, W(, C)], a TFDS name or a folder
    det.predict(new_images)                # 1 = OOD, 0 = in-distribution (PyOD's labels)
    det.decision_function(new_images)      # the scores (higher: more anomalous)
    det.p_value(new_images), det.maps(new_images)
    det = AutoencoderDetector.load(det.workdir_)   # later, or in another process

``fit`` trains with :func:`aejax.training.train_and_evaluate` and fits the statistics and the
threshold with :func:`aejax.evaluation.fit_detector`, into a run directory (``workdir``; default
``runs/<arch>-<data>``), exactly as ``python -m aejax.train`` then ``python -m aejax.eval``
would: the run *is* the saved detector, and the CLIs (``aejax.eval``, ``aejax.score``,
``aejax.export``) work on it. An array is saved into the run directory as ``train_images.npy``
(the run's data: refitting its statistics reads it again) and read from there, memory-mapped,
as ``--dataset PATH.npy`` is (:mod:`aejax.data.sources.npy`: rows split into train and test
by hash; the last ``holdout`` training rows set the threshold, by default a fifth of them, at
most 1000, as ``python -m aejax.train`` holds out).

``contamination`` keeps PyOD's meaning, the fraction of anomalies in the *training* data: the
threshold flags that fraction of the held-out training images (the ``100 (1 - C)``-th
percentile of their scores).
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from aejax import ood, thresholds
from aejax.errors import AejaxError


class AutoencoderDetector:
    """Train an autoencoder on normal images and flag the images that are not like them."""

    def __init__(
        self,
        arch: str = "dense",
        *,
        epochs: int | None = None,
        batch_size: int = 0,
        lr: float = 1e-3,
        seed: int = 0,
        holdout: int | None = None,
        score: str = ood.DEFAULT,
        threshold_percentile: float | None = None,
        target_fpr: float | None = None,
        contamination: float | None = None,
        workdir: str | Path | None = None,
        data_dir: str | None = None,
        model: dict | None = None,
    ):
        given = [threshold_percentile, target_fpr, contamination]
        if sum(v is not None for v in given) > 1:
            raise AejaxError(
                "give at most one of threshold_percentile, target_fpr and contamination"
            )
        self.arch, self.epochs, self.batch_size, self.lr = arch, epochs, batch_size, lr
        self.seed, self.holdout, self.score = seed, holdout, score
        self.threshold_percentile, self.target_fpr = threshold_percentile, target_fpr
        self.contamination, self.workdir, self.data_dir = contamination, workdir, data_dir
        self.model = dict(model or {})

    def threshold_policy(self) -> thresholds.Policy:
        """The threshold policy the options give (:class:`aejax.thresholds.Policy`; a
        contamination C flags that fraction of the held-out training images)."""
        if self.target_fpr is not None:
            return thresholds.Policy("target-fpr", self.target_fpr)
        if self.contamination is not None:
            return thresholds.Policy("contamination", self.contamination)
        if self.threshold_percentile is not None:
            return thresholds.Policy("percentile", self.threshold_percentile)
        return thresholds.DEFAULT_POLICY

    def fit(self, X: np.ndarray | str | Path) -> AutoencoderDetector:
        """Trains on ``X`` (uint8 images ``[N, H, W]`` / ``[N, H, W, C]``, a TFDS dataset's
        name or a folder of images) and fits the scores and threshold. Returns ``self``.

        ``epochs=None`` (the default) trains as ``python -m aejax.train`` does: the tutorial's
        15 epochs on MNIST and Fashion-MNIST, any other data until its held-out loss stops
        improving (:mod:`aejax.stopping`). ``convergence_`` then says how training ended; a
        run that ended while still improving warns (``ConvergenceWarning``). A threshold the
        held-out slice cannot support is an error before any training."""
        from aejax import data, evaluation, run, training

        if isinstance(X, str | Path):
            dataset = str(X)
            workdir = Path(self.workdir or run.default_workdir(self.arch, dataset, self._given()))
        else:
            images = np.asarray(X)
            if images.dtype != np.uint8 or images.ndim not in (3, 4):
                raise AejaxError(
                    f"fit takes uint8 images [N, H, W] or [N, H, W, C], not {images.dtype} "
                    f"{list(images.shape)}"
                )
            if len(images) < 2:  # a test split needs one image, training another
                raise AejaxError(
                    f"fit needs 2 images at least, and a few dozen to learn from: got {len(images)}"
                )
            digest = hashlib.sha256(images.tobytes()).hexdigest()[:8]
            workdir = Path(self.workdir or run.RUNS_DIR / f"{self.arch}-array-{digest}")
            dataset = str((workdir / "train_images.npy").absolute())
            _save_array(Path(dataset), images)
        given = {**self._given(), "dataset": dataset}
        source = data.source(dataset, self.data_dir)
        given["dataset"] = source.name
        facts = (None, None)
        if run.saved_config(workdir) is None:  # a new run: shaped and sized by the data
            facts = source.image_shape(), source.num_examples("train")
        config = run.resolve_config(given, workdir, *facts)
        try:  # known before training: a threshold the held-out slice cannot support
            self.threshold_policy().check_supported(config.holdout)
        except ValueError as e:
            raise AejaxError(str(e)) from None
        _, history = training.train_and_evaluate(
            config, workdir, data_dir=self.data_dir, source=source
        )
        # How training ended, as the command's summary line says it; a run that ended while
        # still improving warns the way scikit-learn's iterative estimators do.
        self.convergence_, warning = training.convergence(history)
        if warning:
            warnings.warn(warning.removeprefix("warning: "), ConvergenceWarning, stacklevel=2)
        detector = evaluation.fit_detector(
            workdir, score=self.score, threshold=self.threshold_policy(), data_dir=self.data_dir
        )
        return self._with(detector)

    def _given(self) -> dict:
        """The :class:`aejax.config.RunConfig` fields the options give (``model``: model
        options); what is None comes from the data (a new run) or the saved run."""
        given = {"arch": self.arch, "epochs": self.epochs, "batch_size": self.batch_size,
                 "lr": self.lr, "seed": self.seed, "holdout": self.holdout,
                 "model": dict(self.model)}  # fmt: skip
        return {k: v for k, v in given.items() if v is not None}

    def _with(self, detector) -> AutoencoderDetector:
        self.detector_ = detector
        self.workdir_ = Path(detector.workdir)
        self.threshold_ = detector.threshold
        return self

    @classmethod
    def load(cls, workdir: str | Path) -> AutoencoderDetector:
        """The detector saved in a run directory (by :meth:`fit`, or the CLIs)."""
        from aejax.detector import Detector

        found = Detector.load(workdir)
        config = found.config
        det = cls(
            config.arch,
            epochs=config.epochs,
            batch_size=config.batch_size,
            lr=config.lr,
            seed=config.seed,
            holdout=config.holdout,
            score=found.threshold.score,
            workdir=workdir,
            model=config.model,
        )
        return det._with(found)

    def _images(self, X) -> np.ndarray:
        """``X`` as ``[N, H, W, C]``, once the detector is fitted."""
        if not hasattr(self, "detector_"):
            raise AejaxError("this detector is not fitted: call fit(images) or load(workdir)")
        images = np.asarray(X)
        return images[..., None] if images.ndim == 3 else images

    def _detect(self, X) -> dict[str, np.ndarray]:
        images = self._images(X)  # checks that it is fitted first
        return self.detector_.detect(images)

    def decision_function(self, X) -> np.ndarray:
        """The score of each image ``[N]`` (higher: more anomalous), PyOD's name for it."""
        return self._detect(X)["score"]

    def predict(self, X) -> np.ndarray:
        """1 for an image flagged as OOD, else 0 (PyOD's labels), int ``[N]``."""
        return self._detect(X)["ood"].astype(np.int64)

    def p_value(self, X) -> np.ndarray:
        """Each image's conformal p-value (:func:`aejax.thresholds.p_values`)."""
        return self._detect(X)["p_value"]

    def maps(self, X) -> dict[str, np.ndarray]:
        """Reconstructions and per-pixel anomaly maps (:meth:`aejax.Detector.maps`)."""
        images = self._images(X)
        return self.detector_.maps(images)


def _save_array(path: Path, images: np.ndarray) -> None:
    from aejax import files

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file():  # the same images (the run's name is their hash): keep the file
        return
    with files.atomic_path(path) as tmp:
        np.save(tmp, images)
