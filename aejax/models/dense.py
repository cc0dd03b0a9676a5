"""``dense``: 784 -> Dense(latent, relu) -> Dense(784) logits (the Keras tutorial's first model)."""

import math

import jax
from flax import nnx

from aejax.models import register
from aejax.models.base import Autoencoder, bias_init, kernel_init


class PixelsMinorLinear(nnx.Module):
    """``x @ kernel.T + bias`` for ``x`` of ``[B, pixels]``: a Dense layer whose kernel is
    stored ``[features, pixels]``, PyTorch's ``[out, in]`` rather than flax's ``[in, out]``.

    Why: on XLA:CPU the kernel's gradient, a product over the batch, ran 2x faster with the
    784 pixels as its minor (contiguous) axis than with the 15 features, and Adam's
    elementwise update of a ``[784, 15]`` array vectorises poorly along its 15-wide rows (dense
    net: 4-6% of a training pass). Initialised as Keras' Dense(pixels -> features) is, and
    from the same random draws as flax's ``nnx.Linear``, so a seed gives the same model.
    """

    def __init__(self, pixels: int, features: int, *, rngs: nnx.Rngs):
        self.kernel = nnx.Param(kernel_init(rngs.params(), (pixels, features)).T)
        self.bias = nnx.Param(bias_init(rngs.params(), (features,)))

    def __call__(self, x_BxP: jax.Array) -> jax.Array:
        return x_BxP @ self.kernel[...].T + self.bias[...]


@register("dense")
class Dense(Autoencoder):
    # Checkpoints written before the encoder kernel was stored [latent, pixels] hold it as
    # [pixels, latent]; aejax.run transposes it (and its Adam moments) when restoring them.
    legacy_transposed = ("encoder", "kernel")

    def __init__(self, latent_dim: int = 15, image_shape=(28, 28, 1), *, rngs: nnx.Rngs):
        self.image_shape = tuple(image_shape)
        pixels = math.prod(self.image_shape)
        self.encoder = PixelsMinorLinear(pixels, latent_dim, rngs=rngs)
        # [latent, pixels] already: the pixels are minor in flax's [in, out] layout.
        self.decoder = nnx.Linear(latent_dim, pixels, kernel_init=kernel_init,
                                  bias_init=bias_init, rngs=rngs)

    def encode(self, x_BxHxWxC: jax.Array) -> jax.Array:
        return nnx.relu(self.encoder(x_BxHxWxC.reshape(x_BxHxWxC.shape[0], -1)))

    def decode(self, z_BxL: jax.Array) -> jax.Array:
        return self.decoder(z_BxL).reshape(z_BxL.shape[0], *self.image_shape)

    def logits(self, x_BxHxWxC: jax.Array) -> jax.Array:
        # Flat, [B, H*W*C], for the loss: XLA:CPU runs an elementwise loop over [B, 28, 28, 1]
        # with its innermost dimension of 1 unvectorised, and the loss's exp (whose result
        # the loss and its gradient share) ran 1.5x slower in that shape.
        return super().logits(x_BxHxWxC).reshape(x_BxHxWxC.shape[0], -1)
