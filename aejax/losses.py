"""Per-example losses and the images' own entropy. Decoders return logits; the sigmoid
lives here."""

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import xlogy


def bce_per_example(logits: jax.Array, targets: jax.Array) -> jax.Array:
    r"""Binary cross-entropy of each example, averaged over its pixels, from logits.

    .. math::
      \ell(x, z) = \frac{1}{P} \sum_p \max(z_p, 0) - z_p x_p + \log(1 + e^{-|z_p|})

    which equals :math:`-\frac1P\sum_p x_p \log \sigma(z_p) + (1 - x_p) \log(1 - \sigma(z_p))`
    without overflow for large :math:`|z|` (Keras computes it the same way when the output is a
    sigmoid layer's).

    Args:
      logits: decoder outputs ``[B, ...]``.
      targets: the inputs, in ``[0, 1]``, of the same size.

    Returns:
      ``[B]`` float32.

    >>> import jax.numpy as jnp
    >>> float(bce_per_example(jnp.zeros((1, 4)), jnp.full((1, 4), 0.5))[0])  # log 2
    0.6931471...
    """
    # TensorFlow's form (tf.nn.sigmoid_cross_entropy_with_logits): one exp and one log per
    # pixel. optax.sigmoid_binary_cross_entropy evaluates two log-sigmoids, and its forward
    # pass measured several times slower on XLA:CPU.
    # log(1 + e) rather than log1p(e): XLA:CPU's log1p costs twice a log, and for e in (0, 1]
    # both are within 8e-8 of the exact value (the log only loses relative accuracy on terms
    # below that); the gradient, 1 / (1 + e), is the same expression either way.
    # Flat, [B, H*W*C]: XLA:CPU leaves a loop over [B, 28, 28, 1] (an innermost axis of 1)
    # unvectorised, and the loss's exp, shared with its gradient, ran slower so.
    z, x = _flat(logits), _flat(targets)
    return _mean_per_example(jnp.maximum(z, 0) - z * x + jnp.log(1 + jnp.exp(-jnp.abs(z))))


def _flat(x_Bx___: jax.Array) -> jax.Array:
    return x_Bx___.reshape(x_Bx___.shape[0], -1)


def _mean_per_example(x_BxD: jax.Array) -> jax.Array:
    # A matrix-vector product rather than a reduction: XLA:CPU fuses a reduction with the
    # elementwise loss into one loop that vectorises poorly.
    x = x_BxD.reshape(x_BxD.shape[0], -1)
    return x @ jnp.full((x.shape[1],), 1.0 / x.shape[1], x.dtype)


def mse_per_example(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean squared error between ``sigmoid(logits)`` and ``targets``, per example: ``[B]``."""
    return _mean_per_example(jnp.square(jax.nn.sigmoid(_flat(logits)) - _flat(targets)))


def _binary_entropy(x: jax.Array) -> jax.Array:
    return -(xlogy(x, x) + xlogy(1 - x, 1 - x))


def _level_entropy() -> np.ndarray:
    """h(k / 255) for the 256 uint8 levels, computed in float64 with NumPy."""
    x = np.arange(256) / 255
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(x * np.log(x) + (1 - x) * np.log(1 - x))
    h[[0, 255]] = 0.0
    return h.astype(np.float32)


# A table rather than the formula on the device: XLA:CPU may compute 1 - 255/255 as a fused
# multiply-add, -5.9e-8 instead of 0, whose log is NaN (experiments/xla_white_pixel_nan.py);
# the table is exact whatever XLA fuses.
_LEVEL_ENTROPY = _level_entropy()


def mean_entropy(levels_count: np.ndarray) -> float:
    """The mean binary entropy of pixels given how many there are of each uint8 level
    (``np.bincount(images.ravel(), minlength=256)``), in float64: of equal-sized images,
    the mean of :func:`entropy_per_example`, exactly summed and without a compiled program.

    >>> round(mean_entropy(np.bincount(np.array([0, 255, 128, 127], np.uint8), minlength=256)), 6)
    0.34657
    """
    counts = np.asarray(levels_count, np.float64)
    return float(counts @ _LEVEL_ENTROPY / max(counts.sum(), 1))


def entropy_per_example(images_BxHxWxC: jax.Array) -> jax.Array:
    r"""Mean binary entropy of each image's pixels, ``[B]`` float32:
    :math:`H(x) = -\frac1P\sum_p x_p \log x_p + (1 - x_p) \log(1 - x_p)` (0 log 0 = 0).

    uint8 images (the usual input) are looked up per level, exactly; float images are taken
    as pixels in [0, 1] (clipped there).

    >>> import numpy as np
    >>> float(entropy_per_example(np.array([[0, 255]], np.uint8))[0])  # black and white
    0.0
    >>> round(float(entropy_per_example(np.full((1, 4), 0.5, np.float32))[0]), 6)  # log 2
    0.693147
    """
    x = jnp.asarray(images_BxHxWxC)
    if jnp.issubdtype(x.dtype, jnp.integer):
        h = jnp.asarray(_LEVEL_ENTROPY)[x.astype(jnp.int32)]
    else:
        h = _binary_entropy(jnp.clip(x.astype(jnp.float32), 0, 1))
    return _mean_per_example(h)


def kl_per_example(logits: jax.Array, images_BxHxWxC: jax.Array) -> jax.Array:
    r"""The ``kl`` score: mean KL of each image's pixels from their reconstruction, ``[B]``,
    :math:`\frac1P\sum_p \ell(x_p, z_p) - h(x_p)` (BCE less the image's entropy).

    uint8 images (the usual input) by :func:`kl_per_pixel`, accurate however well the image is
    reconstructed; float images (pixels in [0, 1], no level to table) as the difference of
    :func:`bce_per_example` and :func:`entropy_per_example`.
    """
    x = jnp.asarray(images_BxHxWxC)
    if jnp.issubdtype(x.dtype, jnp.integer):
        return _mean_per_example(kl_per_pixel(logits, x))
    return bce_per_example(logits, x) - entropy_per_example(x)


def kl_per_pixel(logits: jax.Array, images_uint8: jax.Array) -> jax.Array:
    r"""The model's own part of each pixel's error, ``[B, ...]`` like ``images_uint8``:
    :math:`\mathrm{KL}(x_p \| \hat x_p) = \ell(x_p, z_p) - h(x_p) \ge 0`, the pixel's BCE less
    its entropy (0 where the reconstruction is exact). Its mean over an image's pixels is the
    ``kl`` score; over the channels, an anomaly map.

    Computed without taking the two apart: a well reconstructed pixel's KL is far smaller than
    its BCE, and a float32 difference kept only BCE's last digits (``kl`` 1e-5 off, and
    another runtime's rounding of BCE moved it as much). With :math:`A` = softplus,
    :math:`\hat x = \sigma(z)` and :math:`\lambda = \mathrm{logit}(x)`, KL is the Bregman
    divergence

    .. math::
      \mathrm{KL} = A(z) - A(\lambda) - x\,t = \sum_{k \ge 2} \frac{A^{(k)}(\lambda)}{k!}\,t^k,
      \qquad t = z - \lambda,

    the series (exact coefficients per uint8 level, tabled in float64) where :math:`|t| < 3/4`,
    the difference beyond; :math:`A(z)` for black pixels. Pixels brighter than half are taken
    as their negatives (:math:`1 - x`, :math:`-z`: the same KL).
    Within a few float32 roundings of the exact KL, whatever runtime computes it
    (tests/test_scores.py).

    >>> import numpy as np
    >>> kl = kl_per_pixel(jnp.array([[0.0, 0.0]]), np.array([[0, 255]], np.uint8))
    >>> np.round(np.asarray(kl), 4)  # a black and a white pixel both predicted as 0.5: log 2
    array([[0.6931, 0.6931]], dtype=float32)
    """
    level = jnp.asarray(images_uint8).astype(jnp.int32)
    # KL(x || sigma(z)) = KL(1 - x || sigma(-z)): pixels brighter than half are taken as their
    # negatives, so that the difference below never subtracts large A(z) and A(lambda).
    bright = level > 127
    level = jnp.where(bright, 255 - level, level)
    z = jnp.where(bright, -logits, logits).astype(jnp.float32)
    x = level.astype(jnp.float32) / 255.0
    table = jnp.asarray(_KL_TABLE)[level]  # [..., 3 + SERIES_TERMS]
    # lambda in two float32 parts, so that t is exact to float32 however small it is
    t = (z - table[..., 0]) - table[..., 1]
    series = table[..., -1]
    for k in range(table.shape[-1] - 2, 2, -1):
        series = series * t + table[..., k]
    softplus_z = jnp.maximum(z, 0) + _log1p_small(jnp.exp(-jnp.abs(z)))
    grey = jnp.where(jnp.abs(t) < SERIES_REACH, t * t * series, softplus_z - table[..., 2] - x * t)
    return jnp.where(level == 0, softplus_z, grey)  # black (or white): KL = A(z)


def _log1p_small(e: jax.Array) -> jax.Array:
    r""":math:`\log(1 + e)` for :math:`e \in [0, 1]`, to float32's precision however small
    :math:`e` is: :math:`2\,\mathrm{atanh}(w)`, :math:`w = e / (2 + e) \le 1/3`, by its
    series, ten terms (the next is below 1e-10)."""
    # Not jnp.log1p: jax2onnx writes it as Log(1 + e), whose 1 + e loses e's last digits where
    # e is small (a well reconstructed black pixel's whole KL); nor Kahan's correction
    # log(u) e / (u - 1), u = 1 + e, which XLA's simplifier folds back to log(u).
    w = e / (2 + e)
    w2 = w * w
    series = jnp.full_like(w, 1 / 19)
    for k in range(8, -1, -1):
        series = series * w2 + 1 / (2 * k + 1)
    return 2 * w * series


# The series for |t| < SERIES_REACH, within ~1e-8 of its sum in SERIES_TERMS terms (its radius
# is |lambda +- i pi| >= pi: (0.75 / pi)^12 ~ 3e-8); beyond, the difference loses at most a few
# 1e-6 of a pixel's KL. More terms reach further and cost more: each is a table column.
SERIES_TERMS, SERIES_REACH = 12, 0.75


def _kl_table() -> np.ndarray:
    """``[128, 3 + SERIES_TERMS]`` float32, per uint8 level x = i/255 up to half: logit(x) as
    a float32 and the rest, A(logit(x)) = -log(1 - x), and A^(k)(logit(x)) / k! for
    k = 2, 3, ... (black's row: zeros; its KL takes no table)."""
    x = np.arange(1, 128) / 255
    logit = np.log(x) - np.log1p(-x)
    # A' = sigma, and d/dlambda P(sigma) = P'(sigma) sigma (1 - sigma): each derivative is a
    # polynomial in sigma = x, with integer coefficients.
    derivative = np.polynomial.Polynomial([0, 1])
    coefficients = []
    for k in range(2, 2 + SERIES_TERMS):
        derivative = derivative.deriv() * np.polynomial.Polynomial([0, 1, -1])
        coefficients.append(derivative(x) / math.factorial(k))
    high = logit.astype(np.float32)
    table = np.stack([high, logit - high, -np.log1p(-x), *coefficients], axis=-1)
    return np.concatenate([np.zeros((1, table.shape[1])), table]).astype(np.float32)


_KL_TABLE = _kl_table()
