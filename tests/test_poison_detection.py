"""Tests of backdoorlab.poison_detection from the math: planted sub-populations, the defining equations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import bar_images
from torch import nn

from backdoorlab import poison_detection as pd
from backdoorlab import stats
from backdoorlab.models import CifarCNN, MnistCNN, MnistMLP
from backdoorlab.train import fit, seeded
from backdoorlab.triggers import patch_trigger, poison
from backdoorlab.zoo import ModelStack, ZooCNN


def _planted(n: int = 300, planted: int = 30, dim: int = 30, shift: float = 6.0, seed: int = 0):
    """Class 0: a standard Gaussian blob with ``planted`` points shifted by ``shift`` along a random unit
    direction; class 1: a blob alone. Returns features, labels, the planted mask and the direction."""
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(2 * n, dim, generator=generator)
    direction = torch.randn(dim, generator=generator)
    direction /= direction.norm()
    labels = (torch.arange(2 * n) >= n).long()
    truth = torch.zeros(2 * n, dtype=torch.bool)
    truth[torch.randperm(n, generator=generator)[:planted]] = True
    features[truth] += shift * direction
    return features, labels, truth, direction


# --------------------------------------------------------------------------- spectral signatures


def test_spectral_signatures_ranks_the_planted_points_first_along_the_shift():
    features, labels, truth, direction = _planted()
    result = pd.spectral_signatures(features, labels)
    in0 = labels == 0
    assert pd.detection_auroc(result.scores[in0], truth[in0]) > 0.99
    # the top singular vector of class 0 aligns with the planted shift
    assert abs(float(result.directions[0] @ direction.double())) > 0.95
    # the paper's removal (1.5 x the planted count) keeps almost all the planted points out
    removed = pd.top_scorers(result.scores, budget=math.ceil(1.5 * int(truth.sum())), labels=labels)
    assert pd.removal_quality(removed & in0, truth).recall > 0.95


def test_spectral_scores_are_squared_projections_whose_class_sum_is_the_top_singular_value_squared():
    features, labels, _, _ = _planted(dim=12)
    result = pd.spectral_signatures(features, labels)
    for row, c in enumerate(result.classes):
        members = labels == c
        x = features[members].double().numpy()
        _, s, vh = np.linalg.svd(x - x.mean(0), full_matrices=False)
        expected = ((x - x.mean(0)) @ vh[0]) ** 2
        np.testing.assert_allclose(result.scores[members].numpy(), expected, rtol=1e-9, atol=1e-12)
        # sum_i ((r_i - mean) . v)^2 = ||M v||^2 = sigma_1^2
        assert result.scores[members].sum().item() == pytest.approx(s[0] ** 2, rel=1e-9)
        assert result.singular_values[row].item() == pytest.approx(s[0], rel=1e-9)
        assert result.directions[row].norm().item() == pytest.approx(1.0, abs=1e-12)


def test_spectral_scores_ignore_a_class_offset_and_follow_a_permutation():
    features, labels, _, _ = _planted(dim=8)
    base = pd.spectral_signatures(features, labels).scores
    shifted = features + 5.0 * labels[:, None]  # a different constant offset per class
    # float32 features: adding 5 rounds them to about 5e-7
    assert torch.allclose(pd.spectral_signatures(shifted, labels).scores, base, rtol=1e-4, atol=1e-5)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(1))
    permuted = pd.spectral_signatures(features[order], labels[order]).scores
    assert torch.allclose(permuted, base[order], rtol=1e-9, atol=1e-12)


# --------------------------------------------------------------------------- activation clustering


def test_activation_clustering_flags_the_planted_cluster_and_not_the_blob():
    features, labels, truth, _ = _planted(shift=8.0)
    result = pd.activation_clustering(features, labels, seed=0)
    assert result.classes == (0, 1)
    assert result.flagged_classes.tolist() == [True, False]
    assert torch.equal(result.flagged, truth)  # exactly the planted points
    assert result.relative_size[0].item() == pytest.approx(30 / 300)
    # a single Gaussian blob is cut near its middle: the smaller half is far above the threshold
    assert result.relative_size[1].item() > 0.4
    in0 = labels == 0
    assert pd.detection_auroc(result.scores[in0], truth[in0]) == 1.0
    assert pd.detection_auroc(result.scores, truth) > 0.99


def test_activation_score_is_positive_exactly_on_the_smaller_cluster():
    features, labels, _, _ = _planted(shift=3.0)
    result = pd.activation_clustering(features, labels, seed=0)
    assert (result.silhouette > 0).all()
    assert torch.equal(result.scores > 0, result.in_smaller)
    for row, c in enumerate(result.classes):  # the smaller cluster holds relative_size of the class
        members = labels == c
        assert result.in_smaller[members].double().mean().item() == pytest.approx(result.relative_size[row].item())


def test_activation_clustering_same_seed_same_result_and_inputs_unchanged():
    features, labels, _, _ = _planted(shift=2.0)
    before = features.clone()
    one = pd.activation_clustering(features, labels, seed=3, silhouette_sample=100)
    two = pd.activation_clustering(features, labels, seed=3, silhouette_sample=100)
    assert torch.equal(features, before)
    for name in ("scores", "in_smaller", "flagged", "relative_size", "silhouette", "flagged_classes"):
        assert torch.equal(getattr(one, name), getattr(two, name)), name


@pytest.mark.filterwarnings("ignore:FastICA did not converge")  # the blob class is Gaussian: no independent components
def test_activation_clustering_with_ica_also_separates_the_planted_cluster():
    features, labels, truth, _ = _planted(shift=8.0)
    result = pd.activation_clustering(features, labels, reduction="ica", seed=0)
    assert result.flagged_classes.tolist() == [True, False]
    assert torch.equal(result.flagged, truth)


def test_activation_clustering_of_a_constant_class_flags_nothing():
    features = torch.cat([torch.ones(10, 4), torch.randn(10, 4, generator=torch.Generator().manual_seed(0))])
    result = pd.activation_clustering(features, torch.tensor([0] * 10 + [1] * 10))
    assert not result.flagged_classes[0] and not result.in_smaller[:10].any()
    assert result.scores[:10].abs().max().item() == 0.0


def test_a_class_too_small_to_split_is_never_flagged():
    features = torch.randn(12, 3, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 0] + [1] * 10)
    result = pd.activation_clustering(features, labels, silhouette_threshold=-1.0, size_threshold=0.5)
    assert not result.flagged_classes[0] and result.relative_size[0].item() == 0.0
    assert not result.flagged[:2].any()


def test_spectral_signatures_is_deterministic_and_leaves_its_inputs():
    features, labels, _, _ = _planted(dim=8)
    before = (features.clone(), labels.clone())
    one, two = pd.spectral_signatures(features, labels), pd.spectral_signatures(features, labels)
    assert torch.equal(one.scores, two.scores) and torch.equal(one.directions, two.directions)
    assert torch.equal(features, before[0]) and torch.equal(labels, before[1])


def test_thresholds_decide_the_flag():
    features, labels, _, _ = _planted(shift=8.0)
    assert not pd.activation_clustering(features, labels, size_threshold=0.05).flagged_classes.any()
    assert not pd.activation_clustering(features, labels, silhouette_threshold=0.99).flagged_classes.any()


# --------------------------------------------------------------------------- penultimate features


@pytest.mark.parametrize("make,shape,width", [
    (MnistCNN, (1, 28, 28), 128), (MnistMLP, (1, 28, 28), 256), (ZooCNN, (1, 28, 28), 256),
    (CifarCNN, (3, 32, 32), 256)])
def test_features_times_last_layer_give_the_logits(make, shape, width):
    with seeded(0):
        model = make()
    images = torch.rand(7, *shape, generator=torch.Generator().manual_seed(0))
    model.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    features = pd.penultimate_features(model, images, batch_size=3)
    assert features.shape == (7, width) and features.dtype == torch.float32
    # the model is left as it was: training mode, weights, no hook
    assert all(m.training for m in model.modules())
    assert all(not m._forward_hooks for m in model.modules())
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    model.eval()
    with torch.no_grad():
        assert torch.allclose(last(features), model(images), atol=1e-5)
    assert torch.allclose(pd.penultimate_features(model, images, batch_size=1000), features, atol=1e-6)


def test_features_restore_the_training_mode():
    with seeded(0):
        model = MnistCNN()
    model.train()
    pd.penultimate_features(model, torch.rand(2, 1, 28, 28))
    assert all(m.training for m in model.modules())
    model.eval()
    pd.penultimate_features(model, torch.rand(2, 1, 28, 28))
    assert not any(m.training for m in model.modules())


class _Scaled(nn.Module):
    """Post-processes its logits: the last nn.Linear does not produce the output."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(28 * 28, 10)

    def forward(self, x):
        return 2 * self.fc(x.flatten(1))


class _NoLinear(nn.Module):
    def forward(self, x):
        return x.flatten(1)[:, :10]


@pytest.mark.parametrize("model", [_Scaled(), _NoLinear(), ModelStack.initial([0, 1])])
def test_features_refuse_models_they_cannot_cut(model):
    with pytest.raises(ValueError, match="model"):
        pd.penultimate_features(model, torch.rand(2, 1, 28, 28))
    assert all(not m._forward_hooks for m in model.modules())


# --------------------------------------------------------------------------- a trained model


@pytest.fixture(scope="module")
def backdoored():
    """A ZooCNN trained on 1000 bar images of which 50 carry a 3x3 white patch and the label 7.

    Class 7 then holds 100 clean and 50 poisoned images: the poisoned third is a minority, as
    both detectors assume (with half or more of the class poisoned, the "smaller cluster" and
    the direction's far end are the clean images).
    """
    trigger = patch_trigger(image_shape=(1, 28, 28), size=3, position=(25, 25), pattern="white")
    poisoned = poison(bar_images(1000, 0), trigger, rate=0.05, target=7, seed=0)
    with seeded(0):
        model = ZooCNN()
    fit(model, poisoned.data, epochs=4, seed=0, batch_size=32, max_lr=1e-2, progress=False)
    model.eval()
    truth = torch.zeros(1000, dtype=torch.bool)
    truth[poisoned.indices] = True
    test = bar_images(200, 1)
    with torch.no_grad():  # the fixture's premise: the backdoor works and the clean task is learnt
        assert (model(trigger.apply(test.images[test.labels != 7])).argmax(1) == 7).float().mean() > 0.9
        assert (model(test.images).argmax(1) == test.labels).float().mean() > 0.95
    return pd.penultimate_features(model, poisoned.data.images), poisoned.data.labels, truth


def test_both_detectors_find_the_poisoned_training_images_of_a_trained_model(backdoored):
    features, labels, truth = backdoored
    in7 = labels == 7
    ss = pd.spectral_signatures(features, labels)
    ac = pd.activation_clustering(features, labels, seed=0)
    assert pd.detection_auroc(ss.scores[in7], truth[in7]) > 0.8
    assert pd.detection_auroc(ac.scores[in7], truth[in7]) > 0.95
    assert pd.detection_auroc(ac.scores, truth) > 0.9
    assert bool(ac.flagged_classes[ac.classes.index(7)])
    assert pd.removal_quality(ac.flagged & in7, truth).precision > 0.9


# --------------------------------------------------------------------------- evaluation helpers


def test_detection_auroc_is_the_stats_auc():
    scores = torch.tensor([0.3, 0.1, 0.9, 0.5, 0.5])
    poisoned = torch.tensor([False, False, True, True, False])
    assert pd.detection_auroc(scores, poisoned) == stats.auc([0, 0, 1, 1, 0], [0.3, 0.1, 0.9, 0.5, 0.5])
    assert pd.detection_auroc(-scores, poisoned) == pytest.approx(1 - pd.detection_auroc(scores, poisoned))


def test_top_scorers_takes_the_budget_per_class_and_breaks_ties_by_position():
    scores = torch.tensor([1.0, 1.0, 1.0, 0.0, 5.0, 4.0, 3.0])
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 2])
    removed = pd.top_scorers(scores, budget=2, labels=labels)
    assert removed.tolist() == [True, True, False, False, True, True, True]
    assert pd.top_scorers(scores, budget=2).tolist() == [False, False, False, False, True, True, False]
    assert pd.top_scorers(scores, budget=100).all()


def test_removal_quality_counts():
    removed = torch.tensor([True, True, True, False, False])
    poisoned = torch.tensor([True, False, False, True, False])
    quality = pd.removal_quality(removed, poisoned)
    assert (quality.precision, quality.recall) == (1 / 3, 1 / 2)
    assert (quality.num_removed, quality.num_poisoned, quality.num_caught) == (3, 2, 1)


@pytest.mark.parametrize("call,name", [
    (lambda: pd.spectral_signatures(torch.ones(3), torch.zeros(3, dtype=torch.long)), "features"),
    (lambda: pd.spectral_signatures(torch.ones(3, 2), torch.zeros(4, dtype=torch.long)), "labels"),
    (lambda: pd.spectral_signatures(torch.full((3, 2), math.nan), torch.zeros(3, dtype=torch.long)), "features"),
    (lambda: pd.spectral_signatures(torch.ones(3, 2, dtype=torch.long), torch.zeros(3, dtype=torch.long)),
     "features"),
    (lambda: pd.spectral_signatures(torch.ones(3, 2), torch.tensor([0, -1, 0])), "labels"),
    (lambda: pd.activation_clustering(torch.ones(3, 2), torch.zeros(3, dtype=torch.long), reduction="tsne"),
     "reduction"),
    (lambda: pd.activation_clustering(torch.ones(3, 2), torch.zeros(3, dtype=torch.long), size_threshold=0.6),
     "size_threshold"),
    (lambda: pd.activation_clustering(torch.ones(3, 2), torch.zeros(3, dtype=torch.long), num_dims=0), "num_dims"),
    (lambda: pd.activation_clustering(torch.ones(3, 2), torch.zeros(3, dtype=torch.long), seed=-1), "seed"),
    (lambda: pd.detection_auroc(torch.tensor([0.1, 0.2]), torch.tensor([True, True])), "poisoned"),
    (lambda: pd.detection_auroc(torch.tensor([0.1, 0.2]), torch.tensor([1, 0])), "poisoned"),
    (lambda: pd.top_scorers(torch.tensor([0.1, 0.2]), budget=0), "budget"),
    (lambda: pd.removal_quality(torch.tensor([False, False]), torch.tensor([True, False])), "removed"),
    (lambda: pd.penultimate_features(MnistCNN(), torch.rand(0, 1, 28, 28)), "images"),
])
def test_bad_inputs_are_refused_naming_the_argument(call, name):
    with pytest.raises((TypeError, ValueError), match=name):
        call()
