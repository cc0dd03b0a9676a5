"""``--dataset PATH.npy``: a NumPy array of uint8 images ``[N, H, W]`` or ``[N, H, W, C]``
(C = 1, 3 or 4; read memory-mapped, without pickles), unlabelled.

Its rows are split as an unlabelled folder's files are, by the hash of each row's index
(:func:`aejax.data.sources.base.split_by_hash`): about a tenth to ``test``, the rest to
``train``, in their order. ``--image-size`` and ``--channels`` convert the rows as image
files are converted (:func:`aejax.data.images.conformed`); by default they keep their size,
and 4 channels become RGB. Each split is copied once into the decoded-array cache (converted
where asked, never through an image codec) and read memory-mapped from there.
``AutoencoderDetector.fit`` saves an in-memory array as such a file beside its run.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from aejax.data import cache, images
from aejax.data.sources.base import Source, local_label, split_by_hash

CHUNK_ROWS = 10_000  # rows converted and written at a time: any N in bounded memory


class NpySource(Source):
    kind = "npy"

    def __init__(self, spec, data_dir, image_size=None, channels=None, **prepare_options):
        super().__init__(Path(spec).resolve(), data_dir, image_size, channels)
        self.array = images.read_npy(Path(self.spec))
        self.rows = split_by_hash(list(range(len(self.array))), str)

    @classmethod
    def claims(cls, spec: str) -> bool:
        return str(spec).lower().endswith(".npy") and os.path.isfile(spec)

    @property
    def label(self) -> str:
        return local_label(self.spec)

    def image_shape(self) -> tuple[int, int, int]:
        has = self.array.shape[-1]
        size = self.image_size or tuple(self.array.shape[1:3])
        return (*size, self.channels or (has if has in (1, 3) else 3))

    def splits(self) -> list[str]:
        return list(self.rows)

    def split_size(self, split: str) -> int:
        if split not in self.rows:
            raise self._unknown(split)
        return len(self.rows[split])

    def _key(self) -> cache.Key:
        stat = os.stat(self.spec)
        stamp = f"{self.spec}:{stat.st_size}:{stat.st_mtime_ns}:{self.image_shape()}"
        folder = f"npy-{Path(self.spec).stem}-{cache.path_digest(self.spec)}"
        return cache.Key(folder, hashlib.sha256(stamp.encode()).hexdigest()[:20])

    def _batches(self, split: str):
        """``(images, labels)`` of ``split`` in chunks, converted to :meth:`image_shape`."""
        rows, shape = np.asarray(self.rows[split]), self.image_shape()
        for i in range(0, len(rows), CHUNK_ROWS):
            chunk = self.array[rows[i : i + CHUNK_ROWS]]
            if chunk.shape[1:] != shape:
                chunk = np.stack([images.conformed(row, shape) for row in chunk])
            yield chunk, np.zeros(len(chunk), np.int32)

    def whole_split(self, split: str) -> tuple[np.ndarray, np.ndarray] | None:
        if split not in self.rows:
            raise self._unknown(split)
        if not cache.enabled():
            return None
        key = self._key()
        cached = cache.load(key, split)
        if cached is None:
            n = len(self.rows[split])
            cache.save_batches(key, split, n, self.image_shape(), self._batches(split))
            cached = cache.load(key, split)
        return cached

    def read(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        name, _, rest = split.partition("[")
        if name not in self.rows:
            raise self._unknown(name)
        parts = list(self._batches(name))
        whole_images = np.concatenate([x for x, _ in parts])
        whole_labels = np.concatenate([y for _, y in parts])
        if not rest:
            return whole_images, whole_labels
        start, stop = (int(v) if v else None for v in rest.rstrip("]").split(":"))
        return whole_images[start:stop], whole_labels[start:stop]

    def info(self) -> dict:
        return {"name": self.spec, "kind": self.kind, "prepared": True,
                "splits": {s: len(r) for s, r in self.rows.items()}}  # fmt: skip
