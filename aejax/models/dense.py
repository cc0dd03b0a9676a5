"""``dense``: 784 -> Dense(latent, relu) -> Dense(784) logits (the Keras tutorial's first model)."""

import math

from flax import nnx

from aejax.models import register
from aejax.models.base import Autoencoder, bias_init, kernel_init
from aejax.models.layers import Flatten, Reshape
from aejax.models.options import PositiveInt, Shape


@register("dense")
class Dense(Autoencoder):
    def __init__(
        self, latent_dim: PositiveInt = 15, image_shape: Shape = (28, 28, 1), *, rngs: nnx.Rngs
    ):
        self.image_shape = tuple(image_shape)
        pixels = math.prod(self.image_shape)
        dense = dict(kernel_init=kernel_init, bias_init=bias_init, rngs=rngs)
        self.encoder = nnx.Sequential(Flatten(), nnx.Linear(pixels, latent_dim, **dense), nnx.relu)
        self.decoder = nnx.Sequential(
            nnx.Linear(latent_dim, pixels, **dense), Reshape(self.image_shape)
        )
