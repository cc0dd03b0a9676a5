"""``python -m aejax.export``: a trained run as a self-contained detector that needs only JAX.

    python -m aejax.export --workdir runs/dense-mnist --out detector/

writes ``detector/metadata.json`` and the serialized :mod:`jax.export` artifact it names,
lowered for CPU, CUDA and TPU (``--platforms``); :mod:`aejax.exporting` says what it computes
and how to load it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from aejax import cli, exporting


def _parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(
        prog="python -m aejax.export",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", type=Path, required=True, help="directory to write the detector to")
    cli.add_detector_args(p, contamination=False)
    p.add_argument(
        "--platforms",
        default=",".join(exporting.PLATFORMS),
        help=f"comma-separated platforms to lower for (default {','.join(exporting.PLATFORMS)})",
    )
    p.add_argument("--verbose", action="store_true", help="show the libraries' log lines")
    cli.add_compile_cache_arg(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return cli.run_command(
        lambda: export_command(args), verbose=args.verbose, compile_cache=args.compile_cache
    )


def export_command(args: argparse.Namespace) -> int:
    platforms = tuple(p.strip() for p in args.platforms.split(",") if p.strip())
    detector, written = exporting.export(
        exporting.ExportRequest(
            out=args.out,
            workdir=args.workdir,
            step=args.step,
            score=args.score,
            policy=cli.threshold_policy(args),
            platforms=platforms,
        )
    )
    print(
        f"exported checkpoint {detector.step} of {detector.workdir} for {', '.join(platforms)}: "
        f"{', '.join(str(p) for p in written)}\nthreshold: {detector.threshold.describe()}"
    )
    return 0


if __name__ == "__main__":
    cli.exit_process(main())
