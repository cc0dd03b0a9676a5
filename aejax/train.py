"""``python -m aejax.train``: train an autoencoder, checkpoint as it goes, resume where it stopped.

    python -m aejax.train --arch dense                 # the reference run: 15 epochs on MNIST
    python -m aejax.train --arch conv --epochs 3
    python -m aejax.train --workdir runs/dense-mnist   # resume (or extend with --epochs)

Re-running a command in the same workdir resumes from its latest checkpoint; options you do
not give are taken from that run, options you give must agree with it (``--fresh`` starts
over, keeping the old run beside the new one).
"""

from __future__ import annotations

import argparse
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

import numpy as np
from tqdm import tqdm

from aejax import board, cli, core, data, files, models, parallel, xla
from aejax.checkpoint import Checkpoints
from aejax.data import folder
from aejax.errors import AejaxError
from aejax.parallel import Placement
from aejax.run import (
    CHECKPOINT_FORMAT,
    RunConfig,
    check_resumes,
    default_workdir,
    device_defaults,
    epoch_key,
    fresh_state,
    move_aside,
    put_split,
    resolve_config,
    restore_state,
    saved_config,
    workdir_lock,
)


def _parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(
        prog="python -m aejax.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="model options (--model NAME=VALUE), by --arch, with their defaults:\n"
        + models.describe_options(),
    )
    # Defaults are None so that "not given" can be told from "given": on resume, what is not
    # given comes from the run being resumed (RunConfig's defaults for a new run).
    p.add_argument("--arch", choices=models.names(), help="model (default dense)")
    p.add_argument(
        "--dataset",
        help="a TFDS image dataset (default mnist), or the path of "
        "a folder of PNG/JPEG images (see README, 'Your own images')",
    )
    p.add_argument(
        "--image-size",
        type=cli.integer(1),
        nargs=2,
        metavar=("H", "W"),
        help="a folder's images are resized to H x W (default: their own size, "
        "which must then be one size)",
    )
    p.add_argument(
        "--channels",
        type=int,
        choices=[1, 3],
        help="a folder's images are "
        "converted to grey (1) or RGB (3) (default: RGB if any is in colour)",
    )
    p.add_argument("--epochs", type=cli.integer(1), help="train until this epoch (default 15)")
    p.add_argument(
        "--batch-size", type=cli.integer(1), help="default: the arch's (dense 256, conv 128)"
    )
    p.add_argument("--latent-dim", type=cli.integer(1), help="code size (default 15)")
    p.add_argument(
        "--model",
        action="append",
        type=_model_option,
        default=[],
        metavar="NAME=VALUE",
        help="a model option (repeatable), e.g. --model depth=3 --model width=64 for conv "
        "on 64x64 images; each --arch's options are listed below",
    )
    p.add_argument(
        "--lr", type=cli.number(0, low_open=True), help="Adam learning rate (default 1e-3)"
    )
    p.add_argument("--seed", type=cli.integer(0, 2**32 - 1), help="default 0")
    p.add_argument(
        "--holdout",
        type=cli.integer(0),
        help="examples at the end of the train split kept out of training, for eval's "
        "thresholds and statistics (default: a fifth of the split, at most 1000)",
    )
    p.add_argument(
        "--compute-dtype",
        choices=["float32", "bfloat16"],
        help="mixed precision: bfloat16 forward/backward, float32 parameters, "
        "loss and optimizer (default float32)",
    )
    p.add_argument(
        "--mutation-rate",
        type=cli.number(0, 1, high_open=True),
        help="train a background model for the likelihood-ratio score: each training pixel "
        "replaced by a uniform random value with this probability (Ren et al. 2019 use "
        "0.1-0.2; default 0, a normal model)",
    )
    p.add_argument(
        "--ensemble",
        type=cli.integer(2),
        metavar="K",
        help="train K members (seeds seed .. seed+K-1) together in one vmapped step, on the "
        "same batches; scores average over them, test BCE is reported per member",
    )
    p.add_argument("--workdir", type=Path, help="default runs/<arch>-<dataset>")
    p.add_argument(
        "--stream",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="read training batches from the decoded copy on disk instead of holding the "
        "data on the devices (default: when it exceeds a quarter of this machine's memory, "
        "or $AEJAX_MEMORY_BUDGET_GB); the same batches either way",
    )
    p.add_argument(
        "--fresh",
        action="store_true",
        help="start over; an existing run in the "
        "workdir is moved aside to <workdir>.<time>, not deleted",
    )
    p.add_argument(
        "--checkpoint-every",
        type=cli.integer(0),
        default=CHECKPOINT_EVERY,
        metavar="SECONDS",
        help="save an epoch's checkpoint only when this long has passed since the previous "
        f"one; the last epoch is always saved (default {CHECKPOINT_EVERY}; 0: every epoch)",
    )
    p.add_argument("--data-dir", help="TFDS data dir (default $TFDS_DATA_DIR)")
    cli.add_common_args(p)
    return p


# The BCE of predicting 0.5 for every pixel, whatever the image: a model clearly above it has
# learnt less than nothing. "Clearly": an untrained model sits at log 2 give or take a little
# (a run on one image ended its first epoch at 0.69331), which is no divergence.
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


def _check_finite(epoch: int, metrics: dict) -> None:
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


class PhaseClock:
    """Wall seconds per phase of a command, for ``timings.json``: where a run's time went."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.epochs_before = 0  # a resumed run's finished epochs, not this command's

    @contextlib.contextmanager
    def __call__(self, phase: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start


class Trainer:
    """The training loop of one run: data on the devices, checkpoints, metrics, progress."""

    def __init__(self, config: RunConfig, workdir: Path, placement: Placement,
                 data_dir: str | None = None, stream: bool | None = None,
                 clock: PhaseClock | None = None,
                 checkpoint_every: int = CHECKPOINT_EVERY):  # fmt: skip
        """``stream``: read batches from the decoded copy on disk instead of holding the
        splits on the devices (None: when the training split exceeds :func:`memory_budget`).
        ``checkpoint_every``: seconds from one checkpoint to the next at least (the last
        epoch is always saved; 0: every epoch)."""
        self.clock = clock or PhaseClock()
        self.checkpoint_every = checkpoint_every
        with self.clock("data"):
            self._load(config, workdir, placement, data_dir, stream)

    def _load(self, config, workdir, placement, data_dir, stream) -> None:
        self.config, self.workdir, self.placement = config, workdir, placement
        placement.check_batch_size(config.batch_size)
        self.is_main = parallel.is_main_process()
        options = config.data_options()
        ranges = config.row_ranges(data.num_examples(config.dataset, "train", data_dir, **options))
        try:
            data.num_examples(config.dataset, "test", data_dir, **options)
        except data.UnknownSplit:
            raise AejaxError(
                f"{config.dataset} has no test split to report the test BCE on: a folder needs "
                "2 images at least (about a tenth go to test), an ImageFolder a test/ folder"
            ) from None
        ranges["test"] = ("test", None, None)
        if stream is None:
            shape = data.image_shape(config.dataset, data_dir, **options)
            stream = ranges["train"][2] * math.prod(shape) > memory_budget()
        self.streaming = stream
        if stream:  # memory-mapped views: the rows are read as batches need them
            self.sets = {}
            for role, (split, start, stop) in ranges.items():
                rows = data.open_rows(config.dataset, split, data_dir, **options)[0][start:stop]
                self.sets[role] = (rows, len(rows))
        else:
            self.sets = {
                role: put_split(placement, config.dataset, *rows, data_dir=data_dir, **options)
                for role, rows in ranges.items()
            }
        # One device: leave placement to XLA, as a user of the plain functions would.
        self.batch_sharding = placement.batch if placement.size > 1 else None
        self.board = board.Board(workdir)

    def described_rows(self) -> str:
        """E.g. "216 training images, 54 more held out (--holdout) for eval's threshold"."""
        n_train = self.sets["train"][1]
        held_out = self.sets["holdout"][1] if "holdout" in self.sets else 0
        return (
            f"{n_train} training images, {held_out} more held out (--holdout) for eval's "
            "threshold and statistics"
        )

    def initial_state(self, checkpoints: Checkpoints) -> tuple[core.TrainState, list[dict]]:
        if checkpoints.latest_step() is None:
            state = fresh_state(self.config)
            core.check_image_shape(state, self.sets["test"][0].shape[1:])
            return self.placement.replicate(state), []
        state, meta = restore_state(checkpoints, None, self.config, self.placement)
        return state, meta["history"]

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
            cli.check_interrupted()
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
        metrics = {
            "epoch": epoch,
            **train_metrics,
            **self.evaluate(state),
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
        if not self.is_main:
            return
        files.write_text(
            self.workdir / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history)
        )

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
            if self.is_main:
                doing = (
                    f"resuming {self.workdir} from epoch {len(history)}"
                    if history
                    else f"training {self.config.arch} on {data.display_name(self.config.dataset)}"
                    f" in {self.workdir}"
                )
                source = ", streaming batches from disk" if self.streaming else ""
                print(f"{doing}, on {cli.describe(self.placement)}{source}; "
                      f"{self.described_rows()}", file=sys.stderr)  # fmt: skip
            self.write_records(history)  # drops lines of epochs that never got a checkpoint
            for epoch in range(len(history) + 1, self.config.epochs + 1):
                state, metrics = self.run_epoch(state, epoch)
                _check_finite(epoch, {k: metrics[k] for k in ("loss", "val_loss")})
                history.append(metrics)
                warning = divergence_warning(history)
                if warning and self.is_main:
                    tqdm.write(warning, file=sys.stderr)
                with self.clock("checkpoints"):
                    checkpoints.save(
                        epoch,
                        state,
                        {
                            "config": dataclasses.asdict(self.config),
                            "history": history,
                            "format": CHECKPOINT_FORMAT,
                        },
                        force=epoch == self.config.epochs,
                    )
                with self.clock("records"):  # metrics.jsonl, TensorBoard
                    self.write_records(history)
                    self.write_board(state, metrics)
                cli.check_interrupted()
        self.board.close()
        return state, history

    def write_board(self, state, metrics: dict) -> None:
        """The epoch's numbers, and every few epochs a reconstruction grid, to TensorBoard."""
        epoch = metrics["epoch"]
        grid = None
        if epoch % board.IMAGES_EVERY == 0 or epoch == self.config.epochs:
            # Every process computes it: the state spans all of them (a computation that
            # only process 0 entered would wait for the others forever).
            first, recon = _first_reconstructed(state, self.sets["test"][0])
            grid = board.grid(parallel.to_numpy(first), parallel.to_numpy(recon))
        if not self.is_main:
            return
        self.board.scalars(epoch, {  # an ensemble's per-member lists: in metrics.jsonl
            f"{'loss' if 'loss' in k else 'speed'}/{k}": v
            for k, v in metrics.items() if k != "epoch" and not isinstance(v, list)
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
    stream: bool | None = None,
    clock: PhaseClock | None = None,
    checkpoint_every: int = CHECKPOINT_EVERY,
) -> tuple[core.TrainState, list[dict]]:
    """Trains ``config`` in ``workdir`` until epoch ``config.epochs``, resuming the run saved
    there (which must agree with ``config``, see :func:`aejax.run.resolve_config`); evaluates
    the test split after every epoch. Returns the final state and the history (one dict per
    epoch, as in ``metrics.jsonl``). ``placement``: the devices (default all); ``stream``:
    read batches from disk (None: when the data exceeds :func:`memory_budget`); the same
    batches either way. ``checkpoint_every``: seconds from one checkpoint to the next at
    least (the last epoch is always saved; 0: every epoch)."""
    workdir = Path(workdir)
    placement = placement or Placement.create()
    main_process = parallel.is_main_process()
    # Process 0 holds the workdir; the others write through Orbax, which it coordinates.
    clock = clock or PhaseClock()
    if config.holdout is None:  # sized from the train split, as the command sizes it
        n_train = data.num_examples(config.dataset, "train", data_dir, **config.data_options())
        config = config.resolved(n_train=n_train)
    with workdir_lock(workdir) if main_process else contextlib.nullcontext():
        check_resumes(config, workdir)
        if main_process:
            _import_in_background("aejax.plots")
        trainer = Trainer(config, workdir, placement, data_dir, stream, clock, checkpoint_every)
        state, history = trainer.fit()
    if main_process and history:
        with clock("plots"):
            from aejax import plots  # matplotlib: imported when there is something to plot

            title = f"{config.arch} on {data.display_name(config.dataset)}"
            plots.loss_curve(history, workdir / "loss.png", title=title)
    return state, history


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
        "total": round(cli.seconds_since_start(), 3),
    })  # fmt: skip


def _model_option(text: str) -> tuple[str, object]:
    """``--model NAME=VALUE``; VALUE as JSON (``3``, ``0.5``, ``[32, 32, 3]``), else text."""
    name, sep, value = text.partition("=")
    if not sep or not name.isidentifier():
        raise argparse.ArgumentTypeError(f"takes NAME=VALUE, such as depth=3, not {text!r}")
    try:
        return name, json.loads(value)
    except ValueError:
        return name, value


def _given(args: argparse.Namespace) -> dict:
    """The RunConfig fields the command line gave (``model``: the model options given)."""
    fields = (
        "arch",
        "dataset",
        "epochs",
        "batch_size",
        "lr",
        "seed",
        "holdout",
        "compute_dtype",
        "mutation_rate",
        "ensemble",
        "image_size",
        "channels",
    )
    given = {k: getattr(args, k) for k in fields if getattr(args, k) is not None}
    if "dataset" in given and folder.is_folder(given["dataset"]):  # found from any cwd
        given["dataset"] = str(Path(given["dataset"]).resolve())
    given["model"] = dict(args.model)
    if args.latent_dim is not None:
        given["model"]["latent_dim"] = args.latent_dim
    return given


def _data_facts(given: dict, data_dir: str | None) -> tuple[tuple[int, int, int], int]:
    """The shape of the images of the dataset the command names (or the default's) and the
    size of its train split; a folder is prepared here, once. A new run's model is shaped by
    them, and its held-out slice sized."""
    options = {k: given[k] for k in ("image_size", "channels") if k in given}
    dataset = given.get("dataset", RunConfig.dataset)
    shape = data.image_shape(dataset, data_dir, **options)
    return shape, data.num_examples(dataset, "train", data_dir, **options)


def train_command(args: argparse.Namespace) -> int:
    # Until here: the interpreter's start, the imports, parsing the command line.
    clock = PhaseClock()
    clock.seconds["start_and_imports"] = cli.seconds_since_start()
    with clock("setup"):  # devices, the run's config, the data's shape (preparing it)
        workdir, config, placement = _setup(args)
    state, history = train_and_evaluate(
        config, workdir, placement=placement, data_dir=args.data_dir, stream=args.stream,
        clock=clock, checkpoint_every=args.checkpoint_every,
    )  # fmt: skip
    if not parallel.is_main_process():
        return 0
    last = history[-1]
    seconds = np.median([h["epoch_seconds"] for h in history])
    spread = f" ± {last['val_loss_sd']:.4f} over {state.members} members" if state.members else ""
    print(
        f"{config.arch} on {data.display_name(config.dataset)}: {last['epoch']} epochs, "
        f"{core.param_count(state):,} params, test BCE {last['val_loss']:.4f}{spread}"
        f", median {seconds:.2f} s/epoch; run in {workdir}"
    )
    write_timings(workdir, clock, history)
    return 0


def _setup(args: argparse.Namespace):
    given = _given(args)
    workdir = args.workdir or default_workdir(
        given.get("arch", RunConfig.arch), given.get("dataset", RunConfig.dataset)
    )
    arch, batch_size = device_defaults(given, None if args.fresh else workdir)
    models.check_options(arch, given["model"])  # before any work: one line if it is wrong
    placement = cli.setup_devices(
        **cli.device_options(args),
        splits_well=models.get(arch).splits_well_on_cpu,
        batch_size=batch_size,
    )
    if args.fresh and workdir.exists() and parallel.is_main_process():
        print(f"--fresh: moved the previous run to {move_aside(workdir)}", file=sys.stderr)
    # A new run's model takes the data's shape; a resumed run has it in its saved config.
    facts = (None, None) if saved_config(workdir) else _data_facts(given, args.data_dir)
    return workdir, resolve_config(given, workdir, *facts), placement


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return cli.run_command(
        lambda: train_command(args),
        verbose=args.verbose,
        compile_cache=args.compile_cache,
        interrupted="interrupted: run the same command again to resume from the last checkpoint",
    )


if __name__ == "__main__":
    cli.exit_process(main())
