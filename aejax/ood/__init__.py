"""OOD scores (higher = more anomalous): a registry, each score a small module, and the
statistics they are fitted with.

=========================  ===========================================================
:mod:`.reconstruction`     ``bce``, ``mse``, ``kl``, ``entropy``, ``elbo``, ``disagreement``,
                           ``transform`` (a self-supervised head's, :mod:`aejax.models.heads`)
:mod:`.latent`             ``latent``: Mahalanobis distance of the code (Ledoit-Wolf)
:mod:`.knn`                ``knn``: distance to the k-th nearest training code
:mod:`.features`           ``feat-maha``, ``feat-knn``: the same, of every encoder layer's
                           pooled activations
:mod:`.typicality`         ``typ-<score>``: two-sided robust z of ``log`` score
:mod:`.combined`           ``typ-max``, ``typ-rss``, ``typ-rss-knn``
:mod:`.joint`              ``joint``: Mahalanobis distance of every statistic's ``z`` at once
=========================  ===========================================================

A new score is a module that calls :func:`register` with a :class:`Score` (what it needs,
what it fits on held-out images, how it is computed); :func:`names` lists every score, in
order, for the report, the CSV and the detector. :mod:`.synthetic` has the synthetic OOD
sets ``aejax.eval --ood`` knows.

The default, ``joint``, was chosen by leave-one-family-out: for each family of OOD sets, the
score with the best worst-case AUROC of held-out images against the *other* families, over
one run of every architecture on MNIST and on Fashion-MNIST and three RGB runs, reported on
the left-out family (``experiments/ood_general.py``; its numbers, and the families where the
default fails: experiments/results/ood_general.md; tests/test_docs.py checks that this is
the score the results file chose).
"""

# Imported in the order the scores are computed: each registers its own.
from aejax.ood import reconstruction, latent, knn, features, typicality, combined, joint  # noqa: F401, I001
from aejax.ood.registry import Score, names, needed_by, register, registered, unregister
from aejax.ood.stats import Stats, every_score, fit, load, save, stats_path

#: The score a run's detector uses unless told: chosen by leave-one-family-out (see above).
DEFAULT = "joint"

__all__ = [
    "DEFAULT", "Score", "Stats", "every_score", "fit", "load", "names", "needed_by", "register",
    "registered", "save", "stats_path", "unregister",
]  # fmt: skip
