"""``python -m aejax.eval``: how well a trained autoencoder tells its data from other data.

    python -m aejax.eval --ood fashion_mnist                  # the most recent run
    python -m aejax.eval --workdir runs/conv-fashion_mnist --ood mnist,uniform,black

Scores every image (higher = more anomalous; ``--score``, see :mod:`aejax.ood`) on the run's
own test split, on held-out training images (the run's ``--holdout`` slice, which sets the
detection threshold and the scores' fitted statistics), and on each OOD set; reports AUROC,
AUPR (OOD positive and in-distribution positive), FPR at 95% TPR and the detection rate at
the threshold, with OOD as the positive class. Writes report.json, scores.csv and figures to
``--out`` (default ``<workdir>/eval/``). From Python: :mod:`aejax.eval`.

It evaluates the run's detector (the score and threshold ``aejax.score`` and ``aejax.export``
use; the default one is fitted and saved where the run has none). Another ``--score`` or
threshold is evaluated in memory; ``--save-detector`` makes it the run's detector.
"""

from __future__ import annotations

import argparse
import sys

from aejax import cli, ood, parallel, run
from aejax import eval as evaluation
from aejax.errors import AejaxError
from aejax.eval import EvalConfig, report
from aejax.ood import synthetic


def _parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(
        prog="python -m aejax.eval",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--workdir",
        type=cli.local_path,
        help="a run of aejax.train (default: the most recent one under runs/)",
    )
    p.add_argument(
        "--step",
        type=cli.integer(1, words=("latest",), noun="an epoch number"),
        default="latest",
        help="checkpoint (epoch) to evaluate (default latest)",
    )
    p.add_argument(
        "--ood",
        help="comma-separated OOD sets: TFDS datasets, folders of images, .npy arrays, or "
        f"{', '.join(synthetic.SYNTHETIC)} (default: the other of mnist/fashion_mnist)",
    )
    p.add_argument(
        "--score",
        choices=ood.names(),
        help=f"OOD score to evaluate (default: the run's detector's, {ood.DEFAULT} unless "
        "saved otherwise; see aejax.ood)",
    )
    p.add_argument(
        "--save-detector",
        action="store_true",
        help="make the evaluated score and threshold the run's detector, the one aejax.score "
        "and aejax.export use (without it, evaluating changes nothing)",
    )
    p.add_argument("--out", type=cli.local_path, help="output directory (default <workdir>/eval)")
    p.add_argument("--refit", action="store_true", help="fit the scores' statistics anew")
    p.add_argument(
        "--seed", type=cli.integer(0, 2**32 - 1), default=0, help="seed of the synthetic OOD sets"
    )
    p.add_argument("--data-dir", help="TFDS data dir (default $TFDS_DATA_DIR)")
    cli.add_threshold_args(p, contamination=False)  # default: the run's detector's
    cli.add_common_args(p)
    return p


def config(args: argparse.Namespace) -> EvalConfig:
    """What the command line asks for, as the library takes it."""
    return EvalConfig(
        ood=_ood_names(args.ood),
        score=args.score,
        step=args.step,
        threshold=cli.threshold_policy(args),
        seed=args.seed,
        refit=args.refit,
        save_detector=args.save_detector,
    )


def evaluate_command(args: argparse.Namespace) -> int:
    if args.workdir is None:
        args.workdir = run.latest_workdir()
        print(
            f"evaluating {args.workdir} (the most recently trained run; --workdir to choose)",
            file=sys.stderr,
        )
    placement = evaluation.placement_for(cli.devices(args), [args.workdir])
    result = evaluation.evaluate(
        args.workdir, config(args), placement=placement, data_dir=args.data_dir
    )
    if not parallel.is_main_process():  # process 0 writes the report
        return 0
    out = args.out or args.workdir / "eval"
    result.report["devices"] = parallel.describe(placement)
    written = report.write(result, out)
    print(report.format_table(result.report, args.workdir))
    print(report.format_detector(result.report))
    print(f"wrote {', '.join(written)} to {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return cli.run_command(
        lambda: evaluate_command(args), verbose=args.verbose, compile_cache=args.compile_cache
    )


def _ood_names(arg: str | None) -> tuple[str, ...]:
    if arg is None:
        return ()
    names = tuple(n.strip() for n in arg.split(",") if n.strip())
    if not names:
        raise AejaxError("--ood names no set")
    return names


if __name__ == "__main__":
    cli.exit_process(main())
