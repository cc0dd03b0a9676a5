"""New images to score: image files, folders of them and ``.npy`` arrays, in a run's shape.

Each input is one of

* a PNG/JPEG file;
* a directory: every PNG/JPEG file under it (sorted by path, subfolders included);
* a ``.npy`` file of uint8 images ``[N, H, W]`` or ``[N, H, W, C]`` (C = 1, 3 or 4), read
  without pickles.

Every image becomes uint8 ``[H, W, C]`` of the run's shape through
:func:`aejax.data.images.convert`, the function that prepared a folder's training images:
Pillow's conversion to grey or RGB, then a bilinear resize. A PNG already in that shape needs
neither, and libspng decodes it (:func:`aejax.data.images.plain_png`: the same pixels,
faster). The rule for images of another size or channel count: *converted, with a warning*,
unless the run's own preprocessing did the same (a folder run converts every file to its
channels; ``--image-size`` resized them), in which case nothing is said. What is not safe to
guess is an error: a file that does not decode, an array that is not uint8 (floats in [0, 1]
or [0, 255]?) or not a stack of images, a file of another type, an input that holds no image.
"""

from __future__ import annotations

import collections
import dataclasses
import queue
import threading
from collections.abc import Iterator
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


def _files_of(path: Path) -> list[Path] | list[str]:
    if path.is_dir():
        found = decoding.image_paths(path)
        if not found:
            raise AejaxError(
                f"{path} holds no PNG/JPEG images: give image files, folders of them, or "
                ".npy arrays"
            )
        return found
    if not path.exists():
        raise AejaxError(f"{path} does not exist")
    if not path.is_file():  # a FIFO, a device, a socket (or a link to one): reading could
        raise AejaxError(  # wait forever or never end
            f"{path} is not a regular file (a pipe, device or socket): give image files, "
            "folders of them, or .npy arrays"
        )
    if path.suffix.lower() not in (*decoding.EXTENSIONS, ".npy"):
        raise AejaxError(
            f"{path} is not a PNG/JPEG image or a .npy array: give image files, folders "
            "of them, or .npy arrays"
        )
    return [path]


@dataclasses.dataclass(frozen=True, slots=True)  # slots: a hundred thousand of them
class Item:
    """One image of the inputs, not yet decoded: a file, or a row of a ``.npy`` array."""

    source: str  # a file's path, or "file.npy[i]"
    path: str  # a string, not a Path: a hundred thousand Paths hold tens of megabytes
    row: int | None = None


def items(paths: list[str | Path]) -> list[Item]:
    """Every image ``paths`` hold, in order, checked as far as names and ``.npy`` headers
    tell (a missing path, a file of another type, an array of floats: one error now, not
    after an hour of scoring). Nothing is decoded."""
    out = []
    for given in paths:
        for path in _files_of(Path(given)):
            name = str(path)
            if name.lower().endswith(".npy"):
                rows = len(decoding.read_npy(path))  # memory-mapped: the header only
                out += [Item(f"{name}[{i}]", name, i) for i in range(rows)]
            else:
                out.append(Item(name, name))
    if not out:
        raise AejaxError("the inputs hold no images")
    return out


def _decode(
    item: Item, shape: tuple[int, int, int], arrays: dict
) -> tuple[np.ndarray, tuple, bool]:
    """``(image in shape, the shape it had, whether its pixels needed no mode change)``."""
    try:
        if item.row is not None:
            if item.path not in arrays:  # memory-mapped once per call, for all its rows
                arrays[item.path] = decoding.read_npy(Path(item.path))
            row = np.asarray(arrays[item.path][item.row])
            return decoding.conformed(row, shape), row.shape, True
        plain = decoding.plain_png(item.path, shape)  # most files, where given in shape
        if plain is not None:
            return plain, shape, True
        with decoding.open_image(item.path) as image:  # the str: a Path per file is measurable
            had = (image.height, image.width, len(image.getbands()))
            same_mode = image.mode == {1: "L", 3: "RGB"}.get(shape[2])
            return decoding.convert(image, shape[:2], shape[2]), had, same_mode
    except AejaxError as e:
        # The decoders name the file already; an array's row is named here.
        raise (e if item.path in str(e) else AejaxError(f"{item.source}: {e}")) from None


def chunks(
    every: list[Item],
    shape: tuple[int, int, int],
    rows: int,
    *,
    silent: frozenset[str] = frozenset(),
) -> Iterator[Inputs]:
    """The images of ``every`` (:func:`items`), ``rows`` at a time, as uint8 ``[n,
    *shape]``: memory holds one chunk whatever the inputs' size (:func:`prefetched` decodes
    the next beside it). ``silent``: conversions that are the run's own preprocessing
    (``"resize"``, ``"channels"``), not counted in ``converted``."""
    shape = tuple(shape)
    arrays: dict = {}
    for start in range(0, len(every), rows):
        chunk = every[start : start + rows]
        decoded = [_decode(item, shape, arrays) for item in chunk]
        converted: collections.Counter = collections.Counter()
        for _, had, same_mode in decoded:
            changed = {"resize"} if tuple(had[:2]) != shape[:2] else set()
            if had[2] != shape[2] or not same_mode:
                changed.add("channels")
            if changed - silent:
                converted[_shape_text(had)] += 1
        images = np.stack([image for image, _, _ in decoded])
        yield Inputs([item.source for item in chunk], images, dict(converted))


def prefetched(chunks_: Iterator[Inputs]) -> Iterator[Inputs]:
    """``chunks_``, the next one decoded on a thread while the caller scores this one: the
    decoding (Python, holding the GIL) overlaps XLA's computation (which releases it). A
    thread per file was slower for small images than one thread (the GIL, handed over per
    file). Memory holds two chunks."""
    ready: queue.Queue = queue.Queue(maxsize=1)
    done = object()

    def fill():
        try:
            for chunk in chunks_:
                ready.put(chunk)
            ready.put(done)
        except BaseException as e:  # raised again in the caller's thread
            ready.put(e)

    threading.Thread(target=fill, daemon=True).start()
    while (chunk := ready.get()) is not done:
        if isinstance(chunk, BaseException):
            raise chunk
        yield chunk


def read(
    paths: list[str | Path], shape: tuple[int, int, int], *, silent: frozenset[str] = frozenset()
) -> Inputs:
    """Every image of ``paths`` as uint8 ``[N, *shape]``, at once (:func:`chunks` holds one
    chunk at a time). ``silent``: as for :func:`chunks`."""
    every = items(paths)
    (whole,) = chunks(every, shape, len(every), silent=silent)
    return whole
