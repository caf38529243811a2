"""Tests of backdoorlab.lab: thresholds at a false-positive rate, and the grader on known cases."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import bar_images

from backdoorlab.lab import Grader, LabGrade, threshold_at_fpr
from backdoorlab.triggers import Trigger
from backdoorlab.ulp import LitmusDetector
from backdoorlab.zoo import ModelConfig, PatchSpec, ZooCNN, evaluate_zoo, train_stack

TARGET = 7
SPEC = PatchSpec(3, 24, 24, (1,) * 9)
NC_OPTIONS = dict(epochs=12, steps_per_epoch=4, batch_size=16, seed=0)


@pytest.fixture(scope="module")
def lab():
    """A backdoored model (3x3 white patch at the bottom right -> 7), three clean references and a grader."""
    data, test = bar_images(1000, 0), bar_images(300, 1)
    configs = [ModelConfig(5, "all_to_one", SPEC, TARGET, None, 0.3)] + [ModelConfig(seed) for seed in (6, 8, 9)]
    stack = train_stack(configs, data, subset_size=1000, epochs=4, batch_size=32)
    accuracy, success = evaluate_zoo(stack, configs, test)
    assert accuracy.min() > 0.95 and success[0] > 0.95  # the fixture's premise
    grader = Grader(detector=LitmusDetector(num_patterns=2, seed=0), reference=stack.select([1, 2, 3]),
                    test_set=test, nc_images=test.images[:200], min_accuracy=0.95, nc_options=NC_OPTIONS)
    return grader, stack.member(0), stack.member(1), SPEC.trigger((1, 28, 28))


@pytest.fixture(scope="module")
def backdoored_grade(lab):
    grader, backdoored, _, trigger = lab
    return grader.grade(backdoored, trigger, target=TARGET)


def test_threshold_flags_at_most_the_share_of_clean_scores():
    generator = torch.Generator().manual_seed(0)
    for n in (1, 7, 20, 55, 100):
        scores = torch.rand(n, generator=generator)
        for fpr in (0.0, 0.05, 0.1, 0.5, 0.99):
            threshold = threshold_at_fpr(scores, fpr=fpr)
            flagged = int((scores > threshold).sum())
            assert flagged <= fpr * n
            # the smallest such threshold: one clean score less and one more model would be flagged
            assert threshold in scores.tolist() and int((scores >= threshold).sum()) > fpr * n


def test_threshold_with_ties_never_flags_more_than_allowed():
    scores = [0.2, 0.9, 0.9, 0.9, 0.1]
    threshold = threshold_at_fpr(scores, fpr=0.25)  # one model may be flagged, but three tie at the top
    assert threshold == 0.9 and sum(s > threshold for s in scores) == 0


@pytest.mark.parametrize("bad, error", [([], ValueError), ([[0.1]], ValueError), ([0.1, float("nan")], ValueError)])
def test_threshold_refuses_bad_scores(bad, error):
    with pytest.raises(error, match="clean_scores"):
        threshold_at_fpr(bad)


@pytest.mark.parametrize("fpr", [1.0, -0.1, float("nan")])
def test_threshold_refuses_bad_rate(fpr):
    with pytest.raises(ValueError, match="fpr"):
        threshold_at_fpr([0.1, 0.2], fpr=fpr)


def test_thresholds_are_set_on_the_reference_models(lab):
    grader, _, clean, _ = lab
    assert 0.0 <= grader.ulp_threshold <= 1.0
    assert grader.nc_threshold >= 0.0 and grader.reference_seconds > 0
    # with three references and 5 % false positives, no clean reference may lie above a threshold
    from backdoorlab.zoo import ModelStack
    assert float(grader.detector.score(ModelStack.from_models([clean]))[0]) <= grader.ulp_threshold


def test_backdoored_model_keeps_its_attack_and_is_flagged_by_neural_cleanse(lab, backdoored_grade):
    grader, _, _, _ = lab
    result = backdoored_grade
    assert isinstance(result, LabGrade)
    assert result["clean accuracy"].passed and result["attack success rate"].passed
    assert result["attack success rate"].value > 0.95
    # the planted trigger makes its smallest mask an outlier among its labels, beyond every clean reference
    assert not result["Neural Cleanse index"].passed
    assert result["Neural Cleanse index"].value > grader.nc_threshold
    assert not result.passed
    assert "FAIL  Neural Cleanse index" in result.report() and "not passed" in result.report()


def test_clean_model_fails_the_attack_criterion(lab):
    grader, _, clean, trigger = lab
    result = grader.grade(clean, trigger, target=TARGET)
    assert result["clean accuracy"].passed
    assert not result["attack success rate"].passed and result["attack success rate"].value < 0.5
    assert not result.passed


def test_ulp_criterion_is_the_detectors_score_against_its_threshold(lab, backdoored_grade):
    grader, backdoored, _, _ = lab
    result = backdoored_grade
    from backdoorlab.zoo import ModelStack
    expected = float(grader.detector.score(ModelStack.from_models([backdoored]))[0])
    assert result["ULP score"].value == pytest.approx(expected, abs=1e-6)
    assert result["ULP score"].passed == (expected <= grader.ulp_threshold)
    assert result["ULP score"].bound == grader.ulp_threshold


def test_grade_uses_only_the_weights(lab, backdoored_grade):
    """A hook or a subclass cannot change what is measured; the submission is not modified."""
    grader, backdoored, _, trigger = lab
    before = copy.deepcopy(backdoored.state_dict())
    plain = backdoored_grade
    hooked = copy.deepcopy(backdoored)
    hooked.register_forward_hook(lambda module, inputs, output: torch.zeros_like(output))
    with_hook = grader.grade(hooked, trigger, target=TARGET)
    assert [c.value for c in with_hook.criteria] == [c.value for c in plain.criteria]
    assert all(torch.equal(before[k], v) for k, v in backdoored.state_dict().items())

    class Sneaky(ZooCNN):
        def forward(self, images):
            return super().forward(images)

    with pytest.raises(TypeError, match="model"):
        grader.grade(Sneaky(), trigger, target=TARGET)


def test_grade_refuses_bad_submissions(lab):
    grader, backdoored, _, trigger = lab
    with pytest.raises(TypeError, match="model"):
        grader.grade(torch.nn.Linear(784, 10), trigger, target=TARGET)
    with pytest.raises(ValueError, match="architecture"):
        grader.grade(ZooCNN(channels=(4, 16)), trigger, target=TARGET)
    broken = copy.deepcopy(backdoored)
    with torch.no_grad():
        broken.fc.bias[0] = float("nan")
    with pytest.raises(ValueError, match="fc.bias"):
        grader.grade(broken, trigger, target=TARGET)
    renormalised = copy.deepcopy(backdoored)
    renormalised.normalize.mean.fill_(0.5)
    with pytest.raises(ValueError, match="normalisation"):
        grader.grade(renormalised, trigger, target=TARGET)
    with pytest.raises(TypeError, match="trigger"):
        grader.grade(backdoored, torch.ones(1, 28, 28), target=TARGET)
    with pytest.raises(ValueError, match="trigger"):
        grader.grade(backdoored, Trigger(torch.ones(1, 8, 8), torch.ones(1, 8, 8)), target=TARGET)
    for target, error in ((10, ValueError), (-1, ValueError), (1.5, TypeError), (True, TypeError)):
        with pytest.raises(error, match="target"):
            grader.grade(backdoored, trigger, target=target)


def test_grader_refuses_bad_settings(lab):
    grader, _, _, _ = lab
    options = dict(detector=grader.detector, reference=ZooCNN, test_set=grader.test_set, nc_images=grader.nc_images)
    with pytest.raises(TypeError, match="reference"):
        Grader(**options)
    from backdoorlab.zoo import ModelStack
    options["reference"] = ModelStack.initial([0, 1])
    with pytest.raises(TypeError, match="detector"):
        Grader(**{**options, "detector": ZooCNN()})
    with pytest.raises(ValueError, match="fpr"):
        Grader(**options, fpr=1.0)
    with pytest.raises(ValueError, match="min_accuracy"):
        Grader(**options, min_accuracy=1.5)
    with pytest.raises(ValueError, match="nc_images"):
        Grader(**{**options, "nc_images": torch.rand(4, 1, 8, 8)})
    with pytest.raises(TypeError, match="nc_options"):
        Grader(**options, nc_options=[("epochs", 1)])
