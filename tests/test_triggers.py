"""Tests of backdoorlab.triggers, from the definitions."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from backdoorlab.data import ImageSet
from backdoorlab.triggers import Trigger, attack_success_rate, blended_trigger, patch_trigger, poison

PATCH = patch_trigger(image_shape=(1, 28, 28), size=4, position=(23, 23))


def test_patch_leaves_pixels_outside_the_mask_unchanged(tiny_set):
    stamped = PATCH.apply(tiny_set.images)
    outside = PATCH.mask.expand_as(stamped[0]) == 0
    assert torch.equal(stamped[:, outside], tiny_set.images[:, outside])
    assert (stamped[:, 0, 23:27, 23:27] == 1).all()
    assert outside.sum() == 784 - 16


def test_apply_does_not_mutate_its_input(tiny_set):
    before = tiny_set.images.clone()
    PATCH.apply(tiny_set.images)
    assert torch.equal(before, tiny_set.images)


def test_blended_trigger_is_the_convex_combination():
    pattern = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0))
    images = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    result = blended_trigger(pattern, alpha=0.3).apply(images)
    assert torch.allclose(result, 0.7 * images + 0.3 * pattern, atol=1e-7)


def test_checkerboard_patch_alternates():
    trigger = patch_trigger(image_shape=(3, 8, 8), size=3, position=(0, 5), pattern="checkerboard")
    square = trigger.pattern[:, 0:3, 5:8]
    assert square[:, 0, 0].eq(1).all() and square[:, 0, 1].eq(0).all() and square[:, 1, 1].eq(1).all()
    assert trigger.area == pytest.approx(9 / 64)


@pytest.mark.parametrize("rate", [0.0, 0.01, 0.1, 0.333, 0.5])
def test_poison_changes_exactly_floor_rate_n_samples(tiny_set, rate):
    result = poison(tiny_set, PATCH, rate=rate, target=0, seed=0)
    expected = math.floor(rate * len(tiny_set))
    assert len(result.indices) == expected
    changed_labels = (result.data.labels != tiny_set.labels).nonzero().flatten()
    assert torch.equal(changed_labels, result.indices)  # only the poisoned are relabelled
    changed_images = (result.data.images != tiny_set.images).flatten(1).any(dim=1).nonzero().flatten()
    assert set(changed_images.tolist()) <= set(result.indices.tolist())
    assert (result.data.labels[result.indices] == 0).all()


def test_poisoned_samples_are_the_triggered_originals(tiny_set):
    result = poison(tiny_set, PATCH, rate=0.2, target=3, seed=1)
    assert torch.equal(result.data.images[result.indices], PATCH.apply(tiny_set.images[result.indices]))


def test_poison_leaves_the_input_untouched(tiny_set):
    images, labels = tiny_set.images.clone(), tiny_set.labels.clone()
    poison(tiny_set, PATCH, rate=0.3, target=0, seed=0)
    assert torch.equal(images, tiny_set.images) and torch.equal(labels, tiny_set.labels)


def test_one_source_attack_poisons_only_the_source_class(tiny_set):
    result = poison(tiny_set, PATCH, rate=0.05, target=0, source=7, seed=0)
    assert (tiny_set.labels[result.indices] == 7).all()
    assert len(result.indices) == math.floor(0.05 * len(tiny_set))


def test_poison_is_reproducible_and_seed_dependent(tiny_set):
    a = poison(tiny_set, PATCH, rate=0.1, target=0, seed=4)
    b = poison(tiny_set, PATCH, rate=0.1, target=0, seed=4)
    c = poison(tiny_set, PATCH, rate=0.1, target=0, seed=5)
    assert torch.equal(a.indices, b.indices) and not torch.equal(a.indices, c.indices)


@pytest.mark.parametrize(("options", "message"), [
    ({"rate": 1.5, "target": 0}, "rate"),
    ({"rate": -0.1, "target": 0}, "rate"),
    ({"rate": 0.1, "target": 10}, "target"),
    ({"rate": 0.1, "target": -1}, "target"),
    ({"rate": 0.1, "target": 2, "source": 2}, "differ"),
    ({"rate": 0.1, "target": 0, "source": 12}, "source"),
    ({"rate": 0.95, "target": 0}, "eligible"),
])
def test_poison_rejects_bad_options(tiny_set, options, message):
    with pytest.raises(ValueError, match=message):
        poison(tiny_set, PATCH, seed=0, **options)


def test_trigger_rejects_mismatched_or_out_of_range_tensors():
    with pytest.raises(ValueError, match="does not fit"):
        Trigger(torch.zeros(1, 8, 8), torch.zeros(1, 9, 9))
    with pytest.raises(ValueError, match="values in"):
        Trigger(torch.full((1, 8, 8), 2.0), torch.zeros(1, 8, 8))
    with pytest.raises(TypeError, match="3-D"):
        Trigger(torch.zeros(8, 8), torch.zeros(8, 8))
    with pytest.raises(ValueError, match="does not fit"):
        patch_trigger(image_shape=(1, 28, 28), size=4, position=(25, 0))
    with pytest.raises(ValueError, match="do not match"):
        PATCH.apply(torch.zeros(1, 3, 28, 28))
    with pytest.raises(ValueError, match="values in"):
        PATCH.apply(torch.full((1, 1, 28, 28), 1.2))


class PatchDetector(nn.Module):
    """Predicts ``target`` when the trigger square is bright, else the ``fallback`` class."""

    def __init__(self, target: int, fallback: int):
        super().__init__()
        self.target, self.fallback = target, fallback

    def forward(self, images):
        bright = images[:, 0, 23:27, 23:27].mean(dim=(1, 2)) > 0.9
        labels = torch.where(bright, self.target, self.fallback)
        return nn.functional.one_hot(labels, 10).float()


def test_attack_success_rate_counts_only_non_target_images(tiny_set):
    assert attack_success_rate(PatchDetector(0, 1), tiny_set, PATCH, target=0) == 1.0
    assert attack_success_rate(PatchDetector(5, 1), tiny_set, PATCH, target=0) == 0.0
    # A model that always says 0 has no success on... nothing: target-class images are excluded.
    only_target = tiny_set.where(tiny_set.labels == 0)
    with pytest.raises(ValueError, match="eligible"):
        attack_success_rate(PatchDetector(0, 0), only_target, PATCH, target=0)


def test_one_source_success_rate_uses_the_source_class(tiny_set):
    class SourceOnly(nn.Module):
        def forward(self, images):
            # The real label is not visible to a model; use the bar position of the fixture.
            rows = images[:, 0, :, 10].argmax(dim=1)
            labels = torch.where(rows == 2 * 7 + 2, 0, 1)
            return nn.functional.one_hot(labels, 10).float()

    assert attack_success_rate(SourceOnly(), tiny_set, PATCH, target=0, source=7) == 1.0
    assert attack_success_rate(SourceOnly(), tiny_set, PATCH, target=0, source=6) == 0.0


# --------------------------------------------------------------------------- reliability (issue 15)


class _Output(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.layer = nn.Linear(28 * 28, 10)

    def forward(self, x):
        logits = self.layer(x.flatten(1))
        return logits * float("nan") if self.kind == "nan" else logits.unsqueeze(-1)


def test_attack_success_rate_refuses_nan_logits_and_wrong_shapes():
    """Items 3 and 4: on main NaN logits meant class 0 everywhere, so the ASR for target 0
    (the book's BadNets target) was 1.0; an (N, 10, 1) output broadcast into a rate."""
    data = ImageSet(torch.rand(20, 1, 28, 28), torch.arange(20) % 10, tuple("0123456789"))
    trigger = patch_trigger(image_shape=(1, 28, 28), size=3, position=(25, 25))
    for kind in ("nan", "extra_axis"):
        with pytest.raises(ValueError, match="model"):
            attack_success_rate(_Output(kind), data, trigger, target=0)


def test_apply_accepts_an_empty_batch():
    """Item 9: on main ``Trigger.apply`` failed on an empty batch (``images[0]``)."""
    trigger = patch_trigger(image_shape=(1, 8, 8), size=2, position=(0, 0))
    assert trigger.apply(torch.zeros(0, 1, 8, 8)).shape == (0, 1, 8, 8)


def test_poison_refuses_bad_seeds_and_rates():
    """Item 9: on main a float seed raised ``RuntimeError: manual_seed expected a long``."""
    data = ImageSet(torch.zeros(10, 1, 8, 8), torch.arange(10) % 2, ("a", "b"))
    trigger = patch_trigger(image_shape=(1, 8, 8), size=2, position=(0, 0))
    with pytest.raises(TypeError, match="seed"):
        poison(data, trigger, rate=0.2, target=0, seed=1.5)
    with pytest.raises(ValueError, match="rate"):
        poison(data, trigger, rate=float("nan"), target=0, seed=0)
