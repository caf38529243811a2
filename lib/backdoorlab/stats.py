"""Intervals and tests that the chapters share.

A comparison in the book is a claim only if it holds beyond its spread. This module holds the
few statistics the chapters need for that, each small and tested against a known case:

- :func:`summarize`: mean, standard deviation, extremes and a Student-t interval of the mean
  of a handful of seeds;
- :func:`auc` and :func:`auc_ci`: the area under the ROC curve (scikit-learn's
  ``roc_auc_score``) with a DeLong or a stratified bootstrap interval;
- :func:`tpr_at_fpr`: the detection rate at a fixed false-positive rate;
- :func:`paired_test`: the mean of paired differences with its t interval, the sign test and
  the Wilcoxon signed-rank test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats as scipy_stats
from sklearn.metrics import roc_auc_score, roc_curve

from . import _checks

__all__ = [
    "AUCInterval",
    "PairedTest",
    "Summary",
    "auc",
    "auc_ci",
    "paired_test",
    "summarize",
    "tpr_at_fpr",
]


def _as_vector(values, name: str) -> np.ndarray:
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{name} must be a sequence of numbers, got {type(values).__name__}")
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name} must be a sequence of numbers") from error
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} must not be empty")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite (no NaN or inf)")
    return array


def _check_level(level: float) -> float:
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level < 1:
        raise ValueError(f"level must be a number strictly between 0 and 1, got {level!r}")
    return float(level)


def _labels_and_scores(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    label_array = _as_vector(labels, "labels")
    score_array = _as_vector(scores, "scores")
    if label_array.shape != score_array.shape:
        raise ValueError(f"labels and scores must have the same length, got {label_array.size} and {score_array.size}")
    if not np.all((label_array == 0) | (label_array == 1)):
        raise ValueError("labels must be 0 (negative) or 1 (positive)")
    if label_array.min() == label_array.max():
        raise ValueError("labels must contain both classes (0 and 1)")
    return label_array.astype(np.int64), score_array


@dataclass(frozen=True)
class Summary:
    """Mean and spread of a few measurements (e.g. one per seed).

    ``ci_low`` and ``ci_high`` bound the Student-t interval of the mean at ``level``; with a
    single value the standard deviation is 0 and the interval is undefined (NaN).
    """

    mean: float
    sd: float
    min: float
    max: float
    n: int
    ci_low: float
    ci_high: float
    level: float


def summarize(values: Sequence[float], *, level: float = 0.95) -> Summary:
    """Mean, sample standard deviation (ddof 1), extremes and t interval of the mean.

    .. math:: \\bar x \\pm t_{n-1, (1+\\text{level})/2} \\, s / \\sqrt n

    Parameters
    ----------
    values : sequence of float
        One or more finite numbers.
    level : float
        Coverage of the interval, in (0, 1).

    Returns
    -------
    Summary

    Examples
    --------
    >>> s = summarize([1.0, 2.0, 3.0])
    >>> s.mean, s.sd, s.min, s.max, s.n
    (2.0, 1.0, 1.0, 3.0, 3)
    >>> round(s.ci_low, 4), round(s.ci_high, 4)
    (-0.4841, 4.4841)
    """
    level = _check_level(level)
    array = _as_vector(values, "values")
    n = int(array.size)
    mean = float(array.mean())
    if n == 1:
        return Summary(mean, 0.0, mean, mean, 1, math.nan, math.nan, level)
    sd = float(array.std(ddof=1))
    half = float(scipy_stats.t.ppf((1 + level) / 2, n - 1)) * sd / math.sqrt(n)
    return Summary(mean, sd, float(array.min()), float(array.max()), n, mean - half, mean + half, level)


def auc(labels, scores) -> float:
    """Area under the ROC curve; labels are 1 for positives (e.g. backdoored models).

    Examples
    --------
    >>> auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    """
    label_array, score_array = _labels_and_scores(labels, scores)
    return float(roc_auc_score(label_array, score_array))


@dataclass(frozen=True)
class AUCInterval:
    """An AUC with its interval (clipped to [0, 1])."""

    auc: float
    low: float
    high: float
    level: float
    method: str


def _midranks(values: np.ndarray) -> np.ndarray:
    return scipy_stats.rankdata(values, method="average")


def _delong_variance(positives: np.ndarray, negatives: np.ndarray) -> tuple[float, float]:
    """AUC and its DeLong variance, through midranks (Sun and Xu 2014)."""
    m, n = positives.size, negatives.size
    ranks_all = _midranks(np.concatenate([positives, negatives]))
    ranks_pos = _midranks(positives)
    ranks_neg = _midranks(negatives)
    # Structural components: v10[i] = P(score of negative < positive i) with ties counted half.
    v10 = (ranks_all[:m] - ranks_pos) / n
    v01 = 1.0 - (ranks_all[m:] - ranks_neg) / m
    area = float(v10.mean())
    s10 = float(v10.var(ddof=1)) if m > 1 else 0.0
    s01 = float(v01.var(ddof=1)) if n > 1 else 0.0
    return area, s10 / m + s01 / n


def auc_ci(labels, scores, *, level: float = 0.95, method: str = "delong", num_resamples: int = 2000,
           seed: int = 0) -> AUCInterval:
    """AUC with a confidence interval over the sampled items (models, images).

    ``method="delong"`` uses DeLong's variance of the Mann-Whitney statistic and a normal
    interval, AUC +- z * sqrt(var), clipped to [0, 1]. ``method="bootstrap"`` resamples
    positives and negatives separately (stratified, ``num_resamples`` times, seeded) and takes
    the percentile interval.

    Parameters
    ----------
    labels : sequence of int
        1 for positives, 0 for negatives; both must occur.
    scores : sequence of float
        Higher means "more likely positive".
    level : float
        Coverage, in (0, 1).
    method : {"delong", "bootstrap"}
    num_resamples : int
        Bootstrap resamples (bootstrap only).
    seed : int
        Seed of the bootstrap's generator.

    Examples
    --------
    >>> result = auc_ci([0, 0, 0, 1, 1, 1], [0.1, 0.2, 0.6, 0.5, 0.8, 0.9])
    >>> round(result.auc, 4), round(result.low, 4), round(result.high, 4)
    (0.8889, 0.5809, 1.0)
    """
    level = _check_level(level)
    label_array, score_array = _labels_and_scores(labels, scores)
    positives, negatives = score_array[label_array == 1], score_array[label_array == 0]
    if method == "delong":
        area, variance = _delong_variance(positives, negatives)
        half = float(scipy_stats.norm.ppf((1 + level) / 2)) * math.sqrt(max(variance, 0.0))
        return AUCInterval(area, max(0.0, area - half), min(1.0, area + half), level, "delong")
    if method == "bootstrap":
        _checks.check_int("num_resamples", num_resamples, minimum=10)
        rng = np.random.default_rng(_checks.check_seed(seed))
        pos = positives[rng.integers(0, positives.size, size=(num_resamples, positives.size))]
        neg = negatives[rng.integers(0, negatives.size, size=(num_resamples, negatives.size))]
        # Mann-Whitney AUC of each resample, ties counted half.
        greater = (pos[:, :, None] > neg[:, None, :]).mean(axis=(1, 2))
        equal = (pos[:, :, None] == neg[:, None, :]).mean(axis=(1, 2))
        areas = greater + 0.5 * equal
        low, high = np.quantile(areas, [(1 - level) / 2, (1 + level) / 2])
        return AUCInterval(auc(label_array, score_array), float(low), float(high), level, "bootstrap")
    raise ValueError(f"method must be 'delong' or 'bootstrap', got {method!r}")


def tpr_at_fpr(labels, scores, *, fpr: float = 0.05) -> float:
    """Share of positives detected at the threshold whose false-positive rate is at most ``fpr``.

    The ROC curve is read as a step function: the largest true-positive rate among its points
    with false-positive rate <= ``fpr``.

    Examples
    --------
    >>> tpr_at_fpr([0, 0, 0, 0, 1, 1], [0.1, 0.2, 0.3, 0.9, 0.5, 0.95], fpr=0.25)
    1.0
    >>> tpr_at_fpr([0, 0, 0, 0, 1, 1], [0.1, 0.2, 0.3, 0.9, 0.5, 0.95], fpr=0.0)
    0.5
    """
    if isinstance(fpr, bool) or not isinstance(fpr, (int, float)) or not 0 <= fpr <= 1:
        raise ValueError(f"fpr must be a number in [0, 1], got {fpr!r}")
    label_array, score_array = _labels_and_scores(labels, scores)
    false_rates, true_rates, _ = roc_curve(label_array, score_array)
    return float(true_rates[false_rates <= fpr + 1e-12].max())


@dataclass(frozen=True)
class PairedTest:
    """Paired differences ``a - b``: their mean with a t interval, and two tests of "no change".

    ``sign_p`` is the two-sided exact sign test (zero differences dropped); ``wilcoxon_p`` the
    two-sided Wilcoxon signed-rank test (NaN when every difference is zero).
    """

    mean_diff: float
    sd_diff: float
    ci_low: float
    ci_high: float
    n: int
    num_positive: int
    num_negative: int
    sign_p: float
    wilcoxon_p: float
    level: float


def paired_test(a: Sequence[float], b: Sequence[float], *, level: float = 0.95) -> PairedTest:
    """Test paired measurements (e.g. poisoned vs clean, paired by training seed).

    Parameters
    ----------
    a, b : sequence of float
        Same length, at least 2; ``a[i]`` and ``b[i]`` belong to the same pair.
    level : float
        Coverage of the t interval of the mean difference.

    Examples
    --------
    >>> result = paired_test([1.1, 1.3, 1.2, 1.4, 1.25, 1.35], [1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    >>> result.num_positive, round(result.sign_p, 4), round(result.wilcoxon_p, 4)
    (6, 0.0312, 0.0312)
    """
    level = _check_level(level)
    first, second = _as_vector(a, "a"), _as_vector(b, "b")
    if first.shape != second.shape:
        raise ValueError(f"a and b must have the same length, got {first.size} and {second.size}")
    if first.size < 2:
        raise ValueError("a and b need at least 2 pairs")
    diff = first - second
    summary = summarize(diff, level=level)
    positive, negative = int((diff > 0).sum()), int((diff < 0).sum())
    nonzero = positive + negative
    sign_p = float(scipy_stats.binomtest(positive, nonzero, 0.5).pvalue) if nonzero else 1.0
    wilcoxon_p = float(scipy_stats.wilcoxon(diff).pvalue) if nonzero else math.nan
    return PairedTest(summary.mean, summary.sd, summary.ci_low, summary.ci_high, summary.n, positive, negative,
                      sign_p, wilcoxon_p, level)
