"""A training run on disk: its config, its workdir layout, and restoring its checkpoints.

::

    runs/dense-mnist/
      config.json        the resolved config (also saved inside every checkpoint)
      metrics.jsonl      one line per epoch
      loss.png           the loss curves
      checkpoints/<epoch>/{state,meta}
      eval/              what `python -m aejax.eval` writes
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np

from aejax import core, data, models, xla
from aejax.checkpoint import Checkpoints
from aejax.errors import AejaxError
from aejax.parallel import Placement

RUNS_DIR = Path("runs")
# The parameter tree a checkpoint holds, saved in its meta as "format". 3: the models as
# flax layers (aejax.models). Earlier formats were only written by unreleased versions, so
# they are refused with a clear error rather than converted.
CHECKPOINT_FORMAT = 3


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """What defines a training run. Defaults reproduce the reference runs."""

    arch: str = "dense"
    dataset: str = "mnist"
    epochs: int = 15
    batch_size: int = 0  # 0: the architecture's reference batch size (dense 256, conv 128)
    lr: float = 1e-3
    seed: int = 0
    # The last examples of the train split, held out (thresholds, statistics); None: a fifth
    # of the split, at most HOLDOUT (default_holdout), resolved once the split's size is known.
    holdout: int | None = None
    compute_dtype: str = "float32"  # or "bfloat16": mixed-precision training
    mutation_rate: float = 0.0  # > 0: a background model on mutated images (core.mutated)
    ensemble: int = 0  # > 1: this many members trained together (seeds seed, seed + 1, ...)
    model: dict = dataclasses.field(default_factory=dict)  # model options, e.g. latent_dim
    # A folder dataset's preprocessing (aejax.data.folder): resize to [H, W], convert to C.
    image_size: list[int] | None = None
    channels: int | None = None

    def resolved(
        self, image_shape: tuple[int, int, int] | None = None, n_train: int | None = None
    ) -> RunConfig:
        """Fills in the architecture's defaults, so the saved config says what was used;
        ``image_shape``, the data's ``(H, W, C)``, sets the model's shape options (those of
        ``image_shape`` and ``channels`` it has) unless they were given; ``n_train``, the size
        of the data's train split, sets the held-out slice unless it was given."""
        batch_size = self.batch_size or models.get(self.arch).default_batch_size
        holdout = self.holdout
        if holdout is None and n_train is not None:
            holdout = default_holdout(n_train)
        defaults = models.options(self.arch)
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
            batch_size=batch_size,
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

    # Everything but `epochs` shapes the trajectory; a resumed run must agree on all of it.
    def trajectory(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "epochs"}

    def row_ranges(self, n_train: int) -> dict[str, tuple[str, int, int]]:
        """``{role: (tfds_split, start, stop)}`` for the rows trained on and held out, given
        the size of the dataset's train split."""
        if self.holdout is None:
            return self.resolved(n_train=n_train).row_ranges(n_train)
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


def default_workdir(arch: str, dataset: str) -> Path:
    """``runs/<arch>-<dataset>``: a folder by its last path component, a ``.npy`` file by its
    stem, a TFDS name's slashes as ``-`` (:func:`aejax.data.display_name`)."""
    return RUNS_DIR / f"{arch}-{data.display_name(dataset).replace('/', '-')}"


LOCK_FILE = ".lock"


@contextlib.contextmanager
def workdir_lock(workdir: Path) -> Iterator[None]:
    """Holds ``workdir`` (created if need be) for one training process: a second run started
    on it meanwhile is one clear error, not two runs writing the same checkpoints. The lock
    is the kernel's (``flock``), so a killed run never leaves a stale one behind."""
    workdir.mkdir(parents=True, exist_ok=True)
    with open(workdir / LOCK_FILE, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise AejaxError(
                f"{workdir} is in use by {holder}: wait for it to finish, or use another --workdir"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"python -m aejax.train (pid {os.getpid()})\n")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def move_aside(workdir: Path) -> Path:
    """Renames a run's directory to ``<workdir>.<time>`` (``--fresh``: nothing is deleted)."""
    with workdir_lock(workdir):
        aside = workdir.with_name(f"{workdir.name}.{datetime.datetime.now():%Y%m%d-%H%M%S}")
        workdir.rename(aside)
    return aside


def resolve_config(
    given: dict,
    workdir: Path,
    image_shape: tuple[int, int, int] | None = None,
    n_train: int | None = None,
) -> RunConfig:
    """The config of a training command: the fields ``given`` (``model``: model options)
    over those of the run saved in ``workdir`` if there is one (it resumes), else over the
    defaults; a new run's model takes ``image_shape`` (the data's) where it has a shape
    option, and its held-out slice is sized from ``n_train`` (the train split's size) unless
    given. Reads only; an option that clashes with the saved run is an error."""
    given = dict(given)
    model_given = given.pop("model", {})
    saved = saved_config(workdir)
    if saved is None:
        config = dataclasses.replace(RunConfig(), **given, model=model_given)
        return config.resolved(image_shape, n_train)
    if given.get("arch", saved.arch) != saved.arch:
        raise AejaxError(
            f"{workdir} holds a {saved.arch} run, not {given['arch']}: use "
            f"--arch {saved.arch} to resume it, or --fresh or another --workdir"
        )
    config = dataclasses.replace(saved, **given, model={**saved.model, **model_given})
    config = config.resolved()
    _check_agrees(config, saved, workdir)
    return config


def check_resumes(config: RunConfig, workdir: Path) -> None:
    """An error unless ``config`` starts a new run in ``workdir`` or resumes the one there."""
    saved = saved_config(workdir)
    if saved is not None:
        _check_agrees(config, saved, workdir)


def _check_agrees(config: RunConfig, saved: RunConfig, workdir: Path) -> None:
    asked = config.trajectory()
    clashes = [
        f"{k}={asked[k]!r} (run has {v!r})" for k, v in saved.trajectory().items() if asked[k] != v
    ]
    if clashes:
        raise AejaxError(
            f"{workdir} holds a {saved.arch} run on {saved.dataset} that differs in "
            f"{', '.join(clashes)}: drop those options to resume it, or use --fresh or "
            "another --workdir"
        )


def device_defaults(given: dict, workdir: Path | None) -> tuple[str, int]:
    """The run's architecture and batch size, known before JAX starts (to choose the
    devices): from ``given``, else ``workdir``'s config.json, else the defaults."""
    peeked = peek_config(workdir) if workdir is not None else None
    arch = given.get("arch") or (peeked.arch if peeked else RunConfig.arch)
    batch = given.get("batch_size") or (peeked.batch_size if peeked and peeked.arch == arch else 0)
    return arch, batch or models.get(arch).default_batch_size


def fresh_state(config: RunConfig) -> core.TrainState:
    """``config``'s untrained state: initialised from ``split(key(seed))[0]``; with
    ``ensemble K``, member ``i`` as a single run with seed ``seed + i`` would be."""
    options = dict(lr=config.lr, compute_dtype=config.compute_dtype,
                   mutation_rate=config.mutation_rate, **config.model)  # fmt: skip
    if not config.ensemble:
        return core.init_state(config.arch, init_key(config.seed), **options)
    keys = jax.vmap(init_key)(jax.numpy.arange(config.ensemble, dtype="uint32") + config.seed)
    return core.init_ensemble(config.arch, keys, **options)


def init_key(seed) -> jax.Array:
    """The key a run with ``seed`` (0 <= seed < 2**32) initialises its model from (the other
    half of the seed's split shuffles the data)."""
    return _keys(_uint32(seed), 0)[0]


def epoch_key(seed, epoch: int) -> jax.Array:
    """The key that shuffles epoch ``epoch`` (1, 2, ...) of a run with ``seed``."""
    return _keys(_uint32(seed), epoch)[1]


def _uint32(seed):
    # NumPy's conversion: jnp.asarray(seed, uint32) of a Python int is a program to compile.
    return seed if isinstance(seed, jax.Array) else np.uint32(seed)


# A run's keys from one small jitted program (xla.quick_jit): eagerly, the seed, the split,
# taking its halves and the fold were six programs to compile on a first run. The seed as
# uint32 (the CLI's range): key(seed) as from the Python int.
@xla.quick_jit
def _keys(seed_u32: jax.Array, epoch) -> tuple[jax.Array, jax.Array]:
    init, shuffle = jax.random.split(jax.random.key(seed_u32))
    return init, jax.random.fold_in(shuffle, epoch)


def abstract_state(config: RunConfig, placement: Placement | None = None) -> Any:
    """The shapes and dtypes (and, with a placement, replicated shardings) of ``config``'s
    TrainState, without computing it."""
    shapes = jax.eval_shape(lambda: fresh_state(config))
    # Without a placement: one device, whatever devices saved it (a checkpoint keeps its
    # writer's shardings).
    sharding = (
        placement.replicated
        if placement is not None
        else jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    )
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), shapes)


def restore_state(
    checkpoints: Checkpoints,
    step: int | None,
    config: RunConfig,
    placement: Placement | None = None,
) -> tuple[core.TrainState, dict]:
    """``(state, meta)`` of checkpoint ``step`` (None: the latest) of a ``config`` run."""
    written = checkpoints.meta(step).get("format")
    if written != CHECKPOINT_FORMAT:
        raise AejaxError(
            f"the checkpoints in {checkpoints.directory} were written by an unreleased aejax "
            f"(format {written or 'before 3'}; this one reads {CHECKPOINT_FORMAT}): train "
            "again, with --fresh to keep the old run aside"
        )
    return checkpoints.restore(step, abstract_state(config, placement))


def put_split(
    placement: Placement,
    dataset: str,
    split: str,
    start: int | None = None,
    stop: int | None = None,
    data_dir: str | None = None,
    **data_options,
) -> tuple[jax.Array, int]:
    """Rows ``[start, stop)`` of a TFDS split (default all), sharded over the placement's
    devices; each process reads only its own devices' rows. Returns ``(images, n)``, the
    array padded past its ``n`` real rows to a whole number of rows per device."""
    start = start or 0
    stop = data.num_examples(dataset, split, data_dir, **data_options) if stop is None else stop
    shape = data.image_shape(dataset, data_dir, **data_options)

    def load_rows(a, b):
        return data.load(dataset, f"{split}[{start + a}:{start + b}]", data_dir, **data_options)[0]

    return placement.put_rows(stop - start, load_rows, row_shape=shape), stop - start


def peek_config(workdir: Path) -> RunConfig | None:
    """The config a workdir's ``config.json`` records (read before JAX starts, to choose the
    devices); :func:`saved_config`, from the checkpoint, is the authority."""
    try:
        return RunConfig.from_dict(json.loads((workdir / "config.json").read_text()))
    except (OSError, ValueError, TypeError):
        return None


def saved_config(workdir: Path) -> RunConfig | None:
    """The config of the run in ``workdir``, from its latest checkpoint, if it has one."""
    if not (workdir / "checkpoints").is_dir():
        return None
    with Checkpoints(workdir / "checkpoints", read_only=True) as checkpoints:
        if checkpoints.latest_step() is None:
            return None
        return RunConfig.from_dict(checkpoints.meta()["config"])


def latest_workdir() -> Path:
    """The run under ``runs/`` with the most recently written checkpoint."""
    candidates = [
        d
        for d in RUNS_DIR.glob("*")
        if (d / "checkpoints").is_dir()
        and any(p.name.isdigit() for p in (d / "checkpoints").iterdir())
    ]
    if not candidates:
        raise AejaxError(
            f"no trained run under {RUNS_DIR.absolute()}: train one first "
            "(python -m aejax.train --arch dense) or pass --workdir"
        )
    return max(candidates, key=lambda d: (d / "checkpoints").stat().st_mtime)


def restore(
    workdir: str | Path, step: int | None = None, placement: Placement | None = None
) -> tuple[core.TrainState, RunConfig, dict]:
    """``(state, config, meta)`` of a trained run; ``step`` None means the latest epoch; with a
    placement, the state is replicated over its devices."""
    workdir = Path(workdir)
    if not (workdir / "checkpoints").is_dir():
        raise AejaxError(
            f"{workdir} holds no checkpoints: train first "
            f"(python -m aejax.train --workdir {workdir}) or give another --workdir"
        )
    with Checkpoints(workdir / "checkpoints", read_only=True) as checkpoints:
        meta = checkpoints.meta(step)
        config = RunConfig.from_dict(meta["config"])
        if config.arch not in models.names():
            raise AejaxError(
                f"{workdir} was trained with --arch {config.arch}, which this "
                f"aejax does not have ({', '.join(models.names())})"
            )
        state, meta = restore_state(checkpoints, step, config, placement)
    return state, config, meta
