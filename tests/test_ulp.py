"""Tests of backdoorlab.ulp: the litmus-pattern detector, its objective and its training."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from backdoorlab.ulp import LitmusDetector, auc, total_variation, train_detector, train_detectors, ulp_objective
from backdoorlab.zoo import ModelStack, Zoo, ZooCNN


def toy_zoo(count: int, seed: int, shift: float = 4.0) -> Zoo:
    """Random untrained CNNs; the "poisoned" half has its class-3 output bias raised by ``shift``.

    The answer is known: a model is poisoned exactly when its logit 3 is high on any input.
    """
    stack = ModelStack.initial(range(seed, seed + count))
    labels = (torch.arange(count) % 2).long()
    with torch.no_grad():
        stack.fc_bias[labels == 1, 3] += shift
    stack.requires_grad_(False)
    return Zoo(stack, [None] * count, labels, torch.ones(count), torch.full((count,), float("nan")))


def test_total_variation_of_constant_images_is_zero_and_counts_jumps():
    assert total_variation(torch.full((3, 1, 5, 5), 0.7)).tolist() == [0.0, 0.0, 0.0]
    stripes = torch.zeros(1, 1, 4, 4)
    stripes[..., 1::2] = 1.0  # columns alternate: 3 jumps per row, 4 rows
    assert total_variation(stripes).item() == 12.0
    with pytest.raises(ValueError, match="shape"):
        total_variation(torch.zeros(1, 4, 4))


def test_batched_features_equal_each_model_alone():
    stack = ModelStack.initial(range(6))
    detector = LitmusDetector(num_patterns=4, seed=1)
    with torch.no_grad():
        batched = detector.features(stack, method="batched")
        looped = detector.features(stack, method="loop")
        alone = torch.stack([stack.member(k)(detector.patterns).flatten() for k in range(6)])
    assert torch.allclose(batched, looped, atol=1e-5)
    assert torch.allclose(LitmusDetector(num_patterns=4, seed=1, normalize=False).features(stack), alone, atol=1e-5)


def test_pattern_gradient_is_the_average_over_the_batch_of_models():
    zoo = toy_zoo(8, seed=0)
    detector = LitmusDetector(num_patterns=2, seed=3)

    def pattern_grad(stack, labels, method="batched"):
        detector.patterns.grad = None
        ulp_objective(detector, stack, labels, tv_weight=0.0, method=method).backward()
        return detector.patterns.grad.clone()

    batched = pattern_grad(zoo.stack, zoo.labels)
    looped = pattern_grad(zoo.stack, zoo.labels, method="loop")
    each = torch.stack([pattern_grad(zoo.stack.select([k]), zoo.labels[k:k + 1]) for k in range(8)])
    assert torch.allclose(batched, looped, atol=1e-6)
    assert torch.allclose(batched, each.mean(0), atol=1e-6)
    assert not torch.allclose(batched, each[-1], atol=1e-6)  # not the last model's gradient


def test_detector_separates_a_zoo_with_a_known_answer():
    train, held_out = toy_zoo(48, seed=0), toy_zoo(24, seed=100)
    run = train_detector(LitmusDetector(num_patterns=2, seed=0), train, epochs=25, batch_size=16,
                         head_lr=1e-2, validation=held_out)
    assert run.history["train_auc"][-1] == 1.0
    assert auc(run.detector.score(held_out), held_out.labels) == 1.0
    patterns = run.detector.patterns
    assert patterns.min() >= 0.0 and patterns.max() <= 1.0
    assert not torch.equal(patterns, LitmusDetector(num_patterns=2, seed=0).patterns)


def test_noise_baseline_keeps_its_patterns_and_training_is_reproducible():
    zoo = toy_zoo(16, seed=0)
    noise = LitmusDetector(num_patterns=3, learn_patterns=False, seed=5)
    run = train_detector(noise, zoo, epochs=3, batch_size=8)
    assert torch.equal(run.detector.patterns, noise.patterns)
    assert not torch.equal(run.detector.head.weight, noise.head.weight)
    first = train_detector(LitmusDetector(num_patterns=3, seed=5), zoo, epochs=3, batch_size=8, seed=1)
    second = train_detector(LitmusDetector(num_patterns=3, seed=5), zoo, epochs=3, batch_size=8, seed=1)
    assert torch.equal(first.detector.patterns, second.detector.patterns)
    assert first.history == second.history


def test_noise_baseline_with_features_computed_once_takes_the_steps_of_the_objective():
    # Fixed patterns: train_detector reuses the features; the same Adam steps on ulp_objective
    # (which re-evaluates the models every step) must give the same head and the same history.
    zoo, validation = toy_zoo(20, seed=0), toy_zoo(8, seed=50)
    start = LitmusDetector(num_patterns=3, learn_patterns=False, seed=7)
    run = train_detector(start, zoo, epochs=4, batch_size=6, head_lr=1e-2, weight_decay=1e-3, seed=3,
                         validation=validation, track_train_auc=False)
    assert "train_auc" not in run.history and len(run.history["val_auc"]) == 4
    detector = copy.deepcopy(start)
    optimizer = torch.optim.Adam([{"params": detector.head.parameters(), "lr": 1e-2, "weight_decay": 1e-3}])
    generator = torch.Generator().manual_seed(3)
    val_aucs, states = [], []
    for _ in range(4):
        order = torch.randperm(len(zoo), generator=generator)
        for begin in range(0, len(zoo), 6):
            batch = order[begin:begin + 6]
            loss = ulp_objective(detector, zoo.stack.select(batch), zoo.labels[batch], tv_weight=1e-4)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        val_aucs.append(auc(detector.score(validation), validation.labels))
        states.append(copy.deepcopy(detector.head.state_dict()))
    assert run.history["val_auc"] == pytest.approx(val_aucs, abs=1e-9)
    kept = states[int(np.argmax(val_aucs))]
    assert torch.allclose(run.detector.head.weight, kept["weight"], atol=1e-5)
    assert torch.allclose(run.detector.head.bias, kept["bias"], atol=1e-5)
    with pytest.raises(TypeError, match="track_train_auc"):
        train_detector(start, zoo, epochs=1, track_train_auc=1)


def test_score_accepts_stacks_zoos_and_model_lists():
    models = [ZooCNN() for _ in range(3)]
    detector = LitmusDetector(num_patterns=2)
    from_list = detector.score(models)
    from_stack = detector.score(ModelStack.from_models(models))
    assert torch.allclose(from_list, from_stack) and ((from_list > 0) & (from_list < 1)).all()


def test_clear_errors_on_bad_input():
    zoo = toy_zoo(4, seed=0)
    with pytest.raises(ValueError, match="num_patterns"):
        LitmusDetector(num_patterns=0)
    with pytest.raises(ValueError, match="different architectures"):
        LitmusDetector(num_patterns=1).score([ZooCNN(), ZooCNN(channels=(4, 8))])
    with pytest.raises(ValueError, match="empty"):
        train_detector(LitmusDetector(num_patterns=1), Zoo(zoo.stack, [], torch.zeros(0), torch.zeros(0),
                                                           torch.zeros(0)))
    with pytest.raises(ValueError, match="labels"):
        train_detector(LitmusDetector(num_patterns=1), Zoo(zoo.stack, [None] * 3, torch.tensor([0, 1, 0]),
                                                           torch.ones(3), torch.ones(3)))
    with pytest.raises(ValueError, match="classes"):
        LitmusDetector(num_patterns=1, num_classes=7).score(zoo)
    with pytest.raises(ValueError, match="both classes"):
        auc(torch.rand(3), torch.zeros(3))
    with pytest.raises(TypeError, match="Zoo"):
        train_detector(LitmusDetector(num_patterns=1), zoo.stack)


def test_score_modules_equals_score_on_zoo_models():
    models = [ZooCNN() for _ in range(3)]
    detector = LitmusDetector(num_patterns=4, seed=1)
    torch.testing.assert_close(detector.score_modules(models), detector.score(ModelStack.from_models(models)),
                               rtol=1e-5, atol=1e-6)


def test_score_modules_errors():
    detector = LitmusDetector(num_patterns=2, seed=0)
    with pytest.raises(ValueError, match="empty"):
        detector.score_modules([])
    with pytest.raises(TypeError, match="models"):
        detector.score_modules(["not a model"])
    with pytest.raises(ValueError, match="shape"):
        detector.score_modules([torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 3))])


def test_train_detectors_in_two_processes_equals_the_loop():
    zoo, validation = toy_zoo(12, seed=0), toy_zoo(6, seed=50)
    jobs = [{"detector": LitmusDetector(num_patterns=2, learn_patterns=learn, seed=s), "epochs": 2, "batch_size": 4,
             "seed": s, "validation": validation} for s, learn in ((0, True), (1, False))]
    parallel = train_detectors(jobs, zoo, num_workers=2)
    for job, run in zip(jobs, parallel):
        alone = train_detector(job["detector"], zoo, epochs=2, batch_size=4, seed=job["seed"], validation=validation)
        assert torch.equal(run.detector.patterns, alone.detector.patterns)
        assert torch.allclose(run.detector.head.weight, alone.detector.head.weight, atol=1e-6)
        assert run.history["val_auc"] == alone.history["val_auc"] and run.best_epoch == alone.best_epoch
    with pytest.raises(TypeError, match="jobs\\[0\\]"):
        train_detectors([{"seed": 0}], zoo)
    with pytest.raises(ValueError, match="num_workers"):
        train_detectors(jobs, zoo, num_workers=0)
