r"""``knn``: the distance of the image's L2-normalised code to its :data:`KNN_K`-th nearest
among :data:`KNN_BANK` normalised training codes (Sun et al., ICML 2022),
:math:`\sqrt{2 - 2\cos}`."""

from __future__ import annotations

import functools
from collections.abc import Callable

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


# Bank codes per group when the k nearest are searched (kth_distance): KNN_BANK's 5000 are 100
# groups, so each pass over candidates reads 10 groups of 50, not the 5000.
GROUP = 50


@functools.partial(jax.jit, static_argnames="k")
def kth_distance(code_NxD: jax.Array, bank_MxD: jax.Array, k: int) -> jax.Array:
    """The distance of each normalised code to its ``k``-th nearest code of the bank."""
    unit_NxD = normalised(code_NxD)
    similarity_NxM = unit_NxD @ bank_MxD.T
    kth_N = _kth_largest_column(similarity_NxM, k)
    # The distance itself from the difference, not as sqrt(2 - 2 cos): near neighbours have
    # cos ~ 1, where that form loses most of float32's digits.
    return jnp.linalg.norm(unit_NxD - bank_MxD[kth_N], axis=1)


def _kth_largest_column(s_NxM: jax.Array, k: int) -> jax.Array:
    """The column of each row's ``k``-th largest value, exactly (ties count as separate
    values, as in top_k), without sorting: lax.top_k sorts, many times slower on XLA:CPU
    (experiments/results/knn_kth.md).

    The columns in groups of :data:`GROUP`: the k largest values lie in the k groups of
    largest maxima (a group holding one of them has a maximum at least as large, and at most
    k groups can), so k - 1 passes that each drop a row's maximum run over those k groups'
    values only, not over all M."""
    n, m = s_NxM.shape
    groups = -(-m // GROUP)
    if groups <= k:  # a small bank: every column is a candidate
        return _drop_max_passes(s_NxM, k)
    s_NxGxS = jnp.pad(s_NxM, ((0, 0), (0, groups * GROUP - m)), constant_values=-jnp.inf).reshape(
        n, groups, GROUP
    )
    group_max_NxG = jnp.max(s_NxGxS, axis=2)
    top_groups = []
    for _ in range(k):  # the k groups of largest maxima (k is small: unrolled)
        best_N = jnp.argmax(group_max_NxG, axis=1)
        top_groups.append(best_N)
        group_max_NxG = jnp.where(jnp.arange(groups) == best_N[:, None], -jnp.inf, group_max_NxG)
    groups_NxK = jnp.stack(top_groups, axis=1)
    candidates_NxKxS = jnp.take_along_axis(s_NxGxS, groups_NxK[:, :, None], axis=1)
    kth_in_candidates_N = _drop_max_passes(candidates_NxKxS.reshape(n, k * GROUP), k)
    # Each candidate's bank column, looked up rather than divided out: jax2onnx cannot
    # convert a remainder of a batch of symbolic size.
    columns_NxKxS = groups_NxK[:, :, None] * GROUP + jnp.arange(GROUP)
    kth_N = jnp.take_along_axis(
        columns_NxKxS.reshape(n, k * GROUP), kth_in_candidates_N[:, None], axis=1
    )
    return kth_N[:, 0]


def _drop_max_passes(s_NxM: jax.Array, k: int) -> jax.Array:
    """The column of each row's ``k``-th largest value by k - 1 passes that each remove the
    row's maximum, then an argmax."""

    def drop_max(_, s):
        # The columns made here, not closed over: a loop body that captures no array
        # converts to ONNX's Loop as it is (aejax.exporting).
        columns_M = jnp.arange(s.shape[1])
        return jnp.where(columns_M == jnp.argmax(s, axis=1)[:, None], -jnp.inf, s)

    return jnp.argmax(jax.lax.fori_loop(0, k - 1, drop_max, s_NxM), axis=1)


def fit_term(term: str, standardised: bool = False) -> Callable[[dict, dict], dict]:
    """``fit`` of the bank: :data:`KNN_BANK` training images' ``term``, normalised; with
    ``standardised``, each column first scaled to the training images' mean 0 and standard
    deviation 1 (features of layers on scales of their own)."""

    def fit(train: dict, held_out: dict) -> dict:
        values = np.asarray(train[term], np.float64)
        rows = np.random.default_rng(0).permutation(len(values))[:KNN_BANK]  # a fixed sample
        bank, scaling = values[np.sort(rows)], {}
        if standardised:
            scaling = {
                "centre": values.mean(axis=0),
                "inverse_scale": 1 / np.maximum(values.std(axis=0), 1e-6),
            }
            bank = (bank - scaling["centre"]) * scaling["inverse_scale"]
        return {"bank": np.asarray(normalised(jnp.asarray(bank, jnp.float32))), **scaling}

    return fit


def compute_term(term: str) -> Callable[[dict, dict], jax.Array]:
    """``compute`` of the distance of ``term`` to its k-th nearest in :func:`fit_term`'s bank."""

    def compute(fitted: dict, x: dict) -> jax.Array:
        # All N images against the bank at once ([N, KNN_BANK] similarities): one computation
        # for any N, symbolic N included (the exported detector), so both give the same bits;
        # Detector.detect feeds at most DETECT_ROWS images at a time to bound the memory.
        bank = fitted["bank"]
        values = jnp.asarray(x[term], jnp.float32)
        if "centre" in fitted:  # standardised (fit_term)
            values = (values - fitted["centre"]) * fitted["inverse_scale"]
        return kth_distance(values, bank, min(KNN_K, bank.shape[0]))

    return compute


register(Score("knn", ("code",), compute_term("code"), fit_term("code")))
