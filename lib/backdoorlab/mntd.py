"""A one-class meta-classifier in the spirit of MNTD: a backdoor detector trained on clean models only.

Meta Neural Trojan Detection (Xu et al., IEEE S&P 2021) feeds a set of query inputs to a model
and classifies the model from its outputs, tuning the queries jointly with the classifier. Its
one-class variant needs no backdoored model at all: it learns what clean models answer, and
flags a model whose answers fall outside. ULP ({mod}`backdoorlab.ulp`) is the two-class
relative; this module lets the two be compared on one zoo.

The one-class objective is that of a one-class neural network (Chalapathy et al. 2018), as in
the MNTD authors' code: with query images :math:`q_1, \\dots, q_Q`, a model's features
:math:`\\phi(f) = (f(q_1), \\dots, f(q_Q)) \\in \\mathbb{R}^{Q K}` (logits), a hidden layer
:math:`h = \\mathrm{ReLU}(V \\phi + b)` and the score :math:`s(f) = \\langle w, h \\rangle`, the
queries, :math:`V`, :math:`b` and :math:`w` minimise over clean models :math:`f_1, \\dots, f_n`

.. math::
   \\tfrac12 \\lVert w \\rVert^2 + \\tfrac12 \\lVert V \\rVert_F^2 + \\tfrac12 \\lVert b \\rVert^2
   + \\frac{1}{\\nu} \\frac1n \\sum_i \\max(0, r - s(f_i)) - r,

and the radius :math:`r` is set after each epoch to the :math:`\\nu`-quantile of the training
models' scores, so that about a share :math:`\\nu` of them lies below it. A model is scored
:math:`r - s(f)`: positive outside the region of clean models, larger meaning more suspicious.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from . import _checks
from ._stacks import as_stack
from .zoo import ModelStack, Zoo, ZooCNN

__all__ = ["OneClassMetaClassifier", "OneClassTraining", "one_class_objective", "train_one_class"]


class OneClassMetaClassifier(nn.Module):
    """Q query images and a one-class head over the logits models return on them.

    Parameters
    ----------
    num_queries : int
        Q >= 1 (the MNTD authors use 10).
    image_shape : tuple (C, H, W)
        Shape of the models' inputs.
    num_classes : int
        Number of logits of each model.
    hidden : int
        Width of the hidden layer (the authors use 20).
    nu : float
        In (0, 1): the share of training models left outside the radius (the authors use 0.1).
    seed : int
        Seeds the initial queries (uniform in [0, 1]) and head.

    Examples
    --------
    >>> detector = OneClassMetaClassifier(num_queries=3, seed=0)
    >>> detector.score(ModelStack.initial([0, 1])).shape
    torch.Size([2])
    """

    def __init__(
        self,
        *,
        num_queries: int = 10,
        image_shape: tuple[int, int, int] = (1, 28, 28),
        num_classes: int = 10,
        hidden: int = 20,
        nu: float = 0.1,
        seed: int = 0,
    ) -> None:
        super().__init__()
        _checks.check_int("num_queries", num_queries, minimum=1)
        _checks.check_int("num_classes", num_classes, minimum=2)
        _checks.check_int("hidden", hidden, minimum=1)
        _checks.check_real("nu", nu, minimum=0.0, maximum=1.0, strict_minimum=True, strict_maximum=True)
        if not isinstance(image_shape, tuple) or len(image_shape) != 3:
            raise TypeError(f"image_shape must be a tuple (C, H, W), got {image_shape!r}")
        for size in image_shape:
            _checks.check_int("image_shape", size, minimum=1)
        generator = torch.Generator().manual_seed(_checks.check_seed(seed))
        features = num_queries * num_classes
        self.queries = nn.Parameter(torch.rand(num_queries, *image_shape, generator=generator))
        bound = features ** -0.5
        with torch.random.fork_rng(devices=[]):  # its random initial weights are overwritten below
            self.hidden = nn.Linear(features, hidden)
        with torch.no_grad():
            self.hidden.weight.copy_((torch.rand(hidden, features, generator=generator) * 2 - 1) * bound)
            self.hidden.bias.copy_((torch.rand(hidden, generator=generator) * 2 - 1) * bound)
        self.w = nn.Parameter((torch.rand(hidden, generator=generator) * 2 - 1) * hidden ** -0.5)
        self.register_buffer("radius", torch.zeros(()))
        self.nu = float(nu)
        self.num_classes = num_classes

    def features(self, stack: ModelStack) -> torch.Tensor:
        """The logits of each model on the queries, concatenated: (K, Q * num_classes)."""
        if stack.architecture["num_classes"] != self.num_classes:
            raise ValueError(
                f"models have {stack.architecture['num_classes']} classes, the detector expects {self.num_classes}"
            )
        return stack(self.queries).flatten(1)

    def forward(self, stack: ModelStack) -> torch.Tensor:
        """The one-class score s(f) of each model of ``stack``: (K,); large means like the clean models."""
        return F.relu(self.hidden(self.features(stack))) @ self.w

    @torch.no_grad()
    def score(self, models: ModelStack | Zoo | Sequence[ZooCNN]) -> torch.Tensor:
        """Suspicion r - s(f) of each model: (K,); positive outside the clean models' region."""
        return self.radius - self(as_stack(models))


def one_class_objective(detector: OneClassMetaClassifier, stack: ModelStack) -> torch.Tensor:
    """The one-class objective on a batch of clean models (the module's equation), radius fixed."""
    if not isinstance(detector, OneClassMetaClassifier):
        raise TypeError(f"detector must be a OneClassMetaClassifier, got {type(detector).__name__}")
    scores = detector(as_stack(stack))
    penalty = 0.5 * (detector.w.square().sum() + detector.hidden.weight.square().sum()
                     + detector.hidden.bias.square().sum())
    return penalty + F.relu(detector.radius - scores).mean() / detector.nu - detector.radius


@dataclass(frozen=True, eq=False)
class OneClassTraining:
    """A trained one-class detector and its record.

    Attributes
    ----------
    detector : OneClassMetaClassifier
        The detector after the last epoch, its radius the nu-quantile of the training scores.
    history : dict of str to list of float
        Per epoch: ``loss`` (mean objective) and ``radius``.
    seconds : float
        Training time.
    """

    detector: OneClassMetaClassifier
    history: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0


def train_one_class(
    detector: OneClassMetaClassifier,
    models: ModelStack | Zoo,
    *,
    epochs: int = 30,
    batch_size: int = 16,
    lr: float = 1e-3,
    query_lr: float = 0.03,
    seed: int = 0,
) -> OneClassTraining:
    """Train ``detector`` on clean models only (queries and head jointly), returning a copy.

    Each epoch visits the models in a seeded random order in batches of ``batch_size``, taking
    one Adam step per batch on :func:`one_class_objective` (learning rate ``lr`` for the head,
    ``query_lr`` for the queries, which are clamped to [0, 1] after each step); then the radius
    is set to the nu-quantile of all training models' scores.

    Parameters
    ----------
    models : ModelStack or Zoo
        Clean models; a Zoo must hold no backdoored model (its labels must all be 0).

    Examples
    --------
    >>> run = train_one_class(OneClassMetaClassifier(num_queries=2), ModelStack.initial(range(4)), epochs=2)
    >>> len(run.history["loss"]), bool(((run.detector.queries >= 0) & (run.detector.queries <= 1)).all())
    (2, True)
    """
    if not isinstance(detector, OneClassMetaClassifier):
        raise TypeError(f"detector must be a OneClassMetaClassifier, got {type(detector).__name__}")
    if isinstance(models, Zoo):
        if bool((models.labels != 0).any()):
            raise ValueError("models must be clean: the one-class detector trains on clean models only, "
                             f"but {int((models.labels != 0).sum())} are labelled backdoored")
        stack = models.stack
    elif isinstance(models, ModelStack):
        stack = models
    else:
        raise TypeError(f"models must be a ModelStack or a Zoo of clean models, got {type(models).__name__}")
    if len(stack) < 2:
        raise ValueError(f"models must hold at least 2 models, got {len(stack)}")
    _checks.check_int("epochs", epochs, minimum=1)
    _checks.check_int("batch_size", batch_size, minimum=1)
    _checks.check_real("lr", lr, minimum=0.0, strict_minimum=True)
    _checks.check_real("query_lr", query_lr, minimum=0.0, strict_minimum=True)
    generator = torch.Generator().manual_seed(_checks.check_seed(seed))
    detector = copy.deepcopy(detector)
    optimizer = torch.optim.Adam([
        {"params": [detector.queries], "lr": query_lr},
        {"params": [detector.w, *detector.hidden.parameters()], "lr": lr},
    ])
    history: dict[str, list[float]] = {"loss": [], "radius": []}
    start = time.perf_counter()
    with torch.no_grad():
        detector.radius.copy_(torch.quantile(detector(stack), detector.nu))
    for _ in range(epochs):
        order = torch.randperm(len(stack), generator=generator)
        total = 0.0
        for begin in range(0, len(stack), batch_size):
            batch = order[begin:begin + batch_size]
            loss = one_class_objective(detector, stack.select(batch))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                detector.queries.clamp_(0.0, 1.0)
            total += loss.item() * len(batch)
        with torch.no_grad():
            detector.radius.copy_(torch.quantile(detector(stack), detector.nu))
        history["loss"].append(total / len(stack))
        history["radius"].append(float(detector.radius))
    return OneClassTraining(detector, history, time.perf_counter() - start)
