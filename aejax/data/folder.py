"""A folder of image files (or a ``.npy`` array of images) as a TFDS dataset: prepared
once, then read like any other.

``--dataset PATH`` (an existing directory) takes either layout:

* TFDS's ``ImageFolder``: ``PATH/<split>/<label>/*.png`` (splits ``train`` and ``test``;
  labels are the sorted folder names);
* anything else: every PNG/JPEG file under ``PATH`` (a flat folder or a tree), unlabelled
  (label 0), the usual case for anomaly detection. Each file goes to ``test`` when the
  SHA-256 of its path relative to ``PATH`` falls in the first tenth of the range, else to
  ``train`` (a folder too small for that gives its lowest-hash file to ``test``):
  deterministic, and adding files never moves the others.

``--dataset PATH.npy``: a NumPy array of uint8 images ``[N, H, W]`` or ``[N, H, W, C]``
(read without pickles), unlabelled, split like a flat folder by the hash of each row's
index; what :class:`aejax.Detector`'s ``fit`` trains on when given an array.

Images are decoded by Pillow, converted to ``channels`` (1: grey, 3: RGB; default: RGB if
any file is in colour, else grey) and resized to ``image_size`` (bilinear; default: all files
must have one size). The result is written by TFDS (``store_as_tfds_dataset``) under
``<data_dir>/aejax_folders/``, in a directory named by a fingerprint of the folder (every
file's path, size and modification time) and of the preprocessing: a changed folder or other
options are prepared anew, an unchanged one is read from there.

A file that cannot be decoded is an error naming it (a silently skipped file would change
what the model learns without anyone noticing); files of other types are ignored.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from aejax.data._tf import tfds
from aejax.errors import AejaxError
from aejax.files import os_error_behind

EXTENSIONS = (".png", ".jpg", ".jpeg")
SPLITS = ("train", "test")
TEST_FRACTION = 0.1
VERSION = "1.0.0"
GREY_MODES = ("1", "L", "I", "I;16", "F", "LA")


def is_folder(name: str) -> bool:
    """Whether ``--dataset name`` names a local dataset, a directory of images or a ``.npy``
    array of them, rather than a TFDS dataset."""
    return os.path.isdir(name) or (name.lower().endswith(".npy") and os.path.isfile(name))


def _is_array(root: Path) -> bool:
    return root.suffix.lower() == ".npy" and root.is_file()


def _hash_position(key: str) -> float:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64


def _split_by_hash(items: list, key) -> dict[str, list[tuple[object, str]]]:
    """Unlabelled ``items`` split into ``{split: [(item, "")]}``: to ``test`` where the hash
    of ``key(item)`` falls in the first :data:`TEST_FRACTION` of the range (one item at
    least, when there are two), else to ``train``; in their order."""
    position = [_hash_position(key(item)) for item in items]
    test = [p < TEST_FRACTION for p in position]
    if not any(test) and len(items) > 1:  # a small set still gets one test item
        test[position.index(min(position))] = True
    splits = {
        "train": [(item, "") for item, t in zip(items, test, strict=True) if not t],
        "test": [(item, "") for item, t in zip(items, test, strict=True) if t],
    }
    return {s: rows for s, rows in splits.items() if rows}


def image_files(root: Path) -> list[Path]:
    """Every PNG/JPEG file under ``root`` (symlinked files yes, symlinked folders no, as
    ``Path.rglob``), in the order of their path components."""
    found: list[str] = []
    _scan(str(root), found)
    return [Path(p) for p in sorted(found, key=lambda p: p.split(os.sep))]


def _scan(directory: str, found: list[str]) -> None:
    # os.scandir, not Path.rglob: its entries know their type, so 100k files list in a
    # fraction of rglob's time (folder_prep.md).
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                _scan(entry.path, found)
            elif entry.name.lower().endswith(EXTENSIONS) and entry.is_file():
                found.append(entry.path)


def _relative(f: Path, root: Path) -> str:
    """``f``'s path below ``root``, with ``/``: ``f.relative_to(root).as_posix()`` at a
    tenth of the cost (a folder has many files)."""
    return str(f)[len(str(root)) + 1 :].replace(os.sep, "/")


def _layout(root: Path) -> dict[str, list[tuple[Path, str]]]:
    """``{split: [(file, label name)]}``: ImageFolder's split/label/file, else one unlabelled
    pool split by path hash."""
    if (root / "train").is_dir():
        splits = {}
        for split in SPLITS:
            files = image_files(root / split) if (root / split).is_dir() else []
            below = [_relative(f, root / split).split("/") for f in files]
            splits[split] = [
                (f, parts[0] if len(parts) > 1 else "")
                for f, parts in zip(files, below, strict=True)
            ]
        return {s: files for s, files in splits.items() if files}
    return _split_by_hash(image_files(root), lambda f: _relative(f, root))


def _fingerprint(root: Path, layout: dict, image_size, channels) -> str:
    digest = hashlib.sha256(f"{image_size}:{channels}:{TEST_FRACTION}".encode())
    if _is_array(root):
        stat = root.stat()
        digest.update(f"{root}:{stat.st_size}:{stat.st_mtime_ns}".encode())
        return digest.hexdigest()[:16]
    for split, files in layout.items():
        for f, label in files:
            stat = os.stat(f)
            digest.update(
                f"{split}:{label}:{_relative(f, root)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode()
            )
    return digest.hexdigest()[:16]


# The most pixels an image file may have: Pillow's decompression-bomb limit (about 89
# megapixels, a 358 MB RGBA decode), as a hard limit where Pillow only warns below twice it.
# Files come from wherever users point aejax, and a small PNG can decode to gigabytes; a
# legitimate photo (a 48-megapixel camera's) stays below it. Checked from the header, before
# anything is decoded.
MAX_PIXELS = 89_478_485


def check_pixels(path, height: int, width: int) -> None:
    """One error naming ``path`` when an image of ``height x width`` is over
    :data:`MAX_PIXELS`."""
    if height * width > MAX_PIXELS:
        raise _too_large(path, f"{width}x{height} ({height * width / 1e6:.0f} megapixels)")


def _too_large(path, size: str = "") -> AejaxError:
    return AejaxError(
        f"{path} is an image of {size or 'more pixels'}, over the {MAX_PIXELS / 1e6:.1f} "
        "megapixels aejax decodes (Pillow's decompression-bomb limit): shrink it or remove "
        "it, then run the same command again"
    )


def open_image(path: Path, decode: bool = True, source=None) -> "PIL.Image.Image":  # noqa: F821, UP037
    """The image file at ``path`` (read from ``source``, its bytes, when given), decoded
    (else only its header read: size and mode), or one error naming it; an image over
    :data:`MAX_PIXELS` is refused before it is decoded."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():  # Pillow's bomb warning: refused like its error
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path if source is None else source)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        size = _png_size(path)
        if size is not None:  # its size, named
            check_pixels(path, *size)
        raise _too_large(path) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise _unreadable(path, e) from None
    check_pixels(path, image.height, image.width)
    if decode:
        try:
            image.load()
        except (OSError, SyntaxError, ValueError) as e:
            raise _unreadable(path, e) from None
    return image


def _unreadable(path, error: Exception) -> AejaxError:
    return AejaxError(
        f"cannot read {path} as an image ({type(error).__name__}: {error}): remove "
        "or replace it, then run the same command again"
    )


def _header(path: Path) -> tuple[tuple[int, int], bool]:
    """``((height, width), in colour)`` from the file's header alone (preparation decodes
    it later). A PNG's is read straight from its IHDR chunk: Pillow's open costs ~10x more,
    and this pass sees every file (folder_prep.md)."""
    with open(path, "rb") as f:
        head = f.read(26)
    if len(head) == 26 and head[:8] == _PNG_SIGNATURE and head[12:16] == b"IHDR":
        width, height = struct.unpack(">II", head[16:24])
        check_pixels(path, height, width)
        # Colour types 2 (RGB), 3 (palette) and 6 (RGBA) are colour, as Pillow's modes
        # RGB, P and RGBA are; 0 (grey) and 4 (grey + alpha) are not.
        return (height, width), head[25] in (2, 3, 6)
    with open_image(path, decode=False) as image:
        return (image.height, image.width), image.mode not in GREY_MODES


def _png_size(path) -> tuple[int, int] | None:
    """``(height, width)`` from a PNG file's header, None for anything else."""
    try:
        with open(path, "rb") as f:
            head = f.read(24)
    except (OSError, TypeError):  # TypeError: not a path (bytes given as source)
        return None
    if len(head) == 24 and head[:8] == _PNG_SIGNATURE and head[12:16] == b"IHDR":
        width, height = struct.unpack(">II", head[16:24])
        return height, width
    return None


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _settle_shape(layout: dict, image_size, channels, array=None) -> tuple[tuple[int, int], int]:
    """The output size and channels: as given, else what every file has (one size, colour if
    any file is in colour)."""
    if array is not None:  # an array's images have one shape; 4 channels become RGB
        has = array.shape[-1]
        return tuple(image_size or array.shape[1:3]), channels or (has if has in (1, 3) else 3)
    if image_size is not None and channels is not None:
        return tuple(image_size), channels  # nothing to look at
    files = [f for rows in layout.values() for f, _ in rows]
    sizes, colour = {}, False
    for f, (size, in_colour) in zip(files, map(_header, files), strict=True):
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


def _png(item, size: tuple[int, int], channels: int) -> bytes:
    """The PNG bytes TFDS stores for one file (or array row): the file's own bytes when it
    is a PNG already in the target size and mode, after a full decode that proves it reads
    (PNG is lossless, so every decoder gives the same pixels); else converted by
    :func:`convert` and encoded by Pillow. JPEGs are always re-decoded here, by Pillow,
    because JPEG decoders differ in the last bit and scoring decodes with Pillow too."""
    if isinstance(item, np.ndarray):
        from aejax import inputs

        image = _pil(inputs.conformed(item, (*size, channels)))
    else:
        data = item.read_bytes()
        with open_image(item, source=io.BytesIO(data)) as image:
            mode = "RGB" if channels == 3 else "L"
            if image.format == "PNG" and image.mode == mode and image.size == size[::-1]:
                return data
            image = _pil(convert(image, size, channels))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _pil(image_HxWxC: np.ndarray) -> "PIL.Image.Image":  # noqa: F821, UP037
    from PIL import Image

    grey = image_HxWxC.shape[-1] == 1
    return Image.fromarray(image_HxWxC[..., 0] if grey else image_HxWxC)


def _encoded(
    files, size: tuple[int, int], channels: int, labels: list[str], array=None
) -> Iterator[tuple[int, dict]]:
    """``(key, example)`` pairs, TFDS's generator protocol, with each image as PNG bytes
    (:func:`_png`); the index keys keep file order. With ``array``, the "files" are its row
    indices. One process: a pool of two spawned workers prepared 20k files only 1.1x faster
    on 2 cores (threads: 2x slower, the GIL), not worth spawn's start-up and pitfalls."""
    from tqdm import tqdm

    items = [array[f] if array is not None else f for f, _ in files]
    images = (_png(item, size, channels) for item in items)
    bar = tqdm(
        images, total=len(files), desc="preparing images", unit="file", leave=False, disable=None
    )
    for index, (image, (_, label)) in enumerate(zip(bar, files, strict=True)):
        yield index, {"image": image, "label": labels.index(label)}


def convert(image, size: tuple[int, int], channels: int) -> np.ndarray:
    """A Pillow image as uint8 ``[H, W, C]``: converted to grey (``channels`` 1) or RGB (3),
    then resized to ``size`` (bilinear) when it has another. The one preprocessing of image
    files, at preparation and when scoring new images."""
    from PIL import Image

    if channels not in (1, 3):
        raise AejaxError(
            f"an image converts to grey or RGB, not to {channels} channels: give arrays of "
            "the model's shape"
        )
    image = image.convert("RGB" if channels == 3 else "L")
    if (image.height, image.width) != tuple(size):
        image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return np.asarray(image, np.uint8).reshape(size[0], size[1], channels)


# Within one command a folder is walked once (:func:`walked_once`): every file's stat is
# what its fingerprint costs, and a command asks for the directory about ten times.
_WALKED: dict | None = None


@contextlib.contextmanager
def walked_once() -> Iterator[None]:
    """Within this block, :func:`prepared_dir` walks each folder once and remembers the
    answer (the CLIs run their whole command in one: a folder changed *during* a command is
    not looked at again; the next command sees the change)."""
    global _WALKED
    outer, _WALKED = _WALKED, {} if _WALKED is None else _WALKED
    try:
        yield
    finally:
        _WALKED = outer


def prepared_dir(
    root: str | os.PathLike, data_dir: str, image_size=None, channels: int | None = None
) -> Path:
    """The TFDS dataset directory of folder ``root`` with this preprocessing; prepares it
    first if it is missing or the folder changed."""
    key = (str(Path(root).resolve()), str(data_dir), str(image_size), channels)
    if _WALKED is not None and key in _WALKED:
        return _WALKED[key]
    found = _prepared_dir(root, data_dir, image_size, channels)
    if _WALKED is not None:
        _WALKED[key] = found
    return found


def _prepared_dir(root, data_dir: str, image_size, channels: int | None) -> Path:
    root = Path(root).resolve()
    if channels not in (None, 1, 3):
        raise AejaxError(f"--channels {channels}: choose 1 (grey) or 3 (RGB)")
    array = None
    if _is_array(root):
        from aejax import inputs

        array = inputs.npy_images(root)  # rows split as a flat folder's files, by index
        layout = _split_by_hash(list(range(len(array))), str)
    else:
        layout = _layout(root)
    if not layout:
        raise AejaxError(
            f"{root} holds no {'/'.join(e[1:].upper() for e in EXTENSIONS)} "
            "images: point --dataset at a folder of image files"
        )
    if "train" not in layout:
        raise AejaxError(f"{root} has no training images (train/ is empty)")
    image_size = tuple(image_size) if image_size else None
    name = f"folder_{_fingerprint(root, layout, image_size, channels)}"
    base = Path(data_dir) / "aejax_folders"
    version_dir = base / name / VERSION
    if (version_dir / "dataset_info.json").is_file():
        return version_dir
    size, channels = _settle_shape(layout, image_size, channels, array)
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
                    split: _encoded(files, size, channels, labels, array)
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
