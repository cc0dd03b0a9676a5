"""Out-of-distribution detection metrics, from scikit-learn (a well-kept implementation).

Convention: a *higher* score means *more anomalous*, and OOD is the positive class unless a
metric's name says otherwise.
"""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm


def _labelled(in_scores, out_scores):
    in_scores = np.asarray(in_scores, np.float64).ravel()
    out_scores = np.asarray(out_scores, np.float64).ravel()
    if not (np.isfinite(in_scores).all() and np.isfinite(out_scores).all()):
        raise ValueError("scores must be finite")
    labels = np.concatenate([np.zeros(in_scores.size), np.ones(out_scores.size)])
    return labels, np.concatenate([in_scores, out_scores])


def fpr_at_tpr(in_scores, out_scores, tpr: float = 0.95) -> float:
    """Fraction of in-distribution inputs flagged when a ``tpr`` fraction of OOD inputs is.

    The threshold is the largest one that flags at least ``tpr`` of the OOD inputs; inputs
    scoring exactly at it count as flagged (ties go against the detector).
    """
    labels, scores = _labelled(in_scores, out_scores)
    fpr, tpr_curve, _ = skm.roc_curve(labels, scores, drop_intermediate=False)
    return float(fpr[np.searchsorted(tpr_curve, tpr, side="left")])


def ood_metrics(in_scores, out_scores) -> dict[str, float]:
    """AUROC, AUPR (both ways) and FPR at 95% TPR of separating ``out_scores`` from
    ``in_scores``.

    Returns:
      ``auroc``: P(OOD scores higher than in-dist), ties counting one half (OOD positive);
      ``aupr_out``: average precision, OOD positive;
      ``aupr_in``: average precision, in-distribution positive (scores negated);
      ``fpr_at_95_tpr``: see :func:`fpr_at_tpr` (OOD positive).

    >>> m = ood_metrics([0.1, 0.2, 0.3], [0.25, 0.9])
    >>> round(m["auroc"], 4)
    0.8333
    """
    labels, scores = _labelled(in_scores, out_scores)
    return {
        "auroc": float(skm.roc_auc_score(labels, scores)),
        "aupr_out": float(skm.average_precision_score(labels, scores)),
        "aupr_in": float(skm.average_precision_score(1 - labels, -scores)),
        "fpr_at_95_tpr": fpr_at_tpr(in_scores, out_scores, 0.95),
    }


def flagged_fraction(scores, threshold: float) -> float:
    """Fraction of ``scores`` strictly above ``threshold`` (flagged as OOD)."""
    return float(np.mean(np.asarray(scores) > threshold))


def roc(in_scores, out_scores) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) along the ROC curve, OOD positive."""
    labels, scores = _labelled(in_scores, out_scores)
    fpr, tpr, _ = skm.roc_curve(labels, scores)
    return fpr, tpr
