"""What defines a training run, as one typed config: :class:`RunConfig`, and its defaults.

Every default lives here or with what it belongs to: the batch size with each architecture
(``Autoencoder.default_batch_size``, resolved by :func:`batch_size`), the held-out slice by
:func:`default_holdout`, a model's options in its ``__init__`` (:mod:`aejax.models.options`).
"""

from __future__ import annotations

import dataclasses
import json
import math

from aejax import models, stopping
from aejax.errors import AejaxError


def batch_size(arch: str, given: int | None = None) -> int:
    """The batch size of an ``arch`` run: ``given``, else the architecture's reference one
    (dense 256, conv 128: ``default_batch_size``)."""
    return given or models.get(arch).default_batch_size


MIN_BATCH = 16
# At most: the rule counts optimizer steps (aejax.stopping), and a batch of 32 bounds what
# the step ceiling costs (12,000 steps of 32 images), whatever the folder's size.
MAX_BATCH = 32
STEPS_PER_EPOCH = 16  # at least, where the reference batch would give fewer
# The most input pixels a default batch holds: what a training step keeps grows with them
# (about 440 bytes a pixel for the conv net at its default width, measured with XLA's
# memory analysis), so large images get smaller batches: 32 at 256x256, 8 at 512x512.
BATCH_PIXELS = 2**21


def data_batch_size(arch: str, n_train: int, image_shape: tuple[int, ...] | None = None) -> int:
    """The batch size of an ``arch`` run on ``n_train`` training images of one's own: the
    power of two that leaves :data:`STEPS_PER_EPOCH` steps an epoch, between
    :data:`MIN_BATCH` and :data:`MAX_BATCH` (the tutorial's batch was chosen for 60,000
    images: on 216 it gives 2 steps an epoch); then at most :data:`BATCH_PIXELS` pixels of
    ``image_shape`` (H, W, C), so that large images fit in memory.

    >>> data_batch_size("conv", 54_000), data_batch_size("conv", 400), data_batch_size("conv", 216)
    (32, 16, 16)
    >>> data_batch_size("conv", 3000, (256, 256, 3)), data_batch_size("conv", 300, (512, 512, 3))
    (32, 8)
    """
    fits = 2 ** int(math.log2(max(1, n_train // STEPS_PER_EPOCH)))
    batch = max(MIN_BATCH, min(MAX_BATCH, batch_size(arch), fits))
    if image_shape is not None:
        pixels = image_shape[0] * image_shape[1]
        batch = min(batch, 2 ** int(math.log2(max(1, BATCH_PIXELS // pixels))))
    return batch


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """What defines a training run. Defaults reproduce the reference runs; what is unset
    (None, 0) comes from the data (:func:`resolve`).

    Attributes:
      arch: the architecture (:func:`aejax.models.names`).
      dataset: a TFDS name, a folder of images or a ``.npy`` file.
      epochs: how long to train; None: the tutorial's 15 on its datasets, else the step
        ceiling's epochs with early stopping (:mod:`aejax.stopping`).
      batch_size: images per step; 0: the architecture's on the reference datasets, else
        :func:`data_batch_size`.
      lr: Adam's learning rate.
      seed: the seed of the initialisation, the data order and the randomness of training.
      holdout: images at the end of the train split kept out of training (thresholds,
        statistics); None: :func:`default_holdout`.
      compute_dtype: ``float32``, or ``bfloat16`` for mixed-precision training.
      mutation_rate: > 0 trains a background model on mutated images
        (:func:`aejax.core.mutated`).
      ensemble: > 1 trains this many members together (seeds ``seed``, ``seed + 1``, ...).
      transform_head: add the self-supervised head (:mod:`aejax.models.heads`).
      model: the architecture's options, e.g. ``{"latent_dim": 32}``.
      image_size: ``[H, W]`` a folder's or an array's images are resized to.
      channels: the channels they are converted to (1 grey, 3 RGB).
      early_stopping: keep the best epoch and stop once the held-out loss stops improving.
    """

    arch: str = "dense"
    dataset: str = "mnist"
    # None: from the data (resolved): the tutorial's 15 on its datasets (REFERENCE_DATASETS),
    # else the step ceiling's epochs, with early stopping (aejax.stopping).
    epochs: int | None = None
    # 0: from the data: the architecture's reference batch size (dense 256, conv 128) on
    # the reference datasets, else data_batch_size.
    batch_size: int = 0
    lr: float = 1e-3
    seed: int = 0
    # The last examples of the train split, held out (thresholds, statistics); None: a fifth
    # of the split, at most HOLDOUT (default_holdout), resolved once the split's size is known.
    holdout: int | None = None
    compute_dtype: str = "float32"  # or "bfloat16": mixed-precision training
    mutation_rate: float = 0.0  # > 0: a background model on mutated images (core.mutated)
    ensemble: int = 0  # > 1: this many members trained together (seeds seed, seed + 1, ...)
    # A self-supervised head on the code, trained jointly: which transformation of the input
    # (aejax.models.heads); its term "transform" joins the scores.
    transform_head: bool = False
    model: dict = dataclasses.field(default_factory=dict)  # model options, e.g. latent_dim
    # A folder's or array's preprocessing (aejax.data.sources): resize to [H, W], C channels.
    image_size: list[int] | None = None
    channels: int | None = None
    # Stop once the held-out loss stops improving (aejax.stopping), keeping the best epoch;
    # set when epochs come from the data, off when --epochs is given.
    early_stopping: bool = False

    def is_resolved(self) -> bool:
        """Whether :func:`resolve` made this config: every length and size is filled in."""
        return None not in (self.epochs, self.holdout) and self.batch_size > 0

    def _filled(
        self, image_shape: tuple[int, int, int] | None = None, n_train: int | None = None
    ) -> RunConfig:
        # Fills in the defaults of what was not given (see resolve).
        holdout = self.holdout
        if holdout is None and n_train is not None:
            holdout = default_holdout(n_train)
        batch, epochs, early = self.batch_size, self.epochs, self.early_stopping
        if self.dataset in REFERENCE_DATASETS or n_train is None:
            batch = batch_size(self.arch, batch)
            epochs = REFERENCE_EPOCHS if epochs is None else epochs
        else:
            batch = batch or data_batch_size(self.arch, n_train - holdout, image_shape)
            if epochs is None:
                epochs = stopping.ceiling_epochs(math.ceil((n_train - holdout) / batch))
                early = True
        defaults = models.defaults(self.arch)
        given = models.check_options(self.arch, self.model)
        if image_shape is not None:
            from_data = {"image_shape": list(image_shape), "channels": image_shape[-1]}
            from_data = {k: v for k, v in from_data.items() if k in defaults}
            for name, value in from_data.items():
                if name in given and given[name] != value:
                    raise AejaxError(
                        f"--model {name}={json.dumps(given[name])} contradicts the data "
                        f"({self.dataset}: {'x'.join(map(str, image_shape))} images): drop "
                        "it, the model takes its shape from the data"
                    )
            defaults.update(from_data)
        model = {**defaults, **given}
        image_size = list(self.image_size) if self.image_size else None
        return dataclasses.replace(
            self,
            batch_size=batch,
            epochs=epochs,
            early_stopping=early,
            holdout=holdout,
            model=_jsonable(model),
            image_size=image_size,
        )

    def data_options(self) -> dict:
        """What :mod:`aejax.data` needs besides the dataset's name to read its images."""
        return {
            k: v
            for k, v in (("image_size", self.image_size), ("channels", self.channels))
            if v is not None
        }

    # Everything but how long it trains shapes the trajectory; a resumed run must agree on
    # all of it.
    def trajectory(self) -> dict:
        length = ("epochs", "early_stopping")
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in length}

    def row_ranges(self, n_train: int) -> dict[str, tuple[str, int, int]]:
        """``{role: (tfds_split, start, stop)}`` for the rows trained on and held out, given
        ``n_train``, the size of the dataset's train split."""
        if self.holdout is None:
            raise ValueError("row_ranges needs a resolved config (aejax.config.resolve)")
        if not 0 <= self.holdout < n_train:
            raise AejaxError(
                f"--holdout {self.holdout} must be in [0, {n_train}): the train "
                f"split of {self.dataset} has {n_train} images, and at least one "
                "must be left to train on"
            )
        cut = n_train - self.holdout
        ranges = {"train": ("train", 0, cut)}
        if self.holdout:
            ranges["holdout"] = ("train", cut, n_train)
        return ranges

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def resolve(
    given: dict | RunConfig,
    saved: RunConfig | None = None,
    image_shape: tuple[int, int, int] | None = None,
    n_train: int | None = None,
    *,
    where: str = "the workdir",
) -> RunConfig:
    """The complete config of a run: the one place a :class:`RunConfig` is resolved, once
    per command. Pure: it reads nothing.

    ``given``: the fields the user gave (``model``: model options), or a :class:`RunConfig`
    whose unset fields (``epochs`` and ``holdout`` None, ``batch_size`` 0) are to be filled.
    ``saved``: the config of the run being resumed, if any: the given fields go over it and
    must agree with its trajectory (an :class:`~aejax.errors.AejaxError` names each clash;
    ``where`` names the run in it). Otherwise the given fields go over the defaults, and the
    data's facts fill the rest: ``image_shape``, the data's ``(H, W, C)``, sets the model's
    shape options it has; ``n_train``, the size of the train split, sets the held-out slice
    (:func:`default_holdout`), the batch size (:func:`data_batch_size`) and the epochs (the
    tutorial's on its datasets, else the step ceiling's with early stopping). A resolved
    config resolves to itself.

    >>> c = resolve({"arch": "conv", "dataset": "/data/crops"}, None, (32, 32, 3), 270)
    >>> c.batch_size, c.holdout, c.early_stopping, c.model["channels"]
    (16, 54, True, 3)
    >>> resolve(c) == c
    True
    """
    if isinstance(given, RunConfig):  # its early_stopping is given too
        given = _set_fields(given)
    elif given.get("epochs") is not None:  # a length asked for: no early stopping
        given = {**given, "early_stopping": False}
    given = dict(given)
    model_given = given.pop("model", {})
    if saved is None:
        config = dataclasses.replace(RunConfig(), **given, model=model_given)
        return config._filled(image_shape, n_train)
    if given.get("arch", saved.arch) != saved.arch:
        raise AejaxError(
            f"{where} holds a {saved.arch} run, not {given['arch']}: use "
            f"--arch {saved.arch} to resume it, or --fresh or another --workdir"
        )
    config = dataclasses.replace(saved, **given, model={**saved.model, **model_given})
    config = config._filled()
    check_agrees(config, saved, where)
    return config


def check_agrees(config: RunConfig, saved: RunConfig, where: str = "the workdir") -> None:
    """An :class:`~aejax.errors.AejaxError` unless ``config`` can resume the ``saved`` run
    (in ``where``): they agree on everything but the training's length."""
    asked = config.trajectory()
    clashes = [
        f"{k}={asked[k]!r} (run has {v!r})" for k, v in saved.trajectory().items() if asked[k] != v
    ]
    if clashes:
        raise AejaxError(
            f"{where} holds a {saved.arch} run on {saved.dataset} that differs in "
            f"{', '.join(clashes)}: drop those options to resume it, or use --fresh or "
            "another --workdir"
        )


def _set_fields(config: RunConfig) -> dict:
    # The fields of a config built in Python that differ from the defaults: those given.
    default = RunConfig()
    return {
        f.name: getattr(config, f.name)
        for f in dataclasses.fields(config)
        if getattr(config, f.name) != getattr(default, f.name)
    }


# The tutorial's datasets and its training length on them: their runs reproduce it exactly
# (experiments/results/seed_parity.md). Other data trains for as long as it needs.
REFERENCE_DATASETS = ("mnist", "fashion_mnist")
REFERENCE_EPOCHS = 15

HOLDOUT = 1000  # the most images a run holds out by default (what MNIST's reference runs did)


def default_holdout(n_train: int) -> int:
    """How many of a train split's ``n_train`` images a run holds out unless told: a fifth,
    at most :data:`HOLDOUT`. Enough for a threshold at the 95th percentile from a few dozen
    images on (its FPR bound is printed with it), and never all of a small folder.

    >>> default_holdout(60_000), default_holdout(270), default_holdout(4)
    (1000, 54, 0)
    """
    return min(HOLDOUT, n_train // 5)


def _jsonable(value):
    return json.loads(json.dumps(value))  # tuples -> lists, as they come back from JSON
