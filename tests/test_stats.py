"""Tests of backdoorlab.stats against hand-computed cases and brute-force definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from backdoorlab import stats


def brute_force_delong(positives, negatives):
    """DeLong's structural components by their definition, with ties counted half."""
    def psi(x, y):
        return 1.0 if x > y else 0.5 if x == y else 0.0
    v10 = np.array([np.mean([psi(x, y) for y in negatives]) for x in positives])
    v01 = np.array([np.mean([psi(x, y) for x in positives]) for y in negatives])
    return v10.mean(), v10.var(ddof=1) / len(positives) + v01.var(ddof=1) / len(negatives)


def test_summarize_matches_hand_computation():
    result = stats.summarize([0.8, 0.9, 1.0, 0.7])
    assert result.mean == pytest.approx(0.85)
    assert result.sd == pytest.approx(np.std([0.8, 0.9, 1.0, 0.7], ddof=1))
    half = scipy_stats.t.ppf(0.975, 3) * result.sd / 2
    assert (result.ci_low, result.ci_high) == pytest.approx((0.85 - half, 0.85 + half))
    assert (result.min, result.max, result.n) == (0.7, 1.0, 4)


def test_summarize_single_value_has_no_interval():
    result = stats.summarize([0.5])
    assert result.sd == 0.0 and math.isnan(result.ci_low) and math.isnan(result.ci_high)


def test_delong_interval_hand_case():
    # positives 0.5, 0.8, 0.9; negatives 0.1, 0.2, 0.6: v10 = (2/3, 1, 1), v01 = (1, 1, 2/3)
    result = stats.auc_ci([0, 0, 0, 1, 1, 1], [0.1, 0.2, 0.6, 0.5, 0.8, 0.9])
    variance = 2 * (np.var([2 / 3, 1, 1], ddof=1) / 3)
    half = scipy_stats.norm.ppf(0.975) * math.sqrt(variance)
    assert result.auc == pytest.approx(8 / 9)
    assert result.low == pytest.approx(8 / 9 - half)
    assert result.high == 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_delong_matches_its_definition_with_ties(seed):
    rng = np.random.default_rng(seed)
    positives = rng.integers(0, 6, size=17).astype(float)   # many ties
    negatives = rng.integers(0, 5, size=13).astype(float)
    area, variance = brute_force_delong(positives, negatives)
    labels = [1] * 17 + [0] * 13
    scores = np.concatenate([positives, negatives])
    result = stats.auc_ci(labels, scores, level=0.9)
    half = scipy_stats.norm.ppf(0.95) * math.sqrt(variance)
    assert result.auc == pytest.approx(area)
    assert result.auc == pytest.approx(stats.auc(labels, scores))
    assert result.low == pytest.approx(max(0.0, area - half))
    assert result.high == pytest.approx(min(1.0, area + half))


def test_bootstrap_and_delong_agree_on_a_large_sample():
    rng = np.random.default_rng(3)
    scores = np.concatenate([rng.normal(1.0, 1.0, 300), rng.normal(0.0, 1.0, 300)])
    labels = [1] * 300 + [0] * 300
    delong = stats.auc_ci(labels, scores)
    boot = stats.auc_ci(labels, scores, method="bootstrap", num_resamples=500, seed=1)
    assert boot.auc == pytest.approx(delong.auc)
    assert abs(boot.low - delong.low) < 0.015 and abs(boot.high - delong.high) < 0.015
    assert stats.auc_ci(labels, scores, method="bootstrap", num_resamples=500, seed=1) == boot


def test_tpr_at_fpr():
    labels = [0] * 20 + [1] * 10
    scores = list(range(20)) + [18.5] + [100 + i for i in range(9)]
    assert stats.tpr_at_fpr(labels, scores, fpr=0.0) == pytest.approx(0.9)
    assert stats.tpr_at_fpr(labels, scores, fpr=0.04) == pytest.approx(0.9)
    # one negative (19) above the lowest positive: 1 of 20 negatives, FPR 0.05
    assert stats.tpr_at_fpr(labels, scores, fpr=0.05) == pytest.approx(1.0)


def test_paired_test_against_scipy():
    rng = np.random.default_rng(0)
    a = rng.normal(1.0, 0.3, 10)
    b = a - rng.normal(0.2, 0.1, 10)
    result = stats.paired_test(a, b)
    assert result.mean_diff == pytest.approx(np.mean(a - b))
    assert result.wilcoxon_p == pytest.approx(scipy_stats.wilcoxon(a - b).pvalue)
    assert result.sign_p == pytest.approx(scipy_stats.binomtest(result.num_positive, 10).pvalue)
    t_result = scipy_stats.ttest_rel(a, b)
    low, high = t_result.confidence_interval(0.95)
    assert (result.ci_low, result.ci_high) == pytest.approx((low, high))


def test_paired_test_all_zero_differences():
    result = stats.paired_test([1.0, 2.0], [1.0, 2.0])
    assert result.sign_p == 1.0 and math.isnan(result.wilcoxon_p)


@pytest.mark.parametrize("call, message", [
    (lambda: stats.auc([0, 0], [0.1, 0.2]), "both classes"),
    (lambda: stats.auc([0, 2], [0.1, 0.2]), "labels must be 0"),
    (lambda: stats.auc([0, 1], [0.1]), "same length"),
    (lambda: stats.auc([0, 1], [0.1, float("nan")]), "scores must be finite"),
    (lambda: stats.auc_ci([0, 1], [0.1, 0.2], method="exact"), "method"),
    (lambda: stats.auc_ci([0, 1], [0.1, 0.2], level=1.0), "level"),
    (lambda: stats.summarize([]), "values must not be empty"),
    (lambda: stats.paired_test([1.0], [2.0]), "at least 2"),
    (lambda: stats.paired_test([1.0, 2.0], [2.0]), "same length"),
    (lambda: stats.tpr_at_fpr([0, 1], [0.1, 0.2], fpr=2), "fpr"),
])
def test_bad_input_names_the_problem(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_inputs_not_mutated():
    scores = np.array([0.3, 0.1, 0.9, 0.5])
    copy = scores.copy()
    stats.auc_ci([0, 0, 1, 1], scores, method="bootstrap", num_resamples=20)
    assert np.array_equal(scores, copy)
