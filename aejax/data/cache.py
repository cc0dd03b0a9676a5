"""Decoded copies of whole TFDS splits, as .npy files, so that a read after the first one
needs neither TensorFlow's start-up (~2 s) nor PNG decoding (~2.5 s for MNIST's 60k images).

A copy is keyed on the prepared dataset's directory and stamped with a fingerprint of its
files (``dataset_info.json``'s bytes, every file's name, size and mtime): re-preparing or
replacing the dataset makes old copies unused. Written atomically (temporary file, then
rename). ``AEJAX_NO_CACHE=1`` turns it off; the directory is ``$AEJAX_CACHE_DIR`` or
``~/.cache/aejax/arrays``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from aejax import files


def enabled() -> bool:
    return os.environ.get("AEJAX_NO_CACHE", "") in ("", "0")


def cache_root() -> Path:
    return Path(os.environ.get("AEJAX_CACHE_DIR", files.user_cache_dir("arrays")))


def dataset_dir(data_dir: str, name: str) -> Path | None:
    """The one prepared version directory of ``name`` (None if none, or several)."""
    versions = [d for d in (Path(data_dir) / name).glob("*") if (d / "dataset_info.json").is_file()]
    return versions[0] if len(versions) == 1 else None


def _fingerprint(version_dir: Path) -> str:
    digest = hashlib.sha256((version_dir / "dataset_info.json").read_bytes())
    for f in sorted(version_dir.iterdir()):
        if f.is_file():
            stat = f.stat()
            digest.update(f"{f.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:20]


def _paths(version_dir: Path, split: str) -> tuple[Path, Path]:
    key = hashlib.sha256(str(version_dir.resolve()).encode()).hexdigest()[:12]
    folder = cache_root() / f"{version_dir.parent.name}-{version_dir.name}-{key}"
    stem = f"{split}-{_fingerprint(version_dir)}"
    return folder / f"{stem}.images.npy", folder / f"{stem}.labels.npy"


def load(version_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached split, memory-mapped (slicing it reads only those rows), or None."""
    images, labels = _paths(version_dir, split)
    if not (images.is_file() and labels.is_file()):
        return None
    return np.load(images, mmap_mode="r"), np.load(labels, mmap_mode="r")


def save(version_dir: Path, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    for path, array in zip(_paths(version_dir, split), (images, labels), strict=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.save(f, array)
        os.replace(tmp, path)


def save_batches(
    version_dir: Path, split: str, n: int, image_shape: tuple[int, ...], batches
) -> None:
    """Like :func:`save`, from ``(images, labels)`` batches of ``n`` rows in all, written
    into memory-mapped files as they come: a split larger than memory never is whole in it."""
    images_path, labels_path = _paths(version_dir, split)
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
