"""Model zoos: many small classifiers, clean and backdoored, trained together on a CPU.

A detector of backdoored models such as Universal Litmus Patterns learns from a *zoo*: a
set of trained models, each labelled clean or poisoned. Here a zoo is described by data, a
list of :class:`ModelConfig` (seed, attack, trigger, source, target, poisoning rate), and
trained by :func:`train_zoo`. The models are small CNNs of one architecture
(:class:`ZooCNN`); :class:`ModelStack` holds K of them as stacked parameters and runs them
as one grouped-convolution network, so that K models cost one forward pass
(:math:`\\text{conv}(x; W_1 \\oplus \\dots \\oplus W_K)` with ``groups=K``).

Training model k minimises its own loss :math:`L_k(\\theta_k)`; the stack minimises
:math:`\\sum_k L_k(\\theta_k)`, whose gradient with respect to :math:`\\theta_k` is
:math:`\\nabla L_k(\\theta_k)`. Adam acts on each parameter element separately, so the stack
takes the same steps as K separate runs (up to floating-point rounding).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from . import _checks
from .cache import Artifact, tensor_digest
from .data import ImageSet
from . import models as models_module
from . import train as train_module
from . import triggers as triggers_module
from .models import MNIST_MEAN, MNIST_STD, Normalize
from .triggers import Trigger, blended_trigger, patch_trigger

__all__ = [
    "ATTACKS",
    "BlendSpec",
    "ModelConfig",
    "ModelStack",
    "PatchSpec",
    "TrainingPlan",
    "Zoo",
    "ZooCNN",
    "evaluate_zoo",
    "random_patch_triggers",
    "training_plan",
    "train_stack",
    "train_zoo",
    "zoo_spec",
]

#: The kinds of model in a zoo: no backdoor; every class but the target sent to the
#: target (all-to-one); only one source class sent to the target (one-source).
ATTACKS = ("clean", "all_to_one", "one_source")


@dataclass(frozen=True)
class PatchSpec:
    """A square binary patch trigger, as data: its side, top-left corner and 0/1 pixels.

    Attributes
    ----------
    size : int
        Side of the square in pixels.
    row, col : int
        Top-left pixel of the square.
    bits : tuple of int
        The ``size * size`` pixel values (0 or 1), row by row.

    Examples
    --------
    >>> spec = PatchSpec(size=2, row=0, col=1, bits=(1, 0, 0, 1))
    >>> spec.trigger((1, 4, 4)).pattern[0].tolist()
    [[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
    """

    size: int
    row: int
    col: int
    bits: tuple[int, ...]

    def __post_init__(self) -> None:
        _checks.check_int("size", self.size, minimum=1)
        _checks.check_int("row", self.row, minimum=0)
        _checks.check_int("col", self.col, minimum=0)
        if not isinstance(self.bits, tuple):
            raise TypeError(f"bits must be a tuple of 0/1 ints, got {type(self.bits).__name__}")
        if len(self.bits) != self.size * self.size or any(b not in (0, 1) for b in self.bits):
            raise ValueError(f"bits must be {self.size * self.size} values in {{0, 1}}, got {self.bits!r}")

    def trigger(self, image_shape: tuple[int, int, int] = (1, 28, 28)) -> Trigger:
        """The :class:`~backdoorlab.triggers.Trigger` this patch stamps on images of ``image_shape``."""
        square = torch.tensor(self.bits, dtype=torch.float32).view(1, self.size, self.size)
        square = square.expand(image_shape[0], self.size, self.size)
        return patch_trigger(image_shape=image_shape, size=self.size, position=(self.row, self.col), pattern=square)


@dataclass(frozen=True)
class BlendSpec:
    """A blended trigger, as data: a uniform-noise pattern drawn from ``seed``, mixed in at ``alpha``.

    Stamping gives :math:`(1 - \\alpha)\\, x + \\alpha\\, p` at every pixel
    (:func:`backdoorlab.triggers.blended_trigger`, Chen et al. 2017), with :math:`p` uniform in
    [0, 1] from a ``torch.Generator`` seeded with ``seed``.

    Attributes
    ----------
    alpha : float
        Blend weight, in (0, 1].
    seed : int
        Seeds the noise pattern.

    Examples
    --------
    >>> trigger = BlendSpec(alpha=0.1, seed=0).trigger((1, 4, 4))
    >>> float(trigger.mask.max()), tuple(trigger.pattern.shape)
    (0.10000000149011612, (1, 4, 4))
    """

    alpha: float
    seed: int

    def __post_init__(self) -> None:
        _checks.check_rate("alpha", self.alpha, strict_minimum=True)
        _checks.check_seed(self.seed)

    def trigger(self, image_shape: tuple[int, int, int] = (1, 28, 28)) -> Trigger:
        """The :class:`~backdoorlab.triggers.Trigger` this blend stamps on images of ``image_shape``."""
        pattern = torch.rand(*image_shape, generator=torch.Generator().manual_seed(self.seed))
        return blended_trigger(pattern, alpha=float(self.alpha))


def random_patch_triggers(
    count: int,
    *,
    seed: int,
    sizes: Sequence[int] = (3, 4, 5),
    image_shape: tuple[int, int, int] = (1, 28, 28),
    min_on: float = 0.5,
    placement: str = "anywhere",
    margin: int = 2,
) -> list[PatchSpec]:
    """``count`` distinct random binary patches at random positions.

    Each patch draws its side from ``sizes`` and its pixels as fair coin flips, redrawn until
    at least ``min_on`` of them are 1 (a mostly black patch would be invisible on MNIST's black
    background). With ``placement="anywhere"`` its top-left pixel is uniform among the
    positions where it fits; with ``placement="corners"`` it sits in one of the four corners
    (drawn uniformly), at a distance from both edges drawn uniformly from 0 to ``margin``, as
    the triggers of Kolouri et al. (2020) sit in the corners.

    Examples
    --------
    >>> specs = random_patch_triggers(20, seed=0)
    >>> len(set(specs)), all(3 <= s.size <= 5 for s in specs)
    (20, True)
    >>> corner = random_patch_triggers(1, seed=0, sizes=(4,), placement="corners", margin=0)[0]
    >>> corner.row in (0, 24) and corner.col in (0, 24)
    True
    """
    if placement not in ("anywhere", "corners"):
        raise ValueError(f"placement must be 'anywhere' or 'corners', got {placement!r}")
    _checks.check_int("count", count, minimum=1)
    _checks.check_seed(seed)
    _checks.check_int("margin", margin, minimum=0)
    _checks.check_rate("min_on", min_on)
    if not isinstance(image_shape, tuple) or len(image_shape) != 3:
        raise TypeError(f"image_shape must be a tuple (C, H, W), got {image_shape!r}")
    if not isinstance(sizes, (tuple, list)):
        raise TypeError(f"sizes must be a tuple of ints, got {type(sizes).__name__}")
    for size in sizes:
        _checks.check_int("sizes", size, minimum=1)
    if not sizes or min(sizes) < 1 or max(sizes) + margin > min(image_shape[1:]):
        raise ValueError(f"sizes must lie in [1, {min(image_shape[1:])}], got {tuple(sizes)}")
    _, height, width = image_shape
    possible = _distinct_patches(sorted(set(sizes)), height, width, min_on, placement, margin)
    if count > possible:
        raise ValueError(
            f"count={count} exceeds the {possible} distinct patches these sizes, min_on and placement allow"
        )
    generator = torch.Generator().manual_seed(seed)
    specs: list[PatchSpec] = []
    attempts = 0
    while len(specs) < count:
        attempts += 1
        if attempts > 100_000 + 1_000 * count:  # rejection sampling that (almost) never accepts
            raise ValueError(f"could not draw {count} distinct patches in {attempts - 1} attempts: "
                             f"min_on={min_on} leaves too few of the possible bit patterns")
        size = int(sizes[int(torch.randint(len(sizes), (1,), generator=generator))])
        if placement == "anywhere":
            row = int(torch.randint(height - size + 1, (1,), generator=generator))
            col = int(torch.randint(width - size + 1, (1,), generator=generator))
        else:
            bottom, right, row_gap, col_gap = torch.randint(2, (2,), generator=generator).tolist() + \
                torch.randint(margin + 1, (2,), generator=generator).tolist()
            row = height - size - row_gap if bottom else row_gap
            col = width - size - col_gap if right else col_gap
        bits = torch.randint(2, (size * size,), generator=generator)
        if bits.float().mean() < min_on:
            continue
        spec = PatchSpec(size, row, col, tuple(int(b) for b in bits))
        if spec not in specs:
            specs.append(spec)
    return specs


def _distinct_patches(sizes: Sequence[int], height: int, width: int, min_on: float, placement: str,
                      margin: int) -> int:
    """How many distinct PatchSpec ``random_patch_triggers`` can draw: positions times bit patterns."""
    total = 0
    for size in sizes:
        area = size * size
        bit_patterns = sum(math.comb(area, on) for on in range(area + 1) if on >= min_on * area)
        if placement == "anywhere":
            positions = (height - size + 1) * (width - size + 1)
        else:
            rows = {gap for gap in range(margin + 1)} | {height - size - gap for gap in range(margin + 1)}
            cols = {gap for gap in range(margin + 1)} | {width - size - gap for gap in range(margin + 1)}
            positions = len(rows) * len(cols)
        total += positions * bit_patterns
    return total


@dataclass(frozen=True)
class ModelConfig:
    """One zoo member, as data.

    Attributes
    ----------
    seed : int
        Seeds the initial weights, the training subset and the batch order.
    attack : {"clean", "all_to_one", "one_source"}
    trigger : PatchSpec, BlendSpec or None
        The backdoor's trigger (None for a clean model).
    target : int or None
        The class triggered images are sent to.
    source : int or None
        For a one-source attack, the only class whose triggered images go to ``target``.
    rate : float
        Share of the eligible training images (not of the target class; for a one-source
        attack, of the source class) that carry the trigger and the target label.
    """

    seed: int
    attack: str = "clean"
    trigger: PatchSpec | BlendSpec | None = None
    target: int | None = None
    source: int | None = None
    rate: float = 0.0

    def __post_init__(self) -> None:
        _checks.check_seed(self.seed)
        if self.trigger is not None and not isinstance(self.trigger, (PatchSpec, BlendSpec)):
            raise TypeError(f"trigger must be a PatchSpec, a BlendSpec or None, got {type(self.trigger).__name__}")
        for name in ("target", "source"):
            if getattr(self, name) is not None:
                _checks.check_int(name, getattr(self, name), minimum=0)
        _checks.check_rate("rate", self.rate)
        if self.attack not in ATTACKS:
            raise ValueError(f"attack must be one of {ATTACKS}, got {self.attack!r}")
        if self.attack == "clean":
            if self.trigger is not None or self.target is not None or self.source is not None or self.rate != 0:
                raise ValueError("a clean model has no trigger, target, source or rate")
            return
        if self.trigger is None or self.target is None:
            raise ValueError(f"a {self.attack} model needs a trigger and a target")
        if not 0 < self.rate <= 1:
            raise ValueError(f"rate must be in (0, 1], got {self.rate}")
        if (self.attack == "one_source") != (self.source is not None):
            raise ValueError("a source class is given exactly for one_source attacks")
        if self.source is not None and self.source == self.target:
            raise ValueError(f"source and target must differ, both are {self.target}")

    @property
    def poisoned(self) -> bool:
        """True for a backdoored model."""
        return self.attack != "clean"

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary (for cache keys and records)."""
        record = asdict(self)
        if isinstance(self.trigger, PatchSpec):
            record["trigger"]["bits"] = list(self.trigger.bits)
        elif isinstance(self.trigger, BlendSpec):
            record["trigger"] = {"kind": "blend", "alpha": float(self.trigger.alpha), "seed": self.trigger.seed}
        return record


def zoo_spec(
    *,
    num_clean: int,
    num_poisoned: int,
    triggers: Sequence[PatchSpec | BlendSpec],
    seed: int,
    num_classes: int = 10,
    one_source_share: float = 0.5,
    all_to_one_rate: float = 0.1,
    one_source_rate: float = 0.5,
) -> list[ModelConfig]:
    """A zoo of ``num_clean`` clean and ``num_poisoned`` backdoored models, shuffled.

    The poisoned models cycle through ``triggers``; targets (and sources) are drawn at
    random; a share ``one_source_share`` of them are one-source attacks, the rest all-to-one.
    Model seeds are ``seed * 100_000 + index``, so two zoos with different ``seed`` share none.

    Examples
    --------
    >>> spec = zoo_spec(num_clean=3, num_poisoned=3, triggers=random_patch_triggers(2, seed=0), seed=1)
    >>> sorted(config.attack for config in spec)
    ['all_to_one', 'clean', 'clean', 'clean', 'one_source', 'one_source']
    """
    _checks.check_int("num_clean", num_clean, minimum=0)
    _checks.check_int("num_poisoned", num_poisoned, minimum=0)
    _checks.check_seed(seed)
    _checks.check_int("num_classes", num_classes, minimum=2)
    _checks.check_rate("one_source_share", one_source_share)
    _checks.check_rate("all_to_one_rate", all_to_one_rate, strict_minimum=True)
    _checks.check_rate("one_source_rate", one_source_rate, strict_minimum=True)
    if num_clean < 0 or num_poisoned < 0 or num_clean + num_poisoned == 0:
        raise ValueError(f"need a non-empty zoo, got num_clean={num_clean}, num_poisoned={num_poisoned}")
    if num_poisoned and not triggers:
        raise ValueError("poisoned models need at least one trigger")
    generator = torch.Generator().manual_seed(seed)
    num_one_source = round(num_poisoned * one_source_share)
    configs: list[ModelConfig] = []
    order = torch.randperm(num_clean + num_poisoned, generator=generator).tolist()
    for index in range(num_poisoned):
        trigger = triggers[index % len(triggers)]
        target = int(torch.randint(num_classes, (1,), generator=generator))
        if index < num_one_source:
            source = (target + 1 + int(torch.randint(num_classes - 1, (1,), generator=generator))) % num_classes
            configs.append(ModelConfig(0, "one_source", trigger, target, source, one_source_rate))
        else:
            configs.append(ModelConfig(0, "all_to_one", trigger, target, None, all_to_one_rate))
    configs += [ModelConfig(0) for _ in range(num_clean)]
    shuffled = [configs[i] for i in order]
    return [
        ModelConfig(seed * 100_000 + i, c.attack, c.trigger, c.target, c.source, c.rate)
        for i, c in enumerate(shuffled)
    ]


class ZooCNN(nn.Module):
    """The zoo's small CNN: two 5x5 convolutions (no padding) with ReLU and 2x2 max-pooling,
    then one linear layer: ``C x 28 x 28 -> c1 x 12 x 12 -> c2 x 4 x 4 -> num_classes``.

    Examples
    --------
    >>> ZooCNN()(torch.rand(3, 1, 28, 28)).shape
    torch.Size([3, 10])
    """

    def __init__(self, *, channels: tuple[int, int] = (8, 16), in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        if not isinstance(channels, (tuple, list)) or len(channels) != 2:
            raise TypeError(f"channels must be a pair of ints, got {channels!r}")
        c1, c2 = (_checks.check_int("channels", c, minimum=1) for c in channels)
        _checks.check_int("in_channels", in_channels, minimum=1)
        _checks.check_int("num_classes", num_classes, minimum=2)
        self.channels = (c1, c2)
        self.normalize = Normalize(MNIST_MEAN * in_channels, MNIST_STD * in_channels)
        self.conv1 = nn.Conv2d(in_channels, c1, 5)
        self.conv2 = nn.Conv2d(c1, c2, 5)
        self.fc = nn.Linear(c2 * 4 * 4, num_classes)

    @property
    def architecture(self) -> dict[str, int]:
        """What must agree for models to share a :class:`ModelStack`."""
        return {
            "in_channels": self.conv1.in_channels, "c1": self.channels[0], "c2": self.channels[1],
            "num_classes": self.fc.out_features,
        }

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        hidden = F.max_pool2d(F.relu(self.conv1(self.normalize(images))), 2)
        hidden = F.max_pool2d(F.relu(self.conv2(hidden)), 2)
        return self.fc(hidden.flatten(1))


_PARAMETERS = ("conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "fc.weight", "fc.bias")


class ModelStack(nn.Module):
    """K :class:`ZooCNN` of one architecture, with parameters stacked on a leading axis.

    ``stack(images)`` runs all K models at once with grouped convolutions: for shared
    inputs of shape (B, C, H, W) it returns logits of shape (K, B, num_classes); for
    per-model inputs of shape (K, B, C, H, W) likewise, model k seeing ``images[k]``.

    Examples
    --------
    >>> models = [ZooCNN() for _ in range(3)]
    >>> stack = ModelStack.from_models(models)
    >>> x = torch.rand(2, 1, 28, 28)
    >>> torch.allclose(stack(x)[1], models[1](x), atol=1e-5)
    True
    """

    def __init__(self, parameters: dict[str, torch.Tensor], architecture: dict[str, int]) -> None:
        super().__init__()
        missing = set(_PARAMETERS) - set(parameters)
        if missing:
            raise ValueError(f"parameters miss {sorted(missing)}")
        sizes = {parameters[name].shape[0] for name in _PARAMETERS}
        if len(sizes) != 1:
            raise ValueError(f"stacked parameters disagree on the number of models: {sorted(sizes)}")
        self.architecture = dict(architecture)
        self.size = sizes.pop()
        self.normalize = Normalize(MNIST_MEAN * architecture["in_channels"], MNIST_STD * architecture["in_channels"])
        for name in _PARAMETERS:
            self.register_parameter(name.replace(".", "_"), nn.Parameter(parameters[name].detach().clone()))

    @classmethod
    def from_models(cls, models: Sequence[ZooCNN]) -> ModelStack:
        """Stack ``models`` (at least one, all of one architecture)."""
        if len(models) == 0:
            raise ValueError("cannot stack an empty list of models")
        for model in models:
            if not isinstance(model, ZooCNN):
                raise TypeError(f"models must be ZooCNN instances, got {type(model).__name__}")
        architecture = models[0].architecture
        for index, model in enumerate(models):
            if model.architecture != architecture:
                raise ValueError(
                    f"models of different architectures cannot share a stack: model 0 is {architecture}, "
                    f"model {index} is {model.architecture}"
                )
        states = [model.state_dict() for model in models]
        return cls({name: torch.stack([state[name] for state in states]) for name in _PARAMETERS}, architecture)

    @classmethod
    def initial(cls, seeds: Sequence[int], *, channels: tuple[int, int] = (8, 16), in_channels: int = 1,
                num_classes: int = 10) -> ModelStack:
        """Freshly initialised models, model k drawn with ``torch.manual_seed(seeds[k])``."""
        models = []
        for seed in seeds:
            with train_module.seeded(seed):
                models.append(ZooCNN(channels=channels, in_channels=in_channels, num_classes=num_classes))
        return cls.from_models(models)

    def __len__(self) -> int:
        return self.size

    def parameter_dict(self) -> dict[str, torch.Tensor]:
        """The stacked parameters under their :class:`ZooCNN` names, each (K, ...)."""
        return {name: getattr(self, name.replace(".", "_")) for name in _PARAMETERS}

    def member(self, index: int) -> ZooCNN:
        """Model ``index`` as a standalone :class:`ZooCNN` (a copy, in eval mode)."""
        a = self.architecture
        _checks.check_int("index", index, minimum=-len(self), maximum=len(self) - 1)
        with train_module.seeded(0):  # the constructor's random weights are overwritten: keep the global RNG
            model = ZooCNN(channels=(a["c1"], a["c2"]), in_channels=a["in_channels"], num_classes=a["num_classes"])
        model.load_state_dict({name: value[index].detach().clone() for name, value in self.parameter_dict().items()},
                              strict=False)
        return model.eval()

    def select(self, indices: Sequence[int] | torch.Tensor) -> ModelStack:
        """A new stack of the models at ``indices``."""
        index = torch.as_tensor(indices, dtype=torch.long)
        return ModelStack({name: value.detach()[index] for name, value in self.parameter_dict().items()},
                          self.architecture)

    @staticmethod
    def concatenate(stacks: Sequence[ModelStack]) -> ModelStack:
        """One stack holding the models of ``stacks`` in order."""
        if not stacks:
            raise ValueError("cannot concatenate an empty list of stacks")
        for stack in stacks[1:]:
            if stack.architecture != stacks[0].architecture:
                raise ValueError(f"stacks of different architectures: {stacks[0].architecture} and {stack.architecture}")
        dicts = [stack.parameter_dict() for stack in stacks]
        return ModelStack({name: torch.cat([d[name].detach() for d in dicts]) for name in _PARAMETERS},
                          stacks[0].architecture)

    def forward_one(self, index: int, images: torch.Tensor) -> torch.Tensor:
        """Model ``index`` alone on ``images`` (B, C, H, W): logits (B, num_classes).

        The same computation as ``self.member(index)(images)``, on the stack's own parameters.
        """
        p = {name: value[index] for name, value in self.parameter_dict().items()}
        hidden = F.max_pool2d(F.relu(F.conv2d(self.normalize(images), p["conv1.weight"], p["conv1.bias"])), 2)
        hidden = F.max_pool2d(F.relu(F.conv2d(hidden, p["conv2.weight"], p["conv2.bias"])), 2)
        return F.linear(hidden.flatten(1), p["fc.weight"], p["fc.bias"])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        k, c = self.size, self.architecture["in_channels"]
        if images.ndim == 4:  # shared inputs
            batch = images.shape[0]
            hidden = self.normalize(images).repeat(1, k, 1, 1)
        elif images.ndim == 5 and images.shape[0] == k:
            batch = images.shape[1]
            hidden = self.normalize(images.reshape(k * batch, *images.shape[2:]))
            hidden = hidden.view(k, batch, c, *images.shape[3:]).transpose(0, 1).reshape(batch, k * c, *images.shape[3:])
        else:
            raise ValueError(f"images must have shape (B, C, H, W) or ({k}, B, C, H, W), got {tuple(images.shape)}")
        p = self.parameter_dict()
        hidden = F.conv2d(hidden, p["conv1.weight"].flatten(0, 1), p["conv1.bias"].flatten(), groups=k)
        hidden = F.max_pool2d(F.relu(hidden), 2)
        hidden = F.conv2d(hidden, p["conv2.weight"].flatten(0, 1), p["conv2.bias"].flatten(), groups=k)
        hidden = F.max_pool2d(F.relu(hidden), 2).view(batch, k, -1)
        logits = torch.einsum("bki,koi->kbo", hidden, p["fc.weight"])
        return logits + p["fc.bias"].unsqueeze(1)


@dataclass(frozen=True, eq=False)
class TrainingPlan:
    """What K models see in training: per-model image indices, trigger flags, triggers, targets.

    Attributes
    ----------
    indices : torch.Tensor
        int64 (K, N): model k trains on ``data[indices[k]]``.
    poisoned : torch.Tensor
        bool (K, N): which of those images carry model k's trigger and its target label.
    masks, patterns : torch.Tensor
        (K, C, H, W) triggers (zeros for clean models).
    targets : torch.Tensor
        int64 (K,) target classes (0 for clean models; unused).
    """

    indices: torch.Tensor
    poisoned: torch.Tensor
    masks: torch.Tensor
    patterns: torch.Tensor
    targets: torch.Tensor


def training_plan(configs: Sequence[ModelConfig], data: ImageSet, *, subset_size: int) -> TrainingPlan:
    """Each model's training subset (``subset_size`` images drawn with its seed) and poison flags.

    A poisoned model stamps its trigger on ``round(rate * eligible)`` of the eligible images in
    its subset (those not of the target class; for a one-source attack, those of the source
    class), chosen with its seed, and relabels them to the target; the rest stay clean.

    Examples
    --------
    >>> data = ImageSet(torch.rand(50, 1, 28, 28), torch.arange(50) % 10, [str(i) for i in range(10)])
    >>> trigger = random_patch_triggers(1, seed=0)[0]
    >>> plan = training_plan([ModelConfig(1, "all_to_one", trigger, 3, None, 0.5)], data, subset_size=40)
    >>> plan.indices.shape, int(plan.poisoned.sum())
    (torch.Size([1, 40]), 18)
    """
    if not configs:
        raise ValueError("configs is empty: a zoo needs at least one model")
    if not isinstance(data, ImageSet):
        raise TypeError(f"data must be an ImageSet, got {type(data).__name__}")
    _checks.check_int("subset_size", subset_size, minimum=1, maximum=len(data))
    for config in configs:
        for name in ("target", "source"):
            if getattr(config, name) is not None and getattr(config, name) >= data.num_classes:
                raise ValueError(f"{name} of the model with seed {config.seed} must be a class of data "
                                 f"(< {data.num_classes}), got {getattr(config, name)}")
    shape = data.image_shape
    masks, patterns, targets = _stamps(configs, shape, data.num_classes)
    indices, flags = [], []
    for config in configs:
        generator = torch.Generator().manual_seed(config.seed)
        chosen = torch.randperm(len(data), generator=generator)[:subset_size]
        flag = torch.zeros(subset_size, dtype=torch.bool)
        if config.poisoned:
            labels = data.labels[chosen]
            eligible = labels == config.source if config.attack == "one_source" else labels != config.target
            candidates = eligible.nonzero().flatten()
            count = round(config.rate * len(candidates))
            if count == 0:
                raise ValueError(f"model with seed {config.seed} would poison no image of its subset")
            flag[candidates[torch.randperm(len(candidates), generator=generator)[:count]]] = True
        indices.append(chosen)
        flags.append(flag)
    return TrainingPlan(torch.stack(indices), torch.stack(flags), masks, patterns, targets)


def _stamps(
    configs: Sequence[ModelConfig], shape: tuple[int, int, int], num_classes: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Masks and patterns (K, C, H, W) and targets (K,) of the configs' triggers (zeros if clean)."""
    masks = torch.zeros(len(configs), *shape)
    patterns = torch.zeros(len(configs), *shape)
    targets = torch.zeros(len(configs), dtype=torch.long)
    for k, config in enumerate(configs):
        if not config.poisoned:
            continue
        for name, value in (("target", config.target), ("source", config.source)):
            if value is not None and not 0 <= value < num_classes:
                raise ValueError(f"{name} must be a class index in [0, {num_classes - 1}], got {value}")
        trigger = config.trigger.trigger(shape)
        masks[k] = trigger.mask.expand(shape)
        patterns[k] = trigger.pattern
        targets[k] = config.target
    return masks, patterns, targets


def _batch(plan: TrainingPlan, data: ImageSet, columns: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (K, B, C, H, W) and labels (K, B) of one step, triggers stamped where planned."""
    rows = plan.indices.gather(1, columns)
    flags = plan.poisoned.gather(1, columns)
    images = data.images[rows]
    labels = data.labels[rows]
    stamped = torch.lerp(images, plan.patterns.unsqueeze(1), plan.masks.unsqueeze(1))
    images = torch.where(flags[:, :, None, None, None], stamped, images)
    labels = torch.where(flags, plan.targets.unsqueeze(1), labels)
    return images, labels


def _orders(configs: Sequence[ModelConfig], length: int, epochs: int) -> torch.Tensor:
    """Per-model batch orders, (epochs, K, length), from each model's own generator."""
    orders = []
    for config in configs:
        generator = torch.Generator().manual_seed(config.seed + 1)
        orders.append(torch.stack([torch.randperm(length, generator=generator) for _ in range(epochs)]))
    return torch.stack(orders, dim=1)


def train_stack(
    configs: Sequence[ModelConfig],
    data: ImageSet,
    *,
    subset_size: int,
    epochs: int = 1,
    batch_size: int = 32,
    max_lr: float = 3e-3,
    method: str = "grouped",
    channels: tuple[int, int] = (8, 16),
    progress: bool = False,
) -> ModelStack:
    """Train one :class:`ZooCNN` per config, all with Adam and a one-cycle schedule.

    ``method="grouped"`` trains them as one :class:`ModelStack`, minimising the sum of the
    models' mean cross-entropies; ``method="loop"`` trains them one after the other as plain
    modules. Both see the same batches in the same order and perform the same updates; they
    differ only in floating-point rounding, which training amplifies over many steps.

    Examples
    --------
    >>> data = ImageSet(torch.rand(64, 1, 28, 28), torch.arange(64) % 10, [str(i) for i in range(10)])
    >>> configs = [ModelConfig(0), ModelConfig(1)]
    >>> len(train_stack(configs, data, subset_size=32, batch_size=16))
    2
    """
    if method not in ("grouped", "loop"):
        raise ValueError(f"method must be 'grouped' or 'loop', got {method!r}")
    _checks.check_int("epochs", epochs, minimum=1)
    _checks.check_int("batch_size", batch_size, minimum=1)
    _checks.check_real("max_lr", max_lr, minimum=0.0, strict_minimum=True)
    plan = training_plan(configs, data, subset_size=subset_size)
    orders = _orders(configs, subset_size, epochs)
    steps_per_epoch = math.ceil(subset_size / batch_size)
    stack = ModelStack.initial([c.seed for c in configs], channels=channels, in_channels=data.image_shape[0],
                               num_classes=data.num_classes)
    if method == "grouped":
        learners = [(stack, list(range(len(configs))))]
    else:
        learners = [(stack.member(k).train(), [k]) for k in range(len(configs))]
    for learner, members in tqdm(learners, disable=not progress or len(learners) == 1, leave=False):
        optimizer = torch.optim.Adam(learner.parameters(), lr=max_lr)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=epochs * steps_per_epoch)
        member_index = torch.tensor(members)
        sub_plan = TrainingPlan(*(getattr(plan, f)[member_index] for f in
                                  ("indices", "poisoned", "masks", "patterns", "targets")))
        for epoch in range(epochs):
            for step in range(steps_per_epoch):
                columns = orders[epoch, member_index, step * batch_size:(step + 1) * batch_size]
                images, labels = _batch(sub_plan, data, columns)
                if learner is stack:
                    logits = stack(images)
                else:
                    logits = learner(images[0]).unsqueeze(0)
                loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="sum") / labels.shape[1]
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
    if method == "loop":
        stack = ModelStack.from_models([learner.eval() for learner, _ in learners])
    return stack.requires_grad_(False)


@torch.no_grad()
def evaluate_zoo(
    stack: ModelStack,
    configs: Sequence[ModelConfig],
    test: ImageSet,
    *,
    batch_size: int = 500,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clean accuracy and attack success rate of every model in ``stack`` on ``test``.

    The attack success rate of model k is the share of its eligible test images (not of its
    target class; for a one-source attack, of its source class) that it sends to its target
    once its trigger is stamped on them; it is NaN for clean models.

    Returns
    -------
    (accuracy, attack_success) : two float tensors of shape (K,)
    """
    if len(stack) != len(configs):
        raise ValueError(f"stack holds {len(stack)} models but {len(configs)} configs were given")
    if not isinstance(test, ImageSet):
        raise TypeError(f"test must be an ImageSet, got {type(test).__name__}")
    _checks.check_int("batch_size", batch_size, minimum=1)
    k = len(stack)
    masks, patterns, targets = _stamps(configs, test.image_shape, test.num_classes)
    correct = torch.zeros(k)
    hits = torch.zeros(k)
    eligible_count = torch.zeros(k)
    attacked = torch.tensor([c.poisoned for c in configs])
    sources = torch.tensor([c.source if c.source is not None else -1 for c in configs])
    for start in range(0, len(test), batch_size):
        images = test.images[start:start + batch_size]
        labels = test.labels[start:start + batch_size]
        logits = stack(images)
        if not bool(torch.isfinite(logits).all()):
            raise ValueError("stack returned non-finite logits (NaN or inf): a model's weights are broken")
        correct += (logits.argmax(-1) == labels).float().sum(1)
        if attacked.any():
            stamped = torch.lerp(images.unsqueeze(0), patterns.unsqueeze(1), masks.unsqueeze(1))
            predicted = stack(stamped).argmax(-1)
            eligible = torch.where(sources.unsqueeze(1) >= 0, labels == sources.unsqueeze(1),
                                   labels != targets.unsqueeze(1))
            hits += ((predicted == targets.unsqueeze(1)) & eligible).float().sum(1)
            eligible_count += eligible.float().sum(1)
    success = torch.where(attacked, hits / eligible_count.clamp(min=1), torch.full((k,), float("nan")))
    return correct / len(test), success


@dataclass(frozen=True, eq=False)
class Zoo:
    """A trained, filtered zoo.

    Attributes
    ----------
    stack : ModelStack
        The kept models.
    configs : list of ModelConfig
        Their configs, in stack order.
    labels : torch.Tensor
        int64 (K,): 1 for a backdoored model, 0 for a clean one.
    accuracy, attack_success : torch.Tensor
        float (K,) clean test accuracy and attack success rate (NaN for clean models).
    rejected : list of (ModelConfig, str)
        The models the filter dropped and why.
    seconds : float
        Time it took to train and evaluate the models (recorded when they were built, so a
        zoo read from the cache reports its cold build time).
    groups_built : int
        How many groups of models were trained in this call (the rest came from the cache).
    """

    stack: ModelStack
    configs: list[ModelConfig]
    labels: torch.Tensor
    accuracy: torch.Tensor
    attack_success: torch.Tensor
    rejected: list[tuple[ModelConfig, str]] = field(default_factory=list)
    seconds: float = 0.0
    groups_built: int = 0

    def __len__(self) -> int:
        return len(self.configs)

    def select(self, indices: Sequence[int] | torch.Tensor) -> Zoo:
        """The sub-zoo of the models at ``indices`` (without ``rejected`` and timing records)."""
        index = torch.as_tensor(indices, dtype=torch.long)
        return Zoo(self.stack.select(index), [self.configs[i] for i in index.tolist()], self.labels[index],
                   self.accuracy[index], self.attack_success[index], [], 0.0, 0)


def _rejection(config: ModelConfig, accuracy: float, success: float, min_accuracy: float,
               min_attack_success: float) -> str | None:
    reasons = []
    if accuracy < min_accuracy:
        reasons.append(f"clean accuracy {accuracy:.3f} < {min_accuracy}")
    if config.poisoned and success < min_attack_success:
        reasons.append(f"attack success {success:.3f} < {min_attack_success}")
    return "; ".join(reasons) or None


def train_zoo(
    configs: Sequence[ModelConfig],
    data: ImageSet,
    test: ImageSet,
    *,
    subset_size: int = 12_000,
    epochs: int = 1,
    batch_size: int = 32,
    max_lr: float = 3e-3,
    group_size: int = 20,
    method: str = "grouped",
    min_accuracy: float = 0.9,
    min_attack_success: float = 0.9,
    cache: Any = None,
    progress: bool | None = None,
) -> Zoo:
    """Train every model of ``configs`` on ``data``, evaluate it on ``test``, and filter.

    Models are trained ``group_size`` at a time (see :func:`train_stack`; ``method="grouped"``
    was the faster method in ``benchmarks/zoo.py``). A model is kept if its clean test accuracy
    reaches ``min_accuracy`` and, if backdoored, its attack success rate reaches
    ``min_attack_success``, as in Kolouri et al. (2020). With ``cache`` (an
    :class:`~backdoorlab.cache.ArtifactCache`), each group is stored and read back by a key
    that covers its configs, the settings and this module's source.

    Examples
    --------
    >>> data = ImageSet(torch.rand(64, 1, 28, 28), torch.arange(64) % 10, [str(i) for i in range(10)])
    >>> zoo = train_zoo([ModelConfig(0), ModelConfig(1)], data, data, subset_size=32, min_accuracy=0.0)
    >>> len(zoo), zoo.labels.tolist()
    (2, [0, 0])
    """
    if not configs:
        raise ValueError("configs is empty: a zoo needs at least one model")
    for index, config in enumerate(configs):
        if not isinstance(config, ModelConfig):
            raise TypeError(f"configs[{index}] must be a ModelConfig, got {type(config).__name__}")
    for name, value in (("data", data), ("test", test)):
        if not isinstance(value, ImageSet):
            raise TypeError(f"{name} must be an ImageSet, got {type(value).__name__}")
    _checks.check_int("group_size", group_size, minimum=1)
    _checks.check_real("min_accuracy", min_accuracy)
    _checks.check_real("min_attack_success", min_attack_success)
    settings = {"subset_size": subset_size, "epochs": epochs, "batch_size": batch_size, "max_lr": max_lr,
                "method": method, "data_size": len(data), "test_size": len(test)}
    if cache is not None:  # key on the data actually used, not only its size
        settings["data_digest"] = tensor_digest(data.images, data.labels)
        settings["test_digest"] = tensor_digest(test.images, test.labels)
    stacks, accuracies, successes = [], [], []
    seconds, built = 0.0, 0
    groups = [list(configs[i:i + group_size]) for i in range(0, len(configs), group_size)]
    show = progress if progress is not None else len(groups) > 1
    for group in tqdm(groups, desc="zoo", disable=not show):
        def build(group=group) -> Artifact:
            nonlocal built
            built += 1
            start = time.perf_counter()
            stack = train_stack(group, data, subset_size=subset_size, epochs=epochs, batch_size=batch_size,
                                max_lr=max_lr, method=method)
            accuracy, success = evaluate_zoo(stack, group, test)
            tensors = {**{k: v.detach() for k, v in stack.parameter_dict().items()},
                       "accuracy": accuracy, "attack_success": success}
            return Artifact(tensors, {"architecture": stack.architecture, "seconds": time.perf_counter() - start})

        if cache is None:
            artifact = build()
        else:
            config = {"settings": settings, "models": [c.as_dict() for c in group]}
            artifact = cache.get_or_build("zoo-group", config, build,
                                          sources=[sys.modules[__name__], models_module, triggers_module])
        stacks.append(ModelStack({n: artifact.tensors[n] for n in _PARAMETERS}, artifact.info["architecture"]))
        accuracies.append(artifact.tensors["accuracy"])
        successes.append(artifact.tensors["attack_success"])
        seconds += artifact.info["seconds"]
    stack = ModelStack.concatenate(stacks).requires_grad_(False)
    accuracy, success = torch.cat(accuracies), torch.cat(successes)
    keep, rejected = [], []
    for index, config in enumerate(configs):
        reason = _rejection(config, float(accuracy[index]), float(success[index]), min_accuracy, min_attack_success)
        if reason is None:
            keep.append(index)
        else:
            rejected.append((config, reason))
    if not keep:
        raise ValueError(f"every one of the {len(configs)} models was rejected by the filter")
    index = torch.tensor(keep)
    labels = torch.tensor([int(configs[i].poisoned) for i in keep])
    return Zoo(stack.select(index).requires_grad_(False), [configs[i] for i in keep], labels, accuracy[index],
               success[index], rejected, seconds, built)

