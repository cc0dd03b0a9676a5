"""Datasets for aejax, read through TensorFlow Datasets, prepared offline when TFDS cannot download.

>>> from aejax import data
>>> images, labels = data.load("mnist", "test")      # numpy: uint8 [10000, 28, 28, 1], int32
>>> images.shape, images.dtype, labels[:3]
((10000, 28, 28, 1), dtype('uint8'), array([2, 0, 4], dtype=int32))

Reading goes through TFDS, from TFDS's ``data_dir`` (``TFDS_DATA_DIR``, default
``~/tensorflow_datasets``). A dataset that is not prepared there is prepared on first use, by
TFDS's own download when its host answers, else from local raw files
(:mod:`aejax.data.prepare`). ``python -m aejax.data prepare mnist fashion_mnist`` does it ahead
of time.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from aejax.data import cache, folder
from aejax.data import prepare as _prepare
from aejax.data._tf import tfds
from aejax.errors import AejaxError


class UnknownSplit(AejaxError):
    """A split the dataset does not have."""


def display_name(name: str) -> str:
    """How dataset ``name`` is named in titles, legends, tables, file and run names: a folder
    or ``.npy`` file by its last component (a ``.npy`` file without its suffix), a TFDS name
    as it is (``emnist/letters``). Reports keep the whole path beside it.

    >>> display_name("mnist"), display_name("emnist/letters")
    ('mnist', 'emnist/letters')
    """
    if not folder.is_folder(name):
        return name
    path = Path(name)
    return path.stem if path.suffix.lower() == ".npy" else path.resolve().name


def default_data_dir() -> str:
    return os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")


def builder(
    name: str,
    data_dir: str | None = None,
    image_size=None,
    channels: int | None = None,
    **_prepare_kwargs,
) -> Any:
    """TFDS's builder for ``name`` (a TFDS dataset, or a folder of images, prepared first:
    :mod:`aejax.data.folder`), checked to hold ``H x W x C`` uint8 images.

    ``image_size`` and ``channels`` are the preprocessing of a folder's images."""
    lib = tfds()
    data_dir = data_dir or default_data_dir()
    if folder.is_folder(name):
        return lib.builder_from_directory(folder.prepared_dir(name, data_dir, image_size, channels))
    if image_size is not None or channels is not None:
        raise AejaxError(
            f"--image-size and --channels convert a folder of images; {name!r} "
            "is a TFDS dataset, read as it is"
        )
    try:
        b = lib.builder(name, data_dir=data_dir)
    except lib.core.registered.DatasetNotFoundError:
        raise AejaxError(
            f"unknown dataset {name!r}: give a TFDS image dataset (mnist, fashion_mnist, "
            "cifar10, ...) or the path of a folder of PNG/JPEG images"
        ) from None
    features = b.info.features
    image = features["image"] if "image" in features else None
    if image is None:
        raise AejaxError(f"dataset {name!r} has no 'image' feature; aejax needs one")
    shape = tuple(image.shape)
    if len(shape) != 3 or None in shape or image.np_dtype != np.uint8:
        raise AejaxError(
            f"dataset {name!r} has {shape} {np.dtype(image.np_dtype).name} images; aejax "
            "takes images of one size, H x W x C uint8"
        )
    return b


def image_shape(name: str, data_dir: str | None = None, **options) -> tuple[int, int, int]:
    """``(H, W, C)`` of ``name``'s images (a folder is prepared first)."""
    data_dir = data_dir or default_data_dir()
    cached = _cached_rows(name, "train", data_dir, options)  # no TensorFlow start-up
    if cached is not None:
        return tuple(cached[0].shape[1:])
    return tuple(builder(name, data_dir, **_split_options(options)[0]).info.features["image"].shape)


# Options that choose what a dataset's images are (a folder's preprocessing), as opposed to
# how a TFDS dataset gets prepared (raw_dir, mnist_pickle, offline).
_IMAGE_OPTIONS = ("image_size", "channels")


def _split_options(kwargs: dict) -> tuple[dict, dict]:
    image = {k: v for k, v in kwargs.items() if k in _IMAGE_OPTIONS}
    return image, {k: v for k, v in kwargs.items() if k not in _IMAGE_OPTIONS}


def ensure_prepared(name: str, data_dir: str | None = None, **prepare_kwargs) -> str:
    """Prepares ``name`` in ``data_dir`` if needed; returns how (see :func:`prepare.prepare`)."""
    image, prepare_kwargs = _split_options(prepare_kwargs)
    return _prepare.prepare(builder(name, data_dir, **image), **prepare_kwargs)


def _prepared_builder(name: str, data_dir: str | None, prepare_kwargs: dict):
    image, prepare_kwargs = _split_options(prepare_kwargs)
    b = builder(name, data_dir, **image)
    _prepare.prepare(b, **prepare_kwargs)
    return b


# A split TFDS would read whole or as one absolute slice: "train", "train[100:]", "test[:-5]".
_SIMPLE_SPLIT = re.compile(r"(\w+)(?:\[(-?\d*):(-?\d*)\])?")


def _read_tfds(b, split: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        batch = tfds().as_numpy(b.as_dataset(split=split, batch_size=-1, shuffle_files=False))
    except (ValueError, KeyError) as e:
        raise UnknownSplit(
            f"bad split {split!r} for {b.name!r} (splits: {', '.join(b.info.splits)}): {e}"
        ) from None
    return batch["image"], _labels(batch)


def _labels(batch: dict) -> np.ndarray:
    """The labels, or zeros for a dataset without them."""
    if "label" in batch:
        return batch["label"].astype(np.int32)
    return np.zeros(len(batch["image"]), np.int32)


def _whole_split(name: str, split: str, data_dir: str, prepare_kwargs) -> tuple | None:
    """A whole split from the decoded-array cache (filled from TFDS on a miss), memory-mapped;
    None where the cache does not apply."""
    if not cache.enabled():
        return None
    if folder.is_folder(name):  # its directory depends on its contents (prepared if new)
        # The directory itself, not TFDS's builder of it: a cached split is then read
        # without TensorFlow's start-up (~4 s of every command on a folder or .npy dataset).
        image = _split_options(prepare_kwargs)[0]
        version_dir = folder.prepared_dir(
            name, data_dir, image.get("image_size"), image.get("channels")
        )
    else:
        version_dir = cache.dataset_dir(data_dir, name)
    cached = cache.load(version_dir, split) if version_dir else None
    if cached is None:
        b = _prepared_builder(name, data_dir, prepare_kwargs)
        version_dir = (
            Path(b.data_dir) if folder.is_folder(name) else cache.dataset_dir(data_dir, name)
        )
        if version_dir is None or split not in b.info.splits:
            return None
        # Batch by batch: the split need not fit in memory (TFDS decodes it in chunks).
        n = b.info.splits[split].num_examples
        shape = tuple(b.info.features["image"].shape)
        ds = b.as_dataset(split=split, shuffle_files=False, batch_size=10_000)
        batches = ((x["image"], _labels(x)) for x in tfds().as_numpy(ds))
        cache.save_batches(version_dir, split, n, shape, batches)
        cached = cache.load(version_dir, split)
    return cached


def _cached_rows(name: str, split: str, data_dir: str, prepare_kwargs: dict) -> tuple | None:
    """``split``'s (images, labels) as memory-mapped views of the decoded-array cache, for a
    whole split or an absolute slice of one; None where the cache does not apply."""
    match = _SIMPLE_SPLIT.fullmatch(split)
    whole = _whole_split(name, match.group(1), data_dir, prepare_kwargs) if match else None
    if whole is None:
        return None
    start, stop = (int(v) if v else None for v in match.group(2, 3))
    return whole[0][start:stop], whole[1][start:stop]


def num_examples(name: str, split: str, data_dir: str | None = None, **prepare_kwargs) -> int:
    """How many examples ``split`` (slices included) holds; prepares the dataset if needed."""
    data_dir = data_dir or default_data_dir()
    cached = _cached_rows(name, split, data_dir, prepare_kwargs)
    if cached is not None:
        return len(cached[1])
    b = _prepared_builder(name, data_dir, prepare_kwargs)
    try:
        return b.info.splits[split].num_examples
    except (ValueError, KeyError) as e:
        raise UnknownSplit(
            f"bad split {split!r} for {name!r} (splits: {', '.join(b.info.splits)}): {e}"
        ) from None


def open_rows(
    name: str, split: str, data_dir: str | None = None, **prepare_kwargs
) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`load`, as read-only memory-mapped views of the decoded copy on disk:
    indexing them reads only those rows, so a split larger than memory can be streamed."""
    data_dir = data_dir or default_data_dir()
    cached = _cached_rows(name, split, data_dir, prepare_kwargs)
    if cached is None:
        raise AejaxError(
            f"{name} {split}: streaming needs the decoded copy on disk, which "
            "AEJAX_NO_CACHE=1 turns off (or the split is not a plain slice)"
        )
    return cached


def load(
    name: str, split: str, data_dir: str | None = None, **prepare_kwargs
) -> tuple[np.ndarray, np.ndarray]:
    """A whole split as ``(images uint8 [N, H, W, C], labels int32 [N])``, in TFDS's order.

    Args:
      name: a TFDS image dataset (``mnist``, ``fashion_mnist``, ``cifar10``, ...) or the
        path of a folder of images (:mod:`aejax.data.folder`).
      split: a TFDS split, slices included: ``train``, ``test``, ``train[55000:]``.
      data_dir: TFDS's data directory; default ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``.
      **prepare_kwargs: ``image_size``, ``channels`` (a folder's preprocessing); ``raw_dir``,
        ``mnist_pickle``, ``offline``, used only when the dataset has to be prepared first.

    Whole splits and their absolute slices are served from a decoded copy after the first
    read (:mod:`aejax.data.cache`); anything else is read by TFDS each time.
    """
    data_dir = data_dir or default_data_dir()
    cached = _cached_rows(name, split, data_dir, prepare_kwargs)
    if cached is not None:
        return np.array(cached[0]), np.array(cached[1])  # copies, not views of the cache
    return _read_tfds(_prepared_builder(name, data_dir, prepare_kwargs), split)


def iterate(
    name: str,
    split: str,
    batch_size: int,
    data_dir: str | None = None,
    shuffle_seed: int | None = None,
    **prepare_kwargs,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Streams ``(images, labels)`` numpy batches, for datasets too large to hold whole.

    The last batch may be smaller. With ``shuffle_seed``, file order and a 10k-example
    buffer are shuffled reproducibly; without it the order is TFDS's, as in :func:`load`.
    """
    b = _prepared_builder(name, data_dir, prepare_kwargs)
    lib = tfds()
    shuffle = shuffle_seed is not None
    read_config = lib.ReadConfig(shuffle_seed=shuffle_seed) if shuffle else None
    ds = b.as_dataset(split=split, shuffle_files=shuffle, read_config=read_config)
    if shuffle:
        ds = ds.shuffle(10_000, seed=shuffle_seed, reshuffle_each_iteration=False)
    for batch in lib.as_numpy(ds.batch(batch_size).prefetch(2)):
        yield batch["image"], _labels(batch)


def split_names(name: str, data_dir: str | None = None, **options) -> list[str]:
    """The splits of ``name`` (a folder is prepared first)."""
    return list(builder(name, data_dir, **_split_options(options)[0]).info.splits)


def info(name: str, data_dir: str | None = None) -> dict:
    """Split sizes of a prepared dataset and the source it was prepared from."""
    b = builder(name, data_dir)
    if not b.is_prepared():
        return {"name": name, "prepared": False, "data_dir": b.data_dir_root}
    metadata = b.info.metadata or {}
    try:
        source = metadata.get("aejax_source")
    except FileNotFoundError:  # prepared by TFDS itself: it wrote no metadata.json
        source = None
    return {
        "name": name,
        "prepared": True,
        "version": str(b.info.version),
        "data_dir": b.data_dir,
        "splits": {split: info.num_examples for split, info in b.info.splits.items()},
        "source": source or {"kind": "tfds-download"},
    }
