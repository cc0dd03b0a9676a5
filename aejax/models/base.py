"""What every aejax model is: an encoder/decoder pair whose decoder returns logits."""

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from aejax.losses import bce_per_example
from aejax.models import heads
from aejax.models.layers import MaxPool
from aejax.reductions import accurate_mean

# Keras' defaults, which the reference numbers were measured with (flax's own default
# kernel init is LeCun-normal).
kernel_init = nnx.initializers.glorot_uniform()
bias_init = nnx.initializers.zeros_init()


def as_written(layers: nnx.Module, x: jax.Array) -> jax.Array:
    return layers(x)


# How a model's layers run: as written, unless the code that runs the models installs another
# runner (aejax.core installs aejax.backend.apply, which runs the same layers with the CPU
# backend's fused kernels where XLA compiles for CPU). Models stand below the backend: they
# import none, and their definitions read as the tutorial does.
_runner: list[Callable] = [as_written]


def use_layer_runner(runner: Callable) -> None:
    """Runs every model's layers with ``runner(layers, x)`` from now on."""
    _runner[0] = runner


def run_layers(layers: nnx.Module, x: jax.Array) -> jax.Array:
    return _runner[0](layers, x)


class Autoencoder(nnx.Module):
    """An encoder/decoder pair over images ``x_BxHxWxC`` in ``[0, 1]``.

    Subclasses define ``self.encoder`` and ``self.decoder`` (flax layers, usually an
    ``nnx.Sequential``, run by :func:`run_layers`) or override :meth:`encode` and
    :meth:`decode`; :meth:`loss` is the training
    objective per example, reconstruction BCE unless a model says otherwise (a VAE adds its KL
    term, a denoising model corrupts its input). A subclass's ``__init__`` takes its options
    as keyword arguments (``args``, ``kwargs``: each declared with its range,
    :mod:`aejax.models.options`) and ``rngs``.
    """

    default_batch_size = 256  # what the reference trained this architecture with
    # Most images per batch when scoring (aejax.core.score): large batches amortise per-batch
    # work for small nets, up to where a batch's [B, 784] logits leave the cache (measured on
    # the dense net's test split, commit 8cf7bbe); the conv net's activations stay in cache
    # only in far smaller ones.
    eval_batch_size = 1024
    # Most input pixels per scoring batch (aejax.core.eval_rows): the dense net keeps a few
    # floats a pixel, so its eval_batch_size holds up to 2,674 28x28 images.
    eval_pixels = 2**21
    # Whether a CPU step gains from splitting the batch over one host device per core
    # (aejax.parallel.default_cpu_devices); measured per architecture.
    splits_well_on_cpu = False
    # Whether the code is a feature map [B, h, w, latent_dim] rather than a vector [B, latent_dim]
    # (what a self-supervised head on it reads, aejax.models.heads).
    spatial_code = False

    def encode(self, x_BxHxWxC: jax.Array) -> jax.Array:
        """The code of images ``x_BxHxWxC``: ``[B, latent_dim]``, or a feature map."""
        return run_layers(self.encoder, x_BxHxWxC)

    def encode_with_features(self, x_BxHxWxC: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The code of ``x_BxHxWxC`` and the encoder's features ``[B, F]``: every stage's
        output (see :meth:`encoder_stages`) averaged over its pixels (Lee et al. 2018's pooled
        activations; :func:`aejax.reductions.accurate_mean`), the stages side by side. The
        code is computed stage by stage, and is what :meth:`encode` gives."""
        h, pooled = x_BxHxWxC, []
        for stage in self.encoder_stages():
            h = run_layers(stage, h)
            flat = h.ndim != 4
            pooled.append(h.reshape(h.shape[0], -1) if flat else accurate_mean(h, axis=(1, 2)))
        return h, jnp.concatenate([p.astype(jnp.float32) for p in pooled], axis=1)

    def encoder_stages(self) -> list:
        """The encoder cut after each of its activations, or after the pooling that follows
        one (so that the CPU backend still fuses a convolution with its activation and
        pooling): one stage per layer of features. An encoder that is no ``nnx.Sequential``
        is one stage."""
        if not isinstance(getattr(self, "encoder", None), nnx.Sequential):
            return [self.encode]
        layers, stages, start = list(self.encoder.layers), [], 0
        for i, layer in enumerate(layers):
            followed_by_pool = i + 1 < len(layers) and isinstance(layers[i + 1], MaxPool)
            if isinstance(layer, MaxPool) or (_is_activation(layer) and not followed_by_pool):
                stages.append(nnx.Sequential(*layers[start : i + 1]))
                start = i + 1
        if start < len(layers):
            stages.append(nnx.Sequential(*layers[start:]))
        return stages

    def decode(self, z: jax.Array) -> jax.Array:
        """Codes ``z`` to logits ``[B, H, W, C]`` (``jax.nn.sigmoid`` of them is the image)."""
        return run_layers(self.decoder, z)

    def __call__(self, x_BxHxWxC: jax.Array) -> jax.Array:
        return self.decode(self.encode(x_BxHxWxC))

    @property
    def param_dtype(self) -> jnp.dtype:
        """The parameters' dtype: what the forward pass runs in (bfloat16 under mixed
        precision, where training casts a copy of the float32 parameters)."""
        return jax.tree.leaves(nnx.state(self, nnx.Param))[0].dtype

    def logits(self, x_BxHxWxC: jax.Array) -> jax.Array:
        """``self(x_BxHxWxC)`` computed in :attr:`param_dtype`, returned in float32, where the
        loss is computed."""
        return self(x_BxHxWxC.astype(self.param_dtype)).astype(jnp.float32)

    def prior_term(self, x_BxHxWxC: jax.Array) -> jax.Array:
        """What a model with a prior on its code adds to ``bce`` of images ``x_BxHxWxC`` for
        the negative ELBO per pixel (a VAE's KL term); zero for a plain autoencoder. ``[B]``."""
        return jnp.zeros(x_BxHxWxC.shape[0], jnp.float32)

    @property
    def has_transform_head(self) -> bool:
        """Whether the model was made with a self-supervised head (:mod:`aejax.models.heads`)."""
        return hasattr(self, "transform_head")

    def transform_term(self, x_BxHxWxC: jax.Array) -> jax.Array:
        """The ``transform`` term ``[B]`` of images ``x_BxHxWxC``
        (:func:`aejax.models.heads.score`); 0 without a head."""
        if not self.has_transform_head:
            return jnp.zeros(x_BxHxWxC.shape[0], jnp.float32)
        return heads.score(self, x_BxHxWxC.astype(self.param_dtype))

    def loss(self, x_BxHxWxC: jax.Array, key: jax.Array) -> tuple[jax.Array, dict]:
        """Training loss per example of ``x_BxHxWxC`` ``[B]`` and extra per-example metrics;
        ``key`` is for models that sample (unused here)."""
        del key
        return bce_per_example(self.logits(x_BxHxWxC), x_BxHxWxC), {}


def _is_activation(layer) -> bool:
    # flax's activations are plain functions; the layers of an nnx.Sequential that are not
    # modules are the activations between them.
    return not isinstance(layer, nnx.Module)
