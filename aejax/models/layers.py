"""Parameter-free layers, written as reshapes: on XLA:CPU the gradient of a reshape-then-max
pool is markedly faster than ``lax.reduce_window``'s select-and-scatter, and the forward
values are identical."""

import jax
import jax.numpy as jnp


def max_pool_2x2(x_BxHxWxC: jax.Array) -> jax.Array:
    """2x2 max pool, stride 2 (H, W even: 28 -> 14 -> 7, as Keras' 'same' pooling gives)."""
    b, h, w, c = x_BxHxWxC.shape
    return jnp.max(x_BxHxWxC.reshape(b, h // 2, 2, w // 2, 2, c), axis=(2, 4))


def upsample_2x2(x_BxHxWxC: jax.Array) -> jax.Array:
    """Nearest-neighbour up-sampling by 2 (Keras' ``UpSampling2D(2)``)."""
    b, h, w, c = x_BxHxWxC.shape
    x = jnp.broadcast_to(x_BxHxWxC[:, :, None, :, None, :], (b, h, 2, w, 2, c))
    return x.reshape(b, 2 * h, 2 * w, c)
