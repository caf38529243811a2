"""Triggers, training-set poisoning and the attack success rate.

A trigger is a pair (mask, pattern) of images; stamping it on an image x gives

.. math:: A(x; m, p) = (1 - m) \\odot x + m \\odot p,

so a pixel with mask 0 is left alone, a pixel with mask 1 is replaced by the pattern, and
a mask between the two blends them. A BadNets patch (Gu et al. 2017) is a binary mask over
a small square; a blended trigger (Chen et al. 2017) is a constant mask ``alpha`` over
the whole image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from . import _checks
from .data import ImageSet, check_images
from .train import predict

__all__ = [
    "PoisonedSet",
    "Trigger",
    "attack_success_rate",
    "blended_trigger",
    "patch_trigger",
    "poison",
]


@dataclass(frozen=True, eq=False)
class Trigger:
    """A backdoor trigger: a mask and a pattern.

    Parameters
    ----------
    mask : torch.Tensor
        float32 of shape (1, H, W) or (C, H, W), values in [0, 1]; 1 means "replace".
    pattern : torch.Tensor
        float32 of shape (C, H, W), values in [0, 1].

    Examples
    --------
    >>> trigger = patch_trigger(image_shape=(1, 8, 8), size=2, position=(6, 6))
    >>> stamped = trigger.apply(torch.zeros(1, 1, 8, 8))
    >>> stamped[0, 0, 6:, 6:].tolist(), stamped.sum().item()
    ([[1.0, 1.0], [1.0, 1.0]], 4.0)
    """

    mask: torch.Tensor
    pattern: torch.Tensor

    def __post_init__(self) -> None:
        for name in ("mask", "pattern"):
            value = getattr(self, name)
            if not isinstance(value, torch.Tensor) or not value.is_floating_point() or value.ndim != 3:
                raise TypeError(f"{name} must be a 3-D floating-point torch.Tensor (C, H, W)")
            check_images(value.unsqueeze(0), name=name)
        channels, height, width = self.pattern.shape
        if self.mask.shape[1:] != (height, width) or self.mask.shape[0] not in (1, channels):
            raise ValueError(
                f"mask of shape {tuple(self.mask.shape)} does not fit pattern of shape "
                f"{tuple(self.pattern.shape)}"
            )
        object.__setattr__(self, "mask", self.mask.to(torch.float32))
        object.__setattr__(self, "pattern", self.pattern.to(torch.float32))

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """Shape (C, H, W) of the images the trigger applies to."""
        return tuple(self.pattern.shape)  # type: ignore[return-value]

    @property
    def area(self) -> float:
        """Share of the (H, W) pixels the trigger touches (mask above 0 in any channel)."""
        return self.mask.amax(dim=0).gt(0).float().mean().item()

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        """Stamp the trigger: ``(1 - mask) * images + mask * pattern``, a new tensor.

        Parameters
        ----------
        images : torch.Tensor
            Shape (N, C, H, W) matching the trigger, values in [0, 1].

        Returns
        -------
        torch.Tensor
            Triggered images, same shape and dtype, values in [0, 1].
        """
        check_images(images)
        if tuple(images.shape[1:]) != self.image_shape:
            raise ValueError(
                f"images of shape {tuple(images.shape[1:])} do not match the trigger's "
                f"image shape {self.image_shape}"
            )
        mask = self.mask.to(images.dtype)
        # pattern (C, H, W) and mask broadcast over the batch, which may be empty
        return torch.lerp(images, self.pattern.to(images.dtype), mask)


def patch_trigger(
    *,
    image_shape: tuple[int, int, int],
    size: int,
    position: tuple[int, int],
    pattern: str | torch.Tensor = "white",
) -> Trigger:
    """A BadNets square patch: an opaque ``size`` x ``size`` pattern at ``position``.

    Parameters
    ----------
    image_shape : tuple (C, H, W)
        Shape of the images the trigger applies to.
    size : int
        Side of the square in pixels.
    position : tuple (row, col)
        Top-left pixel of the square; the square must fit inside the image.
    pattern : {"white", "checkerboard"} or torch.Tensor
        The square's content: all ones, a 0/1 checkerboard starting with 1 at the top
        left, or a tensor of shape (C, size, size) in [0, 1].

    Returns
    -------
    Trigger
        Binary mask that is 1 on the square.

    Examples
    --------
    >>> trigger = patch_trigger(image_shape=(1, 28, 28), size=4, position=(23, 23))
    >>> int(trigger.mask.sum())
    16
    """
    if not isinstance(image_shape, (tuple, list)) or len(image_shape) != 3:
        raise TypeError(f"image_shape must be a tuple (C, H, W), got {image_shape!r}")
    channels, height, width = (_checks.check_int("image_shape", v, minimum=1) for v in image_shape)
    if not isinstance(position, (tuple, list)) or len(position) != 2:
        raise TypeError(f"position must be a tuple (row, col), got {position!r}")
    row, col = (_checks.check_int("position", v) for v in position)
    _checks.check_int("size", size, minimum=1)
    if not (0 <= row and row + size <= height and 0 <= col and col + size <= width):
        raise ValueError(f"a {size}x{size} patch at position {position} does not fit in {height}x{width} images")
    if isinstance(pattern, str):
        if pattern == "white":
            square = torch.ones(channels, size, size)
        elif pattern == "checkerboard":
            parity = (torch.arange(size).view(-1, 1) + torch.arange(size).view(1, -1)) % 2
            square = (1 - parity).float().expand(channels, size, size)
        else:
            raise ValueError(f"pattern must be 'white', 'checkerboard' or a tensor, got {pattern!r}")
    else:
        square = _checks.check_tensor("pattern", pattern, floating=True)
        if tuple(square.shape) != (channels, size, size):
            raise ValueError(f"pattern must have shape {(channels, size, size)}, got {tuple(square.shape)}")
    mask = torch.zeros(1, height, width)
    mask[:, row:row + size, col:col + size] = 1.0
    full = torch.zeros(channels, height, width)
    full[:, row:row + size, col:col + size] = square
    return Trigger(mask, full)


def blended_trigger(pattern: torch.Tensor, *, alpha: float) -> Trigger:
    """A blended trigger (Chen et al. 2017): ``(1 - alpha) x + alpha * pattern`` everywhere.

    Parameters
    ----------
    pattern : torch.Tensor
        Shape (C, H, W), values in [0, 1]; for example uniform noise or a photograph.
    alpha : float
        Blend weight in (0, 1].

    Examples
    --------
    >>> trigger = blended_trigger(torch.ones(1, 4, 4), alpha=0.2)
    >>> trigger.apply(torch.zeros(1, 1, 4, 4)).max().item()
    0.20000000298023224
    """
    _checks.check_rate("alpha", alpha, strict_minimum=True)
    _checks.check_tensor("pattern", pattern, floating=True)
    if pattern.ndim != 3:
        raise ValueError(f"pattern must have shape (C, H, W), got {tuple(pattern.shape)}")
    return Trigger(torch.full((1, *pattern.shape[1:]), float(alpha)), pattern)


@dataclass(frozen=True, eq=False)
class PoisonedSet:
    """A poisoned dataset and which samples were poisoned.

    Attributes
    ----------
    data : ImageSet
        The training set with the poisoned samples triggered and relabelled.
    indices : torch.Tensor
        int64, sorted positions in ``data`` of the poisoned samples.
    """

    data: ImageSet
    indices: torch.Tensor


def _check_target(data: ImageSet, target: int, source: int | None) -> None:
    for name, value in (("target", target), ("source", source)):
        if value is None and name == "source":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < data.num_classes:
            raise ValueError(f"{name} must be a class index in [0, {data.num_classes - 1}], got {value!r}")
    if source is not None and source == target:
        raise ValueError(f"source and target must differ, got {source} for both")


def poison(
    data: ImageSet,
    trigger: Trigger,
    *,
    rate: float,
    target: int,
    source: int | None = None,
    seed: int,
) -> PoisonedSet:
    """BadNets poisoning: trigger ``floor(rate * len(data))`` samples and relabel them ``target``.

    The poisoned samples are drawn uniformly without replacement from the *eligible*
    samples: those whose label is not ``target`` (poisoning a target-class image would
    change nothing), and, for a one-source attack, whose label is ``source``. Every other
    sample is left exactly as it was. ``data`` itself is not modified.

    Parameters
    ----------
    data : ImageSet
        Clean training set.
    trigger : Trigger
        The trigger to stamp.
    rate : float
        Poisoned share of the whole training set, in [0, 1].
    target : int
        Class the backdoor maps triggered inputs to.
    source : int, optional
        If given, only images of this class are poisoned (a one-source attack); otherwise
        images of every class but the target are (all-to-one).
    seed : int
        Seeds which samples are chosen.

    Returns
    -------
    PoisonedSet
        The poisoned copy and the sorted indices of the poisoned samples.

    Raises
    ------
    ValueError
        If ``rate`` is outside [0, 1], ``target``/``source`` is not a class, or there
        are fewer eligible samples than ``floor(rate * len(data))``.

    Examples
    --------
    >>> data = ImageSet(torch.zeros(10, 1, 8, 8), torch.arange(10) % 2, ("a", "b"))
    >>> trigger = patch_trigger(image_shape=(1, 8, 8), size=2, position=(0, 0))
    >>> poisoned = poison(data, trigger, rate=0.3, target=0, seed=0)
    >>> len(poisoned.indices), poisoned.data.labels[poisoned.indices].tolist()
    (3, [0, 0, 0])
    """
    if not isinstance(data, ImageSet):
        raise TypeError(f"data must be an ImageSet, got {type(data).__name__}")
    if not isinstance(trigger, Trigger):
        raise TypeError(f"trigger must be a Trigger, got {type(trigger).__name__}")
    rate = _checks.check_rate("rate", rate)
    seed = _checks.check_seed(seed)
    _check_target(data, target, source)
    eligible = data.labels != target
    if source is not None:
        eligible &= data.labels == source
    candidates = eligible.nonzero().flatten()
    count = math.floor(rate * len(data))
    if count > len(candidates):
        raise ValueError(
            f"rate={rate} asks for {count} poisoned samples but only {len(candidates)} are eligible"
        )
    generator = torch.Generator().manual_seed(seed)
    chosen = candidates[torch.randperm(len(candidates), generator=generator)[:count]].sort().values
    images, labels = data.images.clone(), data.labels.clone()
    if count:
        images[chosen] = trigger.apply(images[chosen])
        labels[chosen] = target
    return PoisonedSet(ImageSet(images, labels, data.classes), chosen)


def attack_success_rate(
    model: nn.Module,
    data: ImageSet,
    trigger: Trigger,
    *,
    target: int,
    source: int | None = None,
    batch_size: int = 2000,
) -> float:
    """Share of triggered test images classified as ``target``.

    Only images whose true label is not ``target`` (and, for a one-source attack, is
    ``source``) count: for them a prediction of ``target`` is the attack's doing.

    .. math:: \\mathrm{ASR} = \\frac{1}{|S|} \\sum_{(x, y) \\in S} [f(A(x)) = t],
       \\qquad S = \\{(x, y) : y \\ne t\\}.

    Returns
    -------
    float
        In [0, 1].

    Examples
    --------
    >>> from backdoorlab.models import MnistCNN
    >>> data = ImageSet(torch.rand(6, 1, 28, 28), torch.arange(6), tuple("0123456789"))
    >>> trigger = patch_trigger(image_shape=(1, 28, 28), size=4, position=(23, 23))
    >>> 0.0 <= attack_success_rate(MnistCNN(), data, trigger, target=0) <= 1.0
    True
    """
    _checks.check_model(model)
    if not isinstance(data, ImageSet):
        raise TypeError(f"data must be an ImageSet, got {type(data).__name__}")
    if not isinstance(trigger, Trigger):
        raise TypeError(f"trigger must be a Trigger, got {type(trigger).__name__}")
    _check_target(data, target, source)
    _checks.check_int("batch_size", batch_size, minimum=1)
    keep = data.labels != target
    if source is not None:
        keep &= data.labels == source
    if not keep.any():
        raise ValueError("no test image is eligible (all are of the target class or none of the source)")
    triggered = trigger.apply(data.images[keep])
    predicted = predict(model, triggered, batch_size=batch_size)
    return (predicted == target).double().mean().item()
