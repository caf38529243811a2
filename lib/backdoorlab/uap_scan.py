"""A backdoor scan built from targeted universal perturbations, batched over a model zoo.

A backdoor is a shortcut to its target class: a small change to any input (the trigger) sends
it there. The UAP chapter's targeted universal perturbation
(:func:`backdoorlab.uap.targeted_universal_perturbation`) measures how reachable a class is
under a fixed budget. This module runs it for every class of every model of a
:class:`~backdoorlab.zoo.ModelStack` at once, and scores a model by how much its most
reachable class stands out from the others, with Neural Cleanse's anomaly index applied to
the unreached shares :math:`1 - s_{k,t}`:

.. math:: a_k = \\frac{\\operatorname{med}_t(1 - s_{k,t}) - \\min_t(1 - s_{k,t})}
          {1.4826 \\, \\operatorname{med}_t \\lvert (1 - s_{k,t}) - \\operatorname{med}_t(1 - s_{k,t}) \\rvert} ,

where :math:`s_{k,t}` is the targeted success rate of model k's perturbation towards class t.
Neural Cleanse asks for the smallest mask that reaches each class; this scan fixes the size
of an additive perturbation and asks how far each class can be reached.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import _checks
from ._stacks import as_stack
from .data import ImageSet
from .neural_cleanse import anomaly_index
from .uap import project_lp
from .zoo import ModelStack, Zoo, ZooCNN

__all__ = ["TargetedScan", "targeted_scan"]


@dataclass(frozen=True, eq=False)
class TargetedScan:
    """Targeted universal perturbations of K models x L classes and each model's anomaly index.

    Attributes
    ----------
    perturbations : torch.Tensor
        (K, L, C, H, W), each within the l_p ball of radius ``budget``.
    success : torch.Tensor
        (K, L) the share of the scan's images not of class t that model k sends to t.
    anomaly_index : torch.Tensor
        (K,) the anomaly index of the most reachable class (the model's score).
    suspect_label : torch.Tensor
        int64 (K,): the most reachable class.
    labels : tuple of int
        The L classes, in the order of the second axis.
    seconds : float
        Wall time.
    """

    perturbations: torch.Tensor
    success: torch.Tensor
    anomaly_index: torch.Tensor
    suspect_label: torch.Tensor
    labels: tuple[int, ...]
    seconds: float


def _scan_chunk(stack: ModelStack, images: torch.Tensor, image_labels: torch.Tensor, classes: torch.Tensor, *,
                budget: float, p: float, steps: int, step_size: float, batch_size: int,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    k, num_classes = len(stack), len(classes)
    shape = images.shape[1:]
    v = torch.zeros(k, num_classes, *shape)
    target = classes.view(1, num_classes, 1).expand(k, num_classes, batch_size)
    for _ in range(steps):
        rows = torch.randint(len(images), (batch_size,), generator=generator)
        v.requires_grad_(True)
        x = (images[rows].unsqueeze(0).unsqueeze(0) + v.unsqueeze(2)).clamp(0.0, 1.0)  # (K, L, B, C, H, W)
        logits = stack(x.flatten(1, 2)).view(k, num_classes, batch_size, -1)
        loss = F.cross_entropy(logits.flatten(0, 2), target.flatten(), reduction="sum")
        (gradient,) = torch.autograd.grad(loss, v)
        with torch.no_grad():
            if p == math.inf:
                step = gradient.sign()
            else:
                norms = gradient.flatten(2).norm(dim=2).clamp(min=1e-12)
                step = gradient / norms.view(k, num_classes, 1, 1, 1)
            v = project_lp((v - step_size * step).flatten(0, 1), budget, p).view_as(v)
    v = v.detach()
    hits = torch.zeros(k, num_classes)
    eligible = torch.zeros(num_classes)
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x, y = images[start:start + batch_size], image_labels[start:start + batch_size]
            stamped = (x.unsqueeze(0).unsqueeze(0) + v.unsqueeze(2)).clamp(0.0, 1.0)
            predicted = stack(stamped.flatten(1, 2)).view(k, num_classes, len(x), -1).argmax(-1)
            counts = y.unsqueeze(0) != classes.unsqueeze(1)  # (L, B): images not already of class t
            hits += ((predicted == classes.view(1, -1, 1)) & counts.unsqueeze(0)).float().sum(2)
            eligible += counts.float().sum(1)
    return v, hits / eligible.clamp(min=1)


def targeted_scan(
    models: ModelStack | Zoo | Sequence[ZooCNN],
    data: ImageSet,
    *,
    budget: float = 3.0,
    p: float = 2,
    steps: int = 30,
    step_size: float | None = None,
    batch_size: int = 32,
    labels: Sequence[int] | None = None,
    model_chunk: int = 20,
    seed: int = 0,
) -> TargetedScan:
    """Targeted universal perturbations towards every class of every model, and the anomaly index.

    For each model k and class t, ``steps`` steps of projected steepest descent on the summed
    cross-entropy towards t of a random batch of ``batch_size`` images of ``data``, the
    update of :func:`backdoorlab.uap.targeted_universal_perturbation`:
    :math:`v \\leftarrow P_{p,\\xi}(v - \\alpha\\, \\mathrm{sign}(g))` for :math:`p = \\infty`,
    :math:`v \\leftarrow P_{p,\\xi}(v - \\alpha\\, g / \\lVert g \\rVert_2)` for :math:`p = 2`, with
    :math:`\\xi` = ``budget`` and :math:`\\alpha` = ``step_size`` (default :math:`\\xi / 10`).
    The success rate of each perturbation is measured on all images of ``data`` not of class
    t; the anomaly index is computed from the unreached shares as in the module's equation.
    All models and classes of a chunk of ``model_chunk`` models run as one batch, and the
    image batches are drawn from ``seed`` (the same for every chunk).

    The defaults were fixed before any zoo was scanned: an l2 budget of 3.0 (the norm of a
    fully white 3x3 patch on black is 3), 30 steps of 32 images.

    Parameters
    ----------
    models : ModelStack, Zoo or sequence of ZooCNN
        The K models; they take images in [0, 1].
    data : ImageSet
        Clean labelled images (the defender's small clean set).
    labels : sequence of int, optional
        The classes to scan (default all); at least 2.

    Returns
    -------
    TargetedScan

    Examples
    --------
    >>> data = ImageSet(torch.rand(16, 1, 28, 28), torch.arange(16) % 10, tuple("0123456789"))
    >>> scan = targeted_scan(ModelStack.initial([0, 1]), data, steps=2, batch_size=4)
    >>> scan.success.shape, scan.anomaly_index.shape
    (torch.Size([2, 10]), torch.Size([2]))
    """
    stack = as_stack(models)
    for name, value in stack.parameter_dict().items():
        if not bool(torch.isfinite(value).all()):
            raise ValueError(f"models have non-finite weights ({name}): a model's weights are broken")
    if not isinstance(data, ImageSet):
        raise TypeError(f"data must be an ImageSet, got {type(data).__name__}")
    if len(data) == 0:
        raise ValueError("data is empty")
    if tuple(data.image_shape) != (stack.architecture["in_channels"], 28, 28):
        raise ValueError(f"data has images of shape {tuple(data.image_shape)}, the models take "
                         f"({stack.architecture['in_channels']}, 28, 28)")
    budget = _checks.check_real("budget", budget, minimum=0.0, strict_minimum=True)
    if isinstance(p, bool) or p not in (2, math.inf):
        raise ValueError(f"p must be 2 or math.inf, got {p!r}")
    _checks.check_int("steps", steps, minimum=1)
    _checks.check_int("batch_size", batch_size, minimum=1)
    _checks.check_int("model_chunk", model_chunk, minimum=1)
    step_size = budget / 10 if step_size is None else _checks.check_real(
        "step_size", step_size, minimum=0.0, strict_minimum=True)
    num_classes = stack.architecture["num_classes"]
    if labels is None:
        labels = list(range(num_classes))
    if isinstance(labels, (str, bytes)) or not isinstance(labels, Sequence):
        raise TypeError(f"labels must be a sequence of ints, got {type(labels).__name__}")
    for label in labels:
        _checks.check_int("labels", label, minimum=0, maximum=num_classes - 1)
    if len(labels) < 2 or len(set(labels)) != len(labels):
        raise ValueError(f"labels must hold at least 2 distinct classes, got {list(labels)}")
    seed = _checks.check_seed(seed)
    classes = torch.tensor(list(labels))
    start = time.perf_counter()
    parts = []
    for begin in range(0, len(stack), model_chunk):
        chunk = stack.select(torch.arange(begin, min(begin + model_chunk, len(stack))))
        parts.append(_scan_chunk(chunk, data.images, data.labels, classes, budget=budget, p=float(p), steps=steps,
                                 step_size=step_size, batch_size=batch_size,
                                 generator=torch.Generator().manual_seed(seed)))
    perturbations = torch.cat([part[0] for part in parts])
    success = torch.cat([part[1] for part in parts])
    return TargetedScan(perturbations, success, anomaly_index(1.0 - success), classes[success.argmax(1)],
                        tuple(int(c) for c in classes), time.perf_counter() - start)
