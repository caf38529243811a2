"""Tests of backdoorlab.models."""

from __future__ import annotations

import pytest
import torch

from backdoorlab.models import MNIST_MEAN, MNIST_STD, CifarCNN, MnistCNN, MnistMLP, Normalize


@pytest.mark.parametrize(
    ("model", "shape"),
    [(MnistCNN(), (1, 28, 28)), (MnistCNN(channels=(4, 8), hidden=16), (1, 28, 28)),
     (MnistMLP(hidden=(32,)), (1, 28, 28)), (CifarCNN(width=4), (3, 32, 32))],
)
def test_models_map_unit_images_to_logits(model, shape):
    logits = model.eval()(torch.rand(5, *shape))
    assert logits.shape == (5, 10) and torch.isfinite(logits).all()


def test_normalize_standardises_each_channel():
    layer = Normalize([0.5, 0.25], [0.5, 0.25])
    images = torch.rand(3, 2, 4, 4)
    expected = torch.stack([(images[:, 0] - 0.5) / 0.5, (images[:, 1] - 0.25) / 0.25], dim=1)
    assert torch.allclose(layer(images), expected)


def test_mnist_model_normalises_inside():
    model = MnistCNN().eval()
    images = torch.rand(2, 1, 28, 28)
    by_hand = model.classifier(model.features((images - MNIST_MEAN[0]) / MNIST_STD[0]))
    assert torch.allclose(model(images), by_hand, atol=1e-6)


@pytest.mark.parametrize(("mean", "std"), [([0.5], [0.0]), ([0.5, 0.5], [1.0])])
def test_normalize_rejects_bad_statistics(mean, std):
    with pytest.raises(ValueError):
        Normalize(mean, std)


def test_gradients_reach_the_input_pixels():
    images = torch.rand(2, 1, 28, 28, requires_grad=True)
    MnistCNN()(images)[:, 3].sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


@pytest.mark.parametrize("model", [MnistCNN(), MnistMLP(), CifarCNN(width=4).eval()],
                         ids=["mnist_cnn", "mnist_mlp", "cifar_cnn"])
def test_as_sequential_computes_the_model_with_the_same_layers(model):
    sequence = model.as_sequential()
    assert isinstance(sequence, torch.nn.Sequential)
    size = 32 if isinstance(model, CifarCNN) else 28
    channels = 3 if isinstance(model, CifarCNN) else 1
    images = torch.rand(3, channels, size, size, generator=torch.Generator().manual_seed(0))
    assert torch.equal(sequence(images), model(images))
    params = {id(p) for p in model.parameters()}
    assert {id(p) for p in sequence.parameters()} == params  # shared, not copied


def test_pooling_before_relu_gives_the_function_and_gradients_of_the_usual_order():
    torch.manual_seed(0)
    model = MnistCNN(channels=(4, 6), hidden=16)
    conv1, pool1, relu1, conv2, pool2, relu2 = model.features
    usual = torch.nn.Sequential(model.normalize, conv1, relu1, pool1, conv2, relu2, pool2,
                                model.classifier)
    images = torch.rand(8, 1, 28, 28)
    images[:4, :, :10] = 0.0  # flat regions: ties inside the pooling windows
    for network in (model, usual):
        network.zero_grad()
        network(images).logsumexp(dim=1).sum().backward()
        grads = [p.grad.clone() for p in model.parameters()]
        if network is model:
            ours = grads
    assert torch.equal(model(images), usual(images))
    assert all(torch.equal(a, b) for a, b in zip(ours, grads))
