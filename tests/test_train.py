"""Tests of backdoorlab.train."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from backdoorlab.data import ImageSet
from backdoorlab.models import MnistCNN
from backdoorlab.train import accuracy, fit, predict, seeded


def small_model(seed: int) -> nn.Module:
    with seeded(seed):
        return MnistCNN(channels=(4, 8), hidden=32)


def test_same_seed_gives_identical_weights(tiny_set):
    first, second = small_model(0), small_model(0)
    fit(first, tiny_set, epochs=1, seed=5, batch_size=50)
    fit(second, tiny_set, epochs=1, seed=5, batch_size=50)
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)


def test_different_seed_gives_different_weights(tiny_set):
    first, second = small_model(0), small_model(0)
    fit(first, tiny_set, epochs=1, seed=5, batch_size=50)
    fit(second, tiny_set, epochs=1, seed=6, batch_size=50)
    assert not torch.equal(first.classifier[-1].weight, second.classifier[-1].weight)


def test_fit_leaves_the_global_generator_alone(tiny_set):
    before = torch.random.get_rng_state()
    fit(small_model(0), tiny_set, epochs=1, seed=0, batch_size=100)
    assert torch.equal(before, torch.random.get_rng_state())


def test_fit_learns_a_learnable_task(tiny_set):
    model = small_model(1)
    result = fit(model, tiny_set, epochs=3, seed=0, batch_size=32)
    assert result.losses[-1] < result.losses[0]
    assert accuracy(model, tiny_set) > 0.9
    assert not model.training


class ConstantLogits(nn.Module):
    """Always predicts ``label``; has a dummy parameter so it can be put in train mode."""

    def __init__(self, label: int, num_classes: int = 10):
        super().__init__()
        self.register_buffer("logits", nn.functional.one_hot(torch.tensor(label), num_classes).float())

    def forward(self, images):
        return self.logits.expand(len(images), -1)


def test_accuracy_matches_a_hand_count(tiny_set):
    expected = (tiny_set.labels == 4).double().mean().item()
    assert accuracy(ConstantLogits(4), tiny_set) == pytest.approx(expected)


def test_predict_restores_the_training_mode(tiny_set):
    model = ConstantLogits(2).train()
    assert predict(model, tiny_set.images, batch_size=7).eq(2).all()
    assert model.training


@pytest.mark.parametrize(("options", "message"), [
    ({"epochs": 0}, "epochs"), ({"batch_size": 0}, "batch_size"), ({"batch_size": 10_000}, "batch_size"),
    ({"max_lr": 0.0}, "max_lr"),
])
def test_fit_rejects_bad_options(tiny_set, options, message):
    settings = {"epochs": 1, "seed": 0, **options}
    with pytest.raises(ValueError, match=message):
        fit(small_model(0), tiny_set, **settings)


def test_fit_rejects_raw_tensors():
    with pytest.raises(TypeError, match="ImageSet"):
        fit(small_model(0), torch.rand(4, 1, 28, 28), epochs=1, seed=0)


def test_no_progress_bar_without_a_terminal(tiny_set, capsys):
    fit(small_model(0), tiny_set, epochs=1, seed=0, batch_size=100)
    assert "fit" not in capsys.readouterr().err  # executed notebooks have no TTY


def test_progress_bar_when_asked(tiny_set, capsys):
    fit(small_model(0), tiny_set, epochs=1, seed=0, batch_size=100, progress=True)
    assert "fit" in capsys.readouterr().err


# --------------------------------------------------------------------------- reliability (issue 15)


class ExtraAxis(nn.Module):
    """Logits of shape (N, 10, 1): broadcasting made accuracy plausible-looking on main."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(28 * 28, 10)

    def forward(self, x):
        return self.layer(x.flatten(1)).unsqueeze(-1)


class NaNLogits(ExtraAxis):
    def forward(self, x):
        return self.layer(x.flatten(1)) * float("nan")


def test_fit_raises_on_a_non_finite_loss(tiny_set):
    """Item 3: on main ``fit(max_lr=inf)`` returned ``losses=(nan,)`` without a word."""
    with pytest.raises(ValueError, match="max_lr"):
        fit(MnistCNN(), tiny_set, epochs=1, seed=0, max_lr=float("inf"))
    diverging = lambda logits, labels: F.cross_entropy(logits, labels) * float("nan")  # noqa: E731
    with pytest.raises(ValueError, match="loss"):
        fit(MnistCNN(), tiny_set.subset(range(64)), epochs=1, seed=0, batch_size=32, loss_fn=diverging)


def test_predict_and_accuracy_refuse_outputs_that_are_not_logits(tiny_set):
    """Items 3 and 4: on main a NaN model predicted class 0 everywhere and an (N, 10, 1)
    output broadcast into an accuracy; both must be refused."""
    small = tiny_set.subset(range(20))
    for model in (ExtraAxis(), NaNLogits()):
        with pytest.raises(ValueError, match="model"):
            predict(model, small.images)
        with pytest.raises(ValueError, match="model"):
            accuracy(model, small)


def test_seeded_refuses_a_non_integer_seed():
    """Item 9: on main ``seeded(1.5)`` silently seeded with 1."""
    for seed in (1.5, "1", -1, True):
        with pytest.raises((TypeError, ValueError), match="seed"):
            with seeded(seed):
                pass
