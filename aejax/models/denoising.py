"""``denoising``: the conv autoencoder trained to restore images from noisy copies (the Keras
tutorial's denoising variant: ``x + 0.5 N(0, 1)``, clipped to ``[0, 1]``).

Only training sees noise: the target is the clean image, and evaluation (``val_loss``, the
OOD scores) reconstructs clean inputs, so its BCE compares with ``conv`` directly. The noise
is drawn from the step's key, so runs are reproducible and a resumed run draws the same.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from aejax.losses import bce_per_example
from aejax.models import register
from aejax.models.conv import Conv
from aejax.models.options import NonNegative, PositiveInt


@register("denoising")
class Denoising(Conv):
    def __init__(
        self,
        latent_dim: PositiveInt = 15,
        width: PositiveInt = 30,
        channels: PositiveInt = 1,
        depth: PositiveInt = 2,
        noise: NonNegative = 0.5,
        *,
        rngs: nnx.Rngs,
    ):
        super().__init__(latent_dim, width, channels, depth, rngs=rngs)
        self.noise = noise

    def loss(self, x_BxHxWxC: jax.Array, key: jax.Array) -> tuple[jax.Array, dict]:
        noisy = x_BxHxWxC + self.noise * jax.random.normal(key, x_BxHxWxC.shape)
        logits = self.logits(jnp.clip(noisy, 0.0, 1.0))
        return bce_per_example(logits, x_BxHxWxC), {}
