"""Scores tried and not adopted, kept for ``ood_general.py`` to report beside the registered
ones: Ren et al.'s likelihood ratio against a background model, and Serrà et al.'s input
complexity (PNG bits per pixel)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def likelihood_ratio(terms: dict, background_terms: dict) -> jax.Array:
    r"""Ren et al.'s (NeurIPS 2019) likelihood ratio for autoencoders, per image: the model's
    reconstruction BCE minus that of a background model trained on mutated images
    (``aejax.train --mutation-rate``), :math:`\ell_\theta(x) - \ell_{\theta_0}(x)`. What
    both models reconstruct alike (the input's entropy, its low-level statistics) cancels;
    what only the model of the data knows remains. 0 when both are the same model."""
    return jnp.asarray(terms["bce"], jnp.float32) - jnp.asarray(
        background_terms["bce"], jnp.float32
    )


def png_bits(images_NxHxWxC: np.ndarray) -> np.ndarray:
    """Bits per pixel of each image coded as PNG by Pillow (compression level 9): the input
    complexity of Serrà et al. (ICLR 2020), measured with a real compressor. Host-side."""
    import io

    from PIL import Image

    out = np.empty(len(images_NxHxWxC), np.float64)
    for i, image in enumerate(images_NxHxWxC):
        buffer = io.BytesIO()
        Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(
            buffer, format="PNG", compress_level=9
        )
        out[i] = 8 * buffer.tell() / image.size
    return out
