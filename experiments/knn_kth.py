"""The kNN score's k-th nearest bank code: aejax's search (the k groups of 50 bank codes with
the largest maxima, the k groups of 10 of those with the largest maxima, then k - 1 passes
of "drop the maximum" over them), against the search with one level of groups (50) and
``lax.top_k``, on XLA:CPU (why aejax.ood.knn does not call top_k and searches by levels).

    python experiments/knn_kth.py          # writes experiments/results/knn_kth.{md,json}

10,000 codes against a bank of 5,000 (the default ``KNN_BANK``), k = 10, for the dense net's
15-dimensional codes and the conv net's 735; medians of 5 runs after compilation. Both give
the same distances (checked here).
"""

from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from common import cpu_name, write_results

from aejax import xla
from aejax.ood import knn

xla.apply_flags()  # XLA:CPU's speed flags, as the commands compute (aejax.xla)


@jax.jit
def top_k_distance(code_NxD, bank_MxD):
    unit = knn.normalised(code_NxD)
    _, index = jax.lax.top_k(unit @ bank_MxD.T, knn.KNN_K)
    return jnp.linalg.norm(unit - bank_MxD[index[:, -1]], axis=1)


def median_seconds(fn, *args, repeats: int = 5) -> float:
    jax.block_until_ready(fn(*args))  # compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def searched(groups: tuple[int, ...], codes, bank) -> float:
    """Median seconds of aejax's search with levels of ``groups``."""
    kept, knn.GROUPS = knn.GROUPS, groups
    knn.kth_distance.clear_cache()  # traced anew with these levels
    try:
        return median_seconds(lambda c, b: knn.kth_distance(c, b, knn.KNN_K), codes, bank)
    finally:
        knn.GROUPS = kept
        knn.kth_distance.clear_cache()


def main() -> None:
    rows = []
    for dims in (15, 735):
        rng = np.random.default_rng(dims)
        codes = jnp.asarray(rng.normal(size=(10_000, dims)), jnp.float32)
        bank = knn.normalised(jnp.asarray(rng.normal(size=(knn.KNN_BANK, dims)), jnp.float32))
        ours = searched(knn.GROUPS, codes, bank)
        one_level = searched(knn.GROUPS[:1], codes, bank)
        theirs = median_seconds(top_k_distance, codes, bank)
        np.testing.assert_allclose(
            knn.kth_distance(codes, bank, knn.KNN_K), top_k_distance(codes, bank), rtol=1e-5
        )
        rows.append({"dims": dims, "levels_s": round(ours, 4), "one_level_s": round(one_level, 4),
                     "top_k_s": round(theirs, 4), "one_level_ratio": round(one_level / ours, 2),
                     "ratio": round(theirs / ours, 1)})  # fmt: skip
        print(rows[-1], flush=True)
    lines = [
        "# kNN score: the k-th nearest code, aejax's pruned search against lax.top_k",
        "",
        f"`python experiments/knn_kth.py` on {cpu_name()}, jax {jax.__version__}: 10,000 codes "
        f"against {knn.KNN_BANK:,} bank codes, k = {knn.KNN_K}, median of 5 runs after "
        "compilation. The same distances either way.",
        "",
        f"| code dimensions | aejax (groups of {', '.join(map(str, knn.GROUPS))}) | one level "
        f"(groups of {knn.GROUPS[0]}) | lax.top_k | one level / aejax | top_k / aejax |",
        "|---|---|---|---|---|---|",
        *(
            f"| {r['dims']} | {r['levels_s']} s | {r['one_level_s']} s | {r['top_k_s']} s "
            f"| {r['one_level_ratio']}x | {r['ratio']}x |"
            for r in rows
        ),
    ]
    write_results("knn_kth", [{"cpu": cpu_name(), **r} for r in rows], lines)


if __name__ == "__main__":
    main()
