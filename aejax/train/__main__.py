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
import json
import sys

import numpy as np

from aejax import cli, core, data, models, parallel, plural, run, xla
from aejax import train as training
from aejax.clock import PhaseClock, seconds_since_start


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
    p.add_argument(
        "--epochs",
        type=cli.integer(1),
        help="train until this epoch (default: 15 on mnist and fashion_mnist, as the "
        "tutorial; other data trains until its held-out loss stops improving, 500 to 12,000 "
        "optimizer steps, and keeps its best epoch)",
    )
    p.add_argument(
        "--batch-size",
        type=cli.integer(1),
        help="default: the arch's reference one ("
        + ", ".join(f"{a} {models.get(a).default_batch_size}" for a in models.names())
        + ")",
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
    p.add_argument(
        "--transform-head",
        action="store_const",
        const=True,
        help="train a self-supervised head on the code, jointly, to tell which rotation or "
        "flip was applied to the input; its negative log-likelihood of the true ones is the "
        "'transform' term and score, and joins 'joint' (aejax.models.heads)",
    )
    p.add_argument("--workdir", type=cli.local_path, help="default runs/<arch>-<dataset>")
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
        default=training.CHECKPOINT_EVERY,
        metavar="SECONDS",
        help="save an epoch's checkpoint only when this long has passed since the previous "
        "one; the last epoch is always saved "
        f"(default {training.CHECKPOINT_EVERY}; 0: every epoch)",
    )
    p.add_argument("--data-dir", help="TFDS data dir (default $TFDS_DATA_DIR)")
    cli.add_common_args(p)
    return p


def _model_option(text: str) -> tuple[str, object]:
    """``--model NAME=VALUE``; VALUE as JSON (``3``, ``0.5``, ``[32, 32, 3]``), else text."""
    name, sep, value = text.partition("=")
    if not sep or not name.isidentifier():
        raise argparse.ArgumentTypeError(f"takes NAME=VALUE, such as depth=3, not {text!r}")
    try:
        return name, json.loads(value)
    except ValueError:
        return name, value


# The options that are fields of aejax.config.RunConfig.
CONFIG_OPTIONS = (
    "arch", "dataset", "epochs", "batch_size", "lr", "seed", "holdout", "compute_dtype",
    "mutation_rate", "ensemble", "transform_head", "image_size", "channels",
)  # fmt: skip


def request(args: argparse.Namespace) -> training.TrainRequest:
    """What the command line asks for, as the library takes it."""
    given = {k: getattr(args, k) for k in CONFIG_OPTIONS if getattr(args, k) is not None}
    given["model"] = dict(args.model)
    if args.latent_dim is not None:
        given["model"]["latent_dim"] = args.latent_dim
    return training.TrainRequest(
        given=given,
        workdir=args.workdir,
        fresh=args.fresh,
        devices=cli.devices(args),
        data_dir=args.data_dir,
        stream=args.stream,
        checkpoint_every=args.checkpoint_every,
    )


def train_command(args: argparse.Namespace, restart: bool = False) -> int:
    """``restart``: this is the command's own process (not a Python caller of :func:`main`),
    which starts again with huge pages where its images are large enough
    (:func:`aejax.xla.restart_with_huge_pages`)."""
    clock = PhaseClock()
    asked = request(args)
    # The cheap check first: a restarted process (or one without glibc's huge pages) reads
    # no data for the second.
    if restart and xla.huge_pages_would_help() and training.huge_pages_pay(asked):
        xla.restart_with_huge_pages()
    # Until here: the interpreter's start, the imports (twice after a restart), parsing.
    clock.seconds["start_and_imports"] = seconds_since_start()
    result = training.train(asked, clock)
    if not parallel.is_main_process():
        return 0
    history, state, config = result.history, result.state, result.config
    model = history[(run.model_step(history) or len(history)) - 1]  # its kept epoch
    seconds = np.median([h["epoch_seconds"] for h in history])
    spread = f" ± {model['val_loss_sd']:.4f} over {state.members} members" if state.members else ""
    phrase, warning = training.convergence(history)
    steps = (
        f" ({history[-1]['steps']:,} steps of {config.batch_size})"
        if "steps" in history[-1]
        else ""
    )
    print(
        f"{config.arch} on {data.display_name(config.dataset)}: "
        f"{plural.count(len(history), 'epoch')}{steps}, "
        f"{core.param_count(state):,} params, test BCE {model['val_loss']:.4f}{spread}; "
        + (f"{phrase}; " if phrase else "")
        + f"median {seconds:.2f} s/epoch; run in {result.workdir}",
        file=sys.stdout,
    )
    if warning:
        print(warning, file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return cli.run_command(
        lambda: train_command(args, restart=argv is None),
        verbose=args.verbose,
        compile_cache=args.compile_cache,
        interrupted="interrupted: run the same command again to resume from the last checkpoint",
    )


if __name__ == "__main__":
    cli.exit_process(main())
