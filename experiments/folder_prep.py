"""Preparing a folder of many image files: how close to reading and decoding them it runs.

    python experiments/folder_prep.py --files 100000     # writes experiments/results/folder_prep.*

Writes N small PNGs (32x32 RGB, procedurally drawn) into a temporary folder, then times, one
after the other on the same (page-cached) files: reading every file's bytes; reading and
decoding each with Pillow (the floor for any per-file decoder in Python); and aejax's
preparation of the folder into a TFDS dataset (``aejax.data.source(FOLDER).prepare()``: walk,
fingerprint, decode, encode, write). The ratio says what preparation costs beyond decoding.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import cpu_name, write_results
from PIL import Image

from aejax import xla

xla.apply_flags()  # XLA:CPU's speed flags, as the commands compute (aejax.xla)


def write_files(root: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:32, :32]
    for i in range(n):
        cy, cx, r = rng.integers(8, 24), rng.integers(8, 24), rng.integers(3, 10)
        colour = rng.integers(0, 256, 3, dtype=np.uint8)
        image = np.zeros((32, 32, 3), np.uint8)
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = colour
        sub = root / f"{i % 100:02d}"
        sub.mkdir(exist_ok=True)
        Image.fromarray(image).save(sub / f"{i:06d}.png")


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--files", type=int, default=100_000)
    args = p.parse_args()
    from aejax import data
    from aejax.data import images

    with tempfile.TemporaryDirectory() as tmp:
        root, data_dir = Path(tmp) / "images", Path(tmp) / "tfds"
        root.mkdir()
        write_seconds = timed(lambda: write_files(root, args.files))
        files = images.image_files(root)
        size = sum(f.stat().st_size for f in files)
        read = timed(lambda: [f.read_bytes() for f in files])

        def decode():
            for f in files:
                with Image.open(f) as image:
                    np.asarray(image.convert("RGB"))

        decode_seconds = timed(decode)
        prepare = timed(lambda: data.source(str(root), str(data_dir)).prepare())
        again = timed(lambda: data.source(str(root), str(data_dir)).prepare())  # walk only
    row = {
        "files": args.files,
        "megabytes": round(size / 1e6, 1),
        "cpu": cpu_name(),
        "write_s": round(write_seconds, 1),
        "read_s": round(read, 2),
        "decode_s": round(decode_seconds, 2),
        "prepare_s": round(prepare, 2),
        "prepared_again_s": round(again, 2),
        "prepare_files_per_s": round(args.files / prepare),
        "prepare_over_decode": round(prepare / decode_seconds, 2),
    }
    print(row)
    lines = [
        "# Preparing a folder of image files",
        "",
        f"Written by `python experiments/folder_prep.py --files {args.files}`: "
        f"{args.files:,} PNGs of 32x32 RGB ({row['megabytes']} MB) in 100 subfolders, "
        f"page-cached, on {row['cpu']}; seconds, one step after the other.",
        "",
        "| read every file | + decode each (Pillow) | aejax prepares the folder | "
        "files/s | prepare / decode | found prepared (walk + fingerprint) |",
        "|---|---|---|---|---|---|",
        f"| {row['read_s']} | {row['decode_s']} | {row['prepare_s']} | "
        f"{row['prepare_files_per_s']:,} | {row['prepare_over_decode']} | "
        f"{row['prepared_again_s']} |",
    ]
    write_results("folder_prep", [row], lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
