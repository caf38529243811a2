"""Small convolutional classifiers that run on a laptop CPU.

Every model takes images in [0, 1] of shape (N, C, H, W) and returns logits of shape
(N, num_classes); the per-channel standardisation lives inside the model, so attacks and
attributions work in pixel units.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from . import _checks

__all__ = ["CifarCNN", "MnistCNN", "MnistMLP", "Normalize", "MNIST_MEAN", "MNIST_STD", "CIFAR10_MEAN", "CIFAR10_STD"]

# Channel statistics of the training sets, in [0, 1] pixel units.
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


class Normalize(nn.Module):
    """Standardise each channel: ``(x - mean[c]) / std[c]``.

    Parameters
    ----------
    mean, std : sequence of float
        One value per channel; ``std`` must be positive.

    Examples
    --------
    >>> Normalize([0.5], [0.5])(torch.ones(1, 1, 2, 2)).flatten().tolist()
    [1.0, 1.0, 1.0, 1.0]
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        for name, values in (("mean", mean), ("std", std)):
            if isinstance(values, str) or not isinstance(values, Sequence):
                raise TypeError(f"{name} must be a sequence of floats, got {type(values).__name__}")
            for value in values:
                _checks.check_real(name, value)
        if len(mean) != len(std):
            raise ValueError(f"mean and std must have the same length, got {len(mean)} and {len(std)}")
        if min(std) <= 0:
            raise ValueError(f"std must be positive, got {tuple(std)}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std


class MnistCNN(nn.Module):
    """A LeNet-style CNN for 28x28 grey images.

    Two blocks of 5x5 convolution (padding 2), 2x2 max-pooling and ReLU, then a hidden
    fully connected layer and the output layer:
    ``1x28x28 -> c1x14x14 -> c2x7x7 -> hidden -> num_classes``.

    Pooling comes before the ReLU: the two commute (ReLU is nondecreasing, so
    ``maxpool(relu(z)) = relu(maxpool(z))``, and both orders pass the gradient to the same
    pixel), and this order runs the ReLU on a quarter of the values.

    Parameters
    ----------
    channels : tuple of two int
        Output channels of the two convolutions.
    hidden : int
        Width of the hidden fully connected layer.
    num_classes : int
        Number of output logits.

    Examples
    --------
    >>> model = MnistCNN()
    >>> model(torch.rand(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    """

    def __init__(self, *, channels: tuple[int, int] = (16, 32), hidden: int = 128, num_classes: int = 10) -> None:
        super().__init__()
        if not isinstance(channels, (tuple, list)) or len(channels) != 2:
            raise TypeError(f"channels must be a pair of ints, got {channels!r}")
        c1, c2 = (_checks.check_int("channels", c, minimum=1) for c in channels)
        _checks.check_int("hidden", hidden, minimum=1)
        _checks.check_int("num_classes", num_classes, minimum=2)
        self.normalize = Normalize(MNIST_MEAN, MNIST_STD)
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, 5, padding=2), nn.MaxPool2d(2), nn.ReLU(),
            nn.Conv2d(c1, c2, 5, padding=2), nn.MaxPool2d(2), nn.ReLU(),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(c2 * 7 * 7, hidden), nn.ReLU(), nn.Linear(hidden, num_classes),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(self.normalize(images)))

    def as_sequential(self) -> nn.Sequential:
        """The model as one flat ``nn.Sequential`` of its layers (shared, not copied).

        It computes the same function as the model; :func:`backdoorlab.attribution.affine_split`
        uses it to find the leading affine layers.
        """
        return nn.Sequential(self.normalize, *self.features, *self.classifier)


class MnistMLP(nn.Module):
    """A fully connected network for 28x28 grey images: ``784 -> hidden... -> num_classes``.

    A second, convolution-free architecture, for experiments that compare models
    (for example the transfer of universal perturbations).

    Parameters
    ----------
    hidden : tuple of int
        Widths of the hidden layers, each followed by a ReLU.
    num_classes : int
        Number of output logits.

    Examples
    --------
    >>> MnistMLP()(torch.rand(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    """

    def __init__(self, *, hidden: tuple[int, ...] = (512, 256), num_classes: int = 10) -> None:
        super().__init__()
        if not isinstance(hidden, (tuple, list)):
            raise TypeError(f"hidden must be a tuple of ints, got {type(hidden).__name__}")
        for width in hidden:
            _checks.check_int("hidden", width, minimum=1)
        _checks.check_int("num_classes", num_classes, minimum=2)
        widths = (28 * 28, *hidden)
        layers: list[nn.Module] = [nn.Flatten()]
        for width_in, width_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(width_in, width_out), nn.ReLU()]
        layers.append(nn.Linear(widths[-1], num_classes))
        self.normalize = Normalize(MNIST_MEAN, MNIST_STD)
        self.layers = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(self.normalize(images))

    def as_sequential(self) -> nn.Sequential:
        """The model as one flat ``nn.Sequential`` of its layers (shared, not copied).

        It computes the same function as the model; :func:`backdoorlab.attribution.affine_split`
        uses it to find the leading affine layers.
        """
        return nn.Sequential(self.normalize, *self.layers)


class CifarCNN(nn.Module):
    """A VGG-style CNN for 32x32 colour images, scaled for a CPU.

    The model family of the Universal Litmus Patterns experiments on CIFAR-10
    (Kolouri et al. 2020): stacks of 3x3 convolutions with batch normalisation and ReLU,
    max-pooling between stages, and a small fully connected head. Each of the three stages
    has two convolutions; the widths are ``(width, 2 width, 4 width)``.

    Parameters
    ----------
    width : int
        Channels of the first stage (the ULP models used 32; 16 trains about four times
        faster on a CPU).
    hidden : int
        Width of the hidden fully connected layer.
    num_classes : int
        Number of output logits.

    Examples
    --------
    >>> model = CifarCNN(width=8)
    >>> model(torch.rand(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """

    def __init__(self, *, width: int = 16, hidden: int = 256, num_classes: int = 10) -> None:
        super().__init__()
        _checks.check_int("width", width, minimum=1)
        _checks.check_int("hidden", hidden, minimum=1)
        _checks.check_int("num_classes", num_classes, minimum=2)
        layers: list[nn.Module] = []
        in_channels = 3
        for stage in range(3):
            out_channels = width * 2**stage
            for _ in range(2):
                layers += [
                    nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
                    nn.BatchNorm2d(out_channels),
                    nn.ReLU(),
                ]
                in_channels = out_channels
            layers.append(nn.MaxPool2d(2))
        self.normalize = Normalize(CIFAR10_MEAN, CIFAR10_STD)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(in_channels * 4 * 4, hidden), nn.ReLU(), nn.Linear(hidden, num_classes),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(self.normalize(images)))

    def as_sequential(self) -> nn.Sequential:
        """The model as one flat ``nn.Sequential`` of its layers (shared, not copied).

        It computes the same function as the model; :func:`backdoorlab.attribution.affine_split`
        uses it to find the leading affine layers.
        """
        return nn.Sequential(self.normalize, *self.features, *self.classifier)
