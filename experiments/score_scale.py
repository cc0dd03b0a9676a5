"""Scoring many images in bounded memory: ``python -m aejax.score`` on 10,000 and 100,000 PNG
files against decoding the same files with Pillow alone, same sitting.

    python experiments/score_scale.py                  # 10k and 100k 28x28 PNGs
    python experiments/score_scale.py --counts 10000

The files: MNIST test images (cycled, each with a few pixels changed so that no two files are
alike) as 28x28 grey PNGs. The run: ``runs/ood/dense-mnist`` (trained and evaluated here when
missing). For each count: Pillow alone (open, decode, ``np.asarray``, one file after
another, in this process: the floor of any tool that reads the files) and the whole scoring
command, its wall time and peak RSS; the command streams (``DETECT_ROWS`` images decoded at a
time), so its peak RSS should not grow with the count. For the smaller count, its CSV is
checked against scoring the same images in memory through the Python API
(:func:`aejax.inputs.read`, :meth:`aejax.Detector.detect`) on one device, as the command runs.
Writes experiments/results/score_scale.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import OOD_RUNS, ROOT, cpu_name, run_aejax, train, write_results
from PIL import Image

REPEATS = 3  # runs of the scoring command per count
START_ENV = dict(os.environ)


def make_folder(folder: Path, n: int) -> list[Path]:
    from aejax import data

    paths = [folder / f"{i:06d}.png" for i in range(n)]
    if folder.is_dir() and len(list(folder.iterdir())) == n:
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    digits = data.load("mnist", "test")[0][..., 0]
    rng = np.random.default_rng(0)
    for i, path in enumerate(paths):
        image = digits[i % len(digits)].copy()
        image[rng.integers(0, 28, 3), rng.integers(0, 28, 3)] = rng.integers(0, 256, 3)
        Image.fromarray(image).save(path)
    return paths


def pillow_alone(paths: list[Path]) -> float:
    start = time.perf_counter()
    for path in paths:
        with Image.open(path) as image:
            np.asarray(image)
    return time.perf_counter() - start


def timed(command: list[str]) -> tuple[float, int]:
    """``(wall seconds, peak RSS in MB)`` of one whole command."""
    start = time.perf_counter()
    # The environment this script started with: aejax, once imported here, sets XLA's
    # flags in os.environ, and the command must set its own.
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, env=START_ENV)
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{' '.join(command)} failed")
    return time.perf_counter() - start, usage.ru_maxrss // 1024


def same_as_in_memory(workdir: Path, folder: Path, csv_path: Path) -> bool:
    from aejax import inputs, parallel, scoring
    from aejax.detector import Detector

    placement = parallel.setup(parallel.Devices(), splits_well=False, batch_size=1)
    detector = Detector.load(workdir, None, placement)
    given = inputs.read([folder], detector.image_shape)
    expected = scoring.csv_text(given.sources, detector.detect(given.images))
    with open(csv_path, newline="") as f:
        return f.read() == expected


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--counts", type=int, nargs="+", default=[10_000, 100_000])
    args = p.parse_args()
    workdir = OOD_RUNS / "dense-mnist"
    train("--arch", "dense", "--dataset", "mnist", workdir=workdir)
    run_aejax("eval", "--workdir", str(workdir), "--ood", "uniform", "--out", "/tmp/score_scale")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.counts:
            folder = Path(tmp) / f"png{n}"
            paths = make_folder(folder, n)
            pillow = pillow_alone(paths)
            out = Path(tmp) / f"scores{n}.csv"
            command = [sys.executable, "-m", "aejax.score", "--workdir", str(workdir),
                       str(folder), "--out", str(out)]  # fmt: skip
            # Medians of three runs each: the machine's timings and even its peak RSS (the
            # compilation's share) vary between runs.
            runs = [timed(command) for _ in range(REPEATS)]
            seconds = statistics.median(t for t, _ in runs)
            rss = int(statistics.median(m for _, m in runs))
            row = {
                "cpu": cpu_name(), "images": n, "pillow_seconds": round(pillow, 2),
                "score_seconds": round(seconds, 2), "score_peak_rss_mb": rss,
                "ratio": round(seconds / pillow, 2),
            }  # fmt: skip
            rows.append(row)
            print(row, flush=True)
            if n != min(args.counts):
                for path in paths:  # the next count's files take the disk
                    path.unlink()
        # Checked last: scoring in this process makes it large, and a command started
        # after that counts this process's pages in its own peak RSS (fork, then exec).
        n = min(args.counts)
        same = same_as_in_memory(workdir, Path(tmp) / f"png{n}", Path(tmp) / f"scores{n}.csv")
        next(r for r in rows if r["images"] == n)["csv_same_as_in_memory"] = same
    write_results("score_scale", rows, markdown(rows))
    return 0


def markdown(rows: list[dict]) -> list[str]:
    lines = [
        "# Scoring many images in bounded memory",
        "",
        f"Written by `python experiments/score_scale.py` on {rows[0]['cpu']} (2 cores): "
        "`python -m aejax.score --workdir runs/ood/dense-mnist FOLDER --out scores.csv` on "
        "folders of 28x28 PNG files, the whole command (start-up, JAX's compilation, "
        "decoding, scoring, the CSV; median of three runs) against Pillow alone decoding the "
        "same files one after another in one process.",
        "",
        "| PNG files | Pillow alone, s | `aejax.score`, s | ratio | peak RSS of `aejax.score` |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['images']:,} | {r['pillow_seconds']:g} | {r['score_seconds']:g} | "
            f"{r['ratio']:.2f}x | {r['score_peak_rss_mb']:,} MB |"
        )
    same = [r["csv_same_as_in_memory"] for r in rows if "csv_same_as_in_memory" in r]
    if len(rows) > 1:
        first, last = rows[0], rows[-1]
        per_file = (
            (last["score_peak_rss_mb"] - first["score_peak_rss_mb"])
            * 1024
            / (last["images"] - first["images"])
        )
        steady = (last["score_seconds"] - first["score_seconds"]) / (
            last["pillow_seconds"] - first["pillow_seconds"]
        )
        lines += [
            "",
            f"Throughput once started (the {last['images'] - first['images']:,} more files of "
            f"the larger count, which pay no start-up or compilation): `aejax.score` takes "
            f"{steady:.2f}x Pillow's time.",
        ]
        lines += [
            "",
            f"Memory: {per_file:.1f} KB more per file, for the list of the files' paths (sorted "
            "before scoring, so that the CSV's order is the paths'), never for their images: a "
            "chunk of `DETECT_ROWS` decoded images is all that is held, and the next one being "
            "decoded beside it.",
        ]
    lines += [
        "",
        f"The CSV of {rows[0]['images']:,} files is byte-for-byte the one of scoring them in "
        f"memory through the Python API: {same[0]}.",
    ]
    return lines


if __name__ == "__main__":
    sys.exit(main())
