"""2x2 max-pooling of channels-first (``[C, B, H, W]``) activations, written for XLA:CPU.

Pooling is a reshape-then-max whose gradient is spelled out: XLA:CPU's select-and-scatter
(the gradient of ``lax.reduce_window``) and autodiff's gradient of a reshape-max (masks,
counts, a division) both measured several times slower than one masked broadcast.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _windows(h_CxBxHxW):
    c, b, h, w = h_CxBxHxW.shape
    return h_CxBxHxW.reshape(c, b, h // 2, 2, w // 2, 2)


@jax.custom_vjp
def pool_bias_relu(h_CxBxHxW: jax.Array, bias_C: jax.Array) -> jax.Array:
    """``relu(max_pool_2x2(h + bias))``, as ``relu(max_pool_2x2(h) + bias)``.

    The two are equal in floating point (adding one number to all four values of a window
    keeps their order), and the second adds and rectifies a quarter of the values. The
    gradient goes to the first maximum of each window, as ``max_pool``'s (select-and-scatter)
    does in flax, Keras and PyTorch. 2x2 windows, stride 2, H and W even.
    """
    return jax.nn.relu(jnp.max(_windows(h_CxBxHxW), axis=(3, 5)) + bias_C[:, None, None, None])


def _pool_bias_relu_fwd(h_CxBxHxW, bias_C):
    pooled = jnp.max(_windows(h_CxBxHxW), axis=(3, 5))
    out = jax.nn.relu(pooled + bias_C[:, None, None, None])
    return out, (h_CxBxHxW, pooled, out)


def _pool_bias_relu_bwd(residuals, g_out):
    h_CxBxHxW, pooled, out = residuals
    g_pooled = jnp.where(out > 0, g_out, 0.0)
    windows = _windows(h_CxBxHxW)
    is_max = windows == pooled[:, :, :, None, :, None]
    # First maximum in row-major window order: (0,0), (0,1), (1,0), (1,1). (Keeping its
    # index from the forward pass instead measured slower: XLA:CPU fuses the int8 select
    # poorly.)
    taken = jnp.zeros_like(pooled, dtype=bool)
    firsts = {}
    for dy in range(2):
        for dx in range(2):
            firsts[dy, dx] = is_max[:, :, :, dy, :, dx] & ~taken
            taken = taken | firsts[dy, dx]
    first = jnp.stack(
        [jnp.stack([firsts[dy, dx] for dx in range(2)], axis=-1) for dy in range(2)], axis=3
    )  # [C, B, H/2, 2, W/2, 2]
    g_h = jnp.where(first, g_pooled[:, :, :, None, :, None], 0.0)
    return g_h.reshape(h_CxBxHxW.shape), jnp.sum(g_pooled, axis=(1, 2, 3))


pool_bias_relu.defvjp(_pool_bias_relu_fwd, _pool_bias_relu_bwd)
