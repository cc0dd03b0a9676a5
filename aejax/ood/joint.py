r"""``joint``: how unlikely the image's statistics are *together* (DoSE, Morningstar et al.
2021): the squared Mahalanobis distance of its vector of signed typicalities
:math:`z = (z_\mathrm{bce}, z_\mathrm{kl}, z_\mathrm{entropy}, z_\mathrm{latent},
z_\mathrm{knn}, \dots)` from a Gaussian fitted to the held-out images' vectors (Ledoit-Wolf
shrinkage), :math:`(z - \mu)^\top \Sigma^{-1} (z - \mu)`: twice the negative log density, up to
a constant. Two-sided by construction, and unlike ``typ-rss`` it sees combinations: an image
typical in entropy and typical in error, but not that error *for* that entropy.

Statistics with no spread on the held-out images (``disagreement`` of a single model) or
equal to an earlier one (``elbo`` of a model without a prior is ``bce``) take no part: their
rows and columns of the precision are 0. The Gaussian is fitted on the held-out images, so
their own scores (the threshold's) are cross-fitted (:class:`aejax.ood.Score`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from aejax.ood.latent import mahalanobis, whitening
from aejax.ood.registry import Score, register
from aejax.ood.typicality import RAW

STATISTICS = tuple(f"z-{raw}" for raw in RAW)


def independent_columns(values_NxF: np.ndarray) -> np.ndarray:
    """The columns that vary and are no exact affine copy of an earlier kept one ``[F]``
    (none, with fewer than two rows: nothing varies)."""
    keep = np.zeros(values_NxF.shape[1], bool)
    if len(values_NxF) < 2:
        return keep
    for f, column in enumerate(values_NxF.T):
        if np.ptp(column) <= 1e-9 * max(1.0, np.abs(column).max()):
            continue
        kept = values_NxF[:, keep]
        if kept.shape[1]:
            correlation = np.abs(np.corrcoef(np.column_stack([kept, column]).T)[-1, :-1])
            if correlation.max() > 1 - 1e-9:
                continue
        keep[f] = True
    return keep


def fit_joint(values_NxF: np.ndarray) -> dict:
    """Mean ``[F]`` and whitening ``[F, F]`` (:func:`aejax.ood.latent.whitening`) of the
    Ledoit-Wolf Gaussian of the independent columns, 0 in the rows and columns of the
    others."""
    from sklearn.covariance import LedoitWolf

    values = np.asarray(values_NxF, np.float64)
    keep = independent_columns(values)
    # A cross-fitting fold of a held-out slice of one image fits to no rows at all.
    mean = values.mean(axis=0) if len(values) else np.zeros(values.shape[1])
    whitening_FxF = np.zeros((values.shape[1],) * 2)
    if keep.any():
        gaussian = LedoitWolf().fit(values[:, keep])
        mean[keep] = gaussian.location_
        whitening_FxF[np.ix_(keep, keep)] = whitening(gaussian.precision_)
    return {"mean": mean, "whitening": whitening_FxF, "_statistics": int(keep.sum())}


def _fit(train: dict, held_out: dict) -> dict:
    return fit_joint(np.stack([held_out[s] for s in STATISTICS], axis=1))


def _compute(fitted: dict, x: dict) -> jax.Array:
    z_NxF = jnp.stack([jnp.asarray(x[s], jnp.float32) for s in STATISTICS], axis=1)
    return mahalanobis(z_NxF, fitted["mean"], fitted["whitening"])


register(Score("joint", STATISTICS, _compute, _fit, cross_fitted=True))
