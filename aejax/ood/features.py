r"""Scores of the encoder's features, every layer's pooled activations side by side (the
``features`` term, :meth:`aejax.models.Autoencoder.encode_with_features`), not only its code:
``feat-maha``, their squared Mahalanobis distance from a Gaussian fitted to the training
images' (Ledoit-Wolf; Lee et al., NeurIPS 2018, with one class), and ``feat-knn``, the
distance of the standardised, normalised features to the :data:`~aejax.ood.knn.KNN_K`-th
nearest of a bank of training images' (Sun et al., ICML 2022). A conv net's first layer sees
strokes and textures its code no longer holds; its mean activations tell a photo's texture
from a digit's strokes even where both reconstruct alike."""

from __future__ import annotations

from aejax.ood import knn, latent
from aejax.ood.registry import Score, register

register(
    Score("feat-maha", ("features",), latent.compute_term("features"), latent.fit_term("features"))
)
register(
    Score(
        "feat-knn",
        ("features",),
        knn.compute_term("features"),
        knn.fit_term("features", standardised=True),
    )
)
