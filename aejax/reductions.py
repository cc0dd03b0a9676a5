r"""A mean that runtimes agree on: how the encoder's features are pooled.

A float32 mean of a conv layer's activations over its pixels rounds differently in XLA,
onnxruntime and TensorFlow, each summing in its own order: features a few 1e-6 apart. The
pooled features vary little around their means, and ``feat-maha`` and ``feat-knn`` measure
that variation, so they magnified this to 1e-4 between ``aejax.score`` and the exported
detectors (experiments/results/deploy_parity.md). :func:`accurate_mean` takes the order out of
the sum.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def accurate_mean(x: jax.Array, axis: int | tuple[int, ...]) -> jax.Array:
    r"""The mean of ``x`` (as float32) over ``axis``, within a few roundings of the exact
    mean of its values, whatever order a runtime sums them in.

    The values are split without error (the extraction of Rump, Ogita and Oishi, *Accurate
    floating-point summation*, 2008): for :math:`n` values, with
    :math:`\sigma = 2^{\lceil \log_2 4n \rceil} \sum_i |x_i|` (at least :math:`4n \max_i |x_i|`),

    .. math::
      q_i = (\sigma + x_i) - \sigma, \qquad r_i = x_i - q_i,

    every :math:`q_i` is a multiple of one power of two small enough that
    :math:`\sum_i q_i` is exact in float32, in any order, and every :math:`r_i` is exact and
    below that power of two. Only :math:`\sum_i r_i` rounds, and on a scale far below the
    last bit of the sum (for 196 values, about a hundredth of it). The mean is
    :math:`(\sum_i q_i + \sum_i r_i) / n`: two orders give the same bits but for rare ties
    (about 1 mean in 500 of tests/test_reductions.py's), one bit apart. Infinite or NaN
    values give the plain sum's mean. Traceable and exportable (sums and arithmetic); two
    passes over ``x``, a few times a plain mean's cost (no training step takes it).

    >>> import numpy as np
    >>> x = np.float32([[1e8, 1.0, -1e8, 1.0]])
    >>> float(accurate_mean(x, axis=1)[0]), float(np.mean(x, axis=1)[0])
    (0.5, 0.25)
    """
    axes = tuple(a % x.ndim for a in ((axis,) if isinstance(axis, int) else axis))
    n = math.prod(x.shape[a] for a in axes)
    x = x.astype(jnp.float32)
    # From the sum of |x|, not the max: XLA:CPU's NaN-aware max took twice a sum's time. Times
    # a power of two, so that sigma is exact: XLA:CPU contracts a multiplication and the
    # addition after it into one fused multiply-add where it fuses them, and where differs
    # between programs (the detector, its exported copy).
    scale = jnp.float32(2 ** math.ceil(math.log2(4 * n)))
    sigma = jnp.sum(jnp.abs(x), axis=axes, keepdims=True) * scale
    coarse = (sigma + x) - sigma  # rounded to sigma's grid: summed exactly
    fine = x - coarse  # what that rounding took off, exactly
    sums = jnp.sum(jnp.stack([coarse, fine], axis=-1), axis=axes)  # one pass: [..., 2]
    finite = jnp.squeeze(sigma, axes) < jnp.inf
    plain = jnp.stack([jnp.sum(x, axis=axes), jnp.zeros_like(sums[..., 0])], axis=-1)
    sums = jnp.where(finite[..., None], sums, plain)
    # Divided by n in a matrix product: a multiplication would be contracted into whatever
    # adds the mean next (see above), and XLA turns a division by n into one.
    return sums @ jnp.full((2,), 1 / n, jnp.float32)
