"""``--dataset PATH`` (an existing directory): a folder of image files, prepared once into a
TFDS dataset, then read like any other.

It takes either layout:

* TFDS's ``ImageFolder``: ``PATH/<split>/<label>/*.png`` (splits ``train`` and ``test``;
  labels are the sorted folder names);
* anything else: every PNG/JPEG file under ``PATH`` (a flat folder or a tree), unlabelled
  (label 0), the usual case for anomaly detection, split by the hash of each file's path
  relative to ``PATH`` (:func:`aejax.data.sources.base.split_by_hash`): about a tenth to
  ``test``, deterministic, and adding files never moves the others.

Images are decoded by Pillow (:mod:`aejax.data.images`), converted to ``channels`` (1: grey,
3: RGB; default: RGB if any file is in colour, else grey) and resized to ``image_size``
(bilinear; default: all files must have one size). The result is written by TFDS
(``store_as_tfds_dataset``) under ``<data_dir>/aejax_folders/``, in a directory named by a
fingerprint of the folder (every file's path, size and modification time) and of the
preprocessing: a changed folder or other options are prepared anew, an unchanged one is read
from there. The folder is walked once per source (:func:`aejax.data.source`).

A file that cannot be decoded is an error naming it (a silently skipped file would change
what the model learns without anyone noticing); files of other types are ignored.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from aejax.data import images
from aejax.data._tf import tfds
from aejax.data.sources.base import TEST_FRACTION, local_label, split_by_hash
from aejax.data.sources.tfds import TfdsBacked
from aejax.errors import AejaxError
from aejax.files import os_error_behind

SPLITS = ("train", "test")
VERSION = "1.0.0"


class FolderSource(TfdsBacked):
    kind = "folder"

    def __init__(self, spec, data_dir, image_size=None, channels=None, **prepare_options):
        if channels not in (None, 1, 3):
            raise AejaxError(f"--channels {channels}: choose 1 (grey) or 3 (RGB)")
        super().__init__(Path(spec).resolve(), data_dir, image_size, channels)

    @classmethod
    def claims(cls, spec: str) -> bool:
        return os.path.isdir(spec)

    @property
    def label(self) -> str:
        return local_label(self.spec)

    def _make_builder(self):
        return tfds().builder_from_directory(self.prepared_dir())

    def _version_dir(self) -> Path:
        return self.prepared_dir()

    def splits(self) -> list[str]:
        return list(self.layout())  # the folder's own: no TensorFlow

    def prepare(self) -> str:
        self.prepared_dir()
        return f"prepared in {self.prepared_dir()}"

    def info(self) -> dict:
        return {"name": self.spec, "kind": self.kind, "prepared": True,
                "data_dir": str(self.prepared_dir()),
                "splits": {s: self.split_size(s) for s in self.splits()}}  # fmt: skip

    def layout(self) -> dict[str, list[tuple[Path, str]]]:
        """``{split: [(file, label name)]}``: ImageFolder's split/label/file, else one
        unlabelled pool split by path hash. Walked once per source."""
        if getattr(self, "_layout", None) is None:
            self._layout = _layout(Path(self.spec))
        return self._layout

    def prepared_dir(self) -> Path:
        """The TFDS dataset directory of the folder with this preprocessing; prepared first
        if it is missing or the folder changed."""
        if getattr(self, "_prepared_dir", None) is None:
            root, layout = Path(self.spec), self.layout()
            # The fingerprint reads every file's size and time: once per source.
            version_dir = _version_dir(root, layout, self.data_dir, self.image_size, self.channels)
            if not (version_dir / "dataset_info.json").is_file():
                self._decode_apart()
            self._prepared_dir = _prepared_dir(
                root, layout, version_dir, self.image_size, self.channels
            )
        return self._prepared_dir


def _relative(f: Path, root: Path) -> str:
    """``f``'s path below ``root``, with ``/``: ``f.relative_to(root).as_posix()`` at a
    tenth of the cost (a folder has many files)."""
    return str(f)[len(str(root)) + 1 :].replace(os.sep, "/")


def _layout(root: Path) -> dict[str, list[tuple[Path, str]]]:
    if (root / "train").is_dir():
        splits = {}
        for split in SPLITS:
            files = images.image_files(root / split) if (root / split).is_dir() else []
            below = [_relative(f, root / split).split("/") for f in files]
            splits[split] = [
                (f, parts[0] if len(parts) > 1 else "")
                for f, parts in zip(files, below, strict=True)
            ]
        return {s: files for s, files in splits.items() if files}
    pool = split_by_hash(images.image_files(root), lambda f: _relative(f, root))
    return {split: [(f, "") for f in files] for split, files in pool.items()}


def _fingerprint(root: Path, layout: dict, image_size, channels) -> str:
    digest = hashlib.sha256(f"{image_size}:{channels}:{TEST_FRACTION}".encode())
    for split, files in layout.items():
        for f, label in files:
            stat = os.stat(f)
            digest.update(
                f"{split}:{label}:{_relative(f, root)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode()
            )
    return digest.hexdigest()[:16]


def _settle_shape(layout: dict, image_size, channels) -> tuple[tuple[int, int], int]:
    """The output size and channels: as given, else what every file has (one size, colour if
    any file is in colour)."""
    if image_size is not None and channels is not None:
        return tuple(image_size), channels  # nothing to look at
    files = [f for rows in layout.values() for f, _ in rows]
    sizes, colour = {}, False
    for f, (size, in_colour) in zip(files, map(images.header, files), strict=True):
        sizes.setdefault(size, f)
        colour = colour or in_colour
    if image_size is None and len(sizes) > 1:
        (a, fa), (b, fb) = list(sizes.items())[:2]
        raise AejaxError(
            f"the images differ in size ({fa}: {a[0]}x{a[1]}, {fb}: {b[0]}x{b[1]}"
            f"{', ...' if len(sizes) > 2 else ''}): give --image-size H W to "
            "resize them all"
        )
    return tuple(image_size or next(iter(sizes))), channels or (3 if colour else 1)


def png_bytes(path: Path, size: tuple[int, int], channels: int) -> bytes:
    """The PNG bytes TFDS stores for one file: the file's own bytes when it is a PNG already
    in the target size and mode, after a full decode that proves it reads (PNG is lossless,
    so every decoder gives the same pixels); else converted by
    :func:`aejax.data.images.convert` and encoded by Pillow. JPEGs are always re-decoded
    here, by Pillow, because JPEG decoders differ in the last bit and scoring decodes with
    Pillow too."""
    data = path.read_bytes()
    with images.open_image(path, source=io.BytesIO(data)) as image:
        mode = "RGB" if channels == 3 else "L"
        if image.format == "PNG" and image.mode == mode and image.size == size[::-1]:
            return data
        converted = images.to_pil(images.convert(image, size, channels))
    out = io.BytesIO()
    converted.save(out, format="PNG")
    return out.getvalue()


def _encoded(
    files, size: tuple[int, int], channels: int, labels: list[str]
) -> Iterator[tuple[int, dict]]:
    """``(key, example)`` pairs, TFDS's generator protocol, with each image as PNG bytes
    (:func:`png_bytes`); the index keys keep file order. One process: on 2 cores a pool of
    spawned workers gained little over it and threads lose to the GIL (the work is a Python
    call per file), not worth spawn's start-up and pitfalls."""
    from tqdm import tqdm

    encoded = (png_bytes(f, size, channels) for f, _ in files)
    bar = tqdm(
        encoded, total=len(files), desc="preparing images", unit="file", leave=False, disable=None
    )
    for index, (image, (_, label)) in enumerate(zip(bar, files, strict=True)):
        yield index, {"image": image, "label": labels.index(label)}


def _version_dir(root: Path, layout: dict, data_dir: str, image_size, channels) -> Path:
    """Where the folder with this preprocessing is (or would be) prepared."""
    name = f"folder_{_fingerprint(root, layout, image_size, channels)}"
    return Path(data_dir) / "aejax_folders" / name / VERSION


def _prepared_dir(root: Path, layout: dict, version_dir: Path, image_size, channels) -> Path:
    """``version_dir`` (:func:`_version_dir`), prepared first if it is not."""
    if not layout:
        raise AejaxError(
            f"{root} holds no {'/'.join(e[1:].upper() for e in images.EXTENSIONS)} "
            "images: point --dataset at a folder of image files"
        )
    if "train" not in layout:
        raise AejaxError(f"{root} has no training images (train/ is empty)")
    base, name = version_dir.parents[1], version_dir.parent.name
    if (version_dir / "dataset_info.json").is_file():
        return version_dir
    size, channels = _settle_shape(layout, image_size, channels)
    labels = sorted({label for files in layout.values() for _, label in files})
    lib = tfds()
    features = lib.features.FeaturesDict(
        {
            "image": lib.features.Image(shape=(*size, channels), dtype=np.uint8),
            "label": lib.features.ClassLabel(names=[label or "unlabelled" for label in labels]),
        }
    )
    # TFDS prints "Downloading and preparing ..." (print, not logging): not what happens here.
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            lib.dataset_builders.store_as_tfds_dataset(
                name=name,
                version=VERSION,
                features=features,
                data_dir=base,
                split_datasets={
                    split: _encoded(files, size, channels, labels)
                    for split, files in layout.items()
                },
                description=f"aejax: the images under {root}",
                disable_shuffling=True,
            )
    except Exception as e:
        # TFDS writes into incomplete.* and renames it when done, so a failed preparation is
        # never taken for a finished one; what it wrote is removed, and a full disk (which
        # TFDS reports as TensorFlow's ResourceExhaustedError) is one line like any other.
        for unfinished in (base / name).glob("incomplete.*"):
            shutil.rmtree(unfinished, ignore_errors=True)
        if isinstance(e, AejaxError):
            raise
        behind = e if isinstance(e, OSError) else os_error_behind(e, base / name)
        if behind is None:
            raise
        raise OSError(behind.errno, behind.strerror, behind.filename or str(base / name)) from None
    return version_dir
