"""TensorBoard event files of a run: ``tensorboard --logdir runs`` shows every run.

Training writes each epoch's losses and speed, and a grid of test images over their
reconstructions at the epochs :func:`images_due` names and at the last; evaluation adds each set's
score histogram, the AUROCs and the ROC figure. The events go straight into the run's
directory (``events.out.tfevents.*``, one file per command).

The summaries are tensorboardX's (a well-kept, small writer that needs no TensorFlow); the
records are written here, synchronously, rather than by its background thread: a write that
fails (a full disk) is then an ordinary error of the command, one line like any other, not a
traceback from a thread.
"""

from __future__ import annotations

import math
import os
import socket
import time
from pathlib import Path

import numpy as np

IMAGES_EVERY = 5  # epochs between reconstruction grids, at first


def images_due(epoch: int) -> bool:
    """Whether epoch ``epoch`` gets a reconstruction grid: epoch :data:`IMAGES_EVERY`, then
    every 10 epochs up to 100, every 100 up to 1000, and so on (a run of a few hundred
    images trains thousands of short epochs, and a grid costs a reconstruction and a PNG).

    >>> [e for e in range(1, 400) if images_due(e)]
    [5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 200, 300]
    """
    return epoch % max(IMAGES_EVERY, 10 ** int(math.log10(epoch))) == 0


class Board:
    """One TensorBoard event file in ``logdir``, opened on the first write."""

    def __init__(self, logdir: str | Path):
        self.logdir = Path(logdir)
        self._writer = None

    def _write(self, step: int, summaries: list) -> None:
        from tensorboardX import record_writer
        from tensorboardX.proto import event_pb2, summary_pb2

        if self._writer is None:
            self.logdir.mkdir(parents=True, exist_ok=True)
            name = f"events.out.tfevents.{time.time():.0f}.{socket.gethostname()}.{os.getpid()}"
            self._writer = record_writer.RecordWriter(str(self.logdir / name))
            self._writer.write(
                event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2")
                .SerializeToString()
            )  # fmt: skip
        value = [v for s in summaries for v in s.value]
        event = event_pb2.Event(
            wall_time=time.time(), step=step, summary=summary_pb2.Summary(value=value)
        )
        self._writer.write(event.SerializeToString())
        self._writer.flush()

    def scalars(self, step: int, values: dict[str, float]) -> None:
        from tensorboardX import summary

        self._write(step, [summary.scalar(tag, float(v)) for tag, v in values.items()])

    def images(self, step: int, tag: str, image_HxWxC: np.ndarray) -> None:
        """An image in [0, 1] (grey or RGB)."""
        from tensorboardX import summary

        image = np.clip(np.asarray(image_HxWxC, np.float32), 0, 1)
        if image.shape[-1] == 1:
            image = np.repeat(image, 3, axis=-1)
        self._write(step, [summary.image(tag, image, dataformats="HWC")])

    def histograms(self, step: int, values: dict[str, np.ndarray]) -> None:
        from tensorboardX import summary

        self._write(
            step,
            [
                summary.histogram(tag, np.asarray(v, np.float64), "auto")
                for tag, v in values.items()
            ],
        )

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def grid(originals_NxHxWxC: np.ndarray, reconstructions_NxHxWxC: np.ndarray) -> np.ndarray:
    """Originals (uint8) in a row over their reconstructions (in [0, 1]): ``[2H, N W, C]``."""
    top = np.concatenate(list(np.asarray(originals_NxHxWxC, np.float32) / 255.0), axis=1)
    bottom = np.concatenate(list(np.asarray(reconstructions_NxHxWxC, np.float32)), axis=1)
    return np.concatenate([top, bottom], axis=0)
