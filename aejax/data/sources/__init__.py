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

from aejax.data.sources.base import Source, UnknownSplit
from aejax.data.sources.folder import FolderSource
from aejax.data.sources.npy import NpySource
from aejax.data.sources.tfds import TfdsSource, UnknownDataset

SOURCES: tuple[type[Source], ...] = (NpySource, FolderSource, TfdsSource)  # asked in order

__all__ = [
    "SOURCES", "FolderSource", "NpySource", "Source", "TfdsSource", "UnknownDataset",
    "UnknownSplit", "resolve",
]  # fmt: skip


def resolve(spec: str, data_dir: str, **options) -> Source:
    """The source that claims ``spec`` (see the module's table), made from ``options``:
    ``image_size``, ``channels`` and, for a TFDS dataset that is not prepared yet,
    ``raw_dir``, ``mnist_pickle``, ``offline``."""
    spec = str(spec)
    kind = next(cls for cls in SOURCES if cls.claims(spec))
    return kind(spec, data_dir, **options)
