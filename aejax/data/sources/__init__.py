"""Data sources: what ``--dataset NAME`` (or an OOD set's name) can be, each one small file.

============================  =========================================================
``npy`` (:mod:`.npy`)         a ``.npy`` array of uint8 images, split by row hash
``folder`` (:mod:`.folder`)   a folder of PNG/JPEG files (ImageFolder or unlabelled)
``tfds`` (:mod:`.tfds`)       a TensorFlow Datasets image dataset (the rest)
============================  =========================================================

:func:`resolve` asks each in that order whether it claims the name and returns the first
that does, once: the :class:`~aejax.data.sources.base.Source` then gives the data's name (for
configs), label (for workdirs, file names, titles), image shape, splits and rows. A new kind
of source is a module here with a ``Source`` subclass, added to :data:`SOURCES`.
"""

from __future__ import annotations

import os
import re

from aejax.data.sources.base import Source, UnknownSplit
from aejax.data.sources.folder import FolderSource
from aejax.data.sources.npy import NpySource
from aejax.data.sources.tfds import TfdsSource, UnknownDataset

SOURCES: tuple[type[Source], ...] = (NpySource, FolderSource, TfdsSource)  # asked in order

__all__ = [
    "SOURCES", "FolderSource", "NpySource", "Source", "TfdsSource", "UnknownDataset",
    "UnknownSplit", "resolve",
]  # fmt: skip


# A TFDS dataset's name as TFDS writes it: ``name``, ``name/config``, either with
# ``:version`` (``mnist:3.*.*``). What does not read so is taken for a path.
TFDS_NAME = re.compile(r"[a-z][a-z0-9_]*(/[a-z0-9_][a-z0-9_.-]*)?(:\d+(\.(\d+|\*)){2})?")


def resolve(spec: str, data_dir: str, **options) -> Source:
    """The source that claims ``spec`` (see the module's table), made from ``options``:
    ``image_size``, ``channels`` and, for a TFDS dataset that is not prepared yet,
    ``raw_dir``, ``mnist_pickle``, ``offline``. A leading ``~`` is the home folder, as a
    shell would have expanded it; a ``spec`` that names no file or folder and is no TFDS
    name (:data:`TFDS_NAME`) is one error naming the path."""
    spec = os.path.expanduser(str(spec))
    kind = next(cls for cls in SOURCES if cls.claims(spec))
    split = re.fullmatch(rf"(?P<name>{TFDS_NAME.pattern})(?P<split>\[.*\])", spec)
    if kind is TfdsSource and split:
        raise UnknownDataset(
            f"{spec}: give the dataset's name without a split ({split['name']}, not "
            f"{split['split']}): "
            "aejax reads its train and test splits itself (--holdout sizes the held-out part)"
        )
    if kind is TfdsSource and not TFDS_NAME.fullmatch(spec):
        what = "no such file" if os.path.splitext(spec)[1] else "no such folder or file"
        if os.path.exists(spec):
            what = "not a folder of images or a .npy array of images"
        raise UnknownDataset(
            f"{spec}: {what}; give the path of a folder of PNG/JPEG images or of a .npy "
            "array, or a TFDS dataset's name (mnist, fashion_mnist, emnist/letters, ...)"
        )
    return kind(spec, data_dir, **options)
