r"""``vae``: a variational autoencoder (the Keras tutorial's: 784 -> Dense(64, relu) -> a
Gaussian code -> Dense(64, relu) -> 784 logits), with a 15-d code like the other models.

The encoder gives :math:`q(z \mid x) = \mathcal N(\mu(x), \mathrm{diag}\,\sigma^2(x))`; training
minimises the negative ELBO per pixel,

.. math::
  \frac1P\Big(\mathbb E_{z \sim q}\big[-\log p(x \mid z)\big]
  + \mathrm{KL}\big(q(z \mid x) \,\|\, \mathcal N(0, I)\big)\Big),

with one reparameterised sample :math:`z = \mu + \sigma \epsilon` per image. ``encode`` returns
:math:`\mu` (a deterministic code), so ``decode(encode(x))``, ``val_loss`` and the ``bce`` score
are the reconstruction of the mean, comparable with the other models. :meth:`prior_term` is
the KL term per pixel: the ``elbo`` OOD score (:mod:`aejax.ood`) adds it to ``bce``.
"""

import math

import jax
import jax.numpy as jnp
from flax import nnx

from aejax.losses import bce_per_example
from aejax.models import register
from aejax.models.base import Autoencoder, bias_init, kernel_init
from aejax.models.options import PositiveInt, Shape


@register("vae")
class VAE(Autoencoder):
    def __init__(
        self,
        latent_dim: PositiveInt = 15,
        hidden: PositiveInt = 64,
        image_shape: Shape = (28, 28, 1),
        *,
        rngs: nnx.Rngs,
    ):
        self.image_shape = tuple(image_shape)
        pixels = math.prod(self.image_shape)
        layer = dict(kernel_init=kernel_init, bias_init=bias_init, rngs=rngs)
        self.hidden_in = nnx.Linear(pixels, hidden, **layer)
        self.mean = nnx.Linear(hidden, latent_dim, **layer)
        self.log_var = nnx.Linear(hidden, latent_dim, **layer)
        self.hidden_out = nnx.Linear(latent_dim, hidden, **layer)
        self.out = nnx.Linear(hidden, pixels, **layer)

    def posterior(self, x_BxHxWxC: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Mean and log-variance of :math:`q(z \\mid x)`, each ``[B, L]``."""
        h = nnx.relu(self.hidden_in(x_BxHxWxC.reshape(x_BxHxWxC.shape[0], -1)))
        return self.mean(h), self.log_var(h)

    def encode(self, x_BxHxWxC: jax.Array) -> jax.Array:
        return self.posterior(x_BxHxWxC)[0]

    def encode_with_features(self, x_BxHxWxC: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The code and its features: the hidden layer's activations and the code, ``[B,
        hidden + latent]``."""
        h = nnx.relu(self.hidden_in(x_BxHxWxC.reshape(x_BxHxWxC.shape[0], -1)))
        code = self.mean(h)
        return code, jnp.concatenate([h, code], axis=1).astype(jnp.float32)

    def decode(self, z_BxL: jax.Array) -> jax.Array:
        return self.out(nnx.relu(self.hidden_out(z_BxL))).reshape(z_BxL.shape[0], *self.image_shape)

    def _kl_per_pixel(self, mean_BxL, log_var_BxL) -> jax.Array:
        kl_B = 0.5 * jnp.sum(
            jnp.exp(log_var_BxL) + jnp.square(mean_BxL) - 1.0 - log_var_BxL, axis=-1
        )
        return kl_B.astype(jnp.float32) / math.prod(self.image_shape)

    def prior_term(self, x_BxHxWxC: jax.Array) -> jax.Array:
        """:math:`\\mathrm{KL}(q(z \\mid x) \\| \\mathcal N(0, I)) / P` per image, ``[B]``."""
        return self._kl_per_pixel(*self.posterior(x_BxHxWxC))

    def loss(self, x_BxHxWxC: jax.Array, key: jax.Array) -> tuple[jax.Array, dict]:
        mean, log_var = self.posterior(x_BxHxWxC.astype(self.param_dtype))
        z = mean + jnp.exp(0.5 * log_var) * jax.random.normal(key, mean.shape, mean.dtype)
        bce_B = bce_per_example(self.decode(z).astype(jnp.float32), x_BxHxWxC)
        kl_B = self._kl_per_pixel(mean, log_var)
        return bce_B + kl_B, {"bce": bce_B, "kl_code": kl_B}
