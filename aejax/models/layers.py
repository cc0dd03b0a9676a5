"""Keras layers flax NNX lacks (pooling, up-sampling, reshaping), for ``nnx.Sequential``.

Plain flax: what they compute is what :mod:`aejax.backend` reproduces faster on CPU.
"""

import jax
import jax.numpy as jnp
from flax import nnx


class MaxPool(nnx.Module):
    """``size x size`` max-pooling, stride ``size`` (Keras' ``MaxPooling2D(size)``)."""

    def __init__(self, size: int = 2):
        self.size = size

    def __call__(self, x_BxHxWxC: jax.Array) -> jax.Array:
        window = (self.size, self.size)
        return nnx.max_pool(x_BxHxWxC, window, strides=window)


class UpSample(nnx.Module):
    """Nearest-neighbour up-sampling by ``size`` (Keras' ``UpSampling2D(size)``)."""

    def __init__(self, size: int = 2):
        self.size = size

    def __call__(self, x_BxHxWxC: jax.Array) -> jax.Array:
        return jnp.repeat(jnp.repeat(x_BxHxWxC, self.size, axis=1), self.size, axis=2)


class Flatten(nnx.Module):
    """``[B, ...]`` to ``[B, features]`` (Keras' ``Flatten``)."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return x.reshape(x.shape[0], -1)


class Reshape(nnx.Module):
    """``[B, features]`` to ``[B, *shape]`` (Keras' ``Reshape``)."""

    def __init__(self, shape: tuple[int, ...]):
        self.shape = tuple(shape)

    def __call__(self, x: jax.Array) -> jax.Array:
        return x.reshape(x.shape[0], *self.shape)
