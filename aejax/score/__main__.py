"""``python -m aejax.score``: is *this* image out of distribution? Scores new images with a run.

    python -m aejax.score --workdir runs/dense-mnist digit.png more_digits/ batch.npy
    python -m aejax.score --workdir runs/dense-mnist photos/ --out scores.csv --maps maps/
    python -m aejax.score --workdir runs/dense-mnist batch.npy --target-fpr 0.01

INPUTs are PNG/JPEG files, folders of them and ``.npy`` arrays of uint8 images (see
:mod:`aejax.inputs` for how images of another size or channel count are converted). Each image
gets every score (:mod:`aejax.ood`) and

* ``score``: the run's detector's score (the one its threshold is on);
* ``p_value``: the fraction of held-out in-distribution images scoring at least as high
  (conformal: :func:`aejax.thresholds.p_values`);
* ``ood``: 1 when ``score`` is above the threshold: the run's detector's, or one set here by
  ``--threshold-percentile``, ``--target-fpr`` or ``--contamination``.

Writes one CSV row per image to ``--out`` (default: standard output) and a summary to the
terminal; ``--maps DIR`` writes each image, its reconstruction and its anomaly map as a PNG.
A run that has no detector yet gets the default one, fitted on its training data and saved
with the checkpoint (``aejax.eval.run_detector``); the summary says which detector
scored.
"""

from __future__ import annotations

import argparse
import sys

from aejax import cli, plural
from aejax import score as scoring


def _parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(
        prog="python -m aejax.score",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders, .npy")
    p.add_argument(
        "--out", type=cli.local_path, help="CSV file to write (default: standard output)"
    )
    p.add_argument(
        "--maps", type=cli.local_path, metavar="DIR", help="write anomaly maps (PNG) here"
    )
    cli.add_detector_args(p, contamination=True)
    cli.add_common_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return cli.run_command(
        lambda: score_command(args), verbose=args.verbose, compile_cache=args.compile_cache
    )


def request(args: argparse.Namespace) -> scoring.ScoreRequest:
    """What the command line asks for, as the library takes it."""
    return scoring.ScoreRequest(
        inputs=tuple(args.inputs),
        workdir=args.workdir,
        step=args.step,
        score=args.score,
        policy=cli.threshold_policy(args),
        out=args.out,
        maps=args.maps,
        devices=cli.devices(args),
    )


def score_command(args: argparse.Namespace) -> int:
    result = scoring.score_images(request(args), sink=None if args.out else sys.stdout)
    if result.restarted:
        print(
            f"note: {args.out}.unfinished, a killed job's rows, was scored anew",
            file=sys.stderr,
        )
    shape = "x".join(map(str, result.detector.image_shape))
    for had, count in result.converted.items():
        print(
            f"warning: {count} image{'s' if count > 1 else ''} of {had} converted to {shape} "
            "(the model's input) as aejax.inputs describes; their scores are only as "
            "meaningful as that conversion",
            file=sys.stderr,
        )
    n, flagged = result.sources, int(result.ood.sum())
    print(
        f"{plural.count(n, 'image')} scored: {flagged} flagged as OOD ({flagged / n:.1%})\n"
        + cli.detector_lines(result.detector, result.runs, result.fitted_now)
        + (f"\nwrote {args.out}" if args.out else "")
        + (f"\nwrote {plural.count(n, 'anomaly map')} to {args.maps}" if args.maps else ""),
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    cli.exit_process(main())
