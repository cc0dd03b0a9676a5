r"""``latent``: the squared Mahalanobis distance of the image's code from a Gaussian fitted to
the training images' codes, its covariance shrunk by Ledoit-Wolf (the conv net's codes have
735 dimensions)."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from aejax import xla
from aejax.ood.registry import Score, register


@xla.jit
def mahalanobis(code_NxD: jax.Array, mean_D: jax.Array, whitening_DxD: jax.Array) -> jax.Array:
    r"""Squared Mahalanobis distances ``[N]``, :math:`\|(x - \mu) W\|^2` for a precision
    :math:`P = W W^\top` (:func:`whitening`).

    Not :math:`(x - \mu)^\top P (x - \mu)`: where the covariance is ill-conditioned (the conv
    net's pooled features: condition ~1e6) that form's float32 rounding moves a distance by up
    to 2e-4 of itself, and two runtimes (XLA, onnxruntime) round it differently; a sum of
    squares of whitened values moves by ~4e-6."""
    whitened_NxD = (code_NxD - mean_D) @ whitening_DxD
    return jnp.sum(jnp.square(whitened_NxD), axis=1)


def whitening(precision_DxD: np.ndarray) -> np.ndarray:
    """A ``W`` with ``W W^T`` the (positive semi-definite) precision, in float64: its
    eigenvectors scaled by the square roots of its eigenvalues (a singular precision's zero
    eigenvalues give zero columns)."""
    eigenvalues, vectors = np.linalg.eigh(np.asarray(precision_DxD, np.float64))
    return vectors * np.sqrt(np.clip(eigenvalues, 0, None))


@xla.jit
def mahalanobis_low_rank(
    code_NxD: jax.Array,
    mean_D: jax.Array,
    basis_DxR: jax.Array,
    inverse_variance_R: jax.Array,
    isotropic_precision: jax.Array,
) -> jax.Array:
    r"""Squared Mahalanobis distances ``[N]`` under a covariance that is
    :math:`\sigma^2 I` plus a rank-:math:`R` part: :math:`\sum_r (v_r \cdot c)^2 / \lambda_r
    + \|c - V V^\top c\|^2 / \sigma^2` for the centred code :math:`c`, the variances
    :math:`\lambda_r` along the orthonormal columns of ``basis_DxR`` and :math:`\sigma^2`
    across them. The residual is formed, not taken as :math:`\|c\|^2 - \|V^\top c\|^2`,
    which would cancel in float32."""
    centred = code_NxD - mean_D
    along_NxR = centred @ basis_DxR
    across_NxD = centred - along_NxR @ basis_DxR.T
    return jnp.square(along_NxR) @ inverse_variance_R + isotropic_precision * jnp.sum(
        jnp.square(across_NxD), axis=1
    )


def fit_gaussian(codes_NxD: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, dict, float]:
    r"""Ledoit-Wolf's shrunk Gaussian of the codes: ``(mean, precision, low_rank, shrinkage)``.

    With at least as many codes as dimensions, scikit-learn's ``LedoitWolf`` (a well-kept
    estimator) gives the ``[D, D]`` precision and ``low_rank`` is empty. With fewer (a few
    hundred images, a conv net's code of thousands of dimensions), the same estimate
    :math:`(1 - s) S + s \mu I` is formed from the codes' ``[N, N]`` Gram matrix instead of
    the ``[D, D]`` covariance that scikit-learn forms and inverts (gigabytes, minutes, for
    a 256x256 image's code): the sample covariance :math:`S` has rank below N, so the
    precision is ``low_rank`` (:func:`mahalanobis_low_rank`'s arrays) and ``precision``
    None. Both give the same distances (tests/test_scores.py).
    """
    n, d = codes_NxD.shape
    if n >= d:
        from sklearn.covariance import LedoitWolf

        gaussian = LedoitWolf(assume_centered=False).fit(codes_NxD)
        return gaussian.location_, gaussian.precision_, {}, float(gaussian.shrinkage_)
    mean = codes_NxD.mean(axis=0)
    centred = codes_NxD - mean
    gram = centred @ centred.T  # [N, N]
    # ledoit_wolf_shrinkage's sums, from the Gram matrix: sum((X^T X)^2) = sum(G^2) and
    # sum((X^2)^T X^2) = sum(diag(G)^2).
    mu = np.trace(gram) / (n * d)
    delta_ = np.sum(np.square(gram)) / n**2
    beta = (np.sum(np.square(np.diag(gram))) / n - delta_) / (d * n)
    delta = (delta_ - d * mu**2) / d
    shrinkage = 0.0 if min(beta, delta) == 0 else min(beta, delta) / delta
    eigenvalues, vectors = np.linalg.eigh(gram)  # G = U E U^T, so X = U sqrt(E) V^T
    keep = eigenvalues > eigenvalues.max(initial=0.0) * n * np.finfo(np.float64).eps
    basis = centred.T @ vectors[:, keep] / np.sqrt(eigenvalues[keep])  # [D, R] orthonormal
    # Across the codes' span the variance is s * mu. Where that is 0 (no shrinkage, or codes
    # with no spread at all: one training image) the covariance is singular: mu, else 1,
    # keeps the distances finite.
    across = shrinkage * mu or mu or 1.0
    along = (1 - shrinkage) * eigenvalues[keep] / n + across
    low_rank = {
        "basis": basis,
        "inverse_variance": 1 / along,
        "isotropic_precision": np.float64(1 / across),
    }
    return mean, None, low_rank, float(shrinkage)


def fit_term(term: str) -> Callable[[dict, dict], dict]:
    """``fit`` of a Gaussian over the training images' ``term`` (``[N, D]``)."""

    def fit(train: dict, held_out: dict) -> dict:
        mean, precision, low_rank, shrinkage = fit_gaussian(np.asarray(train[term], np.float64))
        gaussian = {"whitening": whitening(precision)} if precision is not None else low_rank
        return {"mean": mean, **gaussian, "_shrinkage": shrinkage}

    return fit


def compute_term(term: str) -> Callable[[dict, dict], jax.Array]:
    """``compute`` of the squared Mahalanobis distance of ``term`` from :func:`fit_term`'s
    Gaussian."""

    def compute(fitted: dict, x: dict) -> jax.Array:
        values = jnp.asarray(x[term], jnp.float32)
        if "whitening" in fitted:
            return mahalanobis(values, fitted["mean"], fitted["whitening"])
        # Fewer training images than dimensions: the Gaussian's low-rank form.
        return mahalanobis_low_rank(
            values,
            fitted["mean"],
            fitted["basis"],
            fitted["inverse_variance"],
            fitted["isotropic_precision"],
        )

    return compute


register(Score("latent", ("code",), compute_term("code"), fit_term("code")))
