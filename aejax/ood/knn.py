r"""``knn``: the distance of the image's L2-normalised code to its :data:`KNN_K`-th nearest
among :data:`KNN_BANK` normalised training codes (Sun et al., ICML 2022),
:math:`\sqrt{2 - 2\cos}`."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from aejax.ood.registry import Score, register

# Sun et al. use k = 50 of 50k codes; a random tenth of MNIST's training codes keeps the
# detector small (the bank is KNN_BANK codes, whatever the training set) and k scales with
# it. Fewer training codes than KNN_BANK make the bank; fewer than KNN_K, k.
KNN_K, KNN_BANK = 10, 5000


def normalised(code_NxD: jax.Array) -> jax.Array:
    return code_NxD / jnp.maximum(jnp.linalg.norm(code_NxD, axis=1, keepdims=True), 1e-12)


@functools.partial(jax.jit, static_argnames="k")
def kth_distance(code_NxD: jax.Array, bank_MxD: jax.Array, k: int) -> jax.Array:
    """The distance of each normalised code to its ``k``-th nearest code of the bank."""
    # The k-th most similar bank code by k - 1 passes that each remove one row maximum, then
    # an argmax: exact (ties count as separate neighbours, as in top_k), and on XLA:CPU many
    # times faster than lax.top_k, which sorts (experiments/results/knn_kth.md).
    unit_NxD = normalised(code_NxD)
    similarity_NxM = unit_NxD @ bank_MxD.T

    def drop_max(_, s):
        # The columns made here, not closed over: a loop body that captures no array
        # converts to ONNX's Loop as it is (aejax.exporting).
        columns_M = jnp.arange(s.shape[1])
        return jnp.where(columns_M == jnp.argmax(s, axis=1)[:, None], -jnp.inf, s)

    kth_N = jnp.argmax(jax.lax.fori_loop(0, k - 1, drop_max, similarity_NxM), axis=1)
    # The distance itself from the difference, not as sqrt(2 - 2 cos): near neighbours have
    # cos ~ 1, where that form loses most of float32's digits.
    return jnp.linalg.norm(unit_NxD - bank_MxD[kth_N], axis=1)


def _fit(train: dict, held_out: dict) -> dict:
    codes = np.asarray(train["code"], np.float64)
    rows = np.random.default_rng(0).permutation(len(codes))[:KNN_BANK]  # a fixed sample
    return {"bank": np.asarray(normalised(jnp.asarray(codes[np.sort(rows)], jnp.float32)))}


def _compute(fitted: dict, x: dict) -> jax.Array:
    # All N codes against the bank at once ([N, KNN_BANK] similarities): one computation for
    # any N, symbolic N included (the exported detector), so both give the same bits;
    # Detector.detect feeds at most DETECT_ROWS images at a time to bound the memory.
    bank = fitted["bank"]
    code = jnp.asarray(x["code"], jnp.float32)
    return kth_distance(code, bank, min(KNN_K, bank.shape[0]))


register(Score("knn", ("code",), _compute, _fit))
