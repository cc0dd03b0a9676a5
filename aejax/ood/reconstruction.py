r"""The scores a model gives an image by itself (no fitted statistics), from
:func:`aejax.core.per_image`'s terms:

* ``bce``: reconstruction binary cross-entropy, :math:`\frac1P\sum_p \ell(x_p, \hat x_p)`.
* ``mse``: mean squared error of the reconstruction.
* ``kl``: ``bce - entropy``. Per pixel :math:`\ell(x, \hat x) = h(x) + \mathrm{KL}(x \| \hat x)`,
  so ``kl`` is the part the model is responsible for (0 for a perfect reconstruction), while
  ``bce`` mostly measures :math:`H(x)`: nearly binary MNIST digits have low entropy whatever
  the model, which is why a Fashion-MNIST model ranks them *below* its own data under ``bce``.
* ``entropy``: the image's own entropy :math:`H(x) = \frac1P\sum_p h(x_p)` (no model).
* ``elbo``: the negative ELBO per pixel: ``bce`` (the reconstruction of the code's mean) plus
  the model's ``prior_term`` (a VAE's KL term); equal to ``bce`` for models without a prior.
* ``disagreement``: an ensemble's (``aejax.train --ensemble K``) per-pixel variance of its
  members' reconstructions, averaged over the pixels: where members trained from different
  seeds disagree, the input is unlike their training data (Lakshminarayanan et al., 2017).
  0 for a single model. An ensemble's other scores use its members' mean errors and their
  codes side by side.
* ``transform``: a self-supervised head's negative log-likelihood of the true transformations
  of the image (``aejax.train --transform-head``; :mod:`aejax.models.heads`), in units of
  :math:`\log |T|`: a model that knows which way up its images are cannot tell for others.
  0 for a model without the head.
"""

from __future__ import annotations

import jax.numpy as jnp

from aejax.ood.registry import Score, register

FROM_TERMS = ("bce", "mse", "kl", "entropy", "elbo", "disagreement", "transform")


def _as_score(term: str) -> Score:
    return Score(term, (term,), lambda fitted, x: jnp.asarray(x[term], jnp.float32))


for _term in FROM_TERMS:
    register(_as_score(_term))
