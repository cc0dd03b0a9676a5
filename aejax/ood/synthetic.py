"""Synthetic OOD sets, by name (``aejax.eval --ood uniform,black``).

They are uint8 ``[N, H, W, C]``, the shape of the model's images, made from a
seed (the same seed gives the same images), N the size of the in-distribution test split
they are compared with:

============ =============================================================
``uniform``  i.i.d. uniform pixels in 0..255
``gaussian`` i.i.d. N(127.5, 64^2) pixels, clipped to 0..255
``constant`` each image one grey level, uniform in 0..255
``black``    all pixels 0
``grey``     all pixels 128
``white``    all pixels 255
``inverted`` the in-distribution test images, inverted (255 - x)
============ =============================================================

and, grouped into :data:`FAMILIES` for the leave-one-family-out protocol of
``experiments/ood_general.py`` (light strokes on a dark field, as MNIST draws them; in colour
for RGB models):

================= ===========================================================
``speckle``        each pixel white with probability 0.1, else black
``smooth-noise``   uniform noise at a quarter of the size, resized up (blobs)
``rot90``          the in-distribution test images turned 90 degrees (180 if not square)
``vflip``          the in-distribution test images upside down
``block-shuffle``  the in-distribution test images cut into 4x4 blocks, shuffled
``glyphs``         a letter or symbol in Pillow's built-in font, random size and place
``strokes``        one to three pen strokes (random polylines): unknown handwriting
``patches``        grey crops of the two photographs scikit-learn ships, resized
``digits-8x8``     scikit-learn's 1,797 8x8 handwritten digits, resized up (repeated)
================= ===========================================================
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def _uniform(rng, like):
    return rng.integers(0, 256, like.shape, dtype=np.uint8)


def _gaussian(rng, like):
    return np.clip(np.rint(rng.normal(127.5, 64.0, like.shape)), 0, 255).astype(np.uint8)


def _constant(rng, like):
    levels = rng.integers(0, 256, (len(like), 1, 1, 1), dtype=np.uint8)
    return np.broadcast_to(levels, like.shape).copy()


def _resized(images_NxhxwxC: np.ndarray, like: np.ndarray) -> np.ndarray:
    """Each image resized (bilinear) to ``like``'s height and width, in its channels."""
    from PIL import Image

    _, h, w, c = like.shape
    out = np.empty((len(images_NxhxwxC), h, w, c), np.uint8)
    for i, image in enumerate(images_NxhxwxC):
        for ch in range(image.shape[-1]):
            plane = Image.fromarray(image[..., ch]).resize((w, h), Image.Resampling.BILINEAR)
            out[i, ..., ch] = np.asarray(plane)
    return out if image.shape[-1] == c else np.repeat(out[..., :1], c, axis=-1)


def _tinted(rng, grey_NxHxW: np.ndarray, like) -> np.ndarray:
    """Grey images in ``like``'s channels: as they are for grey, in a random colour for RGB."""
    grey = grey_NxHxW[..., None]
    if like.shape[-1] == 1:
        return grey
    colour = rng.uniform(0.4, 1.0, (len(grey), 1, 1, like.shape[-1]))
    return np.rint(grey * colour).astype(np.uint8)


def _speckle(rng, like):
    white = rng.random(like.shape[:3]) < 0.1  # one draw per pixel, white in every channel
    return np.repeat(np.where(white, 255, 0).astype(np.uint8)[..., None], like.shape[-1], -1)


def _smooth_noise(rng, like):
    n, h, w, c = like.shape
    small = rng.integers(0, 256, (n, max(1, h // 4), max(1, w // 4), c), dtype=np.uint8)
    return _resized(small, like)


def _rot90(rng, like):
    return np.rot90(like, 1 if like.shape[1] == like.shape[2] else 2, axes=(1, 2)).copy()


def _block_shuffle(rng, like):
    n, h, w, c = like.shape
    bh, bw = h // 4, w // 4
    out = like.copy()
    for i in range(n):
        order = rng.permutation(16)
        blocks = [like[i, r * bh : (r + 1) * bh, q * bw : (q + 1) * bw] for r in range(4)
                  for q in range(4)]  # fmt: skip
        for k, b in enumerate(order):
            r, q = divmod(k, 4)
            out[i, r * bh : (r + 1) * bh, q * bw : (q + 1) * bw] = blocks[b]
    return out


_GLYPHS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabdefghijkmnpqrtuy#%&@?!*+={}"


def _drawn(rng, like, draw_one) -> np.ndarray:
    """``len(like)`` grey pictures, each drawn by ``draw_one(draw, rng, size)`` on a black
    field of ``like``'s size, in ``like``'s channels."""
    from PIL import Image, ImageDraw

    n, h, w, _ = like.shape
    grey = np.empty((n, h, w), np.uint8)
    for i in range(n):
        image = Image.new("L", (w, h), 0)
        draw_one(ImageDraw.Draw(image), rng, (h, w))
        grey[i] = np.asarray(image)
    return _tinted(rng, grey, like)


def _glyph(draw, rng, size):
    from PIL import ImageFont

    h, w = size
    font = ImageFont.load_default(size=int(rng.integers(h * 6 // 10, h * 9 // 10 + 1)))
    text = _GLYPHS[rng.integers(len(_GLYPHS))]
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font, stroke_width=1)
    x = (w - (right - left)) / 2 - left + rng.normal(0, w / 20)
    y = (h - (bottom - top)) / 2 - top + rng.normal(0, h / 20)
    pen = int(rng.integers(0, max(1, h // 14) + 1))  # pen widths as thick as MNIST's strokes
    draw.text((x, y), text, fill=int(rng.integers(200, 256)), font=font, stroke_width=pen,
              stroke_fill=255)  # fmt: skip


def _strokes(draw, rng, size):
    h, w = size
    for _ in range(rng.integers(1, 4)):
        points = rng.uniform(0.15, 0.85, (int(rng.integers(3, 7)), 2)) * (w, h)
        width = max(1, round(min(h, w) / 28 * rng.uniform(1.5, 3.0)))
        draw.line([tuple(p) for p in points], fill=int(rng.integers(200, 256)), width=width,
                  joint="curve")  # fmt: skip


def _patches(rng, like):
    from sklearn.datasets import load_sample_images  # shipped with scikit-learn: offline

    photos = [np.asarray(p) for p in load_sample_images().images]
    n, h, w, c = like.shape
    crops = np.empty((n, h, w, c), np.uint8)
    for i in range(n):
        photo = photos[rng.integers(len(photos))]
        side = int(rng.integers(min(h, w) * 2, min(photo.shape[:2]) // 2))
        y, x = (int(rng.integers(0, d - side)) for d in photo.shape[:2])
        crop = photo[None, y : y + side, x : x + side]
        if c == 1:
            crop = np.rint(crop @ np.array([0.299, 0.587, 0.114]))[..., None].astype(np.uint8)
        crops[i] = _resized(crop, like)[0]
    return crops


def _digits(rng, like):
    from sklearn.datasets import load_digits  # shipped with scikit-learn: offline

    digits = load_digits().images  # [1797, 8, 8], 0..16: shuffled, repeated to len(like)
    digits = digits[np.resize(rng.permutation(len(digits)), len(like))]
    grey = np.clip(np.rint(digits * 16), 0, 255).astype(np.uint8)[..., None]
    return _tinted(rng, _resized(grey, like[..., :1])[..., 0], like)


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
    "speckle": _speckle,
    "smooth-noise": _smooth_noise,
    "rot90": _rot90,
    "vflip": lambda rng, like: like[:, ::-1].copy(),
    "block-shuffle": _block_shuffle,
    "glyphs": lambda rng, like: _drawn(rng, like, _glyph),
    "strokes": lambda rng, like: _drawn(rng, like, _strokes),
    "patches": _patches,
    "digits-8x8": _digits,
}

# The synthetic sets by kind, for the leave-one-family-out protocol (experiments/
# ood_general.py adds a family of other datasets): a score is chosen on some families and
# judged on one it was not chosen on.
FAMILIES: dict[str, tuple[str, ...]] = {
    "noise": ("uniform", "gaussian", "speckle", "smooth-noise"),
    "constant": ("black", "grey", "white", "constant"),
    "transformed": ("inverted", "rot90", "vflip", "block-shuffle"),
    "drawn": ("glyphs", "strokes"),
    "photos": ("patches",),
    "digits": ("digits-8x8",),
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
