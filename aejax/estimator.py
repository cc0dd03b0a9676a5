"""An out-of-distribution detector with scikit-learn's estimator contract and PyOD's detector
contract, built on aejax's training and scoring.

::

    from aejax import AutoencoderDetector
    det = AutoencoderDetector("conv", target_fpr=0.01)
    det.fit(normal_images)                 # uint8 [N, H, W(, C)], flat rows, a TFDS name, a folder
    det.predict(new_images)                # 1 = OOD, 0 = in-distribution (PyOD's labels)
    det.decision_function(new_images)      # the scores (higher: more anomalous)
    det.predict_proba(new_images), det.predict_confidence(new_images), det.p_value(new_images)
    joblib.dump(det, "detector.joblib")    # a fitted detector pickles, and scores the same

**scikit-learn's contract** (:class:`sklearn.base.BaseEstimator`, ``OutlierMixin``):
``__init__`` only stores its arguments; ``fit(X, y=None)`` validates them, trains and
returns ``self``; ``get_params`` / ``set_params`` / ``clone`` work; a method called before
``fit`` raises :class:`sklearn.exceptions.NotFittedError`; ``fit_predict``. Every ``fit``
trains a new model of the data it is given: continuing the run saved in ``workdir`` is the
explicit ``warm_start=True``. Labels are PyOD's (1: outlier, 0: inlier), not scikit-learn's
-1/+1 (tests/test_estimator.py lists the checks this leaves out).

**PyOD's contract** (``pyod.models.base.BaseDetector``): after ``fit``, ``decision_scores_``
(the training images' scores), ``threshold_`` (a number), ``labels_`` (the training images'
labels); ``decision_function``, ``predict(X, return_confidence=False)``,
``predict_proba(X, method="linear" | "unify")``, ``predict_confidence`` as PyOD computes
them; ``contamination`` in (0, 0.5]. Flat rows ``[n, features]`` (PyOD's data) are images of
``image_shape`` (default: square and grey); floats in [0, 1] are pixel intensities.

Where it lives: ``fit`` trains with :func:`aejax.train.train_and_evaluate` and fits the
detector with :func:`aejax.eval.fit_detector` in a run directory, exactly as
``python -m aejax.train`` then ``python -m aejax.eval`` would. Without ``workdir`` that
directory is temporary: the fitted detector lives in memory (and in pickles); with
``workdir`` it stays, the CLIs (``aejax.eval``, ``aejax.score``, ``aejax.export``) work on it,
and a run already there is moved aside (never deleted) unless ``warm_start``. An array is
saved into the run directory as ``train_images.npy`` and read from there, memory-mapped, as
``--dataset PATH.npy`` is (:mod:`aejax.data.sources.npy`).

``contamination`` keeps PyOD's meaning, the fraction of anomalies in the *training* data: the
threshold flags that fraction of the held-out training images (the ``100 (1 - C)``-th
percentile of their scores). With no threshold option, the threshold is aejax's default (the
95th percentile of the held-out scores).
"""

from __future__ import annotations

import contextlib
import io
import math
import numbers
import tempfile
import warnings
from pathlib import Path

import numpy as np
from scipy import special, stats
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.utils.metadata_routing import UNUSED

from aejax import ood, thresholds
from aejax.errors import AejaxError


class InvalidParameter(AejaxError, ValueError):
    """A parameter or an input the detector cannot take: scikit-learn's ``ValueError``, and
    aejax's one-line error."""


class AutoencoderDetector(OutlierMixin, BaseEstimator):
    """Train an autoencoder on normal images and flag the images that are not like them.

    Args:
      arch: the architecture (:func:`aejax.models.names`: ``dense``, ``conv``, ...).
      epochs: epochs to train; None trains as ``python -m aejax.train`` does (the tutorial's
        15 on MNIST and Fashion-MNIST, any other data until its held-out loss stops
        improving: :mod:`aejax.stopping`).
      batch_size: images per step; None: the architecture's (MNIST, Fashion-MNIST) or the
        data's default.
      lr: Adam's learning rate.
      seed: the seed of the initialisation, the data order and the held-out slice.
      holdout: training images held out to set the threshold and fit the scores'
        statistics; None: a fifth, at most 1,000.
      ood_score: the score to decide on (:func:`aejax.ood.names`; named so because
        scikit-learn reserves ``score`` for a method).
      threshold_percentile: flag scores above this percentile of the held-out scores.
      target_fpr: flag at most this fraction of in-distribution images (expected).
      contamination: PyOD's: the fraction of anomalies in the training data, in (0, 0.5].
        At most one of the three threshold options; none: the 95th percentile.
      image_shape: ``(H, W)`` or ``(H, W, C)`` of flat rows ``[n, H * W * C]``; None: square
        grey images.
      workdir: where the run is kept (None: a temporary directory, removed after ``fit``).
      warm_start: continue the run saved in ``workdir`` (its options and images) instead of
        training a new one.
      data_dir: the TFDS data directory, for ``fit("mnist")``.
      model: the architecture's options (``{"latent_dim": 32}``).
      transform_head: train a self-supervised head on the code, jointly, that tells which
        rotation or flip was applied to the input (:mod:`aejax.models.heads`); its term
        joins the scores (``transform``, and ``joint``).
      compile_cache: keep the XLA programs it compiles in JAX's persistent compilation cache
        (:func:`aejax.xla.use_compilation_cache`: ``~/.cache/aejax/jax``, as the commands
        do), so that a new process's first ``fit`` or ``decision_function`` loads them
        instead of compiling; this sets JAX's ``jax_compilation_cache_dir`` for the process,
        unless the user set one. False: JAX's settings are left alone.
      verbose: 0 prints nothing, 1 the training's per-epoch lines and summary.
    """

    def __init__(
        self,
        arch: str = "dense",
        *,
        epochs: int | None = None,
        batch_size: int | None = None,
        lr: float = 1e-3,
        seed: int = 0,
        holdout: int | None = None,
        ood_score: str = ood.DEFAULT,
        threshold_percentile: float | None = None,
        target_fpr: float | None = None,
        contamination: float | None = None,
        image_shape: tuple[int, ...] | None = None,
        workdir: str | Path | None = None,
        warm_start: bool = False,
        data_dir: str | None = None,
        model: dict | None = None,
        transform_head: bool = False,
        compile_cache: bool = True,
        verbose: int = 0,
    ):
        self.arch = arch
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.seed = seed
        self.holdout = holdout
        self.ood_score = ood_score
        self.threshold_percentile = threshold_percentile
        self.target_fpr = target_fpr
        self.contamination = contamination
        self.image_shape = image_shape
        self.workdir = workdir
        self.warm_start = warm_start
        self.data_dir = data_dir
        self.model = model
        self.transform_head = transform_head
        self.compile_cache = compile_cache
        self.verbose = verbose

    # predict's and predict_proba's options are PyOD's, not data to route through a Pipeline:
    # no set_predict_request / set_predict_proba_request methods (scikit-learn's metadata
    # routing).
    __metadata_request__predict = {"return_confidence": UNUSED}
    __metadata_request__predict_proba = {"method": UNUSED, "return_confidence": UNUSED}

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False  # the same seed gives the same detector
        tags.input_tags.allow_nan = False
        return tags

    # -- fitting --------------------------------------------------------------------------

    def threshold_policy(self) -> thresholds.Policy:
        """The threshold policy the options give (:class:`aejax.thresholds.Policy`; a
        contamination C flags that fraction of the held-out training images)."""
        self._check_params()
        if self.target_fpr is not None:
            return thresholds.Policy("target-fpr", self.target_fpr)
        if self.contamination is not None:
            return thresholds.Policy("contamination", self.contamination)
        if self.threshold_percentile is not None:
            return thresholds.Policy("percentile", self.threshold_percentile)
        return thresholds.DEFAULT_POLICY

    def fit(self, X, y=None) -> AutoencoderDetector:
        """Trains a new model on ``X`` (uint8 images ``[N, H, W]`` / ``[N, H, W, C]``, floats
        in [0, 1], flat rows, a TFDS dataset's name or a folder of images) and fits the
        scores and the threshold. ``y`` is ignored (unsupervised). Returns ``self``.

        ``convergence_`` then says how training ended; a run that ended while still
        improving warns (``ConvergenceWarning``). A threshold the held-out slice cannot
        support is an error before any training."""
        del y
        self._check_params()
        self._use_compile_cache()
        with contextlib.ExitStack() as stack:
            if self.workdir is None:
                tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="aejax-fit-"))
                workdir = Path(tmp) / "run"
            else:
                workdir = Path(self.workdir)
                if not self.warm_start:
                    self._set_aside(workdir)
            dataset = self._dataset(X, workdir)
            history, detector = self._train(dataset, workdir, stack)
        # The detector is in memory now (a temporary run directory is gone).
        self._fitted(detector, history, dataset if isinstance(X, str | Path) else X)
        return self

    def _use_compile_cache(self) -> None:
        if self.compile_cache:  # a user's own jax_compilation_cache_dir is kept
            from aejax import xla

            xla.use_compilation_cache()

    def _check_params(self) -> None:
        from aejax import models

        given = [self.threshold_percentile, self.target_fpr, self.contamination]
        if sum(v is not None for v in given) > 1:
            raise InvalidParameter(
                "give at most one of threshold_percentile, target_fpr and contamination"
            )
        if self.contamination is not None and not (
            isinstance(self.contamination, numbers.Real) and 0 < self.contamination <= 0.5
        ):
            raise InvalidParameter(f"contamination must be in (0, 0.5], got {self.contamination}")
        if self.arch not in models.names():
            raise InvalidParameter(f"arch {self.arch!r}: choose one of {', '.join(models.names())}")
        if self.ood_score not in ood.names():
            raise InvalidParameter(
                f"ood_score {self.ood_score!r}: choose one of {', '.join(ood.names())}"
            )
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, numbers.Integral) and value >= 1):
                raise InvalidParameter(f"{name} must be a positive integer or None, not {value!r}")

    def _set_aside(self, workdir: Path) -> None:
        """A run already in ``workdir`` is moved aside, never reused nor deleted: this
        ``fit`` trains a new one."""
        from aejax import run

        if workdir.exists() and any(workdir.iterdir()):
            aside = run.move_aside(workdir)
            warnings.warn(
                f"{workdir} held a run: moved it to {aside} and trained a new one there "
                "(warm_start=True continues a run instead)",
                stacklevel=3,
            )

    def _dataset(self, X, workdir: Path) -> str:
        """The run's dataset spec; an array's images are saved into ``workdir`` as
        ``train_images.npy``."""
        if isinstance(X, str | Path):
            self.pixels_ = Pixels("uint8")  # a dataset's images are read as images
            return str(X)
        images = self._as_images(X, fitting=True)  # 2 at least: a test image, a training one
        path = (workdir / "train_images.npy").absolute()
        _save_array(path, images, continuing=self.warm_start)
        return str(path)

    def _given(self) -> dict:
        """The :class:`aejax.config.RunConfig` fields the options give (``model``: model
        options); what is None comes from the data (a new run) or the saved run."""
        given = {"arch": self.arch, "epochs": self.epochs, "batch_size": self.batch_size,
                 "lr": self.lr, "seed": self.seed, "holdout": self.holdout,
                 "transform_head": bool(self.transform_head) or None,
                 "model": dict(self.model or {})}  # fmt: skip
        return {k: v for k, v in given.items() if v is not None}

    def _train(self, dataset: str, workdir: Path, stack: contextlib.ExitStack):
        from aejax import config, data, run
        from aejax import eval as evaluation
        from aejax import train as training

        source = data.source(dataset, self.data_dir)
        given = {**self._given(), "dataset": source.name}
        saved, facts = run.saved_config(workdir), (None, None)
        if saved is None:  # a new run: shaped and sized by the data
            facts = source.image_shape(), source.num_examples("train")
        resolved = config.resolve(given, saved, *facts, where=str(workdir))
        try:  # known before training: a threshold the held-out slice cannot support
            self.threshold_policy().check_supported(resolved.holdout)
        except ValueError as e:
            raise InvalidParameter(str(e)) from None
        if not self.verbose:  # scikit-learn's verbose=0: the training's lines unprinted
            stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
            stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
        _, history = training.train_and_evaluate(
            resolved, workdir, data_dir=self.data_dir, source=source
        )
        detector = evaluation.fit_detector(
            workdir, score=self.ood_score, threshold=self.threshold_policy(), data_dir=self.data_dir
        )
        return history, detector

    def _fitted(self, detector, history: list[dict], X) -> None:
        """The fitted attributes: aejax's, then PyOD's from the training images' scores."""
        from aejax import train as training

        # How training ended, as the command's summary line says it; a run that ended while
        # still improving warns the way scikit-learn's iterative estimators do.
        self.convergence_, warning = training.convergence(history)
        if warning:
            warnings.warn(warning.removeprefix("warning: "), ConvergenceWarning, stacklevel=3)
        self.history_ = history
        self._with(detector, self.workdir)
        if isinstance(X, str):  # a dataset: its train split's images
            from aejax import data

            X, _ = data.source(X, self.data_dir).load("train")
        self.decision_scores_ = self.decision_function(X)
        self.labels_ = (self.decision_scores_ > self.threshold_).astype(int)
        self._mu = float(np.mean(self.decision_scores_))
        self._sigma = float(np.std(self.decision_scores_))

    def _with(self, detector, workdir) -> AutoencoderDetector:
        self.detector_ = detector
        self.workdir_ = None if workdir is None else Path(workdir)
        self.threshold_ = float(detector.threshold.value)
        self.threshold_rule_ = detector.threshold
        self.image_shape_ = detector.image_shape
        if not hasattr(self, "pixels_"):  # a loaded run: its images as they are
            self.pixels_ = Pixels("uint8")
        return self

    @classmethod
    def load(cls, workdir: str | Path) -> AutoencoderDetector:
        """The detector saved in a run directory (by :meth:`fit` with a ``workdir``, or the
        CLIs), with the parameters it was trained with. PyOD's training-set attributes
        (``decision_scores_``, ``labels_``) are not saved with a run: they are absent."""
        from aejax.eval import run_detector

        found, _ = run_detector(workdir)
        config = found.config
        det = cls(
            config.arch, epochs=config.epochs, batch_size=config.batch_size, lr=config.lr,
            seed=config.seed, holdout=config.holdout, ood_score=found.threshold.score,
            workdir=workdir, model=config.model, transform_head=config.transform_head,
        )  # fmt: skip
        return det._with(found, workdir)

    # -- using it -------------------------------------------------------------------------

    def _check_fitted(self) -> None:
        if not hasattr(self, "detector_"):
            raise NotFittedError(
                f"this {type(self).__name__} is not fitted yet: call fit(images) first (or "
                "AutoencoderDetector.load(workdir))"
            )

    def _as_images(self, X, fitting: bool = False) -> np.ndarray:
        """``X`` as uint8 images ``[N, H, W, C]``. Checked as scikit-learn checks its inputs
        (:func:`sklearn.utils.check_array`: its errors for sparse, complex, non-numeric,
        NaN and infinite values, 1-D and empty arrays); flat rows ``[N, features]`` are
        images of ``image_shape``; values become pixels as :class:`Pixels` says, learned
        by ``fit``."""
        from sklearn.utils.validation import check_array

        array = check_array(
            X, dtype="numeric", allow_nd=True, ensure_min_samples=2 if fitting else 1
        )
        if array.ndim == 2:
            if fitting:
                self.n_features_in_ = array.shape[1]
            elif array.shape[1] != getattr(self, "n_features_in_", array.shape[1]):
                raise InvalidParameter(
                    f"X has {array.shape[1]} features, but {type(self).__name__} is expecting "
                    f"{self.n_features_in_} features as input"
                )
            array = array.reshape(len(array), *self._row_shape(array.shape[1], fitting))
        if array.ndim == 3:
            array = array[..., None]
        if array.ndim != 4:
            raise InvalidParameter(
                f"give images [N, H, W], [N, H, W, C] or flat rows [N, features], not an "
                f"array of shape {list(array.shape)}"
            )
        if fitting:
            self.pixels_ = Pixels.of(array)
        return self.pixels_.images(array)

    def _row_shape(self, features: int, fitting: bool) -> tuple[int, int, int]:
        """The image shape of flat rows of ``features`` values: ``image_shape``, else square
        and grey where ``features`` is a square, else one row of ``features`` pixels."""
        if not fitting and hasattr(self, "image_shape_"):
            shape = tuple(self.image_shape_)
        elif self.image_shape is not None:
            shape = tuple(int(s) for s in self.image_shape)
            shape = shape + (1,) if len(shape) == 2 else shape
        else:
            side = math.isqrt(features)
            shape = (side, side, 1) if side * side == features else (1, features, 1)
        if len(shape) != 3 or math.prod(shape) != features:
            raise InvalidParameter(
                f"rows of {features} values are not images of shape {list(shape)}: give "
                "image_shape=(H, W) or (H, W, C) with H * W * C = the number of features"
            )
        return shape

    def _detect(self, X) -> dict[str, np.ndarray]:
        self._check_fitted()
        self._use_compile_cache()
        return self.detector_.detect(self._as_images(X), every=False)  # its one score's cost

    def decision_function(self, X) -> np.ndarray:
        """The score of each image of ``X`` ``[N]`` (higher: more anomalous), PyOD's name
        for it; ``X``: images as ``fit`` takes them (uint8 or floats, ``[N, H, W(, C)]`` or
        flat rows)."""
        return self._detect(X)["score"]

    def score_samples(self, X) -> np.ndarray:
        """scikit-learn's convention, the opposite of :meth:`decision_function` of ``X``:
        higher is more normal."""
        return -self.decision_function(X)

    def predict(self, X, return_confidence: bool = False) -> np.ndarray | tuple:
        """1 for an image of ``X`` flagged as OOD, else 0 (PyOD's labels), int ``[N]``; with
        ``return_confidence``, also :meth:`predict_confidence`."""
        found = self._detect(X)
        labels = found["ood"].astype(int)
        if return_confidence:
            return labels, self._confidence(found["score"])
        return labels

    def fit_predict(self, X, y=None) -> np.ndarray:
        """:meth:`fit`, then the labels of ``X`` (PyOD's: 1 outlier, 0 inlier)."""
        return self.fit(X, y).labels_

    def predict_proba(
        self, X, method: str = "linear", return_confidence: bool = False
    ) -> np.ndarray | tuple:
        """``[N, 2]``: the probability of each image of ``X`` being in-distribution, then
        OOD, from its score as PyOD converts it (``method``): ``linear`` scales by the
        training scores' range, ``unify`` is Kriegel et al.'s Gaussian scaling
        (``erf((s - mu) / (sigma sqrt 2))``). With ``return_confidence``, also
        :meth:`predict_confidence`."""
        if method not in ("linear", "unify"):
            raise ValueError(f"method {method!r}: choose linear or unify")
        self._check_fitted()
        if not hasattr(self, "decision_scores_"):
            raise NotFittedError("predict_proba needs the training scores: fit this detector")
        scores = self.decision_function(X)
        if method == "linear":
            low, high = self.decision_scores_.min(), self.decision_scores_.max()
            outlier = (scores - low) / (high - low if high > low else 1.0)
        else:
            outlier = special.erf((scores - self._mu) / (self._sigma * np.sqrt(2)))
        outlier = np.clip(outlier, 0, 1)
        probs = np.stack([1 - outlier, outlier], axis=1)
        return (probs, self._confidence(scores)) if return_confidence else probs

    def predict_confidence(self, X) -> np.ndarray:
        """How surely the verdict on each image of ``X`` would stand if the training set
        were slightly different, in [0, 1] (Perini et al. 2020's ExCeeD, as PyOD computes
        it)."""
        return self._confidence(self.decision_function(X))

    def _confidence(self, scores: np.ndarray) -> np.ndarray:
        self._check_fitted()
        if not hasattr(self, "decision_scores_"):
            raise NotFittedError("predict_confidence needs the training scores: fit this detector")
        train = np.sort(self.decision_scores_)
        n = len(train)
        below = np.searchsorted(train, scores, side="right")  # training scores <= each
        posterior = (1 + below) / (2 + n)
        contamination = self.labels_.mean() if self.contamination is None else self.contamination
        confidence = 1 - stats.binom.cdf(n - int(n * contamination), n, posterior)
        inlier = scores <= self.threshold_
        return np.where(inlier, 1 - confidence, confidence)

    def p_value(self, X) -> np.ndarray:
        """The conformal p-value of each image of ``X`` (:func:`aejax.thresholds.p_values`)."""
        return self._detect(X)["p_value"]

    def maps(self, X) -> dict[str, np.ndarray]:
        """The reconstructions and per-pixel anomaly maps of ``X``
        (:meth:`aejax.Detector.maps`)."""
        self._check_fitted()
        return self.detector_.maps(self._as_images(X))

    # -- pickling -------------------------------------------------------------------------

    def __getstate__(self) -> dict:
        """The parameters and fitted attributes, the detector as arrays (its model's
        parameters, statistics and threshold): a pickle needs no run directory."""
        state = dict(super().__getstate__())  # object's is self.__dict__ itself, not a copy
        if "detector_" in state:
            state["detector_"] = _DetectorArrays.of(state["detector_"])
        return state

    def __setstate__(self, state: dict) -> None:
        if isinstance(state.get("detector_"), _DetectorArrays):
            state = {**state, "detector_": state["detector_"].detector()}
        super().__setstate__(state)


class Pixels:
    """How ``fit`` turned the values it was given into uint8 pixels, applied to every later
    input that is not uint8 (uint8 values are pixels): integers 0-255 as they are,
    intensities (floats in [0, 1]) times 255, anything else (PyOD's tabular rows) scaled
    value by value from the training data's range onto 0-255. Values beyond what ``fit``
    saw are clipped."""

    def __init__(self, kind: str, low=None, high=None):
        self.kind, self.low, self.high = kind, low, high

    @classmethod
    def of(cls, train: np.ndarray) -> Pixels:
        if train.dtype.kind in "ui" and train.min() >= 0 and train.max() <= 255:
            return cls("uint8")
        if train.min() >= 0 and train.max() <= 1:
            return cls("intensity")
        low, high = train.min(axis=0), train.max(axis=0)  # per position: [H, W, C]
        return cls("range", low.astype(np.float64), high.astype(np.float64))

    def images(self, array: np.ndarray) -> np.ndarray:
        if array.dtype == np.uint8:  # pixels, whatever fit was given
            return array
        values = array.astype(np.float64)
        if self.kind == "intensity":
            values = values * 255
        elif self.kind == "range":
            span = np.where(self.high > self.low, self.high - self.low, 1.0)
            values = (values - self.low) / span * 255
        return np.clip(np.round(values), 0, 255).astype(np.uint8)


class _DetectorArrays:
    """A :class:`aejax.Detector` as picklable values: its config, checkpoint step, state
    arrays, statistics and threshold (the model's graph, which holds functions, is rebuilt
    from the config)."""

    def __init__(self, config: dict, step: int, leaves: list, stats, threshold: dict, workdir):
        self.config, self.step, self.leaves = config, step, leaves
        self.stats, self.threshold, self.workdir = stats, threshold, workdir

    @classmethod
    def of(cls, detector) -> _DetectorArrays:
        import dataclasses

        import jax

        leaves = [np.asarray(leaf) for leaf in jax.tree.leaves(detector.state)]
        return cls(dataclasses.asdict(detector.config), detector.step, leaves, detector.stats,
                   detector.threshold.to_dict(), str(detector.workdir))  # fmt: skip

    def detector(self):
        import jax

        from aejax import run_state
        from aejax.config import RunConfig
        from aejax.detector import Detector

        config = RunConfig.from_dict(self.config)
        structure = jax.tree.structure(run_state.abstract_state(config))
        state = jax.tree.unflatten(structure, [jax.numpy.asarray(v) for v in self.leaves])
        rule = thresholds.Threshold.from_dict(self.threshold)
        return Detector(state, self.stats, rule, config, self.step, Path(self.workdir))


def _save_array(path: Path, images: np.ndarray, continuing: bool) -> None:
    from aejax import files

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file():  # only a continued run (warm_start) finds its images there
        if not continuing:
            raise AssertionError(f"{path} should have been moved aside")
        saved = np.load(path, mmap_mode="r")
        if saved.shape != images.shape or not np.array_equal(saved, images):
            raise InvalidParameter(
                f"warm_start continues the run in {path.parent} on its own images, and these "
                "differ: fit without warm_start to train a new model on them"
            )
        return
    with files.atomic_path(path) as tmp:
        np.save(tmp, images)
