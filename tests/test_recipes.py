"""Tests of backdoorlab.recipes on the tiny MNIST files the fixtures write."""

from __future__ import annotations

import math

import pytest
import torch

from backdoorlab import recipes, train
from backdoorlab.cache import ArtifactCache
from conftest import MNIST_TRAIN

FAST = {"epochs": 2, "batch_size": 32}


@pytest.fixture()
def fit_calls(monkeypatch):
    calls = []
    real_fit = train.fit

    def counting_fit(*args, **kwargs):
        calls.append(kwargs.get("seed"))
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(train, "fit", counting_fit)
    return calls


def test_clean_classifier_is_trained_once_then_cached(mnist_root, tmp_path, fit_calls):
    store = ArtifactCache(tmp_path / "cache")
    first = recipes.mnist_classifier(root=mnist_root, cache=store, **FAST)
    second = recipes.mnist_classifier(root=mnist_root, cache=store, **FAST)
    assert len(fit_calls) == 1
    assert not second.model.training
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values()):
        assert torch.equal(a, b)
    assert second.info["test_accuracy"] > 0.8  # the synthetic digits are easy
    assert len(second.info["losses"]) == FAST["epochs"]


def test_changing_the_configuration_trains_another_model(mnist_root, tmp_path, fit_calls):
    store = ArtifactCache(tmp_path / "cache")
    recipes.mnist_classifier(root=mnist_root, cache=store, seed=0, **FAST)
    recipes.mnist_classifier(root=mnist_root, cache=store, seed=1, **FAST)
    assert fit_calls == [0, 1]
    assert len(list(store.root.glob("*.safetensors"))) == 2


def test_badnets_recipe_records_the_poisoning(mnist_root, tmp_path):
    trained = recipes.mnist_classifier(poison_rate=0.1, root=mnist_root, cache=ArtifactCache(tmp_path), **FAST)
    assert trained.info["poisoned_count"] == math.floor(0.1 * MNIST_TRAIN)
    assert 0.0 <= trained.info["attack_success_rate"] <= 1.0
    assert trained.info["config"]["trigger"] == {"size": 4, "position": [23, 23], "pattern": "white"}


def test_shortcuts_return_eval_models(mnist_root):
    model = recipes.badnets_mnist_classifier(rate=0.1, root=mnist_root, **FAST)
    assert isinstance(model, torch.nn.Module) and not model.training
    assert recipes.clean_mnist_classifier(root=mnist_root, architecture="mlp", **FAST)(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_recipes_reject_bad_options(mnist_root):
    with pytest.raises(ValueError, match="architecture"):
        recipes.mnist_classifier(architecture="resnet", root=mnist_root)
    with pytest.raises(ValueError, match="poison_rate"):
        recipes.mnist_classifier(poison_rate=2.0, root=mnist_root)
    with pytest.raises(ValueError, match="rate"):
        recipes.badnets_mnist_classifier(rate=0.0, root=mnist_root)


def test_the_book_trigger_is_the_bottom_right_square():
    trigger = recipes.mnist_patch_trigger()
    rows, cols = trigger.mask[0].nonzero().unbind(1)
    assert rows.unique().tolist() == [23, 24, 25, 26] and cols.unique().tolist() == [23, 24, 25, 26]
    assert (trigger.pattern[trigger.mask.bool()] == 1).all()


def test_autoencoder_is_trained_once_then_cached_and_poisoning_changes_the_key(mnist_root, tmp_path, fit_calls):
    store = ArtifactCache(tmp_path / "cache")
    first = recipes.mnist_autoencoder(root=mnist_root, cache=store, **FAST)
    second = recipes.mnist_autoencoder(root=mnist_root, cache=store, **FAST)
    poisoned = recipes.mnist_autoencoder(poisoned=True, root=mnist_root, cache=store, **FAST)
    assert len(fit_calls) == 2
    assert not second.model.training
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values()):
        assert torch.equal(a, b)
    assert poisoned.info["config"]["trigger"] == {"size": 4, "position": [23, 23], "pattern": "white"}
    assert 0.0 <= second.info["test_mse"] <= 1.0
    assert len(second.info["losses"]) == FAST["epochs"]
    with pytest.raises(ValueError, match="architecture"):
        recipes.mnist_autoencoder(architecture="vae", root=mnist_root)
