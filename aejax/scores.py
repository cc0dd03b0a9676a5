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
* ``disagreement``: an ensemble's (``aejax.train --ensemble K``) per-pixel variance of its
  members' reconstructions, averaged over the pixels: where members trained from different
  seeds disagree, the input is unlike their training data (Lakshminarayanan et al., 2017).
  0 for a single model. An ensemble's other scores use its members' mean errors and their
  codes side by side.
* ``latent``: squared Mahalanobis distance of the image's code from a Gaussian fitted to the
  codes of the training images (covariance shrunk by Ledoit-Wolf: the conv net's codes have 735
  dimensions).
* ``knn``: distance of the image's L2-normalised code to its :data:`KNN_K`-th nearest among
  :data:`KNN_BANK` normalised training codes (Sun et al., ICML 2022), :math:`\sqrt{2-2\cos}`.

Two-sided typicality of any raw score ``s`` (``typ-<score>``): how far ``log s`` lies from the
held-out in-distribution images' ``log`` scores, in either direction, in robust standard
deviations: :math:`z = |\log s - \mathrm{median}| / (1.4826\ \mathrm{MAD})`. It flags inputs
reconstructed *too* well (a blank image) as much as those reconstructed badly.

Combined: ``typ-max`` is the largest, ``typ-rss`` the root sum of squares of the ``z`` of
``kl``, ``bce``, ``latent`` and ``entropy``: the input's distance from the held-out images in
a space of four standardised statistics. ``typ-rss-knn`` adds ``knn`` as a fifth coordinate,
one-sided (:math:`\max(z, 0)` of the signed :math:`z = (\log s - \mathrm{median}) /
(1.4826\ \mathrm{MAD})`): being nearer the training codes than held-out images are is no sign
of novelty, while an input reconstructed too well (a blank image) still is.

The default, ``typ-rss-knn``, is chosen by leave-one-family-out
(experiments/results/ood_general.md): for each family of OOD sets (noise, constants,
transformed images, drawn glyphs, photos, other digits, the other dataset) the score with the
best worst-case AUROC of held-out images against the *other* families, over one run of every
architecture on MNIST and on Fashion-MNIST, then reported on the left-out family; it is
chosen for every left-out family. ``typ-rss``, the earlier default (chosen on six synthetic
sets, ood_suite.md), fails on turned and flipped images and on other digits for
Fashion-MNIST models; ``knn`` alone fails the denoising model on constant images. The
numbers, and the families where the default fails too: ood_general.md.

The statistics (the Gaussian, the medians and MADs) are fitted from the training split and
its held-out slice by :func:`fit` and saved next to the checkpoint (:func:`save`), so scoring
later needs no training data.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from aejax import files

FROM_TERMS = ("bce", "mse", "kl", "entropy", "elbo", "disagreement")  # core.per_image's
RAW = (*FROM_TERMS, "latent", "knn")  # the last two from the code and fitted statistics
TYPICALITY = tuple(f"typ-{name}" for name in RAW)
_PARTS = ("typ-kl", "typ-bce", "typ-latent", "typ-entropy")
COMBINED = {  # name: (how, parts); "z-<raw>": the signed typicality, far side positive
    "typ-max": (lambda z: jnp.max(z, axis=0), _PARTS),
    "typ-rss": (lambda z: jnp.sqrt(jnp.sum(jnp.square(z), axis=0)), _PARTS),
    # typ-rss with the kNN distance as a fifth coordinate, one-sided: a code nearer its
    # training neighbours than held-out images' codes are is no sign of novelty.
    "typ-rss-knn": (
        lambda z: jnp.sqrt(jnp.sum(jnp.square(z[:-1]), axis=0) + jnp.square(jnp.maximum(z[-1], 0))),
        (*_PARTS, "z-knn"),
    ),
}
ALL = (*RAW, *TYPICALITY, *COMBINED)
DEFAULT = "typ-rss-knn"  # chosen by leave-one-family-out, see above
_EPS = 1e-10  # keeps log s finite for a perfect reconstruction (s = 0)
# Sun et al. use k = 50 of 50k codes; a random tenth of MNIST's training codes keeps the
# detector small (the conv net's bank is 5000 x 735 float32, 15 MB) and k scales with it.
KNN_K, KNN_BANK = 10, 5000


@jax.jit
def mahalanobis(code_NxD: jax.Array, mean_D: jax.Array, precision_DxD: jax.Array) -> jax.Array:
    """Squared Mahalanobis distances ``[N]``."""
    centred = code_NxD - mean_D
    return jnp.sum((centred @ precision_DxD) * centred, axis=1)


@jax.jit
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


def raw_scores(fitted: dict, terms: dict) -> dict[str, jax.Array]:
    """The raw scores from :func:`aejax.core.per_image`'s terms; ``fitted``: the arrays of
    :meth:`Stats.arrays` (traceable, float32)."""
    raw = {k: jnp.asarray(terms[k], jnp.float32) for k in FROM_TERMS}
    code = jnp.asarray(terms["code"], jnp.float32)
    if "latent_precision" in fitted:
        raw["latent"] = mahalanobis(code, fitted["latent_mean"], fitted["latent_precision"])
    else:  # fewer training codes than dimensions: the Gaussian's low-rank form
        raw["latent"] = mahalanobis_low_rank(
            code,
            fitted["latent_mean"],
            fitted["latent_basis"],
            fitted["latent_inverse_variance"],
            fitted["latent_isotropic_precision"],
        )
    # All N codes against the bank at once ([N, KNN_BANK] similarities): one computation for
    # any N, symbolic N included (the exported detector), so both give the same bits;
    # Detector.detect feeds at most DETECT_ROWS images at a time to bound the memory. A bank
    # smaller than KNN_K (a few dozen training images) gives the distance to its farthest.
    bank = fitted["knn_bank"]
    raw["knn"] = _kth_distance(code, bank, min(KNN_K, bank.shape[0]))
    return raw


def every_score(fitted: dict, terms: dict) -> dict[str, jax.Array]:
    """Every score in :data:`ALL` from the terms (traceable, float32: the CLIs, the Python
    API and the exported detector compute scores with this one function)."""
    out = raw_scores(fitted, terms)
    signed = {}
    for i, name in enumerate(RAW):
        log_s = jnp.log(jnp.maximum(out[name], 0) + _EPS)
        # Times the reciprocal, not divided by the scale: with the statistics as constants (the
        # exported detector) XLA would rewrite a division into that product and round otherwise.
        inverse_scale = 1 / fitted["log_scale"][i]
        signed[f"z-{name}"] = (log_s - fitted["log_median"][i]) * inverse_scale
        out[f"typ-{name}"] = jnp.abs(signed[f"z-{name}"])
    for name, (combine, parts) in COMBINED.items():
        out[name] = combine(jnp.stack([{**out, **signed}[p] for p in parts]))
    return out


_raw_scores, _every_score = jax.jit(raw_scores), jax.jit(every_score)


@dataclasses.dataclass
class Stats:
    """What scoring needs from the training data, fitted once per checkpoint."""

    latent_mean: np.ndarray  # [D]
    latent_precision: np.ndarray | None  # [D, D]; None: the low-rank form below instead
    knn_bank: np.ndarray  # [min(KNN_BANK, training codes), D], training codes, normalised
    typicality: dict[str, tuple[float, float]]  # raw score -> (median, robust sd) of log s
    meta: dict  # where it was fitted: dataset, rows, checkpoint step, image shape
    holdout_scores: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # ALL
    threshold: dict | None = None  # aejax.thresholds.Threshold.to_dict(), set by eval
    # Fewer training codes than dimensions (a few hundred images of one's own): the Gaussian
    # as mahalanobis_low_rank takes it ("basis", "inverse_variance", "isotropic_precision").
    latent_low_rank: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def arrays(self) -> dict[str, np.ndarray]:
        """The fitted statistics as float32 arrays, what :func:`every_score` takes."""
        loc_scale = np.array([self.typicality.get(k, (0.0, 1.0)) for k in RAW], np.float32)
        gaussian = (
            {"latent_precision": self.latent_precision}
            if self.latent_precision is not None
            else {f"latent_{k}": v for k, v in self.latent_low_rank.items()}
        )
        return {
            "latent_mean": np.asarray(self.latent_mean, np.float32),
            **{k: np.asarray(v, np.float32) for k, v in gaussian.items()},
            "knn_bank": np.asarray(self.knn_bank, np.float32),
            "log_median": loc_scale[:, 0],
            "log_scale": loc_scale[:, 1],
        }

    def raw(self, terms: dict) -> dict[str, np.ndarray]:
        """The raw scores from :func:`aejax.core.per_image`'s output."""
        return {k: np.asarray(v) for k, v in _raw_scores(self.arrays(), terms).items()}

    def all_scores(self, terms: dict) -> dict[str, np.ndarray]:
        """Every score in :data:`ALL`, per image (float32)."""
        terms = {k: terms[k] for k in (*FROM_TERMS, "code")}
        return {k: np.asarray(v) for k, v in _every_score(self.arrays(), terms).items()}


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


def _robust_location_scale(values: np.ndarray) -> tuple[float, float]:
    logs = np.log(np.maximum(np.asarray(values, np.float64), 0) + _EPS)
    loc = float(np.median(logs))
    scale = 1.4826 * float(np.median(np.abs(logs - loc)))
    return loc, max(scale, 1e-6)


def fit(train_terms: dict, holdout_terms: dict, meta: dict) -> Stats:
    """Fits the latent Gaussian on the training codes and the typicality statistics on the
    held-out images' raw scores, and keeps every score of the held-out images (p-values and
    thresholds are set on them)."""
    codes = np.asarray(train_terms["code"], np.float64)
    mean, precision, low_rank, shrinkage = fit_gaussian(codes)
    rows = np.random.default_rng(0).permutation(len(codes))[:KNN_BANK]  # a fixed sample
    stats = Stats(
        latent_mean=mean.astype(np.float32),
        latent_precision=None if precision is None else precision.astype(np.float32),
        latent_low_rank={k: np.asarray(v, np.float32) for k, v in low_rank.items()},
        knn_bank=np.asarray(_normalised(jnp.asarray(codes[np.sort(rows)], jnp.float32))),
        typicality={},
        meta={**meta, "latent_shrinkage": shrinkage},
    )
    held_out = stats.raw(holdout_terms)
    stats.typicality = {name: _robust_location_scale(v) for name, v in held_out.items()}
    stats.holdout_scores = stats.all_scores(holdout_terms)
    return stats


def stats_path(workdir: str | Path, step: int) -> Path:
    return Path(workdir) / "ood_stats" / f"{step}.npz"


def save(stats: Stats, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with files.atomic_path(path) as tmp:
        gaussian = (
            {"latent_precision": stats.latent_precision}
            if stats.latent_precision is not None
            else {f"latent_low_rank/{k}": v for k, v in stats.latent_low_rank.items()}
        )
        np.savez(
            tmp,
            latent_mean=stats.latent_mean,
            **gaussian,
            knn_bank=stats.knn_bank,
            typicality=json.dumps(stats.typicality),
            meta=json.dumps(stats.meta),
            threshold=json.dumps(stats.threshold),
            **{f"holdout/{k}": v for k, v in stats.holdout_scores.items()},
        )


def load(path: Path) -> Stats | None:
    """The statistics saved at ``path``; None when there are none, or when an aejax with
    other scores wrote them (they are then fitted anew)."""
    if not path.is_file():
        return None
    with np.load(path) as f:
        typicality = {k: tuple(v) for k, v in json.loads(str(f["typicality"])).items()}
        holdout = {k.split("/", 1)[1]: f[k] for k in f.files if k.startswith("holdout/")}
        low_rank = {k.split("/", 1)[1]: f[k] for k in f.files if k.startswith("latent_low_rank/")}
        if (
            set(typicality) != set(RAW)
            or set(holdout) != set(ALL)
            or "threshold" not in f
            or "knn_bank" not in f
            or not ("latent_precision" in f or low_rank)
        ):
            return None
        return Stats(
            latent_mean=f["latent_mean"],
            latent_precision=f["latent_precision"] if "latent_precision" in f else None,
            latent_low_rank=low_rank,
            knn_bank=f["knn_bank"],
            typicality=typicality,
            meta=json.loads(str(f["meta"])),
            holdout_scores=holdout,
            threshold=json.loads(str(f["threshold"])),
        )


def _normalised(code_NxD: jax.Array) -> jax.Array:
    return code_NxD / jnp.maximum(jnp.linalg.norm(code_NxD, axis=1, keepdims=True), 1e-12)


@functools.partial(jax.jit, static_argnames="k")
def _kth_distance(code_NxD, bank_MxD, k):
    # The k-th most similar bank code by k - 1 passes that each remove one row maximum, then
    # an argmax: exact (ties count as separate neighbours, as in top_k), and on XLA:CPU 13x
    # faster than lax.top_k, which sorts (10k codes against 5,000: 0.68 s against 8.8 s).
    unit_NxD = _normalised(code_NxD)
    similarity_NxM = unit_NxD @ bank_MxD.T
    columns_M = jnp.arange(bank_MxD.shape[0])

    def drop_max(_, s):
        return jnp.where(columns_M == jnp.argmax(s, axis=1)[:, None], -jnp.inf, s)

    kth_N = jnp.argmax(jax.lax.fori_loop(0, k - 1, drop_max, similarity_NxM), axis=1)
    # The distance itself from the difference, not as sqrt(2 - 2 cos): near neighbours have
    # cos ~ 1, where that form loses most of float32's digits.
    return jnp.linalg.norm(unit_NxD - bank_MxD[kth_N], axis=1)


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
