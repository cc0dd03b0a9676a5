"""Thresholds keep their promises on score distributions whose answer is known exactly.

In-distribution scores are N(0, 1), so the false-positive rate a threshold t really has is
``norm.sf(t)``; each case draws many held-out sets, as many users each with their own."""

import numpy as np
import pytest
from scipy.stats import norm

from aejax import thresholds

N_HELD_OUT, TRIALS = 1000, 400


def held_out_sets(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(TRIALS, N_HELD_OUT)).astype(np.float32)


@pytest.mark.parametrize("target", [0.01, 0.05, 0.2])
def test_target_fpr_is_met_on_average_and_its_bound_covers(target):
    rules = [thresholds.at_target_fpr(h, target, score="s") for h in held_out_sets(1)]
    true_fpr = norm.sf([r.value for r in rules])
    # E[FPR] is exactly the promised expectation (<= target), up to Monte Carlo error.
    sd = np.std(true_fpr) / np.sqrt(TRIALS)
    assert abs(np.mean(true_fpr) - rules[0].expected_fpr) < 4 * sd
    assert rules[0].expected_fpr <= target
    # The 95% bound fails for about 5% of the held-out sets, not more.
    missed = np.mean(true_fpr > np.array([r.fpr_bound for r in rules]))
    assert missed < 0.05 + 3 * np.sqrt(0.05 * 0.95 / TRIALS)
    assert all(r.policy == "target-fpr" and r.n == N_HELD_OUT for r in rules)


def test_percentile_threshold_flags_its_share_of_new_in_distribution_images():
    rules = [thresholds.at_percentile(h, 95, score="s") for h in held_out_sets(2)]
    true_fpr = norm.sf([r.value for r in rules])
    assert np.mean(true_fpr) == pytest.approx(0.05, abs=0.002)
    assert rules[0].expected_fpr == pytest.approx(0.05, abs=0.002)
    fresh = np.random.default_rng(3).normal(size=100_000)
    assert np.mean(rules[0].flags(fresh)) == pytest.approx(norm.sf(rules[0].value), abs=0.003)


def test_contamination_flags_that_share_of_the_scored_data():
    assert thresholds.at_contamination(np.arange(1000.0), 0.1, score="s").value == pytest.approx(
        899.1
    )
    rng = np.random.default_rng(4)
    normal, anomalies = rng.normal(size=900), rng.normal(5, 1, size=100)
    scored = np.concatenate([normal, anomalies])
    rule = thresholds.at_contamination(scored, 0.1, score="s")
    flagged = rule.flags(scored)
    assert flagged.sum() == 100 and flagged[900:].mean() > 0.97
    assert rule.expected_fpr is None and rule.reference == "scored"


def test_p_values_are_uniform_in_distribution_and_match_the_target_fpr_decision():
    held_out = held_out_sets(5)[0]
    fresh = np.random.default_rng(6).normal(size=20_000).astype(np.float32)
    p = np.asarray(thresholds.p_values(np.sort(held_out), fresh))
    assert p.min() >= 1 / (N_HELD_OUT + 1) and p.max() <= 1
    assert np.mean(p <= 0.05) == pytest.approx(0.05, abs=0.01)
    assert np.mean(p) == pytest.approx(0.5, abs=0.01)
    # Flagging p <= F is exactly the target-FPR threshold's decision.
    for target in (0.01, 0.05, 0.3):
        rule = thresholds.at_target_fpr(held_out, target, score="s")
        np.testing.assert_array_equal(p <= target, rule.flags(fresh))


def test_a_target_the_held_out_count_cannot_support_is_refused():
    # 1/101 = 0.0099009...: the target named is rounded up, so that asking for it works.
    with pytest.raises(ValueError, match="smallest target they support is 0.01; ask for 0.01"):
        thresholds.at_target_fpr(np.arange(100.0), 0.005, score="s")
    assert thresholds.at_target_fpr(np.arange(100.0), 0.01, score="s").value == 99.0
    with pytest.raises(ValueError, match="smallest target they support is 0.019"):
        thresholds.Policy("target-fpr", 0.01).check_supported(54)  # before any scoring
    thresholds.Policy("target-fpr", 0.019).check_supported(54)
    with pytest.raises(ValueError, match="finite"):
        thresholds.at_percentile([1.0, np.nan], 95, score="s")


def test_a_threshold_round_trips_and_compares_exactly_in_float32():
    rule = thresholds.at_percentile(np.linspace(0, 1, 1001), 95.5, score="typ-rss")
    assert rule.value == float(np.float32(rule.value))  # what the float32 scores meet
    assert thresholds.Threshold.from_dict(rule.to_dict()) == rule
    assert "95.5th percentile of 1001 held-out scores" in rule.describe()
