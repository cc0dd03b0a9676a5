"""``python -m aejax.export``: a trained run as a self-contained detector that needs only JAX.

    python -m aejax.export --workdir runs/dense-mnist --out detector/

writes ``detector/metadata.json`` and the serialized :mod:`jax.export` artifact it names,
lowered for CPU, CUDA and TPU (``--platforms``); ``--format saved_model`` writes a TensorFlow
SavedModel instead (TF Serving, no JAX needed to run it), ``--format onnx`` an ONNX
model (onnxruntime). :mod:`aejax.export`
says what they compute and how to load them.
"""

from __future__ import annotations

import argparse

from aejax import cli
from aejax import export as exporting


def _parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(
        prog="python -m aejax.export",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--out", type=cli.local_path, required=True, help="directory to write the detector to"
    )
    cli.add_detector_args(p, contamination=False)
    p.add_argument(
        "--platforms",
        default=",".join(exporting.PLATFORMS),
        help=f"comma-separated platforms to lower for (default {','.join(exporting.PLATFORMS)})",
    )
    p.add_argument(
        "--format",
        choices=exporting.FORMATS,
        default="jax",
        help="jax: a jax.export artifact (default); saved_model: a TensorFlow SavedModel; "
        "onnx: an ONNX model (onnxruntime)",
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
    exported = exporting.export(
        exporting.ExportRequest(
            out=args.out,
            workdir=args.workdir,
            step=args.step,
            score=args.score,
            policy=cli.threshold_policy(args),
            platforms=platforms,
            format=args.format,
        )
    )
    lowered = "as ONNX" if args.format == "onnx" else f"for {', '.join(platforms)}"
    print(
        f"exported {lowered}: {', '.join(str(p) for p in exported.written)}\n"
        + cli.detector_lines(exported.detector, exported.runs, exported.fitted_now)
    )
    return 0


if __name__ == "__main__":
    cli.exit_process(main())
