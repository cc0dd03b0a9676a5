"""Reconstruction losses, per example. Decoders return logits; the sigmoid lives here."""

import jax
import jax.numpy as jnp


def bce_per_example(logits: jax.Array, targets: jax.Array) -> jax.Array:
    r"""Binary cross-entropy of each example, averaged over its pixels, from logits.

    .. math::
      \ell(x, z) = \frac{1}{P} \sum_p \max(z_p, 0) - z_p x_p + \log(1 + e^{-|z_p|})

    which equals :math:`-\frac1P\sum_p x_p \log \sigma(z_p) + (1 - x_p) \log(1 - \sigma(z_p))`
    without overflow for large :math:`|z|` (Keras computes it the same way when the output is a
    sigmoid layer's).

    Args:
      logits: decoder outputs ``[B, ...]``.
      targets: the inputs, in ``[0, 1]``, same size (reshaped to the logits' shape: a model
        may give its logits flat, ``[B, H*W*C]``).

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
    z, x = logits, targets.reshape(logits.shape)
    return _mean_per_example(jnp.maximum(z, 0) - z * x + jnp.log(1 + jnp.exp(-jnp.abs(z))))


def _mean_per_example(x_BxD: jax.Array) -> jax.Array:
    # A matrix-vector product rather than a reduction: XLA:CPU fuses a reduction with the
    # elementwise loss into one loop that vectorises poorly.
    x = x_BxD.reshape(x_BxD.shape[0], -1)
    return x @ jnp.full((x.shape[1],), 1.0 / x.shape[1], x.dtype)


def mse_per_example(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean squared error between ``sigmoid(logits)`` and ``targets``, per example: ``[B]``."""
    return _mean_per_example(jnp.square(jax.nn.sigmoid(logits) - targets))
