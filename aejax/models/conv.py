"""``conv``: the Keras tutorial's convolutional autoencoder (10,756 parameters).

Encoder: Conv(30) -> MaxPool 2 -> Conv(latent) -> MaxPool 2, a 7x7xlatent code.
Decoder: Conv(latent) -> Up 2 -> Conv(30) -> Up 2 -> Conv(1) logits.
All convolutions 3x3, 'same', relu (but the last).

Inside, activations are channels-first (``[C, B, H, W]``; see :mod:`aejax.models.conv3x3`
for why); images and codes at the edges are channels-last, as everywhere in aejax. With one
image channel the layout change of inputs and outputs is a free reshape.
"""

import jax
from flax import nnx

from aejax.models import register
from aejax.models.base import Autoencoder, bias_init, kernel_init
from aejax.models.layers import Conv3x3, to_channels_first, to_channels_last


@register("conv")
class Conv(Autoencoder):
    default_batch_size = 128
    eval_batch_size = 256  # its activations stay in cache (faster than 1000s on 2 devices)
    splits_well_on_cpu = True  # experiments/results/cpu_devices.md

    def __init__(self, latent_dim: int = 15, width: int = 30, channels: int = 1, *,
                 rngs: nnx.Rngs):
        def conv(cin, cout):
            return Conv3x3(cin, cout, kernel_init=kernel_init, bias_init=bias_init, rngs=rngs)

        self.enc1, self.enc2 = conv(channels, width), conv(width, latent_dim)
        self.dec1, self.dec2 = conv(latent_dim, latent_dim), conv(latent_dim, width)
        self.out = conv(width, channels)

    def _encode(self, x_CxBxHxW: jax.Array) -> jax.Array:
        return self.enc2.pooled(self.enc1.pooled(x_CxBxHxW))

    def _decode(self, z_LxBxhxw: jax.Array) -> jax.Array:
        # Each "Up 2" is folded into the convolution after it (upsampled=True).
        x = nnx.relu(self.dec1(z_LxBxhxw))
        x = nnx.relu(self.dec2(x, upsampled=True))
        return self.out(x, upsampled=True)

    def encode(self, x_BxHxWxC: jax.Array) -> jax.Array:
        return to_channels_last(self._encode(to_channels_first(x_BxHxWxC)))

    def decode(self, z_BxhxwxL: jax.Array) -> jax.Array:
        return to_channels_last(self._decode(to_channels_first(z_BxhxwxL)))

    def __call__(self, x_BxHxWxC: jax.Array) -> jax.Array:
        # Skips the two transposes of the code that encode() and decode() would make.
        return to_channels_last(self._decode(self._encode(to_channels_first(x_BxHxWxC))))
