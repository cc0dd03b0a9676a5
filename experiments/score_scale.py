"""Scoring many images in bounded memory: ``python -m aejax.score`` on 10,000 and 100,000 PNG
files against decoding the same files with Pillow alone, same sitting.

    python experiments/score_scale.py                  # 10k and 100k 28x28 PNGs
    python experiments/score_scale.py --counts 10000

The files: MNIST test images (cycled, each with a few pixels changed so that no two files are
alike) as 28x28 grey PNGs. The run: ``runs/ood/dense-mnist`` (trained and evaluated here when
missing). For each count: Pillow alone (open, decode, ``np.asarray``, one file after
another, in a process of its own: the floor of any tool that reads the files with Pillow)
and the whole scoring command, its wall time and peak RSS; the command streams (a chunk
of :attr:`aejax.Detector.chunk_rows` images decoded at a time), so its peak RSS should not
grow with the count.
The command decodes these files (PNGs in the model's shape) with libspng; it runs a second
time with pyspng hidden, so that every file goes through Pillow, as JPEGs and PNGs of other
shapes or modes do. For the smaller count, its CSV is
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

from aejax import xla

xla.apply_flags()  # XLA:CPU's speed flags, as the commands compute (aejax.xla)

REPEATS = 3  # runs of the scoring command per count
# The scoring command with pyspng hidden: every file decoded by Pillow.
PILLOW_ONLY = (
    "import runpy, sys; sys.modules['pyspng'] = None; "
    "runpy.run_module('aejax.score', run_name='__main__', alter_sys=True)"
)
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


def pillow_alone(folder: Path) -> float:
    """Seconds Pillow takes to decode every file of ``folder``, one after another, in a process
    of its own (its start-up not counted: the floor of any tool that reads the files)."""
    done = subprocess.run(
        [sys.executable, __file__, "--pillow", str(folder)],
        check=True, capture_output=True, text=True, env=START_ENV,
    )  # fmt: skip
    return float(done.stdout)


def _decode_every(folder: Path) -> None:
    paths = sorted(folder.iterdir())
    start = time.perf_counter()
    for path in paths:
        with Image.open(path) as image:
            np.asarray(image)
    print(time.perf_counter() - start)


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
    from aejax import inputs, parallel
    from aejax import score as scoring
    from aejax.detector import Detector

    placement = parallel.setup(parallel.Devices(), splits_well=False, batch_size=1)
    detector = Detector.load(workdir, None, placement)
    given = inputs.read([folder], detector.image_shape)
    expected = scoring.csv_text(given.sources, detector.detect(given.images))
    with open(csv_path, newline="") as f:
        return f.read() == expected


def detect_costs(workdir: Path, images: int = 16384) -> list[dict]:
    """Microseconds per image of :meth:`aejax.Detector.detect` on ``images`` images, cut into
    calls of several sizes (:func:`aejax.core.chunk_rows`): wall time, and the CPU time of
    all the threads, in user mode and in the kernel (page faults of fresh buffers), medians
    of 3 after compilation."""
    from aejax import detector as detection
    from aejax import parallel
    from aejax.core import evaluator

    placement = parallel.setup(parallel.Devices(), splits_well=False, batch_size=1)
    detector = detection.Detector.load(workdir, None, placement)
    x = np.random.default_rng(0).integers(0, 256, (images, *detector.image_shape), np.uint8)
    kept, costs = evaluator.CHUNK_BYTES, []
    try:
        for rows in (256, 512, 1024, 2048):
            evaluator.CHUNK_BYTES = rows * detector.stats.row_bytes()
            assert detector.chunk_rows == rows
            detector.detect(x[:rows])  # compiled
            samples = []
            for _ in range(3):
                cpu, start = os.times(), time.perf_counter()
                detector.detect(x)
                after = os.times()
                samples.append((time.perf_counter() - start, after.user - cpu.user,
                                after.system - cpu.system))  # fmt: skip
            wall, user, system = (statistics.median(s[i] for s in samples) for i in range(3))
            us = {k: round(v * 1e6 / images, 1) for k, v in
                  (("wall_us", wall), ("user_us", user), ("system_us", system))}  # fmt: skip
            costs.append({"rows": rows, **us})
            print(costs[-1], flush=True)
    finally:
        evaluator.CHUNK_BYTES = kept
    return costs


def csv_costs(workdir: Path, images: int = 16384) -> dict:
    """Microseconds per row of the CSV's text: :func:`aejax.score.csv_lines` (one
    %-format per row) against :mod:`csv`'s writer given a string per value (what aejax
    did before), the same text (checked), best of 3."""
    import csv
    import io

    from aejax import ood
    from aejax import score as scoring

    rng = np.random.default_rng(0)
    detected = {k: rng.random(images, dtype=np.float32) for k in ("score", "p_value", *ood.names())}
    detected["ood"] = detected["score"] > 0.5
    sources = [str(workdir / f"{i:06d}.png") for i in range(images)]

    def per_value() -> str:
        text = io.StringIO()
        csv.writer(text).writerows(
            [source, f"{detected['score'][i]:.9g}", f"{detected['p_value'][i]:.9g}",
             int(detected["ood"][i]), *(f"{detected[k][i]:.9g}" for k in ood.names())]
            for i, source in enumerate(sources)
        )  # fmt: skip
        return text.getvalue()

    if scoring.csv_lines(sources, detected) != per_value():
        raise SystemExit("csv_lines and csv's writer differ")
    costs = {}
    for name, make in (("csv_lines_us", lambda: scoring.csv_lines(sources, detected)),
                       ("csv_writer_us", per_value)):  # fmt: skip
        best = min(_seconds(make) for _ in range(3))
        costs[name] = round(best * 1e6 / images, 1)
    print(costs, flush=True)
    return costs


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--counts", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--pillow", type=Path, help=argparse.SUPPRESS)  # pillow_alone's process
    args = p.parse_args()
    if args.pillow:
        _decode_every(args.pillow)
        return 0
    workdir = OOD_RUNS / "dense-mnist"
    train("--arch", "dense", "--dataset", "mnist", workdir=workdir)
    run_aejax("eval", "--workdir", str(workdir), "--ood", "uniform", "--out", "/tmp/score_scale")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.counts:
            folder = Path(tmp) / f"png{n}"
            paths = make_folder(folder, n)
            out = Path(tmp) / f"scores{n}.csv"
            command = [sys.executable, "-m", "aejax.score", "--workdir", str(workdir),
                       str(folder), "--out", str(out)]  # fmt: skip
            # Medians of three runs each, Pillow's and the command's in turn: the machine's
            # timings (Pillow's too) and even the command's peak RSS (the compilation's
            # share) vary between runs.
            pillow_only = [sys.executable, "-c", PILLOW_ONLY, *command[3:]]
            pillows, runs, runs_pillow_only = [], [], []
            for _ in range(REPEATS):
                pillows.append(pillow_alone(folder))
                runs.append(timed(command))
                runs_pillow_only.append(timed(pillow_only))
            pillow = statistics.median(pillows)
            seconds = statistics.median(t for t, _ in runs)
            seconds_pillow_only = statistics.median(t for t, _ in runs_pillow_only)
            rss = int(statistics.median(m for _, m in runs))
            row = {
                "cpu": cpu_name(), "images": n, "pillow_seconds": round(pillow, 2),
                "score_seconds": round(seconds, 2), "score_peak_rss_mb": rss,
                "ratio": round(seconds / pillow, 2),
                "score_pillow_only_seconds": round(seconds_pillow_only, 2),
                "pillow_only_ratio": round(seconds_pillow_only / pillow, 2),
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
    costs, text = detect_costs(workdir), csv_costs(workdir)
    write_results(
        "score_scale",
        {"commands": rows, "detect_rows": costs, "csv": text},
        markdown(rows, costs, text),
    )
    return 0


def markdown(rows: list[dict], costs: list[dict], text: dict) -> list[str]:
    lines = [
        "# Scoring many images in bounded memory",
        "",
        f"Written by `python experiments/score_scale.py` on {rows[0]['cpu']} (2 cores): "
        "`python -m aejax.score --workdir runs/ood/dense-mnist FOLDER --out scores.csv` on "
        "folders of 28x28 PNG files, the whole command (start-up, JAX's compilation, "
        "decoding, scoring, the CSV; median of three runs) against Pillow alone decoding the "
        "same files one after another in a process of its own. The command decodes PNGs "
        "already in the model's shape (8-bit grey here) with libspng (pyspng: the same "
        "pixels, a fraction of Pillow's cost per file); the last columns are the command "
        "with pyspng hidden, every file decoded by Pillow, as JPEGs and PNGs of other shapes "
        "or modes are.",
        "",
        "| PNG files | Pillow alone, s | `aejax.score`, s | ratio | peak RSS of `aejax.score` "
        "| `aejax.score` with Pillow only, s | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['images']:,} | {r['pillow_seconds']:g} | {r['score_seconds']:g} | "
            f"{r['ratio']:.2f}x | {r['score_peak_rss_mb']:,} MB | "
            f"{r['score_pillow_only_seconds']:g} | {r['pillow_only_ratio']:.2f}x |"
        )
    same = [r["csv_same_as_in_memory"] for r in rows if "csv_same_as_in_memory" in r]
    if len(rows) > 1:
        first, last = rows[0], rows[-1]
        per_file = (
            (last["score_peak_rss_mb"] - first["score_peak_rss_mb"])
            * 1024
            / (last["images"] - first["images"])
        )
        pillow = last["pillow_seconds"] - first["pillow_seconds"]
        steady = (last["score_seconds"] - first["score_seconds"]) / pillow
        steady_pillow_only = (
            last["score_pillow_only_seconds"] - first["score_pillow_only_seconds"]
        ) / pillow
        lines += [
            "",
            f"Throughput once started (the {last['images'] - first['images']:,} more files of "
            f"the larger count, which pay no start-up or compilation): `aejax.score` takes "
            f"{steady:.2f}x Pillow's time, {steady_pillow_only:.2f}x with Pillow only.",
        ]
        lines += [
            "",
            f"Memory: {per_file:.1f} KB more per file, for the list of the files' paths (sorted "
            "before scoring, so that the CSV's order is the paths'), never for their images: a "
            "chunk of `Detector.chunk_rows` decoded images is all that is held, and the next "
            "one being decoded beside it.",
        ]
    lines += [
        "",
        f"The CSV of {rows[0]['images']:,} files is byte-for-byte the one of scoring them in "
        f"memory through the Python API: {same[0]}.",
        "",
        "## Images per call",
        "",
        f"`Detector.detect` on {16384:,} images cut into calls of `rows` images, "
        "microseconds per image (medians of 3 after compilation): wall time, and the CPU "
        "time of all threads in user mode and in the kernel. From 1024 rows on, the two "
        "k-NN scores' similarity buffers (20 KB an image each) are over glibc's "
        "threshold for fresh memory maps: every call's page faults show as kernel time, "
        "which the decoding thread of `aejax.score` then waits for.",
        "",
        "| rows per call | wall | user | kernel |",
        "|---|---|---|---|",
        *(
            f"| {c['rows']:,} | {c['wall_us']} | {c['user_us']} | {c['system_us']} |" for c in costs
        ),  # fmt: skip
        "",
        f"aejax uses {_detect_rows()} at 28x28 (`aejax.core.chunk_rows`: the largest "
        "buffer per image within `CHUNK_BYTES`).",
        "",
        "## The CSV's text",
        "",
        f"Microseconds per row (best of 3, {16384:,} rows of every score): "
        f"`aejax.score.csv_lines` (one %-format per row) {text['csv_lines_us']}, csv's "
        f"writer given a string per value {text['csv_writer_us']}, the same text. The rows "
        "are formatted while the GIL is held, beside the decoding thread.",
    ]
    return lines


def _detect_rows() -> int:
    from aejax import core

    return core.chunk_rows((28, 28, 1), row_bytes=4 * 5000)  # the kNN banks' 5000 codes


if __name__ == "__main__":
    sys.exit(main())
