"""OOD sets by name: a TFDS image dataset, a folder of images, or a synthetic set.

Synthetic sets are uint8 ``[N, H, W, C]``, the shape of the model's images, made from a
seed (the same seed gives the same images), N the size of the in-distribution test split
they are compared with:

=========== =============================================================
``uniform``  i.i.d. uniform pixels in 0..255
``gaussian`` i.i.d. N(127.5, 64^2) pixels, clipped to 0..255
``constant`` each image one grey level, uniform in 0..255
``black``    all pixels 0
``grey``     all pixels 128
``white``    all pixels 255
``inverted`` the in-distribution test images, inverted (255 - x)
=========== =============================================================
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from aejax import data
from aejax.data import folder
from aejax.errors import AejaxError


def _uniform(rng, like):
    return rng.integers(0, 256, like.shape, dtype=np.uint8)


def _gaussian(rng, like):
    return np.clip(np.rint(rng.normal(127.5, 64.0, like.shape)), 0, 255).astype(np.uint8)


def _constant(rng, like):
    levels = rng.integers(0, 256, (len(like), 1, 1, 1), dtype=np.uint8)
    return np.broadcast_to(levels, like.shape).copy()


def _filled(value):
    return lambda rng, like: np.full(like.shape, value, np.uint8)


SYNTHETIC: dict[str, Callable[[np.random.Generator, np.ndarray], np.ndarray]] = {
    "uniform": _uniform,
    "gaussian": _gaussian,
    "constant": _constant,
    "black": _filled(0),
    "grey": _filled(128),
    "white": _filled(255),
    "inverted": lambda rng, like: 255 - like,
}


def synthetic(name: str, like: np.ndarray, seed: int = 0) -> np.ndarray:
    """The synthetic set ``name``, shaped like ``like`` (the in-distribution test images)."""
    # A name-specific stream, so adding a set never changes the images of another.
    rng = np.random.default_rng([seed, sum(name.encode())])
    return SYNTHETIC[name](rng, like)


def synthetic_set(
    name: str, in_test_images: np.ndarray, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``(images, labels)`` of synthetic set ``name``, shaped like ``in_test_images``; the
    labels are -1 (no class). A TFDS OOD set is read like any dataset (:func:`data.load`)."""
    images = synthetic(name, in_test_images, seed)
    return images, np.full(len(images), -1, np.int32)


def check_name(
    name: str, data_dir: str | None = None, shape: tuple[int, ...] | None = None
) -> None:
    """Raises one clear error unless ``name`` is a synthetic set, a folder of images, or a
    usable TFDS dataset (of images of ``shape``, the model's, when given)."""
    if name in SYNTHETIC or folder.is_folder(name):  # a folder is checked as it is read
        return
    try:
        b = data.builder(name, data_dir)
    except AejaxError as e:
        if str(e).startswith("unknown dataset"):
            raise AejaxError(
                f"unknown OOD set {name!r}: use a TFDS image dataset (mnist, fashion_mnist, "
                f"...), a folder of images, or a synthetic set: {', '.join(SYNTHETIC)}"
            ) from None
        raise
    has = tuple(b.info.features["image"].shape)
    if shape is not None and has != tuple(shape):
        raise AejaxError(
            f"OOD set {name!r} has {'x'.join(map(str, has))} images, the model takes "
            f"{'x'.join(map(str, shape))}: give a set of that shape, or a folder of images "
            "(converted to it)"
        )
