"""Tests of backdoorlab.neural_cleanse: a planted trigger is recovered, batched equals loop, the MAD guard."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import bar_images

from backdoorlab.neural_cleanse import MAD_CONSISTENCY, anomaly_index, neural_cleanse
from backdoorlab.zoo import ModelConfig, ModelStack, PatchSpec, evaluate_zoo, train_stack

TARGET = 7
TRIGGER = PatchSpec(3, 24, 24, (1,) * 9)


@pytest.fixture(scope="module")
def planted():
    """A backdoored model (3x3 white patch at the bottom right -> 7) and a clean one, on bar images."""
    data, test = bar_images(1000, 0), bar_images(300, 1)
    configs = [ModelConfig(5, "all_to_one", TRIGGER, TARGET, None, 0.3), ModelConfig(6)]
    stack = train_stack(configs, data, subset_size=1000, epochs=4, batch_size=32)
    accuracy, success = evaluate_zoo(stack, configs, test)
    assert accuracy.min() > 0.95 and success[0] > 0.95  # the fixture's premise
    return stack, test.images[:200]


def test_planted_trigger_has_smallest_norm_and_overlaps(planted):
    stack, images = planted
    result = neural_cleanse(stack.select([0]), images, epochs=20, steps_per_epoch=5, batch_size=16, seed=0)
    assert int(result.suspect_label[0]) == TARGET
    norms = result.norms[0]
    others = torch.cat([norms[:TARGET], norms[TARGET + 1:]])
    assert norms[TARGET] < 0.25 * others.min()
    mask = result.masks[0, TARGET]
    # much of the mask mass lies within one pixel of the 3x3 trigger, a region of 25 of 784 pixels (3 %)
    assert mask[23:28, 23:28].sum() / mask.sum() > 0.4
    assert bool(result.flagged[0]) and result.anomaly_index[0] > 2
    assert result.attack_success[0, TARGET] >= 0.99


def test_batched_equals_loop(planted):
    stack, images = planted
    options = dict(labels=[0, 3, 7], epochs=8, steps_per_epoch=3, batch_size=16, patience=2, seed=3)
    batched = neural_cleanse(stack, images, **options)
    loop = neural_cleanse(stack, images, method="loop", **options)
    torch.testing.assert_close(batched.norms, loop.norms, rtol=1e-2, atol=0.5)
    torch.testing.assert_close(batched.anomaly_index, loop.anomaly_index, rtol=0.0, atol=0.05)
    assert torch.equal(batched.epochs, loop.epochs)


def test_chunks_do_not_change_results(planted):
    stack, images = planted
    options = dict(labels=[1, 7], epochs=3, steps_per_epoch=2, batch_size=8, seed=1)
    whole = neural_cleanse(stack, images, model_chunk=2, **options)
    chunked = neural_cleanse(stack, images, model_chunk=1, **options)
    torch.testing.assert_close(whole.masks, chunked.masks, rtol=0.0, atol=1e-3)


def test_two_worker_processes_give_the_serial_results(planted):
    stack, images = planted
    options = dict(labels=[1, 7], epochs=3, steps_per_epoch=2, batch_size=8, seed=1, model_chunk=1)
    serial = neural_cleanse(stack, images, **options)
    parallel = neural_cleanse(stack, images, num_workers=2, **options)
    torch.testing.assert_close(serial.masks, parallel.masks, rtol=0.0, atol=1e-4)
    assert torch.equal(serial.epochs, parallel.epochs)
    with pytest.raises(ValueError, match="num_workers"):
        neural_cleanse(stack, images, num_workers=0, **options)


def test_same_seed_same_masks_other_seed_other_masks():
    stack, images = ModelStack.initial([0]), torch.rand(32, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    options = dict(labels=[0, 1], epochs=2, steps_per_epoch=2, batch_size=8)
    first = neural_cleanse(stack, images, seed=4, **options)
    again = neural_cleanse(stack, images, seed=4, **options)
    other = neural_cleanse(stack, images, seed=5, **options)
    assert torch.equal(first.masks, again.masks) and torch.equal(first.patterns, again.patterns)
    assert not torch.equal(first.masks, other.masks)
    assert ((first.masks >= 0) & (first.masks <= 1)).all() and ((first.patterns >= 0) & (first.patterns <= 1)).all()


def test_inputs_not_mutated():
    stack, images = ModelStack.initial([0]), torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    before_images, before_weight = images.clone(), stack.parameter_dict()["conv1.weight"].detach().clone()
    neural_cleanse(stack, images, labels=[0, 1], epochs=1, steps_per_epoch=1, batch_size=4)
    assert torch.equal(images, before_images)
    assert torch.equal(stack.parameter_dict()["conv1.weight"], before_weight)


def test_anomaly_index_matches_numpy_formula():
    norms = torch.tensor([[10.0, 12.0, 9.0, 11.0, 2.0, 10.5], [5.0, 6.0, 7.0, 8.0, 9.0, 10.0]])
    for row, value in zip(norms.numpy(), anomaly_index(norms).tolist()):
        median = np.median(row)
        mad = MAD_CONSISTENCY * np.median(np.abs(row - median))
        assert value == pytest.approx((median - row.min()) / mad, rel=1e-6)


def test_anomaly_index_mad_guard():
    index = anomaly_index(torch.tensor([[4.0, 4.0, 4.0, 4.0], [1.0, 4.0, 4.0, 4.0], [1.0, 1.0, 4.0, 4.0]]))
    assert index[0] == 0.0
    assert index[1] == float("inf")  # MAD 0, yet the smallest norm is below the median
    assert torch.isfinite(index[2]) and index[2] == pytest.approx(1.5 / (MAD_CONSISTENCY * 1.5))


@pytest.mark.parametrize("norms, error", [
    (torch.tensor([1.0, 2.0]), ValueError),
    (torch.tensor([[1.0]]), ValueError),
    (torch.tensor([[1.0, -1.0]]), ValueError),
    (torch.tensor([[1.0, float("nan")]]), ValueError),
    ([[1.0, 2.0]], TypeError),
])
def test_anomaly_index_errors(norms, error):
    with pytest.raises(error):
        anomaly_index(norms)


@pytest.mark.parametrize("images, options, error, match", [
    (torch.rand(4, 3, 28, 28), {}, ValueError, "images"),
    (torch.rand(4, 1, 28, 28) + 1, {}, ValueError, "images"),
    (np.zeros((4, 1, 28, 28)), {}, TypeError, "images"),
    (torch.rand(4, 1, 28, 28), {"labels": [3]}, ValueError, "labels"),
    (torch.rand(4, 1, 28, 28), {"labels": [3, 3]}, ValueError, "labels"),
    (torch.rand(4, 1, 28, 28), {"labels": [0, 10]}, ValueError, "labels"),
    (torch.rand(4, 1, 28, 28), {"epochs": 0}, ValueError, "epochs"),
    (torch.rand(4, 1, 28, 28), {"lr": -1.0}, ValueError, "lr"),
    (torch.rand(4, 1, 28, 28), {"cost_multiplier": 1.0}, ValueError, "cost_multiplier"),
    (torch.rand(4, 1, 28, 28), {"attack_threshold": 1.5}, ValueError, "attack_threshold"),
    (torch.rand(4, 1, 28, 28), {"method": "vmap"}, ValueError, "method"),
])
def test_errors(images, options, error, match):
    with pytest.raises(error, match=match):
        neural_cleanse(ModelStack.initial([0]), images, **options)


def test_models_type_error():
    with pytest.raises(TypeError, match="models"):
        neural_cleanse(torch.nn.Linear(2, 2), torch.rand(4, 1, 28, 28))
