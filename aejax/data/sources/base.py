"""What every data source gives: its name, image shape, splits and rows (see the package)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np

from aejax.errors import AejaxError

TEST_FRACTION = 0.1  # of an unlabelled folder's files (or an array's rows) go to test
# A split read whole or as one absolute slice: "train", "train[100:]", "test[:-5]".
_SIMPLE_SPLIT = re.compile(r"(\w+)(?:\[(-?\d*):(-?\d*)\])?")


class UnknownSplit(AejaxError):
    """A split the dataset does not have."""


class Source:
    """One dataset, resolved once: a subclass says which names it ``claims`` and how its
    splits are read (:meth:`whole_split`, :meth:`read`); the rest is common.

    ``spec`` is the name given (a TFDS name, a path); ``data_dir`` TFDS's data directory
    (where a TFDS dataset is prepared); ``image_size`` and ``channels`` the preprocessing of
    images that are converted (folders, arrays); ``prepare_options`` (``raw_dir``,
    ``mnist_pickle``, ``offline``) are for a TFDS dataset that has to be prepared first.
    """

    kind: ClassVar[str]

    def __init__(
        self,
        spec: str,
        data_dir: str,
        image_size=None,
        channels: int | None = None,
        **prepare_options,
    ):
        self.spec, self.data_dir = str(spec), str(data_dir)
        self.image_size = tuple(image_size) if image_size else None
        self.channels = channels
        self.prepare_options = prepare_options

    @classmethod
    def claims(cls, spec: str) -> bool:
        """Whether ``--dataset spec`` names data of this kind."""
        raise NotImplementedError

    @property
    def name(self) -> str:
        """What a run's config records: the TFDS name, or the local path made absolute."""
        return self.spec

    @property
    def label(self) -> str:
        """Its name in titles, legends, tables, file and run names."""
        return self.spec

    # --- what a source defines ----------------------------------------------------------
    def image_shape(self) -> tuple[int, int, int]:
        raise NotImplementedError

    def splits(self) -> list[str]:
        raise NotImplementedError

    def whole_split(self, split: str) -> tuple[np.ndarray, np.ndarray] | None:
        """A whole split as memory-mapped ``(images, labels)``, None where no decoded copy
        can be kept (the cache turned off); :class:`UnknownSplit` for a split it lacks."""
        raise NotImplementedError

    def read(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """``split`` (slices included) read without the decoded copy."""
        raise NotImplementedError

    def split_size(self, split: str) -> int:
        """How many rows a whole split has (:class:`UnknownSplit` for one it lacks)."""
        raise NotImplementedError

    def converted_to(self, shape: tuple[int, int, int]) -> Source:
        """The same data as ``shape`` images (an OOD set for a model of that shape): a
        folder or array converted, as its images are when a run trains on them (the default
        here); a dataset that is read as it is, checked to have that shape."""
        return type(self)(self.spec, self.data_dir, image_size=shape[:2], channels=shape[2])

    @property
    def converts(self) -> bool:
        """Whether :meth:`converted_to` converts (else it only checks the shape)."""
        return True

    def prepare(self) -> str:
        """Makes the source readable (prepared, decoded); returns how."""
        for split in self.splits():
            self.whole_split(split)
        return "ready"

    def info(self) -> dict:
        return {"name": self.name, "kind": self.kind, "splits": {
            s: self.split_size(s) for s in self.splits()}}  # fmt: skip

    # --- common ---------------------------------------------------------------------------
    def _rows(self, split: str) -> tuple[np.ndarray, np.ndarray] | None:
        """``split``'s rows as memory-mapped views, for a whole split or an absolute slice
        of one; None where the decoded copy does not apply."""
        match = _SIMPLE_SPLIT.fullmatch(split)
        if match is None:
            return None
        whole = self.whole_split(match.group(1))
        if whole is None:
            return None
        start, stop = (int(v) if v else None for v in match.group(2, 3))
        return whole[0][start:stop], whole[1][start:stop]

    def _unknown(self, split: str) -> UnknownSplit:
        return UnknownSplit(
            f"bad split {split!r} for {self.label!r} (splits: {', '.join(self.splits())})"
        )

    def load(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """``split`` (``train``, ``test``, a slice ``train[55000:]``) as ``(images uint8
        [N, H, W, C], labels int32 [N])``, copies in memory."""
        rows = self._rows(split)
        if rows is not None:
            return np.array(rows[0]), np.array(rows[1])
        return self.read(split)

    def load_all(self) -> tuple[np.ndarray, np.ndarray]:
        """Every split's images and labels, one after the other."""
        parts = [self.load(split) for split in self.splits()]
        return np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts])

    def open_rows(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`load`, as read-only memory-mapped views of the decoded copy on disk:
        indexing them reads only those rows, so a split larger than memory can stream."""
        rows = self._rows(split)
        if rows is None:
            raise AejaxError(
                f"{self.spec} {split}: streaming needs the decoded copy on disk, which "
                "AEJAX_NO_CACHE=1 turns off (or the split is not a plain slice)"
            )
        return rows

    def num_examples(self, split: str) -> int:
        """How many rows ``split`` (slices included) has."""
        match = _SIMPLE_SPLIT.fullmatch(split)
        if match and not match.group(2) and not match.group(3):
            return self.split_size(split)
        rows = self._rows(split)
        return len(rows[1]) if rows is not None else len(self.read(split)[1])

    def iterate(
        self, split: str, batch_size: int, shuffle_seed: int | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(images, labels)`` batches of ``batch_size`` images of ``split`` (in order;
        with ``shuffle_seed``, in a reproducible random order), the last one smaller: from
        the decoded copy's memory maps, so the split need not fit in memory (without the
        copy, it is read whole)."""
        images, labels = self._rows(split) or self.read(split)
        order = np.arange(len(labels))
        if shuffle_seed is not None:
            order = np.random.default_rng(shuffle_seed).permutation(len(labels))
        for i in range(0, len(order), batch_size):
            rows = order[i : i + batch_size]
            yield np.asarray(images[rows]), np.asarray(labels[rows])


def hash_position(key: str) -> float:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64


def split_by_hash(items: list, key) -> dict[str, list]:
    """Unlabelled ``items`` split into ``{split: [item, ...]}``: to ``test`` where the hash of
    ``key(item)`` falls in the first :data:`TEST_FRACTION` of the range (one item at least,
    when there are two), else to ``train``; in their order. Deterministic, and adding items
    never moves the others."""
    position = [hash_position(key(item)) for item in items]
    test = [p < TEST_FRACTION for p in position]
    if not any(test) and len(items) > 1:  # a small set still gets one test item
        test[position.index(min(position))] = True
    splits = {
        "train": [item for item, t in zip(items, test, strict=True) if not t],
        "test": [item for item, t in zip(items, test, strict=True) if t],
    }
    return {s: rows for s, rows in splits.items() if rows}


def local_label(path: str) -> str:
    """A local dataset's label: a folder's last component, a file's stem."""
    path = Path(path)
    return path.stem if path.is_file() else path.resolve().name
