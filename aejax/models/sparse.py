"""``sparse``: the dense autoencoder with an L1 penalty on its code (the Keras tutorial's
"sparse" variant: ``activity_regularizer=l1(10e-5)`` on the encoding layer).

Training minimises, per example, ``BCE(x, x_hat) + l1 * sum_j |z_j|``; the reported
``val_loss`` and every OOD score stay plain reconstruction BCE, so the numbers compare with
``dense`` directly. The penalty is also logged on its own (``l1`` in ``metrics.jsonl``).
"""

import jax
import jax.numpy as jnp
from flax import nnx

from aejax.losses import bce_per_example
from aejax.models import register
from aejax.models.dense import Dense
from aejax.models.options import NonNegative, PositiveInt, Shape


@register("sparse")
class Sparse(Dense):
    def __init__(
        self,
        latent_dim: PositiveInt = 15,
        image_shape: Shape = (28, 28, 1),
        l1: NonNegative = 1e-4,
        *,
        rngs: nnx.Rngs,
    ):
        super().__init__(latent_dim, image_shape, rngs=rngs)
        self.l1 = l1

    def loss(self, x_BxHxWxC: jax.Array, key: jax.Array) -> tuple[jax.Array, dict]:
        del key
        z_BxL = self.encode(x_BxHxWxC.astype(self.param_dtype))
        logits = self.decode(z_BxL).astype(jnp.float32)
        # Keras divides an activity penalty by the batch size: per example, l1 * sum |z|.
        penalty_B = self.l1 * jnp.sum(jnp.abs(z_BxL.astype(jnp.float32)), axis=-1)
        bce_B = bce_per_example(logits, x_BxHxWxC)
        return bce_B + penalty_B, {"bce": bce_B, "l1": penalty_B}
