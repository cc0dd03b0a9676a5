"""Which reader feeds a streamed epoch: aejax's memory-mapped decoded copy, tf.data, or grain.

    python experiments/stream_readers.py      # writes experiments/results/stream_readers.*

Issue 16 asked for streaming "grain over a TFDS data source, or tf.data: choose by
measurement". This times, in one process and one sitting, how long each reader takes to hand
over one epoch of MNIST's 60k training images as shuffled uint8 batches of 256 (host work
only: no training step), the median of ``--rounds`` epochs after a first warm-up epoch:

* ``memmap``: what ``aejax.train --stream`` does: rows gathered from the memory-mapped
  decoded copy (:mod:`aejax.data.cache`), one chunk of steps at a time, in an exact
  per-epoch permutation (:func:`aejax.core.epoch_order`);
* ``tf.data``: :func:`aejax.data.iterate`: TFDS's TFRecord files, PNG-decoded by TensorFlow,
  a 10k-example shuffle buffer (not an exact permutation);
* ``grain (TFDS array_record)``: ``grain.MapDataset`` over ``tfds.data_source`` (the
  dataset prepared again as array_record in a temporary data dir), an exact permutation,
  each example decoded on access; read by 2 threads;
* ``grain (memmap rows)``: the same grain pipeline over the decoded copy: grain's own
  per-example cost without decoding.

Grain is not an aejax dependency; the grain rows are measured when it is importable
(``pip install grain`` in another environment, or ``PYTHONPATH`` to a ``--target`` install).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time

import jax
import numpy as np
from common import cpu_name, write_results

from aejax import core, data, xla
from aejax.data import prepare
from aejax.data._tf import tfds

xla.apply_flags()  # XLA:CPU's speed flags, as the commands compute (aejax.xla)

BATCH = 256


def epoch_seconds(read_epoch, rounds: int) -> float:
    read_epoch(0)  # warm-up: first reads, compilation of tf.data's graph, page cache
    times = []
    for r in range(1, rounds + 1):
        start = time.perf_counter()
        read_epoch(r)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def memmap_reader(images_NxHxWxC: np.ndarray):
    def read_epoch(r: int) -> None:
        order_SxB = core.epoch_order(jax.random.key(r), len(images_NxHxWxC), BATCH)
        per_call = core.steps_per_call(len(order_SxB))
        for chunk in order_SxB.reshape(-1, per_call, BATCH):
            core._host_chunk(images_NxHxWxC, chunk, None)[0].block_until_ready()

    return read_epoch


def tf_data_reader():
    def read_epoch(r: int) -> None:
        for _ in data.iterate("mnist", "train", BATCH, shuffle_seed=r):
            pass

    return read_epoch


def grain_reader(grain, source):
    def read_epoch(r: int) -> None:
        ds = grain.MapDataset.source(source).shuffle(seed=r).map(_image).batch(BATCH)
        for _ in ds.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=4)):
            pass

    return read_epoch


def _image(example):
    return example["image"] if isinstance(example, dict) else example


def array_record_source(data_dir: str):
    """MNIST's train split as a TFDS data source, prepared as array_record from local files."""
    builder = tfds().builder("mnist", data_dir=data_dir, file_format="array_record")
    prepare.prepare(builder, offline=True)
    return tfds().data_source("mnist", split="train", data_dir=data_dir)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    images, _ = data.open_rows("mnist", "train")
    readers = {"memmap": memmap_reader(images), "tf.data": tf_data_reader()}
    try:
        import grain
    except ImportError:
        grain = None
        print("grain is not importable: its rows are left out", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        if grain is not None:
            readers["grain (TFDS array_record)"] = grain_reader(grain, array_record_source(tmp))
            readers["grain (memmap rows)"] = grain_reader(grain, images)
        rows = []
        for name, read_epoch in readers.items():
            seconds = epoch_seconds(read_epoch, args.rounds)
            rows.append({"reader": name, "epoch_s": round(seconds, 3),
                         "images_per_s": round(len(images) / seconds)})  # fmt: skip
            print(rows[-1], flush=True)
    base = rows[0]["epoch_s"]
    for row in rows:
        row["over_memmap"] = round(row["epoch_s"] / base, 1)
        row["cpu"] = cpu_name()
        row["grain"] = getattr(grain, "__version__", None)
    lines = [
        "# Which reader feeds a streamed epoch",
        "",
        f"Written by `python experiments/stream_readers.py --rounds {args.rounds}` on "
        f"{rows[0]['cpu']} (grain {rows[0]['grain']}): one epoch of MNIST's 60k training "
        f"images as shuffled uint8 batches of {BATCH}, host work only, median of "
        f"{args.rounds} epochs after a warm-up. For scale: a dense training epoch takes "
        "~0.25 s on this kind of machine (streaming.md), a conv epoch ~19 s.",
        "",
        "| reader | s/epoch | images/s | / memmap |",
        "|---|---|---|---|",
        *(
            f"| {r['reader']} | {r['epoch_s']} | {r['images_per_s']:,} | {r['over_memmap']} |"
            for r in rows
        ),
    ]
    write_results("stream_readers", rows, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
