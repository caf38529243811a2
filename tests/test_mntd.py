"""Tests of backdoorlab.mntd: the one-class objective, the radius, and detection of unlike models."""

from __future__ import annotations

import pytest
import torch
from conftest import bar_images

from backdoorlab.mntd import OneClassMetaClassifier, one_class_objective, train_one_class
from backdoorlab.stats import auc
from backdoorlab.zoo import ModelConfig, ModelStack, Zoo, train_stack


@pytest.fixture(scope="module")
def trained_models() -> ModelStack:
    """Sixteen clean models trained on bar images (different seeds)."""
    configs = [ModelConfig(seed) for seed in range(16)]
    return train_stack(configs, bar_images(600, 0), subset_size=600, epochs=2, batch_size=32)


def test_objective_is_the_one_class_loss():
    detector = OneClassMetaClassifier(num_queries=2, hidden=3, nu=0.25, seed=1)
    stack = ModelStack.initial([0, 1, 2, 3])
    with torch.no_grad():
        detector.radius.fill_(0.7)
        scores = detector(stack)
        penalty = 0.5 * (detector.w.square().sum() + detector.hidden.weight.square().sum()
                         + detector.hidden.bias.square().sum())
        expected = penalty + torch.clamp(0.7 - scores, min=0).mean() / 0.25 - 0.7
        torch.testing.assert_close(one_class_objective(detector, stack), expected)
        # the score is <w, relu(V phi + b)> on the logits of the queries
        manual = torch.relu(detector.hidden(stack(detector.queries).flatten(1))) @ detector.w
        torch.testing.assert_close(scores, manual)
        torch.testing.assert_close(detector.score(stack), 0.7 - scores)


def test_radius_leaves_a_share_nu_of_the_training_models_outside(trained_models):
    nu = 0.25
    run = train_one_class(OneClassMetaClassifier(num_queries=4, nu=nu, seed=0), trained_models, epochs=5, seed=0)
    suspicion = run.detector.score(trained_models)
    outside = float((suspicion > 0).float().mean())
    assert abs(outside - nu) <= 1 / len(trained_models) + 1e-9
    assert run.history["radius"][-1] == pytest.approx(float(run.detector.radius))
    assert ((run.detector.queries >= 0) & (run.detector.queries <= 1)).all()


def test_unlike_models_score_above_held_out_clean_ones(trained_models):
    """Trained on 12 clean models, the detector ranks untrained networks above 4 held-out clean ones."""
    run = train_one_class(OneClassMetaClassifier(num_queries=4, seed=0), trained_models.select(range(12)),
                          epochs=20, seed=0)
    held_out = run.detector.score(trained_models.select(range(12, 16)))
    untrained = run.detector.score(ModelStack.initial(range(100, 104)))
    labels = [0] * 4 + [1] * 4
    assert auc(labels, torch.cat([held_out, untrained]).numpy()) >= 0.9


def test_same_seed_same_detector_other_seed_other(trained_models):
    stack = trained_models.select(range(6))
    first = train_one_class(OneClassMetaClassifier(num_queries=2, seed=3), stack, epochs=2, seed=5)
    again = train_one_class(OneClassMetaClassifier(num_queries=2, seed=3), stack, epochs=2, seed=5)
    other = train_one_class(OneClassMetaClassifier(num_queries=2, seed=4), stack, epochs=2, seed=5)
    assert torch.equal(first.detector.queries, again.detector.queries)
    assert torch.equal(first.detector.score(stack), again.detector.score(stack))
    assert not torch.equal(first.detector.queries, other.detector.queries)


def test_training_returns_a_copy_and_refuses_backdoored_models():
    detector = OneClassMetaClassifier(num_queries=2, seed=0)
    before = detector.queries.detach().clone()
    stack = ModelStack.initial(range(4))
    train_one_class(detector, stack, epochs=1)
    assert torch.equal(detector.queries, before) and float(detector.radius) == 0.0
    zoo = Zoo(stack, [None] * 4, torch.tensor([0, 1, 0, 0]), torch.ones(4), torch.ones(4))
    with pytest.raises(ValueError, match="models must be clean"):
        train_one_class(detector, zoo, epochs=1)


@pytest.mark.parametrize("kwargs, name", [
    ({"num_queries": 0}, "num_queries"), ({"nu": 0.0}, "nu"), ({"nu": 1.0}, "nu"), ({"hidden": 0}, "hidden"),
    ({"image_shape": (28, 28)}, "image_shape"), ({"seed": 1.5}, "seed"), ({"num_classes": 1}, "num_classes"),
])
def test_constructor_refuses_bad_options(kwargs, name):
    with pytest.raises((ValueError, TypeError), match=name):
        OneClassMetaClassifier(**kwargs)


def test_detector_refuses_models_of_another_class_count():
    detector = OneClassMetaClassifier(num_queries=2, num_classes=5)
    with pytest.raises(ValueError, match="classes"):
        detector.score(ModelStack.initial([0]))
