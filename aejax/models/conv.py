"""``conv``: the Keras tutorial's convolutional autoencoder (10,756 parameters).

All convolutions 3x3, 'same'. The decoder returns logits: the last layer's sigmoid is in the
loss (:mod:`aejax.losses`). On CPU, :mod:`aejax.backend` runs these same layers faster.
"""

from flax import nnx

from aejax.models import register
from aejax.models.base import Autoencoder, bias_init, kernel_init
from aejax.models.layers import MaxPool, UpSample


@register("conv")
class Conv(Autoencoder):
    default_batch_size = 128
    eval_batch_size = 256  # its activations stay in cache (faster than 1000s on 2 devices)
    splits_well_on_cpu = True  # experiments/results/cpu_devices.md

    def __init__(self, latent_dim: int = 15, width: int = 30, channels: int = 1, *, rngs: nnx.Rngs):
        def conv(cin, cout):
            return nnx.Conv(
                cin,
                cout,
                (3, 3),
                padding="SAME",
                kernel_init=kernel_init,
                bias_init=bias_init,
                rngs=rngs,
            )

        self.encoder = nnx.Sequential(
            conv(channels, width),
            nnx.relu,
            MaxPool(2),
            conv(width, latent_dim),
            nnx.relu,
            MaxPool(2),  # a 7x7xlatent code
        )
        self.decoder = nnx.Sequential(
            conv(latent_dim, latent_dim),
            nnx.relu,
            UpSample(2),
            conv(latent_dim, width),
            nnx.relu,
            UpSample(2),
            conv(width, channels),
        )
