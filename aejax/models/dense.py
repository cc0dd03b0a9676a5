"""``dense``: 784 -> Dense(latent, relu) -> Dense(784) logits (the Keras tutorial's first model)."""

import math

import jax
from flax import nnx

from aejax.models import register
from aejax.models.base import Autoencoder, bias_init, kernel_init


@register("dense")
class Dense(Autoencoder):
    def __init__(self, latent_dim: int = 15, image_shape=(28, 28, 1), *, rngs: nnx.Rngs):
        self.image_shape = tuple(image_shape)
        pixels = math.prod(self.image_shape)
        layer = dict(kernel_init=kernel_init, bias_init=bias_init, rngs=rngs)
        self.encoder = nnx.Linear(pixels, latent_dim, **layer)
        self.decoder = nnx.Linear(latent_dim, pixels, **layer)

    def encode(self, x_BxHxWxC: jax.Array) -> jax.Array:
        return nnx.relu(self.encoder(x_BxHxWxC.reshape(x_BxHxWxC.shape[0], -1)))

    def decode(self, z_BxL: jax.Array) -> jax.Array:
        return self.decoder(z_BxL).reshape(z_BxL.shape[0], *self.image_shape)

    def logits(self, x_BxHxWxC: jax.Array) -> jax.Array:
        # Flat, [B, H*W*C], for the loss: XLA:CPU runs an elementwise loop over [B, 28, 28, 1]
        # with its innermost dimension of 1 unvectorised, and the loss's exp (whose result
        # the loss and its gradient share) ran 1.5x slower in that shape.
        return super().logits(x_BxHxWxC).reshape(x_BxHxWxC.shape[0], -1)
