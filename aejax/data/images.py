"""Image files and arrays in, uint8 ``[H, W, C]`` out: the one place aejax decodes images.

Every image a user gives (a folder to train on, a file or ``.npy`` to score) goes through
here: Pillow decodes it, :func:`convert` turns it grey or RGB and resizes it (bilinear),
:func:`conformed` does the same to an array's row. A PNG already in the model's shape is
decoded by libspng instead, when scoring (:func:`plain_png`): the same pixels. Files are
untrusted: one that does not decode is an error naming it, one over :data:`MAX_PIXELS` is
refused from its header before anything is decoded.
"""

from __future__ import annotations

import os
import struct
import warnings
from pathlib import Path

import numpy as np

from aejax.errors import AejaxError

EXTENSIONS = (".png", ".jpg", ".jpeg")
GREY_MODES = ("1", "L", "I", "I;16", "F", "LA")
# The most pixels an image file may have: Pillow's decompression-bomb limit (about 89
# megapixels, a 358 MB RGBA decode), as a hard limit where Pillow only warns below twice it.
# Files come from wherever users point aejax, and a small PNG can decode to gigabytes; a
# legitimate photo (a 48-megapixel camera's) stays below it. Checked from the header, before
# anything is decoded.
MAX_PIXELS = 89_478_485
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


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


def open_image(path: Path | str, decode: bool = True, source=None) -> "PIL.Image.Image":  # noqa: F821, UP037
    """The image file at ``path`` (read from ``source``, its bytes, when given), decoded
    (else only its header read: size and mode), or one error naming it; an image over
    :data:`MAX_PIXELS` is refused before it is decoded."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():  # Pillow's bomb warning: refused like its error
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path if source is None else source)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        size = png_size(path)
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


# A plain PNG's file is at most this many times its pixels' bytes (plus 64 KB of chunks) for
# plain_png to read it whole; any larger (huge metadata, data after the image) goes to
# Pillow, which reads a file as far as it needs.
_PLAIN_PNG_OVERHEAD = 4


def plain_png(path: str, shape: tuple[int, int, int]) -> np.ndarray | None:
    """The pixels of the PNG file at ``path``, uint8 ``[H, W, C]``, when it is already in
    ``shape``: ``H x W``, 8-bit, grey for C = 1 or RGB for 3, not interlaced. Decoded by
    libspng (pyspng): PNG is lossless, so these are the samples Pillow gives (checked in
    tests/test_untrusted.py), at a fraction of Pillow's cost per file, which for small images
    is mostly Python (experiments/results/score_scale.md). None for any other file, or when
    pyspng is not installed (platforms without its wheel) or refuses the file: Pillow then
    decodes it, or names it in an error (:func:`open_image`), as for any file."""
    height, width, channels = shape
    pixel_bytes = height * width * channels
    colour_type = {1: 0, 3: 2}.get(channels)  # PNG's grey and RGB, no alpha, no palette
    try:
        import pyspng
    except ImportError:
        return None
    try:
        with open(path, "rb") as f:
            head = f.read(29)  # the signature and IHDR's length, type and fields
            if (
                head[:8] != _PNG_SIGNATURE
                or head[12:16] != b"IHDR"
                or struct.unpack(">II", head[16:24]) != (width, height)
                or tuple(head[24:29]) != (8, colour_type, 0, 0, 0)  # depth, type, interlace
            ):
                return None
            if os.fstat(f.fileno()).st_size > _PLAIN_PNG_OVERHEAD * pixel_bytes + 65536:
                return None
            data = head + f.read()
        pixels = pyspng.load(data)
    except Exception:  # noqa: BLE001 (any refusal: Pillow decides, with its own error)
        return None
    if pixels.dtype != np.uint8 or pixels.size != pixel_bytes:
        return None
    return pixels.reshape(height, width, channels)


def _unreadable(path, error: Exception) -> AejaxError:
    return AejaxError(
        f"cannot read {path} as an image ({type(error).__name__}: {error}): remove "
        "or replace it, then run the same command again"
    )


def header(path: Path) -> tuple[tuple[int, int], bool]:
    """``((height, width), in colour)`` from the file's header alone. A PNG's is read
    straight from its IHDR chunk: Pillow's open costs far more, and a folder's preparation
    reads every file's (experiments/results/folder_prep.md)."""
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


def png_size(path) -> tuple[int, int] | None:
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


def convert(image, size: tuple[int, int], channels: int) -> np.ndarray:
    """A Pillow image as uint8 ``[H, W, C]``: converted to grey (``channels`` 1) or RGB (3),
    then resized to ``size`` (bilinear) when it has another. The one preprocessing of images,
    when a folder is prepared and when new images are scored."""
    from PIL import Image

    if channels not in (1, 3):
        raise AejaxError(
            f"an image converts to grey or RGB, not to {channels} channels: give arrays of "
            "the model's shape"
        )
    mode = "RGB" if channels == 3 else "L"
    if image.mode != mode:  # (a conversion to its own mode is a copy)
        image = image.convert(mode)
    if (image.height, image.width) != tuple(size):
        image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return np.asarray(image, np.uint8).reshape(size[0], size[1], channels)


def conformed(array_HxWxC: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """``array_HxWxC`` as it is when it has ``shape``, else converted as image files are."""
    if tuple(array_HxWxC.shape) == tuple(shape):
        return array_HxWxC
    from PIL import Image

    channels = array_HxWxC.shape[-1]
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[channels]
    image = Image.fromarray(array_HxWxC[..., 0] if channels == 1 else array_HxWxC, mode)
    return convert(image, shape[:2], shape[2])


def to_pil(image_HxWxC: np.ndarray) -> "PIL.Image.Image":  # noqa: F821, UP037
    from PIL import Image

    grey = image_HxWxC.shape[-1] == 1
    return Image.fromarray(image_HxWxC[..., 0] if grey else image_HxWxC)


def read_npy(path: Path) -> np.ndarray:
    """The uint8 images ``[N, H, W, C]`` of a ``.npy`` file (memory-mapped, read without
    pickles), checked: uint8, C 1, 3 or 4, images under :data:`MAX_PIXELS`."""
    try:
        array = np.load(path, allow_pickle=False, mmap_mode="r")
    # What numpy raises on a header that describes no array (a negative dimension: an
    # OverflowError), a truncated file, or bytes that are no .npy at all.
    except (OSError, ValueError, OverflowError, EOFError) as e:
        raise AejaxError(f"cannot read {path} as a .npy array ({e})") from None
    if not isinstance(array, np.ndarray):  # an .npz archive under a .npy name
        array.close()
        raise AejaxError(
            f"{path} is an .npz archive, not a .npy array: save one array with np.save"
        )
    if array.dtype != np.uint8:
        raise AejaxError(
            f"{path} holds {array.dtype} values: give uint8 images (0..255), e.g. "
            "np.round(x * 255).astype(np.uint8) for floats in [0, 1]"
        )
    if array.ndim == 3:
        array = array[..., None]
    if array.ndim != 4 or array.shape[-1] not in (1, 3, 4) or 0 in array.shape[1:]:
        raise AejaxError(
            f"{path} has shape {list(array.shape)}: give images [N, H, W] or [N, H, W, C] "
            "with C 1, 3 or 4"
        )
    check_pixels(f"{path}[0]", *array.shape[1:3])  # as files are: each row an image
    return array


def image_files(root: Path) -> list[Path]:
    """Every PNG/JPEG file under ``root`` (symlinked files yes, symlinked folders no, as
    ``Path.rglob``), in the order of their path components."""
    return [Path(p) for p in image_paths(root)]


def image_paths(root: Path | str) -> list[str]:
    """:func:`image_files` as strings: a hundred thousand ``Path`` objects hold a hundred
    megabytes, their strings a tenth of that."""
    found: list[str] = []
    _scan(str(root), found)
    # Component by component, as a string whose separator sorts before every character (no
    # path holds NUL): one short-lived string per path, not a list of its components.
    found.sort(key=lambda p: p.replace(os.sep, "\0"))
    return found


def _scan(directory: str, found: list[str]) -> None:
    # os.scandir, not Path.rglob: its entries know their type, so 100k files list in a
    # fraction of rglob's time (experiments/results/folder_prep.md).
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                _scan(entry.path, found)
            elif entry.name.lower().endswith(EXTENSIONS) and entry.is_file():
                found.append(entry.path)
