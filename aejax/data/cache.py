"""Decoded copies of whole splits, as .npy files, so that a read after the first one needs
neither TensorFlow's start-up nor PNG decoding, each seconds for MNIST
(experiments/results/stream_readers.md).

A copy is filed under a :class:`Key`: a folder name for its data, and a stamp that changes
when the data does (a prepared TFDS dataset's: ``dataset_info.json``'s bytes and every
file's name, size and mtime; a ``.npy`` source's: the file's and the preprocessing's), so
that re-prepared or replaced data leaves old copies unused. Written atomically (temporary
file, then rename). ``AEJAX_NO_CACHE=1`` turns it off; the directory is ``$AEJAX_CACHE_DIR``
or ``~/.cache/aejax/arrays``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import numpy as np

from aejax import files


@dataclasses.dataclass(frozen=True)
class Key:
    """Where a source's copies live (``folder``) and which data they copy (``stamp``)."""

    folder: str
    stamp: str


def enabled() -> bool:
    return os.environ.get("AEJAX_NO_CACHE", "") in ("", "0")


def cache_root() -> Path:
    return Path(os.environ.get("AEJAX_CACHE_DIR", files.user_cache_dir("arrays")))


def dataset_dir(data_dir: str, name: str) -> Path | None:
    """The one prepared version directory of TFDS dataset ``name`` (None if none, or
    several)."""
    versions = [d for d in (Path(data_dir) / name).glob("*") if (d / "dataset_info.json").is_file()]
    return versions[0] if len(versions) == 1 else None


def path_digest(path: str | Path) -> str:
    """A short digest of a path, to tell apart data of one name in different places."""
    return hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:12]


def key_of(version_dir: Path) -> Key:
    """The key of a prepared TFDS dataset's directory."""
    digest = hashlib.sha256((version_dir / "dataset_info.json").read_bytes())
    for f in sorted(version_dir.iterdir()):
        if f.is_file():
            stat = f.stat()
            digest.update(f"{f.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    folder = f"{version_dir.parent.name}-{version_dir.name}-{path_digest(version_dir)}"
    return Key(folder, digest.hexdigest()[:20])


def _paths(key: Key, split: str) -> tuple[Path, Path]:
    folder, stem = cache_root() / key.folder, f"{split}-{key.stamp}"
    return folder / f"{stem}.images.npy", folder / f"{stem}.labels.npy"


def load(key: Key, split: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached split, memory-mapped (slicing it reads only those rows), or None."""
    images, labels = _paths(key, split)
    if not (images.is_file() and labels.is_file()):
        return None
    try:
        x = np.load(images, mmap_mode="r", allow_pickle=False)
        y = np.load(labels, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, OverflowError, EOFError):
        return None  # damaged or replaced: the split is decoded anew (and the copy rewritten)
    arrays = isinstance(x, np.ndarray) and isinstance(y, np.ndarray)
    if not (arrays and x.dtype == np.uint8 and x.ndim == 4 and y.dtype == np.int32
            and y.shape == (len(x),)):  # fmt: skip
        return None
    return x, y


def save_batches(key: Key, split: str, n: int, image_shape: tuple[int, ...], batches) -> None:
    """The split from ``(images, labels)`` batches of ``n`` rows in all, written into
    memory-mapped files as they come: a split larger than memory never is whole in it."""
    images_path, labels_path = _paths(key, split)
    images_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = [p.with_name(f"{p.name}.{os.getpid()}.tmp") for p in (images_path, labels_path)]
    try:
        images = np.lib.format.open_memmap(tmp[0], "w+", np.uint8, (n, *image_shape))
        labels = np.lib.format.open_memmap(tmp[1], "w+", np.int32, (n,))
        done = 0
        for x, y in batches:
            images[done : done + len(x)], labels[done : done + len(y)] = x, y
            done += len(x)
        if done != n:
            raise ValueError(f"{split}: {done} rows, expected {n}")
        images.flush()
        labels.flush()
        del images, labels
        for t, path in zip(tmp, (images_path, labels_path), strict=True):
            os.replace(t, path)
    finally:  # a failed write (a full disk) leaves no half-written copy behind
        for t in tmp:
            t.unlink(missing_ok=True)
