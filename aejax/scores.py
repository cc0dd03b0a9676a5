r"""OOD scores beyond the reconstruction error, and statistics fitted to score with them.

Raw scores (higher = more anomalous), per image:

* ``bce``: reconstruction binary cross-entropy, :math:`\frac1P\sum_p \ell(x_p, \hat x_p)`.
* ``mse``: mean squared error of the reconstruction.
* ``entropy``: the image's own entropy :math:`H(x) = \frac1P\sum_p h(x_p)` (no model).
* ``kl``: ``bce - entropy``. Per pixel :math:`\ell(x, \hat x) = h(x) + \mathrm{KL}(x \| \hat x)`,
  so ``kl`` is the part the model is responsible for (0 for a perfect reconstruction), while
  ``bce`` mostly measures :math:`H(x)`: nearly binary MNIST digits have low entropy whatever
  the model, which is why a Fashion-MNIST model ranks them *below* its own data under ``bce``.
* ``elbo``: the negative ELBO per pixel: ``bce`` (the reconstruction of the code's mean) plus
  the model's ``prior_term`` (a VAE's KL term); equal to ``bce`` for models without a prior.
* ``latent``: squared Mahalanobis distance of the image's code from a Gaussian fitted to the
  codes of the training images (covariance shrunk by Ledoit-Wolf: the conv net's codes have 735
  dimensions).

Two-sided typicality of any raw score ``s`` (``typ-<score>``): how far ``log s`` lies from the
held-out in-distribution images' ``log`` scores, in either direction, in robust standard
deviations: :math:`z = |\log s - \mathrm{median}| / (1.4826\ \mathrm{MAD})`. It flags inputs
reconstructed *too* well (a blank image) as much as those reconstructed badly.

Combined: ``typ-max`` is the largest, ``typ-rss`` the root sum of squares of the ``z`` of
``kl``, ``bce``, ``latent`` and ``entropy``: the input's distance from the held-out images in
a space of four standardised statistics. ``typ-rss`` is the default, chosen as the score with
the best worst-case AUROC of held-out images against the synthetic sets over the four
reference models (no real OOD data involved); experiments/results/ood_suite.md has the table.

The statistics (the Gaussian, the medians and MADs) are fitted from the training split and
its held-out slice by :func:`fit` and saved next to the checkpoint (:func:`save`), so scoring
later needs no training data.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from aejax import files

RAW = ("bce", "mse", "kl", "entropy", "elbo", "latent")
TYPICALITY = tuple(f"typ-{name}" for name in RAW)
_PARTS = ("typ-kl", "typ-bce", "typ-latent", "typ-entropy")
COMBINED = {  # name: (how, parts)
    "typ-max": (lambda z: np.max(z, axis=0), _PARTS),
    "typ-rss": (lambda z: np.sqrt(np.sum(np.square(z), axis=0)), _PARTS),
}
ALL = (*RAW, *TYPICALITY, *COMBINED)
DEFAULT = "typ-rss"
_EPS = 1e-10  # keeps log s finite for a perfect reconstruction (s = 0)


@jax.jit
def mahalanobis(code_NxD: jax.Array, mean_D: jax.Array, precision_DxD: jax.Array) -> jax.Array:
    """Squared Mahalanobis distances ``[N]``."""
    centred = code_NxD - mean_D
    return jnp.sum((centred @ precision_DxD) * centred, axis=1)


@dataclasses.dataclass
class Stats:
    """What scoring needs from the training data, fitted once per checkpoint."""

    latent_mean: np.ndarray  # [D]
    latent_precision: np.ndarray  # [D, D]
    typicality: dict[str, tuple[float, float]]  # raw score -> (median, robust sd) of log s
    meta: dict  # where it was fitted: dataset, rows, checkpoint step

    def raw(self, terms: dict) -> dict[str, np.ndarray]:
        """The raw scores from :func:`aejax.core.per_image`'s output."""
        raw = {k: np.asarray(terms[k], np.float64) for k in ("bce", "mse", "kl", "entropy", "elbo")}
        raw["latent"] = np.asarray(
            mahalanobis(terms["code"], self.latent_mean, self.latent_precision), np.float64
        )
        return raw

    def all_scores(self, terms: dict) -> dict[str, np.ndarray]:
        """Every score in :data:`ALL`, per image."""
        raw = self.raw(terms)
        out = dict(raw)
        for name, values in raw.items():
            loc, scale = self.typicality[name]
            out[f"typ-{name}"] = np.abs(np.log(np.maximum(values, 0) + _EPS) - loc) / scale
        for name, (combine, parts) in COMBINED.items():
            out[name] = combine(np.array([out[p] for p in parts]))
        return out


def _robust_location_scale(values: np.ndarray) -> tuple[float, float]:
    logs = np.log(np.maximum(values, 0) + _EPS)
    loc = float(np.median(logs))
    scale = 1.4826 * float(np.median(np.abs(logs - loc)))
    return loc, max(scale, 1e-6)


def fit(train_terms: dict, holdout_terms: dict, meta: dict) -> Stats:
    """Fits the latent Gaussian on the training codes and the typicality statistics on the
    held-out images' raw scores."""
    from sklearn.covariance import LedoitWolf  # a well-kept shrinkage estimator

    codes = np.asarray(train_terms["code"], np.float64)
    gaussian = LedoitWolf(assume_centered=False).fit(codes)
    stats = Stats(
        latent_mean=gaussian.location_.astype(np.float32),
        latent_precision=gaussian.precision_.astype(np.float32),
        typicality={},
        meta={**meta, "latent_shrinkage": float(gaussian.shrinkage_)},
    )
    held_out = stats.raw(holdout_terms)
    stats.typicality = {name: _robust_location_scale(v) for name, v in held_out.items()}
    return stats


def stats_path(workdir: str | Path, step: int) -> Path:
    return Path(workdir) / "ood_stats" / f"{step}.npz"


def save(stats: Stats, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with files.atomic_path(path) as tmp:
        np.savez(
            tmp,
            latent_mean=stats.latent_mean,
            latent_precision=stats.latent_precision,
            typicality=json.dumps(stats.typicality),
            meta=json.dumps(stats.meta),
        )


def load(path: Path) -> Stats | None:
    if not path.is_file():
        return None
    with np.load(path) as f:
        typicality = {k: tuple(v) for k, v in json.loads(str(f["typicality"])).items()}
        if set(typicality) != set(RAW):  # written by an aejax with other scores: refit
            return None
        return Stats(
            f["latent_mean"], f["latent_precision"], typicality, json.loads(str(f["meta"]))
        )
