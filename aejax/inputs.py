"""New images to score: image files, folders of them and ``.npy`` arrays, in a run's shape.

Each input is one of

* a PNG/JPEG file;
* a directory: every PNG/JPEG file under it (sorted by path, subfolders included);
* a ``.npy`` file of uint8 images ``[N, H, W]`` or ``[N, H, W, C]`` (C = 1, 3 or 4), read
  without pickles.

Every image becomes uint8 ``[H, W, C]`` of the run's shape through
:func:`aejax.data.images.convert`, the function that prepared a folder's training images:
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

from aejax.data import images as decoding
from aejax.errors import AejaxError


@dataclasses.dataclass
class Inputs:
    """Images in the run's shape and where each came from."""

    sources: list[str]  # a file's path, or "file.npy[i]"
    images: np.ndarray  # uint8 [N, H, W, C]
    converted: dict[str, int]  # "32x32x3" -> how many images of that shape were converted


def _shape_text(shape) -> str:
    return "x".join(map(str, shape))


def _files_of(path: Path) -> list[Path]:
    if path.is_dir():
        found = decoding.image_files(path)
        if not found:
            raise AejaxError(
                f"{path} holds no PNG/JPEG images: give image files, folders of them, or "
                ".npy arrays"
            )
        return found
    if not path.exists():
        raise AejaxError(f"{path} does not exist")
    if path.suffix.lower() not in (*decoding.EXTENSIONS, ".npy"):
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
                array = decoding.read_npy(path)
                for i in range(len(array)):
                    row = np.asarray(array[i])
                    add(f"{path}[{i}]", row.shape, lambda row=row: decoding.conformed(row, shape))
            else:
                with decoding.open_image(path) as image:
                    add(
                        str(path),
                        (image.height, image.width, len(image.getbands())),
                        lambda image=image: decoding.convert(image, shape[:2], shape[2]),
                        same_mode=image.mode == {1: "L", 3: "RGB"}.get(shape[2]),
                    )
    if not images:
        raise AejaxError("the inputs hold no images")
    return Inputs(sources, np.stack(images), dict(converted))
