"""``--dataset NAME``: a TensorFlow Datasets image dataset (``mnist``, ``fashion_mnist``,
``cifar10``, ...), prepared on first use (by TFDS's download when its host answers, else from
local raw files: :mod:`aejax.data.prepare`) and read from a decoded copy after the first read
(:mod:`aejax.data.cache`), without TensorFlow's start-up."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from aejax.data import cache
from aejax.data import prepare as preparation
from aejax.data._tf import tfds
from aejax.data.sources.base import Source
from aejax.errors import AejaxError

READ_BATCH = 10_000  # rows TFDS decodes at a time while the decoded copy is written

# Whether a dataset that is not prepared and decoded yet is prepared and decoded by a child
# process (``python -m aejax.data prepare``): the commands switch it on (:func:`decode_apart`).
# TFDS needs TensorFlow for that, and TensorFlow keeps hundreds of MB in a process that
# imported it, for the rest of its life (the first runs of experiments/results/own_images.md
# prepare their folders so). The child prepares, writes every split's decoded copy and
# exits; the command reads the copies without TensorFlow. A library user's process is left
# as it is.
_apart = [False]


def decode_apart(on: bool = True) -> None:
    """Prepare and decode datasets in a child process from now on (or, ``on=False``, here)."""
    _apart[0] = on


class TfdsBacked(Source):
    """A source whose data is a prepared TFDS dataset: read through TFDS once, then from
    its decoded copy. Subclasses say how the dataset is found and prepared."""

    def builder(self) -> Any:
        """TFDS's builder of the prepared dataset (cached on the source)."""
        if getattr(self, "_builder", None) is None:
            self._builder = self._make_builder()
        return self._builder

    def _make_builder(self):
        raise NotImplementedError

    def _version_dir(self) -> Path | None:
        """The prepared dataset's directory, if it is prepared, found without TensorFlow."""
        raise NotImplementedError

    def prepare(self) -> str:
        raise NotImplementedError

    def _child_options(self) -> list[str]:
        """This source's options as ``python -m aejax.data prepare`` takes them."""
        options = []
        if self.image_size:
            options += ["--image-size", *map(str, self.image_size)]
        if self.channels:
            options += ["--channels", str(self.channels)]
        for name in ("raw_dir", "mnist_pickle"):
            if self.prepare_options.get(name):
                options += [f"--{name.replace('_', '-')}", str(self.prepare_options[name])]
        return options + (["--offline"] if self.prepare_options.get("offline") else [])

    def _decode_apart(self) -> None:
        """Where :func:`decode_apart` is on and TensorFlow is not loaded here: prepares this
        dataset and writes every split's decoded copy in a child process (once per source).
        If the child fails, the caller goes on here as it would have: the same work, done in
        this process, then raises what went wrong, as it always did."""
        if not _apart[0] or "tensorflow" in sys.modules or not cache.enabled():
            return
        if getattr(self, "_tried_apart", False):
            return
        self._tried_apart = True
        if sys.stderr.isatty():  # the child's progress bar does not reach the terminal
            print(f"preparing {self.label} (once, in a separate process) ...", file=sys.stderr)
        command = [sys.executable, "-m", "aejax.data", "prepare", self.spec,
                   "--data-dir", self.data_dir, *self._child_options()]  # fmt: skip
        subprocess.run(command, capture_output=True, check=False)

    def image_shape(self) -> tuple[int, int, int]:
        cached = self._cached("train")  # no TensorFlow start-up
        if cached is None:
            self._decode_apart()
            cached = self._cached("train")
        if cached is not None:
            return tuple(cached[0].shape[1:])
        return tuple(self.builder().info.features["image"].shape)

    def splits(self) -> list[str]:
        self.prepare()
        return list(self.builder().info.splits)

    def _cached(self, split: str) -> tuple[np.ndarray, np.ndarray] | None:
        version_dir = self._version_dir() if cache.enabled() else None
        return cache.load(cache.key_of(version_dir), split) if version_dir else None

    def whole_split(self, split: str) -> tuple[np.ndarray, np.ndarray] | None:
        if not cache.enabled():
            return None
        cached = self._cached(split)
        if cached is None:
            self._decode_apart()
            cached = self._cached(split)
        if cached is not None:
            return cached
        self.prepare()
        b = self.builder()
        if split not in b.info.splits:
            raise self._unknown(split)
        # Batch by batch: the split need not fit in memory (TFDS decodes it in chunks).
        n = b.info.splits[split].num_examples
        shape = tuple(b.info.features["image"].shape)
        ds = b.as_dataset(split=split, shuffle_files=False, batch_size=READ_BATCH)
        batches = ((x["image"], _labels(x)) for x in tfds().as_numpy(ds))
        cache.save_batches(cache.key_of(Path(b.data_dir)), split, n, shape, batches)
        return self._cached(split)

    def split_size(self, split: str) -> int:
        whole = self.whole_split(split)
        if whole is not None:
            return len(whole[1])
        self.prepare()
        if split not in self.builder().info.splits:
            raise self._unknown(split)
        return self.builder().info.splits[split].num_examples

    def read(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        self.prepare()
        b = self.builder()
        try:
            batch = tfds().as_numpy(b.as_dataset(split=split, batch_size=-1, shuffle_files=False))
        except (ValueError, KeyError) as e:
            raise self._unknown(f"{split}: {e}") from None
        return batch["image"], _labels(batch)


def _labels(batch: dict) -> np.ndarray:
    """The labels, or zeros for a dataset without them."""
    if "label" in batch:
        return batch["label"].astype(np.int32)
    return np.zeros(len(batch["image"]), np.int32)


class TfdsSource(TfdsBacked):
    kind = "tfds"

    def __init__(self, spec, data_dir, image_size=None, channels=None, **prepare_options):
        if image_size is not None or channels is not None:
            raise AejaxError(
                f"--image-size and --channels convert a folder of images; {spec!r} "
                "is a TFDS dataset, read as it is"
            )
        super().__init__(spec, data_dir, **prepare_options)

    @classmethod
    def claims(cls, spec: str) -> bool:
        return True  # whatever no local source claims: TFDS says whether it knows it

    @property
    def converts(self) -> bool:
        return False

    def converted_to(self, shape: tuple[int, int, int]) -> Source:
        has = tuple(self.builder().info.features["image"].shape)
        if has != tuple(shape):
            raise AejaxError(
                f"{self.spec!r} has {'x'.join(map(str, has))} images, the model takes "
                f"{'x'.join(map(str, shape))}: give a dataset of that shape, or a folder of "
                "images (converted to it)"
            )
        return self

    def _make_builder(self):
        lib = tfds()
        try:
            b = lib.builder(self.spec, data_dir=self.data_dir)
        except lib.core.registered.DatasetNotFoundError:
            raise UnknownDataset(
                f"unknown dataset {self.spec!r} (no TFDS dataset, and no such folder or file): "
                "give a TFDS image dataset (mnist, fashion_mnist, cifar10, ...), the path of a "
                "folder of PNG/JPEG images, or a .npy array of images"
            ) from None
        except (AssertionError, ValueError) as e:  # TFDS's word on a version or config
            reason = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            raise UnknownDataset(f"TFDS cannot open {self.spec!r}: {reason}") from None
        features = b.info.features
        image = features["image"] if "image" in features else None
        if image is None:
            raise AejaxError(f"dataset {self.spec!r} has no 'image' feature; aejax needs one")
        shape = tuple(image.shape)
        if len(shape) != 3 or None in shape or image.np_dtype != np.uint8:
            raise AejaxError(
                f"dataset {self.spec!r} has {shape} {np.dtype(image.np_dtype).name} images; "
                "aejax takes images of one size, H x W x C uint8"
            )
        return b

    def _version_dir(self) -> Path | None:
        return cache.dataset_dir(self.data_dir, self.spec)

    def prepare(self) -> str:
        """Prepares the dataset in the data dir if needed; returns how
        (:func:`aejax.data.prepare.prepare`)."""
        if self._how is None:  # once per source: TFDS's check reads the dataset's info
            self._how = preparation.prepare(self.builder(), **self.prepare_options)
            # A builder made before the files were written keeps the info it read then
            # (no splits, no aejax metadata): the next use reads the prepared dataset's.
            self._builder = None
        return self._how

    _how: str | None = None

    def info(self) -> dict:
        """Split sizes of the prepared dataset and the source it was prepared from."""
        b = self.builder()
        if not b.is_prepared():
            return {"name": self.spec, "prepared": False, "data_dir": b.data_dir_root}
        metadata = b.info.metadata or {}
        try:
            source = metadata.get("aejax_source")
        except FileNotFoundError:  # prepared by TFDS itself: it wrote no metadata.json
            source = None
        return {
            "name": self.spec,
            "prepared": True,
            "version": str(b.info.version),
            "data_dir": b.data_dir,
            "splits": {split: info.num_examples for split, info in b.info.splits.items()},
            "source": source or {"kind": "tfds-download"},
        }


class UnknownDataset(AejaxError):
    """A name that is no TFDS dataset, folder or array."""
