"""New images to score: image files, folders of them and ``.npy`` arrays, in a run's shape.

Each input is one of

* a PNG/JPEG file;
* a directory: every PNG/JPEG file under it (sorted by path, subfolders included);
* a ``.npy`` file of uint8 images ``[N, H, W]`` or ``[N, H, W, C]`` (C = 1, 3 or 4), read
  without pickles.

Every image becomes uint8 ``[H, W, C]`` of the run's shape through
:func:`aejax.data.folder.convert`, the function that prepared a folder's training images:
Pillow's conversion to grey or RGB, then a bilinear resize. The rule for images of another
size or channel count: *converted, with a warning*, unless the run's own preprocessing did
the same (a folder run converts every file to its channels; ``--image-size`` resized them),
in which case nothing is said. What is not safe to guess is an error: a file that does not
decode, an array that is not uint8 (floats in [0, 1] or [0, 255]?) or not a stack of
images, a file of another type, an input that holds no image.
"""

from __future__ import annotations

import collections
import dataclasses
from pathlib import Path

import numpy as np

from aejax.data import folder
from aejax.errors import AejaxError


@dataclasses.dataclass
class Inputs:
    """Images in the run's shape and where each came from."""

    sources: list[str]  # a file's path, or "file.npy[i]"
    images: np.ndarray  # uint8 [N, H, W, C]
    converted: dict[str, int]  # "32x32x3" -> how many images of that shape were converted


def _shape_text(shape) -> str:
    return "x".join(map(str, shape))


def conformed(array_HxWxC: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """``array_HxWxC`` as it is when it has ``shape``, else converted (as image files are)."""
    if tuple(array_HxWxC.shape) == tuple(shape):
        return array_HxWxC
    return _from_array(array_HxWxC, shape)


def _from_array(array_HxWxC: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    from PIL import Image

    channels = array_HxWxC.shape[-1]
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[channels]
    image = Image.fromarray(array_HxWxC[..., 0] if channels == 1 else array_HxWxC, mode)
    return folder.convert(image, shape[:2], shape[2])


def npy_images(path: Path) -> np.ndarray:
    """The uint8 images ``[N, H, W, C]`` of a ``.npy`` file (memory-mapped), checked."""
    try:
        array = np.load(path, allow_pickle=False, mmap_mode="r")
    except (OSError, ValueError) as e:
        raise AejaxError(f"cannot read {path} as a .npy array ({e})") from None
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
    folder.check_pixels(f"{path}[0]", *array.shape[1:3])  # as files are: each row an image
    return array


def _files_of(path: Path) -> list[Path]:
    if path.is_dir():
        found = folder.image_files(path)
        if not found:
            raise AejaxError(
                f"{path} holds no PNG/JPEG images: give image files, folders of them, or "
                ".npy arrays"
            )
        return found
    if not path.exists():
        raise AejaxError(f"{path} does not exist")
    if path.suffix.lower() not in (*folder.EXTENSIONS, ".npy"):
        raise AejaxError(
            f"{path} is not a PNG/JPEG image or a .npy array: give image files, folders "
            "of them, or .npy arrays"
        )
    return [path]


def read(
    paths: list[str | Path], shape: tuple[int, int, int], *, silent: frozenset[str] = frozenset()
) -> Inputs:
    """Every image of ``paths`` as uint8 ``[N, *shape]``. ``silent``: conversions that are
    the run's own preprocessing (``"resize"``, ``"channels"``), not counted in
    ``converted``."""
    shape = tuple(shape)
    sources, images, converted = [], [], collections.Counter()

    def add(source: str, had: tuple[int, ...], conform, same_mode: bool = True) -> None:
        """One image of shape ``had``; ``conform()`` gives it in ``shape``; ``same_mode``:
        its pixels need no mode conversion (a palette or alpha image does)."""
        try:
            images.append(conform())
        except AejaxError as e:
            raise AejaxError(f"{source}: {e}") from None
        changed = {"resize"} if tuple(had[:2]) != shape[:2] else set()
        if had[2] != shape[2] or not same_mode:
            changed.add("channels")
        if changed - silent:
            converted[_shape_text(had)] += 1
        sources.append(source)

    for given in paths:
        for path in _files_of(Path(given)):
            if path.suffix.lower() == ".npy":
                array = npy_images(path)
                for i in range(len(array)):
                    row = np.asarray(array[i])
                    add(f"{path}[{i}]", row.shape, lambda row=row: conformed(row, shape))
            else:
                with folder.open_image(path) as image:
                    add(
                        str(path),
                        (image.height, image.width, len(image.getbands())),
                        lambda image=image: folder.convert(image, shape[:2], shape[2]),
                        same_mode=image.mode == {1: "L", 3: "RGB"}.get(shape[2]),
                    )
    if not images:
        raise AejaxError("the inputs hold no images")
    return Inputs(sources, np.stack(images), dict(converted))
