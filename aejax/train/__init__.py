"""Training a run: :func:`train_and_evaluate` (a config and a workdir, as flax's examples
have it) and :func:`train`, what ``python -m aejax.train`` asks for.

The run trains until ``config.epochs``, resuming what is saved in its workdir, checkpointing
as it goes (:mod:`aejax.checkpoint`), writing ``metrics.jsonl``, TensorBoard events and
``loss.png`` (:mod:`aejax.run` describes the workdir).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import math
import os
import sys
import threading
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from aejax import board, core, data, files, losses, models, parallel, plural, stopping, xla
from aejax.checkpoint import Checkpoints
from aejax.clock import PhaseClock, seconds_since_start
from aejax.config import RunConfig, check_agrees, resolve
from aejax.errors import AejaxError
from aejax.interrupts import check_interrupted
from aejax.parallel import Placement
from aejax.run import (
    CHECKPOINT_FORMAT,
    default_workdir,
    device_hints,
    model_step,
    move_aside,
    peek_config,
    restore_state,
    saved_config,
    workdir_lock,
)
from aejax.run_state import epoch_key, fresh_state

# The BCE of predicting 0.5 for every pixel, whatever the image: a model clearly above it has
# learnt less than nothing. "Clearly": an untrained model sits at log 2 give or take a little
# (a run on a single image ends its first epoch just above it), which is no divergence.
TRIVIAL_BCE = math.log(2)
DIVERGED_BCE = 1.1 * TRIVIAL_BCE


def divergence_warning(history: list[dict]) -> str | None:
    """A warning when the last epoch's losses say training is diverging: the test BCE 10%
    above :data:`TRIVIAL_BCE`, or the training loss over 100x its first epoch's."""
    last, first = history[-1], history[0]
    if last["val_loss"] > DIVERGED_BCE:
        why = (
            f"test BCE {last['val_loss']:.6g} is above {DIVERGED_BCE:.4f}, 1.1x what "
            "predicting 0.5 for every pixel scores"
        )
    elif last["loss"] > 100 * first["loss"]:
        why = f"training loss {last['loss']:.6g} is over 100x epoch {first['epoch']}'s"
    else:
        return None
    return f"warning: epoch {last['epoch']}: {why}; training is diverging: lower --lr"


def check_finite(epoch: int, metrics: dict) -> None:
    bad = [k for k, v in metrics.items() if not math.isfinite(v)]
    if bad:
        raise AejaxError(
            f"{', '.join(bad)} became {metrics[bad[0]]} in epoch {epoch}; training stopped and "
            "the last good checkpoint is kept: lower --lr (or check the data) and run again"
        )


# Seconds from one checkpoint to the next, at least. An epoch that ends sooner after the
# previous save is not saved (the last epoch always is): on CPU a save (Orbax writes and
# syncs a dozen files) costs a good part of a small net's epoch (experiments/results/
# speed.md), and an interrupted run resumes bit-identical from any epoch. Epochs longer
# than this are all saved; after a kill, at most this much training (and the epoch under
# way) is redone.
CHECKPOINT_EVERY = 5


class Trainer:
    """The training loop of one run: data on the devices, checkpoints, metrics, progress."""

    def __init__(self, config: RunConfig, workdir: Path, placement: Placement,
                 source: data.Source, stream: bool | None = None,
                 clock: PhaseClock | None = None,
                 checkpoint_every: int = CHECKPOINT_EVERY):  # fmt: skip
        """``source``: the run's data, resolved (:func:`aejax.data.source`). ``stream``:
        read batches from the decoded copy on disk instead of holding the splits on the
        devices (None: when the training split exceeds :func:`memory_budget`).
        ``checkpoint_every``: seconds from one checkpoint to the next at least (the last
        epoch is always saved; 0: every epoch)."""
        self.clock = clock or PhaseClock()
        self.checkpoint_every = checkpoint_every
        with self.clock("data"):
            self._load(config, workdir, placement, source, stream)

    def _load(self, config, workdir, placement, source, stream) -> None:
        self.config, self.workdir, self.placement = config, workdir, placement
        self.source = source
        placement.check_batch_size(config.batch_size)
        self.is_main = parallel.is_main_process()
        ranges = config.row_ranges(source.num_examples("train"))
        try:
            source.num_examples("test")
        except data.UnknownSplit:
            raise AejaxError(
                f"{source.label} has no test split to report the test BCE on: a folder needs "
                "2 images at least (about a tenth go to test), an ImageFolder a test/ folder"
            ) from None
        ranges["test"] = ("test", None, None)
        if stream is None:
            stream = ranges["train"][2] * math.prod(source.image_shape()) > memory_budget()
        self.streaming = stream
        if stream:  # memory-mapped views: the rows are read as batches need them
            self.sets = {}
            for role, (split, start, stop) in ranges.items():
                rows = source.open_rows(split)[0][start:stop]
                self.sets[role] = (rows, len(rows))
        else:
            self.sets = {role: put_split(placement, source, *rows) for role, rows in ranges.items()}
        # One device: leave placement to XLA, as a user of the plain functions would.
        self.batch_sharding = placement.batch if placement.size > 1 else None
        self.board = board.Board(workdir)
        # Convergence is judged on the held-out slice (the test split where there is none),
        # as KL: its BCE less its images' own entropy, the part training can remove.
        watched = "holdout" if "holdout" in self.sets else "test"
        self.watched = {"holdout": "holdout_loss", "test": "val_loss"}[watched]
        self.floor = mean_entropy(*self.sets[watched])
        self.steps_per_epoch = math.ceil(self.sets["train"][1] / config.batch_size)
        self.best: tuple[int, core.TrainState] | None = None  # an early-stopping run's model
        self.best_saved = False

    def described_rows(self) -> str:
        """E.g. "216 training images, 54 more held out (--holdout) for eval's threshold"."""
        n_train = self.sets["train"][1]
        held_out = self.sets["holdout"][1] if "holdout" in self.sets else 0
        return (
            f"{n_train} training images, {held_out} more held out (--holdout) for eval's "
            "threshold and statistics"
        )

    def describe_start(self, history: list[dict], stopped: bool) -> str:
        """The command's first line: what it trains, on what, for how long."""
        if stopped:
            why = {"converged": "its held-out loss converged", "ceiling": "at its step ceiling"}
            return (
                f"{self.workdir} stopped at epoch {len(history)}, "
                f"{why[history[-1]['stopped']['reason']]} (epoch {model_step(history)} kept): "
                "nothing to train; --epochs N trains further"
            )
        if history:
            doing = f"resuming {self.workdir} from epoch {len(history)}"
        else:
            doing = f"training {self.config.arch} on {self.source.label} in {self.workdir}"
        source = ", streaming batches from disk" if self.streaming else ""
        if self.config.early_stopping:
            rule = stopping.rule_for(self.config.epochs, self.steps_per_epoch)
            length = (f"until the held-out loss stops improving ({rule.min_steps:,} to "
                      f"{rule.max_steps:,} steps of {self.config.batch_size}; --epochs N "
                      "for a fixed length)")  # fmt: skip
        else:
            length = f"for {plural.count(self.config.epochs, 'epoch')} of {self.config.batch_size}"
        return (f"{doing}, on {parallel.describe(self.placement)}{source}; "
                f"{self.described_rows()}; {length}")  # fmt: skip

    def initial_state(self, checkpoints: Checkpoints) -> tuple[core.TrainState, list[dict]]:
        if checkpoints.latest_step() is None:
            state = fresh_state(self.config)
            core.check_image_shape(state, self.sets["test"][0].shape[1:])
            return self.placement.replicate(state), []
        state, meta = restore_state(checkpoints, None, self.config, self.placement)
        history = meta["history"]
        if self.config.epochs < len(history):
            raise AejaxError(
                f"{self.workdir} has trained {len(history)} epochs already, more than "
                f"--epochs {self.config.epochs}: give more epochs to train further, or --fresh "
                "to start over (the run is kept aside)"
            )
        if self.config.early_stopping:  # its model: the best epoch, which is saved
            best_epoch = model_step(history) or len(history)
            best = state
            if best_epoch != len(history):
                best = restore_state(checkpoints, best_epoch, self.config, self.placement)[0]
            self.best, self.best_saved = (best_epoch, jax.tree.map(jnp.copy, best)), True
        return state, history

    def evaluate(self, state) -> dict:
        """Test and held-out BCE; an ensemble's as the mean over its members, with their
        standard deviation and each member's (seed variance for free)."""
        names = {"test": "val_loss", "holdout": "holdout_loss"}
        out = {}
        for role, (images, n) in self.sets.items():
            if role not in names:
                continue
            # An ensemble's members in one vmapped pass: [K] losses; a single model's, [].
            loss = np.asarray(core.eval_loss(state, images, num_examples=n,
                                             batch_sharding=self.batch_sharding,
                                             each_member=bool(state.members)))  # fmt: skip
            if state.members:
                out[names[role]] = float(np.mean(loss))
                out[f"{names[role]}_sd"] = float(np.std(loss, ddof=1))
                out[f"{names[role]}_members"] = [float(v) for v in loss]
            else:
                out[names[role]] = float(loss)
        return out

    def run_epoch(self, state, epoch: int) -> tuple[core.TrainState, dict]:
        images, n = self.sets["train"]
        batch_size = self.config.batch_size
        bar = tqdm(
            total=math.ceil(n / batch_size),
            desc=f"epoch {epoch}/{self.config.epochs}",
            unit="step",
            leave=True,
            dynamic_ncols=True,
            disable=None if self.is_main else True,
        )

        def on_progress(steps_done, sums):
            check_interrupted()
            bar.update(steps_done - bar.n)
            if not bar.disable:  # reading the loss waits for the device
                bar.set_postfix(loss=f"{float(sums['loss'] / sums['count']):.4f}")

        start = time.perf_counter()
        state, train_metrics = core.train_epoch(
            state,
            images,
            epoch_key(self.config.seed, epoch),
            batch_size=batch_size,
            num_examples=n,
            batch_sharding=self.batch_sharding,
            on_progress=on_progress,
        )
        train_metrics = {k: float(v) for k, v in train_metrics.items()}
        train_seconds = time.perf_counter() - start
        evaluated = self.evaluate(state)
        metrics = {
            "epoch": epoch,
            **train_metrics,
            **evaluated,
            "watched_kl": evaluated[self.watched] - self.floor,
            "steps": epoch * self.steps_per_epoch,  # optimizer steps so far
            "train_seconds": round(train_seconds, 3),
            "epoch_seconds": round(time.perf_counter() - start, 3),
            "images_per_second": round(n / train_seconds, 1),
        }
        bar.set_postfix(
            loss=f"{metrics['loss']:.4f}",
            val_loss=f"{metrics['val_loss']:.4f}",
            img_s=f"{metrics['images_per_second']:.0f}",
        )
        bar.close()
        if bar.disable and self.is_main:  # not a terminal (a log file): one line per epoch
            print(
                f"epoch {epoch}/{self.config.epochs} loss {metrics['loss']:.4f} val_loss "
                f"{metrics['val_loss']:.4f} {metrics['epoch_seconds']:.2f}s "
                f"{metrics['images_per_second']:.0f} img/s",
                flush=True,
            )
        return state, metrics

    def write_records(self, history: list[dict]) -> None:
        """``metrics.jsonl``, rewritten whole (at the start: a resumed run's epochs)."""
        if not self.is_main:
            return
        files.write_text(
            self.workdir / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history)
        )

    def append_record(self, metrics: dict) -> None:
        """One epoch's line, appended: a run of thousands of short epochs (one's own few
        hundred images) would rewrite the whole file thousands of times. A line cut short
        by a kill is dropped by the resumed run's :meth:`write_records`."""
        if self.is_main:
            with open(self.workdir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(metrics) + "\n")

    def fit(self) -> tuple[core.TrainState, list[dict]]:
        if self.is_main:
            self.workdir.mkdir(parents=True, exist_ok=True)
            files.write_json(self.workdir / "config.json", dataclasses.asdict(self.config))
        # Every process saves and restores (Orbax coordinates them); only process 0 logs.
        with Checkpoints(
            self.workdir / "checkpoints", min_interval_s=self.checkpoint_every
        ) as checkpoints:
            with self.clock("initialisation"):
                state, history = self.initial_state(checkpoints)
            self.clock.epochs_before = len(history)
            # An early-stopping run that stopped before trains no further unless asked.
            stopped = self.config.early_stopping and model_step(history) is not None
            if self.is_main:
                print(self.describe_start(history, stopped), file=sys.stderr)
            self.write_records(history)  # drops lines of epochs that never got a checkpoint
            last = len(history) if stopped else self.config.epochs
            for epoch in range(len(history) + 1, last + 1):
                state, metrics = self.run_epoch(state, epoch)
                check_finite(epoch, {k: metrics[k] for k in ("loss", "val_loss")})
                history.append(metrics)
                warning = divergence_warning(history)
                if warning and self.is_main:
                    tqdm.write(warning, file=sys.stderr)
                with self.clock("checkpoints"):
                    done = self.save(checkpoints, state, history)
                with self.clock("records"):  # metrics.jsonl, TensorBoard
                    self.append_record(metrics)
                    self.write_board(state, metrics)
                if done:
                    break
                check_interrupted()
        self.board.close()
        return (state if self.best is None else self.best[1]), history

    def save(self, checkpoints: Checkpoints, state, history: list[dict]) -> bool:
        """Checkpoints the epoch just trained; returns whether training is done.

        A run of a fixed length saves every epoch the interval lets through, and its last.
        An early-stopping run saves only its improving epochs (so its checkpoints never go
        past its best until it stops) and keeps the best in memory; when the rule stops it,
        it saves the best (if the interval skipped it) and then the last epoch, whose
        history says ``stopped`` (:func:`aejax.run.model_step`): the run's model is the
        best, and the last epoch's state is where ``--epochs N`` would go on from, as if it
        had never stopped."""
        epoch = len(history)

        def meta(epochs: list[dict]) -> dict:
            return {"config": dataclasses.asdict(self.config), "history": epochs,
                    "format": CHECKPOINT_FORMAT}  # fmt: skip

        if not self.config.early_stopping:
            checkpoints.save(epoch, state, meta(history), force=epoch == self.config.epochs)
            return False
        rule = stopping.rule_for(self.config.epochs, self.steps_per_epoch)
        decision = stopping.decide([h["watched_kl"] for h in history], self.steps_per_epoch, rule)
        if decision.stop:
            history[-1]["stopped"] = {"reason": decision.reason, "best_epoch": decision.best_epoch}
        if decision.best_epoch == epoch:
            # The next epoch donates `state`'s buffers: the best is kept as a copy.
            self.best = epoch, jax.tree.map(jnp.copy, state)
            self.best_saved = checkpoints.save(epoch, state, meta(history), force=decision.stop)
        elif decision.stop:
            best_epoch, best_state = self.best
            if not self.best_saved:
                checkpoints.save(best_epoch, best_state, meta(history[:best_epoch]), force=True)
            checkpoints.save(epoch, state, meta(history), force=True)
        return decision.stop

    def write_board(self, state, metrics: dict) -> None:
        """The epoch's numbers, and every few epochs a reconstruction grid, to TensorBoard."""
        epoch = metrics["epoch"]
        grid = None
        if board.images_due(epoch) or epoch == self.config.epochs or "stopped" in metrics:
            # Every process computes it: the state spans all of them (a computation that
            # only process 0 entered would wait for the others forever).
            first, recon = _first_reconstructed(state, self.sets["test"][0])
            grid = board.grid(parallel.to_numpy(first), parallel.to_numpy(recon))
        if not self.is_main:
            return
        self.board.scalars(epoch, {  # an ensemble's per-member lists: in metrics.jsonl
            f"{'loss' if 'loss' in k else 'speed'}/{k}": v
            for k, v in metrics.items() if k != "epoch" and isinstance(v, int | float)
        })  # fmt: skip
        if grid is not None:
            self.board.images(epoch, "reconstructions/test", grid)


def _first_reconstructed(state, images, k: int = 8):
    """The first ``k`` images and their reconstructions, as one program (slicing the device
    array eagerly was another to compile)."""
    if isinstance(images, np.ndarray):  # a memory-mapped split: read k rows, not all
        images = images[:k]
    return _first_reconstructed_program(state, images, k)


@xla.quick_jit(static_argnums=2)  # a few images once a run: its compile time is what counts
def _first_reconstructed_program(state, images, k):
    return images[:k], core.reconstruct(state, images[:k])


def mean_entropy(images, n: int, chunk_bytes: int = 2**26) -> float:
    """The mean entropy of the first ``n`` of the uint8 ``images`` (on the devices or
    memory-mapped): the BCE no model goes below on them. Counted per level a chunk of rows
    at a time (:func:`aejax.losses.mean_entropy`): bounded memory, no compiled program."""
    rows = max(1, chunk_bytes // max(1, math.prod(images.shape[1:])))
    counts = np.zeros(256, np.int64)
    for start in range(0, n, rows):
        chunk = np.asarray(parallel.to_numpy(images[start : min(n, start + rows)]))
        counts += np.bincount(chunk.ravel(), minlength=256)
    return losses.mean_entropy(counts)


# How much a run's held-out KL fell over its last fifth of epochs (convergence()): up to
# CONVERGED it had converged; past STILL_IMPROVING, a run of the length asked for was still
# improving fast (a warning); a run stopped by the step ceiling warns past CONVERGED, since
# nobody chose its length.
CONVERGED = 0.01
STILL_IMPROVING = 0.05


def convergence(history: list[dict]) -> tuple[str, str | None]:
    """What a run's held-out losses say of its training length: a phrase for the summary
    line, and a warning when it ended while still improving fast (None otherwise)."""
    kl = [h["watched_kl"] for h in history if "watched_kl" in h]
    record = history[-1].get("stopped")
    if record and record["reason"] == "converged":
        best = record["best_epoch"]
        return (
            f"converged: held-out loss stopped improving after epoch {best} "
            f"(that epoch kept), stopped at epoch {len(history)}",
            None,
        )
    fell = stopping.trend(kl) if len(kl) == len(history) else None
    if fell is None:
        return "", None
    phrase = f"held-out KL fell {fell:.1%} over the last fifth of the epochs"
    if fell <= CONVERGED:
        return phrase + ": converged", None
    if record:  # the step ceiling
        why = f"it stopped at its ceiling of {history[-1].get('steps', 0):,} steps"
    elif fell <= STILL_IMPROVING:
        return phrase + ": still improving, slowly", None
    else:
        why = f"{len(history)} epochs were asked for"
    more = 2 * len(history)
    warning = (
        f"warning: the held-out loss was still falling ({fell:.1%} over the last fifth of "
        f"the epochs) when training ended: {why}; train further with --epochs {more}"
    )
    return phrase + ": still improving", warning


def memory_budget() -> int:
    """Bytes of images a run holds on its devices before it streams instead: a quarter of
    this machine's memory (``AEJAX_MEMORY_BUDGET_GB`` overrides). On CPU the devices' memory
    is the machine's, which the decoded copy, XLA and the OS page cache share."""
    if "AEJAX_MEMORY_BUDGET_GB" in os.environ:
        return int(float(os.environ["AEJAX_MEMORY_BUDGET_GB"]) * 2**30)
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4


def train_and_evaluate(
    config: RunConfig,
    workdir: str | Path,
    *,
    placement: Placement | None = None,
    data_dir: str | None = None,
    source: data.Source | None = None,
    stream: bool | None = None,
    clock: PhaseClock | None = None,
    checkpoint_every: int = CHECKPOINT_EVERY,
) -> tuple[core.TrainState, list[dict]]:
    """Trains ``config`` in ``workdir`` until epoch ``config.epochs``, resuming the run saved there
    (which must agree with ``config``); evaluates the test split after every epoch. Returns
    the final state and the history (one dict per epoch, as in ``metrics.jsonl``).
    ``config``: resolved (:func:`aejax.config.resolve`), or a :class:`RunConfig` whose unset
    fields are resolved here from the data and the run saved in ``workdir``. ``placement``:
    the devices (default all); ``source``: ``config.dataset`` already resolved (default:
    resolved here, in ``data_dir``); ``stream``: read batches from disk (None: when the data
    exceeds :func:`memory_budget`); the same batches either way. ``checkpoint_every``:
    seconds from one checkpoint to the next at least (the last epoch is always saved; 0:
    every epoch). ``clock``: where the phases' times are added up (``timings.json``)."""
    workdir = Path(workdir)
    placement = placement or Placement.create()
    main_process = parallel.is_main_process()
    source = source or data.source(config.dataset, data_dir, **config.data_options())
    # Process 0 holds the workdir; the others write through Orbax, which it coordinates.
    clock = clock or PhaseClock()
    with workdir_lock(workdir) if main_process else contextlib.nullcontext():
        saved = saved_config(workdir)
        if not config.is_resolved():  # built in Python: sized from the data, as a command's
            facts = (None, None) if saved else (source.image_shape(), source.num_examples("train"))
            config = resolve(config, saved, *facts, where=str(workdir))
        elif saved is not None:
            check_agrees(config, saved, str(workdir))
        if main_process:
            _import_in_background("aejax.plots")
        trainer = Trainer(config, workdir, placement, source, stream, clock, checkpoint_every)
        state, history = trainer.fit()
    if main_process and history:
        with clock("plots"):
            from aejax import plots  # matplotlib: imported when there is something to plot

            title = f"{config.arch} on {source.label}"
            plots.loss_curve(history, workdir / "loss.png", title=title)
    return state, history


@dataclasses.dataclass(frozen=True)
class TrainRequest:
    """What ``python -m aejax.train`` asks for. ``given``: the :class:`RunConfig` fields
    given (``model``: model options); the others come from the run saved in ``workdir``
    (it resumes) or from the defaults. ``workdir``: default ``runs/<arch>-<data>``;
    ``fresh``: move a run there aside and start over."""

    given: dict = dataclasses.field(default_factory=dict)
    workdir: Path | None = None
    fresh: bool = False
    devices: parallel.Devices = parallel.Devices()
    data_dir: str | None = None
    stream: bool | None = None
    checkpoint_every: int = CHECKPOINT_EVERY


@dataclasses.dataclass
class TrainResult:
    state: core.TrainState
    history: list[dict]
    config: RunConfig
    workdir: Path
    placement: Placement


def train(request: TrainRequest, clock: PhaseClock | None = None) -> TrainResult:
    """Resolves the request (devices, workdir, config, data) and trains
    (:func:`train_and_evaluate`); writes ``timings.json`` (``clock``: the phases so far)."""
    clock = clock or PhaseClock()
    with clock("setup"):  # devices, the run's config, the data's shape (preparing it)
        config, workdir, placement, source = _setup(request)
    state, history = train_and_evaluate(
        config, workdir, placement=placement, data_dir=request.data_dir, source=source,
        stream=request.stream, clock=clock, checkpoint_every=request.checkpoint_every,
    )  # fmt: skip
    if parallel.is_main_process():
        write_timings(workdir, clock, history)
    return TrainResult(state, history, config, workdir, placement)


# A device's training batch of at least this many values (images x H x W x C) steps faster
# with huge pages for XLA's buffers, by more than the command's restart costs; below it
# (the tutorial's 28x28 digits, 64 a device) they measured slower as often as faster
# (experiments/results/huge_pages.md).
HUGE_PAGES_FROM_VALUES = 2**18


def huge_pages_pay(request: TrainRequest) -> bool:
    """Whether a device's batch is large enough for :func:`aejax.xla.restart_with_huge_pages`
    to pay, as far as it is known before JAX starts (as :func:`aejax.run.device_hints` knows
    the architecture): the config the given dataset resolves to, else the run saved in the
    request's workdir; the default dataset's reference runs do not."""
    given = {"model": {}, **request.given}
    source = _given_source(request)
    if source is not None:
        shape = source.image_shape()
        config = resolve(given, None, shape, source.num_examples("train"))
    else:
        config = peek_config(request.workdir) if request.workdir else None
        if config is None:
            return False
        shape = data.source(config.dataset, request.data_dir, **config.data_options()).image_shape()
    splits = models.get(config.arch).splits_well_on_cpu
    devices = request.devices.cpu_count(splits, config.batch_size)
    per_device = -(-config.batch_size // devices) * math.prod(shape)
    return per_device >= HUGE_PAGES_FROM_VALUES


def _given_source(request: TrainRequest) -> data.Source | None:
    """The dataset the request gives (converted to its ``image_size`` and ``channels``), if
    it gives one."""
    given = request.given
    if "dataset" not in given:
        return None
    options = {k: given[k] for k in ("image_size", "channels") if k in given}
    return data.source(given["dataset"], request.data_dir, **options)


def _setup(request: TrainRequest):
    given = {"model": {}, **request.given}
    source = _given_source(request)
    if source is not None:  # its canonical name: a local path made absolute (from any cwd)
        given["dataset"] = source.name
    arch = given.get("arch", RunConfig.arch)
    dataset = given.get("dataset", RunConfig.dataset)
    workdir = request.workdir or default_workdir(arch, dataset, given)
    arch, batch_size = device_hints(given, None if request.fresh else workdir)
    models.check_options(arch, given["model"])  # before any work: one line if it is wrong
    placement = parallel.setup(
        request.devices, splits_well=models.get(arch).splits_well_on_cpu, batch_size=batch_size
    )
    if request.fresh and workdir.exists() and parallel.is_main_process():
        print(f"--fresh: moved the previous run to {move_aside(workdir)}", file=sys.stderr)
    saved = saved_config(workdir)
    if saved is not None:  # resumed: its shape and rows are in its config
        return resolve(given, saved, where=str(workdir)), workdir, placement, None
    # A new run's model takes the data's shape, its held-out slice the train split's size.
    source = source or data.source(RunConfig.dataset, request.data_dir)
    facts = source.image_shape(), source.num_examples("train")
    return resolve(given, None, *facts), workdir, placement, source


def _import_in_background(module: str) -> None:
    """Starts importing ``module`` in a thread: matplotlib's import (the largest of the
    command's, experiments/results/speed.md) then overlaps training, which leaves a core
    idle between its dispatches. The import that uses it waits for this one (Python's
    module lock); an error is left for that import to raise."""

    def load():
        with contextlib.suppress(Exception):
            importlib.import_module(module)

    threading.Thread(target=load, name=f"import {module}", daemon=True).start()


def write_timings(workdir: Path, clock: PhaseClock, history: list[dict]) -> None:
    """``timings.json``: this command's wall seconds by phase (the first epoch a process
    runs compiles, or loads its programs from the compilation cache)."""
    ran = history[clock.epochs_before :]
    train = [h["train_seconds"] for h in ran]
    phases = {
        **clock.seconds,
        "first_epoch_training": train[0] if train else 0.0,
        "other_epochs_training": sum(train[1:]),
        "evaluation": sum(h["epoch_seconds"] - h["train_seconds"] for h in ran),
    }
    files.write_json(workdir / "timings.json", {
        "epochs_run": len(ran),
        "seconds": {k: round(v, 3) for k, v in phases.items()},
        "total": round(seconds_since_start(), 3),
    })  # fmt: skip


def put_split(
    placement: Placement,
    source: data.Source,
    split: str,
    start: int | None = None,
    stop: int | None = None,
) -> tuple[jax.Array, int]:
    """Rows ``[start, stop)`` of a split (default all), sharded over the placement's
    devices; each process reads only its own devices' rows. Returns ``(images, n)``, the
    array padded past its ``n`` real rows to a whole number of rows per device."""
    start = start or 0
    stop = source.num_examples(split) if stop is None else stop

    def load_rows(a, b):
        return source.load(f"{split}[{start + a}:{start + b}]")[0]

    rows = placement.put_rows(stop - start, load_rows, row_shape=source.image_shape())
    return rows, stop - start
