"""Tests of backdoorlab.detectors: the comparison harness against hand-computed AUCs and rates."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from backdoorlab import stats
from backdoorlab.detectors import (Detector, compare, neural_cleanse_detector, one_class_detector, rank_average,
                                   ulp_detector)
from backdoorlab.mntd import OneClassMetaClassifier
from backdoorlab.ulp import LitmusDetector
from backdoorlab.zoo import ModelStack, Zoo

LABELS = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])


@pytest.fixture(scope="module")
def zoo() -> Zoo:
    stack = ModelStack.initial(range(len(LABELS)))
    return Zoo(stack, [None] * len(LABELS), LABELS, torch.ones(len(LABELS)), torch.ones(len(LABELS)))


def fixed(values):
    return lambda stack: torch.tensor(values, dtype=torch.float64)


def test_compare_matches_hand_computed_auc_interval_and_rate(zoo):
    noisy = [0.1, 0.4, 0.35, 0.8, 0.2, 0.9, 0.7, 0.3, 0.95, 0.6]
    result = compare([Detector("oracle", fixed(LABELS.tolist()), ("labelled zoo",)),
                      Detector("noisy", fixed(noisy), ("clean images",), fit_seconds=2.0)], zoo, fpr=0.2)
    assert result["oracle"].auc == 1.0 and result["oracle"].tpr == 1.0
    row = result["noisy"]
    assert row.auc == pytest.approx(roc_auc_score(LABELS.numpy(), noisy))
    interval = stats.auc_ci(LABELS.numpy(), noisy)
    assert (row.ci_low, row.ci_high) == (interval.low, interval.high)
    # at most 1 of the 5 clean models may lie above the threshold: with it at 0.6 only the clean 0.8
    # is above, and 0.95, 0.9, 0.7 and 0.6 are detected; 0.3 is not
    assert row.tpr == pytest.approx(0.8)
    assert row.seconds_per_model >= 0 and row.fit_seconds == 2.0 and row.needs == ("clean images",)
    assert result.best() == "oracle"
    false_rates, true_rates = result.roc("noisy")
    assert false_rates[0] == 0 and true_rates[-1] == 1
    assert "oracle" in result.table() and "clean images" in result.table()


def test_a_reversed_detector_has_auc_one_minus(zoo):
    scores = np.linspace(0, 1, len(LABELS))
    forward = compare([Detector("up", fixed(scores.tolist()))], zoo)["up"].auc
    backward = compare([Detector("down", fixed((-scores).tolist()))], zoo)["down"].auc
    assert forward + backward == pytest.approx(1.0)


def test_compare_refuses_bad_detectors_and_zoos(zoo):
    with pytest.raises(ValueError, match="shape"):
        compare([Detector("short", fixed([0.0, 1.0]))], zoo)
    with pytest.raises(ValueError, match="non-finite"):
        compare([Detector("nan", fixed([float("nan")] * len(LABELS)))], zoo)
    with pytest.raises(ValueError, match="distinct"):
        compare([Detector("a", fixed([0.0] * 10)), Detector("a", fixed([1.0] * 10))], zoo)
    with pytest.raises(TypeError, match="detectors"):
        compare(Detector("a", fixed([0.0] * 10)), zoo)
    one_class = Zoo(zoo.stack, zoo.configs, torch.zeros(len(LABELS), dtype=torch.long), zoo.accuracy,
                    zoo.attack_success)
    with pytest.raises(ValueError, match="both"):
        compare([Detector("a", fixed([0.0] * 10))], one_class)
    with pytest.raises(ValueError, match="needs"):
        Detector("a", fixed([0.0]), needs=("a GPU",))


def test_rank_average_is_the_mean_of_scaled_ranks():
    a, b = np.array([3.0, 1.0, 2.0, 4.0]), np.array([10.0, 40.0, 20.0, 30.0])
    expected = ((np.array([2, 0, 1, 3]) + np.array([0, 3, 1, 2])) / 3) / 2
    np.testing.assert_allclose(rank_average(a, b), expected)
    np.testing.assert_allclose(rank_average(a), np.array([2, 0, 1, 3]) / 3)
    # monotone transforms of a score do not change the combination
    np.testing.assert_allclose(rank_average(np.exp(a), b), rank_average(a, b))
    with pytest.raises(ValueError, match="lengths"):
        rank_average(a, b[:3])
    with pytest.raises(ValueError, match="finite"):
        rank_average(np.array([1.0, np.nan]))


def test_wrappers_score_with_the_wrapped_detector(zoo):
    litmus = LitmusDetector(num_patterns=2, seed=0)
    torch.testing.assert_close(torch.as_tensor(ulp_detector(litmus).score(zoo.stack)), litmus.score(zoo.stack))
    oc = OneClassMetaClassifier(num_queries=2, seed=0)
    torch.testing.assert_close(torch.as_tensor(one_class_detector(oc).score(zoo.stack)), oc.score(zoo.stack))
    images = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    nc = neural_cleanse_detector(images, labels=[0, 1, 2], epochs=1, steps_per_epoch=1, batch_size=4)
    assert nc.needs == ("clean images",) and nc.score(zoo.stack.select([0, 1])).shape == (2,)
    with pytest.raises(TypeError, match="litmus"):
        ulp_detector(oc)
    with pytest.raises(TypeError, match="detector"):
        one_class_detector(litmus)
