"""``python -m aejax.score``: is *this* image out of distribution? Scores new images with a run.

    python -m aejax.score --workdir runs/dense-mnist digit.png more_digits/ batch.npy
    python -m aejax.score --workdir runs/dense-mnist photos/ --out scores.csv --maps maps/
    python -m aejax.score --workdir runs/dense-mnist batch.npy --target-fpr 0.01

INPUTs are PNG/JPEG files, folders of them and ``.npy`` arrays of uint8 images (see
:mod:`aejax.inputs` for how images of another size or channel count are converted). Each image
gets every score (:mod:`aejax.scores`) and

* ``score``: the run's score (the one its threshold is on: ``python -m aejax.eval --score``);
* ``p_value``: the fraction of held-out in-distribution images scoring at least as high
  (conformal: :func:`aejax.thresholds.p_values`);
* ``ood``: 1 when ``score`` is above the threshold: the run's (set by ``aejax.eval``), or one
  set here by ``--threshold-percentile``, ``--target-fpr`` or ``--contamination``.

Writes one CSV row per image to ``--out`` (default: standard output) and a summary to the
terminal; ``--maps DIR`` writes each image, its reconstruction and its anomaly map as a PNG.
The run needs fitted statistics: ``python -m aejax.eval --workdir RUN`` once after training.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

import numpy as np

from aejax import cli, files, scores


def _parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(
        prog="python -m aejax.score",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders, .npy")
    p.add_argument("--out", type=Path, help="CSV file to write (default: standard output)")
    p.add_argument("--maps", type=Path, metavar="DIR", help="write anomaly maps (PNG) here")
    cli.add_detector_args(p, contamination=True)
    cli.add_common_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return cli.run_command(
        lambda: score_command(args), verbose=args.verbose, compile_cache=args.compile_cache
    )


def score_command(args: argparse.Namespace) -> int:
    from aejax import detector, inputs, run

    workdir = args.workdir or run.latest_workdir()
    placement = cli.setup_devices(**cli.device_options(args))
    policy = cli.threshold_policy(args)
    found = detector.Detector.load(workdir, args.step, placement).with_options(args.score, policy)
    # The run's own preprocessing is applied without a word; other conversions are warned.
    silent = {"resize"} if found.config.image_size else set()
    if found.config.channels or _is_folder_run(found.config):
        silent.add("channels")
    given = inputs.read(args.inputs, found.image_shape, silent=frozenset(silent))
    for had, count in given.converted.items():
        print(
            f"warning: {count} image{'s' if count > 1 else ''} of {had} converted to "
            f"{'x'.join(map(str, found.image_shape))} (the model's input) as aejax.inputs "
            "describes; their scores are only as meaningful as that conversion",
            file=sys.stderr,
        )
    batch = placement.batch if placement.size > 1 else None
    out = found.detect(given.images, batch_sharding=batch)
    threshold = found.threshold
    if policy is not None and policy[0] == "contamination":
        from aejax import thresholds

        threshold = thresholds.at_contamination(out["score"], policy[1], score=found.kind)
        out["ood"] = threshold.flags(out["score"])
    _write_csv(args.out, given.sources, out)
    if args.maps is not None:
        _write_maps(args.maps, found, given)
    flagged = int(np.sum(out["ood"]))
    print(
        f"{len(given.sources)} images scored with checkpoint {found.step} of {workdir}: "
        f"{flagged} flagged as OOD ({flagged / len(given.sources):.1%})\n"
        f"threshold: {threshold.describe()}"
        + (f"\nwrote {args.out}" if args.out else "")
        + (f"\nwrote {len(given.sources)} anomaly maps to {args.maps}" if args.maps else ""),
        file=sys.stderr,
    )
    return 0


def _is_folder_run(config) -> bool:
    from aejax.data import folder

    return folder.is_folder(config.dataset)


def _write_csv(path: Path | None, sources: list[str], out: dict) -> None:
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["source", "score", "p_value", "ood", *scores.ALL])
    for i, source in enumerate(sources):
        writer.writerow(
            [
                source,
                f"{out['score'][i]:.9g}",  # 9 digits: float32 round-trips exactly
                f"{out['p_value'][i]:.9g}",
                int(out["ood"][i]),
                *(f"{out[k][i]:.9g}" for k in scores.ALL),
            ]
        )
    if path is None:
        sys.stdout.write(text.getvalue())
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        files.write_text(path, text.getvalue())


def map_name(index: int, source: str) -> str:
    """``00012_digit.png`` for ``some/dir/digit.png``, ``00013_batch-7.png`` for
    ``batch.npy[7]``: numbered, so that two files of one name never overwrite each other."""
    # Only an array's row ends in "]" ("file.npy[7]"); a path may hold brackets of its own.
    path, _, item = source[:-1].rpartition("[") if source.endswith("]") else (source, "", "")
    return f"{index:05d}_{Path(path).stem}{'-' + item if item else ''}.png"


def _write_maps(out_dir: Path, found, given) -> None:
    from aejax import plots

    maps = found.maps(given.images)
    for i, source in enumerate(given.sources):
        plots.anomaly_map(
            given.images[i],
            maps["reconstruction"][i],
            maps["anomaly"][i],
            out_dir / map_name(i, source),
            title=source,
        )


if __name__ == "__main__":
    cli.exit_process(main())
