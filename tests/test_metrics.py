"""OOD metrics against scikit-learn and against brute-force definitions, ties included."""

import numpy as np
import pytest
from sklearn import metrics as skm

from aejax import metrics, thresholds


def random_scores(seed, ties):
    rng = np.random.default_rng(seed)
    in_scores = rng.normal(0, 1, 300)
    out_scores = rng.normal(1, 1.5, 200)
    if ties:  # coarse rounding: many equal scores within and across the two sets
        in_scores, out_scores = np.round(in_scores, 1), np.round(out_scores, 1)
    return in_scores, out_scores


def brute_force_auroc(in_scores, out_scores):
    """P(out > in) + P(out == in) / 2 over all pairs (Mann-Whitney)."""
    diff = out_scores[:, None] - in_scores[None, :]
    return np.mean(diff > 0) + 0.5 * np.mean(diff == 0)


def brute_force_fpr95(in_scores, out_scores):
    """In-distribution fraction flagged at the highest threshold flagging >= 95% of OOD."""
    thresholds = np.unique(np.concatenate([in_scores, out_scores]))[::-1]
    for t in thresholds:
        if np.mean(out_scores >= t) >= 0.95:
            return np.mean(in_scores >= t)
    raise AssertionError


def brute_force_average_precision(positive, negative):
    """sum_n (R_n - R_{n-1}) P_n over the distinct thresholds, high to low."""
    ap, previous_recall = 0.0, 0.0
    for t in np.unique(np.concatenate([positive, negative]))[::-1]:
        tp, fp = np.sum(positive >= t), np.sum(negative >= t)
        recall = tp / len(positive)
        ap += (recall - previous_recall) * tp / (tp + fp)
        previous_recall = recall
    return ap


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_equal_sklearn_and_definitions(seed, ties):
    in_scores, out_scores = random_scores(seed, ties)
    m = metrics.ood_metrics(in_scores, out_scores)
    labels = np.r_[np.zeros(300), np.ones(200)]
    scores = np.r_[in_scores, out_scores]
    assert m["auroc"] == pytest.approx(skm.roc_auc_score(labels, scores), abs=1e-12)
    assert m["auroc"] == pytest.approx(brute_force_auroc(in_scores, out_scores), abs=1e-12)
    assert m["aupr_out"] == pytest.approx(skm.average_precision_score(labels, scores), abs=1e-12)
    assert m["aupr_out"] == pytest.approx(
        brute_force_average_precision(out_scores, in_scores), abs=1e-12
    )
    assert m["aupr_in"] == pytest.approx(
        brute_force_average_precision(-in_scores, -out_scores), abs=1e-12
    )
    assert m["fpr_at_95_tpr"] == pytest.approx(brute_force_fpr95(in_scores, out_scores), abs=1e-12)


def test_perfect_and_inverted_separation():
    low, high = np.linspace(0, 1, 50), np.linspace(2, 3, 70)
    perfect = metrics.ood_metrics(low, high)
    assert perfect == {"auroc": 1.0, "aupr_out": 1.0, "aupr_in": 1.0, "fpr_at_95_tpr": 0.0}
    inverted = metrics.ood_metrics(high, low)
    assert inverted["auroc"] == 0.0 and inverted["fpr_at_95_tpr"] == 1.0
    # All scores equal: chance level, and flagging any OOD input flags every normal one.
    same = metrics.ood_metrics(np.ones(10), np.ones(10))
    assert same["auroc"] == 0.5 and same["fpr_at_95_tpr"] == 1.0


def test_threshold_and_detection_rate():
    reference = np.arange(1, 101, dtype=float)  # 1..100
    threshold = thresholds.at_percentile(reference, 95, score="bce").value
    assert threshold == pytest.approx(95.05)
    assert metrics.flagged_fraction(reference, threshold) == pytest.approx(0.05)
    assert metrics.flagged_fraction([threshold, 96], threshold) == 0.5  # strictly above


def test_non_finite_scores_are_refused():
    with pytest.raises(ValueError, match="finite"):
        metrics.ood_metrics([0.1, np.nan], [0.3])
