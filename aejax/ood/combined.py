r"""Typicality scores combined: ``typ-max`` is the largest, ``typ-rss`` the root sum of squares
of the ``z`` of ``kl``, ``bce``, ``latent`` and ``entropy``: the input's distance from the
held-out images in a space of four standardised statistics. ``typ-rss-knn`` adds ``knn`` as a
fifth coordinate, one-sided (:math:`\max(z, 0)` of the signed ``z-knn``): being nearer the
training codes than held-out images are is no sign of novelty, while an input reconstructed
too well (a blank image) still is."""

from __future__ import annotations

import jax.numpy as jnp

from aejax.ood.registry import Score, register

PARTS = ("typ-kl", "typ-bce", "typ-latent", "typ-entropy")


def _combined(name: str, parts: tuple[str, ...], combine) -> Score:
    return Score(name, parts, lambda fitted, x: combine(jnp.stack([x[p] for p in parts])))


register(_combined("typ-max", PARTS, lambda z: jnp.max(z, axis=0)))
register(_combined("typ-rss", PARTS, lambda z: jnp.sqrt(jnp.sum(jnp.square(z), axis=0))))
register(
    _combined(
        "typ-rss-knn",
        (*PARTS, "z-knn"),
        lambda z: jnp.sqrt(jnp.sum(jnp.square(z[:-1]), axis=0) + jnp.square(jnp.maximum(z[-1], 0))),
    )
)
