"""Tests of backdoorlab.uap_scan: a planted backdoor's target is the most reachable class."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import bar_images

from backdoorlab.data import ImageSet
from backdoorlab.neural_cleanse import anomaly_index
from backdoorlab.uap import targeted_success_rate
from backdoorlab.uap_scan import targeted_scan
from backdoorlab.zoo import ModelConfig, ModelStack, PatchSpec, evaluate_zoo, train_stack

TARGET = 7
TRIGGER = PatchSpec(3, 24, 24, (1,) * 9)


@pytest.fixture(scope="module")
def planted():
    """A backdoored model (3x3 white patch at the bottom right -> 7) and two clean ones, on bar images."""
    data, test = bar_images(1000, 0), bar_images(300, 1)
    configs = [ModelConfig(5, "all_to_one", TRIGGER, TARGET, None, 0.3), ModelConfig(6), ModelConfig(8)]
    stack = train_stack(configs, data, subset_size=1000, epochs=4, batch_size=32)
    accuracy, success = evaluate_zoo(stack, configs, test)
    assert accuracy.min() > 0.95 and success[0] > 0.95  # the fixture's premise
    scan = targeted_scan(stack, test.subset(range(200)), budget=3.0, steps=30, seed=0)
    return stack, test.subset(range(200)), scan


def test_backdoor_target_is_the_most_reachable_class_and_stands_out(planted):
    _, _, scan = planted
    assert int(scan.suspect_label[0]) == TARGET
    others = torch.cat([scan.success[0, :TARGET], scan.success[0, TARGET + 1:]])
    assert scan.success[0, TARGET] > 0.9 and scan.success[0, TARGET] > others.max() + 0.3
    assert scan.anomaly_index[0] > 2 and scan.anomaly_index[0] > scan.anomaly_index[1:].max()


def test_perturbations_are_within_the_budget_and_success_is_measured_as_defined(planted):
    stack, data, scan = planted
    norms = scan.perturbations.flatten(2).norm(dim=2)
    assert (norms <= 3.0 + 1e-4).all()
    # the success of one (model, class) equals the UAP module's targeted success rate on the images not of t
    model, t = stack.member(1), 3
    keep = data.labels != t
    expected = targeted_success_rate(model, data.images[keep], scan.perturbations[1, t], target=t)
    assert float(scan.success[1, t]) == pytest.approx(expected, abs=1e-6)
    torch.testing.assert_close(scan.anomaly_index, anomaly_index(1 - scan.success))


def test_linf_budget_and_chunks(planted):
    stack, data, _ = planted
    options = dict(budget=0.3, p=math.inf, steps=3, batch_size=8, labels=[0, 7], seed=2)
    whole = targeted_scan(stack, data, **options)
    chunked = targeted_scan(stack, data, model_chunk=1, **options)
    assert whole.perturbations.abs().max() <= 0.3 + 1e-6
    torch.testing.assert_close(whole.perturbations, chunked.perturbations, rtol=0, atol=1e-5)
    assert whole.labels == (0, 7) and whole.success.shape == (3, 2)


def test_same_seed_same_scan_other_seed_other():
    data = bar_images(40, 3)
    stack = ModelStack.initial([0])
    first = targeted_scan(stack, data, steps=2, batch_size=4, seed=1)
    again = targeted_scan(stack, data, steps=2, batch_size=4, seed=1)
    other = targeted_scan(stack, data, steps=2, batch_size=4, seed=2)
    assert torch.equal(first.perturbations, again.perturbations)
    assert not torch.equal(first.perturbations, other.perturbations)


@pytest.mark.parametrize("kwargs, name", [
    ({"budget": 0.0}, "budget"), ({"budget": float("nan")}, "budget"), ({"p": 1}, "p"), ({"p": True}, "p"),
    ({"steps": 0}, "steps"), ({"batch_size": 0}, "batch_size"), ({"labels": [3]}, "labels"),
    ({"labels": [0, 10]}, "labels"), ({"labels": [1, 1]}, "labels"), ({"seed": 1.5}, "seed"),
    ({"step_size": -1.0}, "step_size"), ({"model_chunk": 0}, "model_chunk"),
])
def test_bad_options_are_refused(kwargs, name):
    with pytest.raises((ValueError, TypeError), match=name):
        targeted_scan(ModelStack.initial([0]), bar_images(20, 0), **kwargs)


def test_bad_models_and_data_are_refused():
    with pytest.raises(TypeError, match="models"):
        targeted_scan(torch.nn.Linear(2, 2), bar_images(20, 0))
    with pytest.raises(TypeError, match="data"):
        targeted_scan(ModelStack.initial([0]), torch.rand(4, 1, 28, 28))
    small = ImageSet(torch.rand(4, 1, 8, 8), torch.arange(4), [str(i) for i in range(10)])
    with pytest.raises(ValueError, match="data"):
        targeted_scan(ModelStack.initial([0]), small)
