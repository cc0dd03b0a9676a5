r"""A self-supervised head for any architecture: from the encoder's code, which geometric
transformation of a fixed set was applied to the input.

The transformations are the eight symmetries of the square (the dihedral group :math:`D_4`):
index :math:`t = 4 f + r` is a horizontal flip if :math:`f = 1`, then a rotation by
:math:`90^\circ r` counter-clockwise. Images that are not square keep their shape only under
four of them (:func:`transformations`: identity, 180 degrees and the two flips).

Why these and this score (Golan & El-Yaniv 2018, GEOM; Bergman & Hoshen 2020, GOAD; Tack et
al. 2020, CSI): a network that has learnt which way up *normal* images are cannot tell for an
image unlike them, so the negative log-likelihood of the true transformations,

.. math:: \mathrm{transform}(x) = -\frac{1}{|T|} \sum_{t \in T} \log p_\theta(t \mid t(x)),

is high off the distribution. It is GEOM's simplified score (their Dirichlet refinement
calibrates each transformation's softmax, which aejax's typicality and ``joint`` already do
for every term from the held-out images); GOAD's distances to transformation centres need a
feature space trained with a margin loss, CSI's a contrastive one: both a second training
objective beside the reconstruction, where this is one cross-entropy. GEOM's translations are
left out: a zero-filled shift of a small image is itself an image the autoencoder never saw.
Rotations and flips target the ``transformed`` family that the reconstruction scores miss
(experiments/results/ood_general.md).

The head reads the code: a vector code through a hidden layer, a spatial code (the conv
family's ``[B, h, w, latent]``) through a 3x3 convolution, then its mean over the positions,
so it takes any image size.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

TRANSFORMS = 8  # the head's outputs: every symmetry of the square
HIDDEN = 64
SQUARE_ONLY = (1, 3, 5, 7)  # a quarter or three-quarter turn: H and W change places


def transformations(image_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The indices that keep an ``(H, W, C)`` image's shape: all eight for a square image.

    >>> transformations((28, 28, 1)), transformations((32, 64, 3))
    ((0, 1, 2, 3, 4, 5, 6, 7), (0, 2, 4, 6))
    """
    if image_shape[0] == image_shape[1]:
        return tuple(range(TRANSFORMS))
    return tuple(t for t in range(TRANSFORMS) if t not in SQUARE_ONLY)


def apply(x_BxHxWxC: jax.Array, t: int) -> jax.Array:
    """Transformation ``t`` of every image: a horizontal flip if ``t >= 4``, then ``t % 4``
    counter-clockwise quarter turns."""
    flipped = x_BxHxWxC[:, :, ::-1] if t >= 4 else x_BxHxWxC
    return jnp.rot90(flipped, t % 4, axes=(1, 2))


def apply_each(x_BxHxWxC: jax.Array, t_B: jax.Array) -> jax.Array:
    """Transformation ``t_B[i]`` of image ``i`` (indices of :func:`transformations`)."""
    valid = transformations(x_BxHxWxC.shape[1:])
    out = x_BxHxWxC
    for t in valid[1:]:
        out = jnp.where((t_B == t)[:, None, None, None], apply(x_BxHxWxC, t), out)
    return out


def sample(key: jax.Array, image_shape: tuple[int, ...], batch: int) -> jax.Array:
    """A uniformly drawn shape-keeping transformation per image ``[B]`` (int32)."""
    valid = jnp.asarray(transformations(image_shape), jnp.int32)
    return valid[jax.random.randint(key, (batch,), 0, len(valid))]


class TransformHead(nnx.Module):
    """Logits ``[B, 8]`` of which transformation an image's code comes from."""

    def __init__(self, latent_dim: int, spatial: bool, *, rngs: nnx.Rngs):
        self.spatial = spatial
        if spatial:
            self.hidden = nnx.Conv(latent_dim, HIDDEN, (3, 3), padding="SAME", rngs=rngs)
        else:
            self.hidden = nnx.Linear(latent_dim, HIDDEN, rngs=rngs)
        self.out = nnx.Linear(HIDDEN, TRANSFORMS, rngs=rngs)

    def __call__(self, code: jax.Array) -> jax.Array:
        h = nnx.relu(self.hidden(code))
        if self.spatial:
            h = jnp.mean(h, axis=(1, 2))
        return self.out(h)


def nll(model, x_BxHxWxC: jax.Array, t_B: jax.Array) -> jax.Array:
    """``-log p(t | t(x))`` of each image under its own transformation ``t_B`` ``[B]``, in
    units of ``log |T|`` (an untrained head's value is about 1 whatever the image size)."""
    valid = transformations(x_BxHxWxC.shape[1:])
    return _nll(model, apply_each(x_BxHxWxC, t_B), t_B, valid)


def score(model, x_BxHxWxC: jax.Array) -> jax.Array:
    """The ``transform`` term ``[B]``: :func:`nll` averaged over every shape-keeping
    transformation of each image (one encoder pass per transformation)."""
    valid = transformations(x_BxHxWxC.shape[1:])
    each = [_nll(model, apply(x_BxHxWxC, t), t, valid) for t in valid]
    return jnp.mean(jnp.stack(each), axis=0)


def _nll(model, transformed_BxHxWxC: jax.Array, t_B, valid: tuple[int, ...]) -> jax.Array:
    """:func:`nll` of images already transformed, by ``t_B`` (one index for all, or one
    each)."""
    logits = model.transform_head(model.encode(transformed_BxHxWxC)).astype(jnp.float32)
    log_p = jax.nn.log_softmax(_only(logits, valid))
    t_B = jnp.broadcast_to(jnp.asarray(t_B, jnp.int32), log_p.shape[:1])
    picked = jnp.take_along_axis(log_p, t_B[:, None], axis=1)[:, 0]
    return -picked / math.log(len(valid))


def _only(logits_BxT: jax.Array, valid: tuple[int, ...]) -> jax.Array:
    """The logits of the transformations that cannot occur set to -inf (non-square images)."""
    if len(valid) == TRANSFORMS:
        return logits_BxT
    mask = jnp.zeros(TRANSFORMS, bool).at[jnp.asarray(valid)].set(True)
    return jnp.where(mask, logits_BxT, -jnp.inf)
