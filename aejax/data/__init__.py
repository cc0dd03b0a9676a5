"""Datasets for aejax: TFDS image datasets (prepared offline when TFDS cannot download),
folders of image files and ``.npy`` arrays, each a source (:mod:`aejax.data.sources`).

>>> from aejax import data
>>> images, labels = data.load("mnist", "test")      # numpy: uint8 [10000, 28, 28, 1], int32
>>> images.shape, images.dtype, labels[:3]
((10000, 28, 28, 1), dtype('uint8'), array([2, 0, 4], dtype=int32))
>>> mnist = data.source("mnist")                     # resolved once: name, shape, splits, rows
>>> mnist.label, mnist.image_shape(), mnist.num_examples("train[59000:]")
('mnist', (28, 28, 1), 1000)

TFDS datasets are read from TFDS's ``data_dir`` (``TFDS_DATA_DIR``, default
``~/tensorflow_datasets``). One that is not prepared there is prepared on first use, by
TFDS's own download when its host answers, else from local raw files
(:mod:`aejax.data.prepare`); ``python -m aejax.data prepare mnist fashion_mnist`` does it
ahead of time. Whole splits are read from a decoded copy after the first read
(:mod:`aejax.data.cache`).

The functions below take a dataset's name and resolve it each call; code that reads one
dataset several times resolves it once with :func:`source` (a folder is walked once so).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np

from aejax.data.sources import (
    FolderSource,
    NpySource,
    Source,
    UnknownDataset,
    UnknownSplit,
    resolve,
)
from aejax.data.sources.base import local_label

__all__ = [
    "Source",
    "UnknownDataset",
    "UnknownSplit",
    "default_data_dir",
    "display_name",
    "ensure_prepared",
    "image_shape",
    "info",
    "is_local",
    "iterate",
    "load",
    "num_examples",
    "open_rows",
    "source",
    "split_names",
]


def default_data_dir() -> str:
    return os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")


def source(name: str, data_dir: str | None = None, **options) -> Source:
    """The source ``name`` names (a ``.npy`` file, a folder of images, a TFDS dataset),
    resolved once.

    Args:
      name: a TFDS image dataset, or the path of a folder of images or of a ``.npy`` array.
      data_dir: TFDS's data directory; default ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``.
      **options: ``image_size`` and ``channels`` (a folder's or array's preprocessing);
        ``raw_dir``, ``mnist_pickle``, ``offline`` (used only when a TFDS dataset has to be
        prepared first).
    """
    return resolve(name, data_dir or default_data_dir(), **options)


def display_name(name: str) -> str:
    """How dataset ``name`` is named in titles, legends, tables, file and run names: a folder
    or ``.npy`` file by its last component (a ``.npy`` file without its suffix), a TFDS name
    as it is (``emnist/letters``). Reports keep the whole path beside it.

    >>> display_name("mnist"), display_name("emnist/letters")
    ('mnist', 'emnist/letters')
    """
    return local_label(name) if is_local(name) else name


def is_local(name: str) -> bool:
    """Whether ``name`` is a local folder or array (whose images are converted to a run's
    shape) rather than a TFDS dataset."""
    return FolderSource.claims(name) or NpySource.claims(name)


def load(
    name: str, split: str, data_dir: str | None = None, **options
) -> tuple[np.ndarray, np.ndarray]:
    """A split as ``(images uint8 [N, H, W, C], labels int32 [N])``, in the source's order.

    Args:
      name: a TFDS image dataset (``mnist``, ``fashion_mnist``, ``cifar10``, ...), the path
        of a folder of images or of a ``.npy`` array (:mod:`aejax.data.sources`).
      split: ``train``, ``test``, or an absolute slice of one: ``train[55000:]``.
      data_dir: TFDS's data directory; default ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``.
      **options: see :func:`source`.
    """
    return source(name, data_dir, **options).load(split)


def image_shape(name: str, data_dir: str | None = None, **options) -> tuple[int, int, int]:
    """``(H, W, C)`` of ``name``'s images (a folder is prepared first).

    Args:
      name: a TFDS image dataset, or the path of a folder of images or of a ``.npy`` array.
      data_dir: TFDS's data directory; default ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``.
      **options: see :func:`source`.
    """
    return source(name, data_dir, **options).image_shape()


def num_examples(name: str, split: str, data_dir: str | None = None, **options) -> int:
    """How many examples ``split`` (slices included) holds; prepares the dataset if needed.

    Args:
      name: a TFDS image dataset, or the path of a folder of images or of a ``.npy`` array.
      split: ``train``, ``test``, or an absolute slice of one: ``train[55000:]``.
      data_dir: TFDS's data directory; default ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``.
      **options: see :func:`source`.
    """
    return source(name, data_dir, **options).num_examples(split)


def open_rows(
    name: str, split: str, data_dir: str | None = None, **options
) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`load`, as read-only memory-mapped views of the decoded copy on disk:
    indexing them reads only those rows, so a split larger than memory can be streamed.

    Args:
      name: a TFDS image dataset, or the path of a folder of images or of a ``.npy`` array.
      split: ``train``, ``test``, or an absolute slice of one: ``train[55000:]``.
      data_dir: TFDS's data directory; default ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``.
      **options: see :func:`source`.
    """
    return source(name, data_dir, **options).open_rows(split)


def iterate(
    name: str,
    split: str,
    batch_size: int,
    data_dir: str | None = None,
    shuffle_seed: int | None = None,
    **options,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Streams ``(images, labels)`` numpy batches, for datasets too large to hold whole.

    Args:
      name: a TFDS image dataset, or the path of a folder of images or of a ``.npy`` array.
      split: ``train``, ``test``, or an absolute slice of one: ``train[55000:]``.
      batch_size: images per batch; the last batch may be smaller.
      data_dir: TFDS's data directory; default ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``.
      shuffle_seed: the batches in a reproducible random order; default :func:`load`'s order.
      **options: see :func:`source`.
    """
    return source(name, data_dir, **options).iterate(split, batch_size, shuffle_seed)


def split_names(name: str, data_dir: str | None = None, **options) -> list[str]:
    """The splits of ``name`` (a folder is prepared first).

    Args:
      name: a TFDS image dataset, or the path of a folder of images or of a ``.npy`` array.
      data_dir: TFDS's data directory; default ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``.
      **options: see :func:`source`.
    """
    return source(name, data_dir, **options).splits()


def ensure_prepared(name: str, data_dir: str | None = None, **options) -> str:
    """Prepares ``name`` in ``data_dir`` if needed; returns how (see
    :func:`aejax.data.prepare.prepare`).

    Args:
      name: a TFDS image dataset, or the path of a folder of images or of a ``.npy`` array.
      data_dir: TFDS's data directory; default ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``.
      **options: see :func:`source`.
    """
    return source(name, data_dir, **options).prepare()


def info(name: str, data_dir: str | None = None) -> dict:
    """Split sizes of a prepared dataset and where it came from.

    Args:
      name: a TFDS image dataset, or the path of a folder of images or of a ``.npy`` array.
      data_dir: TFDS's data directory; default ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``.
    """
    return source(name, data_dir).info()
