r"""``knn``: the distance of the image's L2-normalised code to its :data:`KNN_K`-th nearest
among :data:`KNN_BANK` normalised training codes (Sun et al., ICML 2022),
:math:`\sqrt{2 - 2\cos}`."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from aejax import xla
from aejax.ood.registry import Score, register

# Sun et al. use k = 50 of 50k codes; a random tenth of MNIST's training codes keeps the
# detector small (the bank is KNN_BANK codes, whatever the training set) and k scales with
# it. Fewer training codes than KNN_BANK make the bank; fewer than KNN_K, k.
KNN_K, KNN_BANK = 10, 5000


def normalised(code_NxD: jax.Array) -> jax.Array:
    return code_NxD / jnp.maximum(jnp.linalg.norm(code_NxD, axis=1, keepdims=True), 1e-12)


# The bank is normalised by a program compiled as aejax's are (not op by op): its bits then do
# not depend on the process's XLA_FLAGS, and a plain program fits the commands' detector.
_normalised_bank = xla.jit(normalised)


# Columns per group at each level of the k-th nearest search (_kth_largest_column): KNN_BANK's
# 5000 are 100 groups of 50, whose k best hold the k nearest; those 10 x 50 candidates are 50
# groups of 10, whose k best hold them too; the last passes read 10 x 10 values, not 5000
# (two levels: the whole distance 1.4x faster than one: experiments/results/knn_kth.md).
GROUPS = (50, 10)


@xla.jit(static_argnames="k")
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

    The columns in groups (:data:`GROUPS`): the k largest values lie in the k groups of
    largest maxima (a group holding one of them has a maximum at least as large, and at most
    k groups can), so only those groups' values are searched further, in smaller groups, and
    the k - 1 passes that each drop a row's maximum run over the last level's k groups."""
    columns_NxM = None  # each candidate's bank column; None: the candidates are the bank
    for group in GROUPS:
        if -(-s_NxM.shape[1] // group) <= k:  # few candidates: every one stays
            continue
        s_NxM, kept_NxC = _best_groups(s_NxM, group, k)
        columns_NxM = (
            kept_NxC if columns_NxM is None else jnp.take_along_axis(columns_NxM, kept_NxC, 1)
        )
    kth_N = _drop_max_passes(s_NxM, k)
    if columns_NxM is None:
        return kth_N
    return jnp.take_along_axis(columns_NxM, kth_N[:, None], axis=1)[:, 0]


def _best_groups(s_NxM: jax.Array, group: int, k: int) -> tuple[jax.Array, jax.Array]:
    """The values of each row's ``k`` groups (of ``group`` columns) of largest maxima
    ``[N, k * group]``, and the column each came from."""
    n, m = s_NxM.shape
    groups = -(-m // group)
    s_NxGxS = jnp.pad(s_NxM, ((0, 0), (0, groups * group - m)), constant_values=-jnp.inf)
    s_NxGxS = s_NxGxS.reshape(n, groups, group)
    group_max_NxG = jnp.max(s_NxGxS, axis=2)
    top_groups = []
    for _ in range(k):  # k is small: unrolled
        best_N = jnp.argmax(group_max_NxG, axis=1)
        top_groups.append(best_N)
        group_max_NxG = jnp.where(jnp.arange(groups) == best_N[:, None], -jnp.inf, group_max_NxG)
    groups_NxK = jnp.stack(top_groups, axis=1)
    best_NxC = jnp.take_along_axis(s_NxGxS, groups_NxK[:, :, None], axis=1).reshape(n, k * group)
    # Each value's column, looked up rather than divided out: jax2onnx cannot convert a
    # remainder of a batch of symbolic size.
    columns_NxC = (groups_NxK[:, :, None] * group + jnp.arange(group)).reshape(n, k * group)
    return best_NxC, columns_NxC


def _drop_max_passes(s_NxM: jax.Array, k: int) -> jax.Array:
    """The column of each row's ``k``-th largest value by k - 1 passes that each remove the
    row's maximum, then an argmax."""

    def drop_max(_, s):
        # The columns made here, not closed over: a loop body that captures no array
        # converts to ONNX's Loop as it is (aejax.export).
        columns_M = jnp.arange(s.shape[1])
        return jnp.where(columns_M == jnp.argmax(s, axis=1)[:, None], -jnp.inf, s)

    return jnp.argmax(jax.lax.fori_loop(0, k - 1, drop_max, s_NxM), axis=1)


def bank_size(n: int) -> int:
    """The most codes, of ``n``, that the search splits into whole groups (:data:`GROUPS`):
    a bank that needs padding to whole groups was searched at half the speed (a bank of
    4338 codes took twice as long as one of 4350). At most 49 codes are left out."""
    for group in GROUPS:
        if -(-n // group) > KNN_K:  # this level runs (_kth_largest_column)
            return n - n % group
    return n


def fit_term(term: str, standardised: bool = False) -> Callable[[dict, dict], dict]:
    """``fit`` of the bank: :data:`KNN_BANK` training images' ``term``, normalised; with
    ``standardised``, each column first scaled to the training images' mean 0 and standard
    deviation 1 (features of layers on scales of their own)."""

    def fit(train: dict, held_out: dict) -> dict:
        values = np.asarray(train[term], np.float64)
        order = np.random.default_rng(0).permutation(len(values))  # a fixed sample
        rows = order[: bank_size(min(len(values), KNN_BANK))]
        bank, scaling = values[np.sort(rows)], {}
        if standardised:
            scaling = {
                "centre": values.mean(axis=0),
                "inverse_scale": 1 / np.maximum(values.std(axis=0), 1e-6),
            }
            bank = (bank - scaling["centre"]) * scaling["inverse_scale"]
        unit = _normalised_bank(jnp.asarray(bank, jnp.float32))
        return {"bank": np.asarray(unit), **scaling}

    return fit


def compute_term(term: str) -> Callable[[dict, dict], jax.Array]:
    """``compute`` of the distance of ``term`` to its k-th nearest in :func:`fit_term`'s bank."""

    def compute(fitted: dict, x: dict) -> jax.Array:
        # All N images against the bank at once ([N, KNN_BANK] similarities): one computation
        # for any N, symbolic N included (the exported detector), so both give the same bits;
        # Detector.detect feeds a chunk of images at a time to bound the memory
        # (aejax.core.chunk_rows, from Stats.row_bytes).
        bank = fitted["bank"]
        values = jnp.asarray(x[term], jnp.float32)
        if "centre" in fitted:  # standardised (fit_term)
            values = (values - fitted["centre"]) * fitted["inverse_scale"]
        return kth_distance(values, bank, min(KNN_K, bank.shape[0]))

    return compute


register(Score("knn", ("code",), compute_term("code"), fit_term("code")))
