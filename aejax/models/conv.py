"""``conv``: the Keras tutorial's convolutional autoencoder (10,756 parameters).

Conv(30) -> MaxPool 2 -> Conv(15) -> MaxPool 2 (a 7x7x15 code) -> Conv(15) -> Up 2 -> Conv(30)
-> Up 2 -> Conv(1), relu after every convolution but the last; ``depth`` and ``width`` scale
it for larger images.

All convolutions 3x3, 'same'. The decoder returns logits: the last layer's sigmoid is in the
loss (:mod:`aejax.losses`). On CPU, :mod:`aejax.backend` runs these same layers faster.
"""

from itertools import pairwise

from flax import nnx

from aejax.models import register
from aejax.models.base import Autoencoder, bias_init, kernel_init
from aejax.models.layers import MaxPool, UpSample
from aejax.models.options import PositiveInt


@register("conv")
class Conv(Autoencoder):
    default_batch_size = 128
    eval_batch_size = 256  # its activations stay in cache (faster than 1000s on 2 devices)
    # Its activations are hundreds of bytes a pixel: 2**18 pixels (16 images at 128x128; at
    # 28x28 still eval_batch_size) scored 128 and 256 px images in under half 2**21's peak
    # memory, and faster (experiments/results/eval_memory.md).
    eval_pixels = 2**18
    splits_well_on_cpu = True  # experiments/results/cpu_devices.md
    spatial_code = True

    def __init__(self, latent_dim: PositiveInt = 15, width: PositiveInt = 30,
                 channels: PositiveInt = 1, depth: PositiveInt = 2, *, rngs: nnx.Rngs):  # fmt: skip
        """``depth`` poolings by 2 (the tutorial's 2: a 28x28 image has a 7x7 code; images
        need sides divisible by ``2**depth``), the first ``depth - 1`` to ``width``
        channels, the last to ``latent_dim``; the decoder mirrors it."""

        def conv(cin, cout):
            return nnx.Conv(cin, cout, (3, 3), padding="SAME", kernel_init=kernel_init,
                            bias_init=bias_init, rngs=rngs)  # fmt: skip

        self.depth = depth  # what an image's sides must be divisible by: 2**depth
        # The tutorial's (depth 2): 1 -> 30 -> 15 down, 15 -> 15 -> 30 -> 1 up.
        down = [channels] + [width] * (depth - 1) + [latent_dim]
        up = [latent_dim, *down[::-1][:-1]]
        encoder, decoder = [], []
        for cin, cout in pairwise(down):
            encoder += [conv(cin, cout), nnx.relu, MaxPool(2)]
        for cin, cout in pairwise(up):
            decoder += [conv(cin, cout), nnx.relu, UpSample(2)]
        self.encoder = nnx.Sequential(*encoder)
        self.decoder = nnx.Sequential(*decoder, conv(up[-1], channels))
