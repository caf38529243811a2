"""Universal adversarial perturbations: DeepFool, the l_p projection, Algorithm 1 and SGD.

A *universal adversarial perturbation* (Moosavi-Dezfooli et al. (2017)) is one image-sized vector :math:`v` that changes
the prediction :math:`\\hat k(x)` of a classifier on most images of a distribution
:math:`\\mu` while staying small:

.. math::

    \\|v\\|_p \\le \\xi
    \\quad\\text{and}\\quad
    \\mathbb{P}_{x \\sim \\mu}\\bigl[\\hat k(x + v) \\ne \\hat k(x)\\bigr] \\ge 1 - \\delta .

The paper builds :math:`v` by passing over a set :math:`X` of images and, for every image not
yet fooled, adding the smallest perturbation that DeepFool (Moosavi-Dezfooli et al. (2016)) finds from :math:`x_i + v`,
then projecting back onto the :math:`\\ell_p` ball of radius :math:`\\xi`
(:func:`universal_perturbation`). :func:`sgd_universal_perturbation` is the projected-gradient
alternative of Shafahi et al. (2020). :func:`fooling_rate` measures the share of images whose prediction
changes, against the clean prediction as in the paper. :func:`targeted_universal_perturbation`
asks for one class instead (measured by :func:`targeted_success_rate`), and
:func:`span_perturbation` draws the random vectors in a subspace that the paper's test of its
explanation compares with random vectors in the whole space.

Clamping convention (the whole module)
    Images are float tensors in [0, 1] of shape (N, C, H, W) and budgets are in that unit. A
    universal perturbation :math:`v` is a signed image in the ball
    :math:`\\|v\\|_p \\le \\xi`, not clamped itself; the perturbed image is always
    ``clamp(x + v, 0, 1)``: in :func:`fooling_rate`, in the "already fooled?" test of
    Algorithm 1 and as the point DeepFool starts from there, and in the SGD loss. DeepFool's
    own iterates are not clamped by default, as in the paper (``deepfool(..., clamp=True)``
    keeps them in [0, 1]). Within Algorithm 1 the unclamped DeepFool did better: on the book's
    clean MNIST CNN with :math:`\\xi = 0.3` (l_inf), one pass over 1,000 training images and two
    seeds, it gave fooling rates on the test set of 0.44 and 0.43 against 0.29 and 0.35 with
    clamped iterates, in half the time: clamped iterates stall at the faces of the box and need
    more steps (7 to 11 instead of 1 to 3 per image from x).

References
----------
- S.-M. Moosavi-Dezfooli, A. Fawzi and P. Frossard, "DeepFool: a simple and accurate
  method to fool deep neural networks", CVPR 2016.
- S.-M. Moosavi-Dezfooli, A. Fawzi, O. Fawzi and P. Frossard, "Universal adversarial
  perturbations", CVPR 2017.
- A. Shafahi, M. Najibi, Z. Xu, J. Dickerson, L. S. Davis and T. Goldstein, "Universal
  adversarial training", AAAI 2020.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import _checks
from .data import check_images

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "STEP_MARGIN",
    "DeepFoolResult",
    "TargetedUAPResult",
    "UAPResult",
    "checkerboard",
    "deepfool",
    "fooling_rate",
    "project_lp",
    "random_perturbation",
    "sgd_universal_perturbation",
    "span_perturbation",
    "targeted_success_rate",
    "targeted_universal_perturbation",
    "universal_perturbation",
]

DEFAULT_BATCH_SIZE: int = 1024
"""Images per forward pass when predicting over a whole set (fooling rates)."""

STEP_MARGIN: float = 1e-4
"""Added to the distance to the linearised boundary in each DeepFool step, as in the authors'
code, so that a step with ``overshoot=0`` still leaves the boundary (in the input unit)."""

_BATCHED_BACKWARD_MAX_IMAGES = 2
"""Up to this many images, the class-difference gradients come from one vmapped backward pass
(``torch.autograd.grad(..., is_grads_batched=True)``); above it, from one backward pass per
class over the whole batch. On 2 CPU cores with a small MNIST CNN and 9 class differences,
the vmapped pass took 1.7 ms against 2.4 ms for the loop at 1 image, but 14 against 11 ms at
10 images and 134 against 93 ms at 100; ``torch.func.vmap(jacrev(.))`` was slower than both
beyond 2 images (16 and 175 ms)."""


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, eq=False)
class DeepFoolResult:
    """DeepFool perturbations of a batch of images.

    Attributes
    ----------
    perturbations : Tensor
        Shape (N, C, H, W), dtype of the images: the total perturbation
        :math:`(1 + \\text{overshoot}) \\sum_i r_i`; ``x + r`` may leave [0, 1]. With
        ``clamp=True`` it is ``clamp(x + (1 + overshoot) sum_i r_i, 0, 1) - x`` instead, so
        ``x + r`` is in [0, 1].
    iterations : Tensor
        Shape (N,), int64: linearisation steps used, in ``0..max_iter``.
    converged : Tensor
        Shape (N,), bool: the label of ``x + r`` differs from ``original_labels``.
    original_labels : Tensor
        Shape (N,), int64: the prediction on the unperturbed images.
    new_labels : Tensor
        Shape (N,), int64: the prediction on ``x + r``.
    """

    perturbations: Tensor
    iterations: Tensor
    converged: Tensor
    original_labels: Tensor
    new_labels: Tensor


@dataclass(frozen=True, eq=False)
class UAPResult:
    """A universal perturbation and how it was reached.

    Attributes
    ----------
    perturbation : Tensor
        Shape (C, H, W), dtype of the images, with ``||perturbation||_p <= xi``; signed, not
        clamped. Apply it as ``(x + perturbation).clamp(0, 1)``.
    fooling_rate : float
        In [0, 1]: the fooling rate on the images it was computed from, after the last pass
        (or epoch).
    history : tuple of float
        The fooling rate on those images after each pass (or epoch); its length is the number
        of passes made.
    converged : bool
        Whether the fooling rate reached ``1 - delta`` (then the passes stopped early).
    """

    perturbation: Tensor
    fooling_rate: float
    history: tuple[float, ...]
    converged: bool


@dataclass(frozen=True, eq=False)
class TargetedUAPResult:
    """A targeted universal perturbation and how it was reached.

    Attributes
    ----------
    perturbation : Tensor
        Shape (C, H, W), with ``||perturbation||_p <= xi``; apply it as
        ``(x + perturbation).clamp(0, 1)``.
    target : int
        The class the perturbation aims at.
    success_rate : float
        In [0, 1]: :func:`targeted_success_rate` on the images it was computed from, after the
        last epoch.
    history : tuple of float
        The success rate on those images after each epoch.
    """

    perturbation: Tensor
    target: int
    success_rate: float
    history: tuple[float, ...]


# --------------------------------------------------------------------------- input checks


def _check_model(model: object) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")


def _check_images(images: object, *, name: str = "images") -> None:
    """:func:`backdoorlab.data.check_images` (floating, (N, C, H, W), in [0, 1]), and N >= 1."""
    check_images(images, name=name)
    if images.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one image, got shape {tuple(images.shape)}")


def _check_perturbation(v: object, image_shape: tuple[int, ...], *, name: str = "v") -> None:
    if not isinstance(v, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(v).__name__}")
    if not v.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype, got {v.dtype}")
    if tuple(v.shape) != image_shape:
        raise ValueError(f"{name} must have shape {image_shape} (C, H, W), got {tuple(v.shape)}")
    if not torch.isfinite(v).all():
        raise ValueError(f"{name} must be finite")


def _check_real(name: str, value: object, *, positive: bool = False,
                nonnegative: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or (positive and value <= 0) or (nonnegative and value < 0):
        kind = "positive" if positive else "non-negative" if nonnegative else "finite"
        raise ValueError(f"{name} must be a finite {kind} number, got {value!r}")
    return value


def _check_int(name: str, value: object, *, minimum: int) -> int:
    return _checks.check_int(name, value, minimum=minimum)


def _check_p(p: object) -> float:
    if isinstance(p, bool) or not isinstance(p, numbers.Real):
        raise TypeError(f"p must be 2 or math.inf, got {p!r}")
    if float(p) not in (2.0, math.inf):
        raise ValueError(f"p must be 2 or math.inf, got {p!r}")
    return float(p)


def _check_delta(delta: object) -> float:
    delta = _check_real("delta", delta)
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    return delta


def _check_seed(seed: object) -> int:
    return _checks.check_seed(seed)


# --------------------------------------------------------------------------- small helpers


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode, then restore each one's own flag."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


@contextlib.contextmanager
def _torch_threads(num_threads: int | None) -> Iterator[None]:
    """Run the block with ``num_threads`` PyTorch intra-op threads (None: unchanged)."""
    previous = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _perturb(images: Tensor, v: Tensor) -> Tensor:
    """The module's perturbed image: clamp(x + v, 0, 1); v broadcasts over the batch."""
    return (images + v).clamp(0.0, 1.0)


@torch.no_grad()
def _predict(model: nn.Module, images: Tensor, *, batch_size: int) -> Tensor:
    """Predicted labels, shape (N,), int64; images in chunks of batch_size."""
    return torch.cat([_checks.check_logits(model(chunk), num_images=len(chunk)).argmax(dim=1)
                      for chunk in images.split(batch_size)])


@torch.no_grad()
def _fooled_share(model: nn.Module, images: Tensor, v: Tensor, clean_labels: Tensor, *,
                  batch_size: int) -> float:
    """Share of images with argmax model(clamp(x + v)) != clean_labels."""
    fooled = 0
    for chunk, labels in zip(images.split(batch_size), clean_labels.split(batch_size)):
        logits = _checks.check_logits(model(_perturb(chunk, v)), num_images=len(chunk))
        fooled += (logits.argmax(dim=1) != labels).sum().item()
    return fooled / images.shape[0]


def _lp_norms(v: Tensor, p: float) -> Tensor:
    """l_p norm of each perturbation: a 0-d tensor for (C, H, W), shape (K,) for (K, C, H, W)."""
    flat = v.flatten(start_dim=v.ndim - 3)
    return flat.abs().amax(dim=-1) if p == math.inf else flat.norm(dim=-1)


# --------------------------------------------------------------------------- projection


def project_lp(v: Tensor, xi: float, p: float) -> Tensor:
    """Project perturbations onto the l_p ball of radius ``xi``: the paper's :math:`P_{p,\\xi}`.

    .. math::

        P_{p,\\xi}(v) = \\arg\\min_{v'} \\|v - v'\\|_2
        \\quad\\text{subject to}\\quad \\|v'\\|_p \\le \\xi ,

    which has the closed forms

    .. math::

        P_{2,\\xi}(v) = v \\min\\Bigl(1, \\frac{\\xi}{\\|v\\|_2}\\Bigr), \\qquad
        P_{\\infty,\\xi}(v) = \\operatorname{sign}(v) \\min(|v|, \\xi)
        \\ \\text{(elementwise)} .

    Parameters
    ----------
    v : Tensor
        One perturbation of shape (C, H, W), or K of them stacked, shape (K, C, H, W); each is
        projected on its own. Any real values.
    xi : float
        Radius of the ball, > 0, in the unit of the images.
    p : {2, math.inf}
        The norm.

    Returns
    -------
    Tensor
        Same shape and dtype as ``v``, each perturbation with ``||.||_p <= xi`` (up to
        rounding for p = 2). A new tensor; ``v`` is not modified. Points inside the ball are
        returned unchanged, and projecting twice equals projecting once.

    Raises
    ------
    TypeError
        If ``v`` is not a floating tensor, or ``xi`` or ``p`` is not a number.
    ValueError
        If ``v`` is not 3-D or 4-D, ``xi <= 0``, or ``p`` is not 2 or inf.

    Examples
    --------
    >>> import math, torch
    >>> from backdoorlab.uap import project_lp
    >>> v = torch.tensor([[[3.0, -4.0]]])          # (C, H, W) = (1, 1, 2), ||v||_2 = 5
    >>> project_lp(v, 1.0, 2)
    tensor([[[ 0.6000, -0.8000]]])
    >>> project_lp(v, 1.0, math.inf)
    tensor([[[ 1., -1.]]])
    """
    if not isinstance(v, Tensor) or not v.is_floating_point():
        raise TypeError(f"v must be a floating torch.Tensor, got {type(v).__name__}"
                        + (f" of dtype {v.dtype}" if isinstance(v, Tensor) else ""))
    if v.ndim not in (3, 4):
        raise ValueError(f"v must have shape (C, H, W) or (K, C, H, W), got {tuple(v.shape)}")
    xi = _check_real("xi", xi, positive=True)
    p = _check_p(p)
    if p == math.inf:
        return v.clamp(-xi, xi)  # = sign(v) * min(|v|, xi)
    norms = _lp_norms(v, 2.0)
    # min(1, xi / ||v||); a zero perturbation keeps factor 1
    factor = (xi / norms.clamp_min(torch.finfo(v.dtype).tiny)).clamp(max=1.0)
    return v * factor.reshape(factor.shape + (1, 1, 1))


# --------------------------------------------------------------------------- DeepFool


def _class_difference_gradients(differences: Tensor, inputs: Tensor) -> Tensor:
    """Gradients of each column of ``differences`` (B, M) w.r.t. ``inputs`` (A, C, H, W).

    Each row of ``differences`` depends on one row of ``inputs`` (an eval-mode model treats
    images independently), so the gradient of a column's sum gives every image's gradient at
    once. Returns (A, M, C, H, W), zero for the rows of ``inputs`` that no row depends on.
    """
    num_images, num_diffs = differences.shape
    if inputs.shape[0] <= _BATCHED_BACKWARD_MAX_IMAGES:  # the backward pass runs over all inputs
        # one-hot cotangents, shape (M, B, M): one vmapped backward pass for all columns
        basis = torch.eye(num_diffs, dtype=differences.dtype, device=differences.device)
        cotangents = basis.unsqueeze(1).expand(num_diffs, num_images, num_diffs)
        (grads,) = torch.autograd.grad(differences, inputs, grad_outputs=cotangents,
                                       is_grads_batched=True)
    else:
        grads = torch.stack([
            torch.autograd.grad(differences[:, j].sum(), inputs, retain_graph=j < num_diffs - 1)[0]
            for j in range(num_diffs)
        ])
    return grads.transpose(0, 1)


def _candidate_classes(scores: Tensor, labels: Tensor, num_classes: int | None) -> Tensor:
    """(N, k): each image's label, then the k - 1 other classes with the highest scores."""
    k = scores.shape[1] if num_classes is None else num_classes
    if not 2 <= k <= scores.shape[1]:
        raise ValueError(f"num_classes must be in 2..{scores.shape[1]} (the model's outputs), "
                         f"got {num_classes!r}")
    others = scores.scatter(1, labels[:, None], -math.inf).topk(k - 1, dim=1).indices
    return torch.cat([labels[:, None], others], dim=1)


def _linearised_step(differences: Tensor, w: Tensor) -> Tensor:
    """DeepFool's step r_i from f'_k (B, M) and w'_k (B, M, C, H, W); returns (B, C, H, W).

    r_i = (|f'_l| / ||w'_l|| + margin) w'_l / ||w'_l|| for the nearest linearised boundary l;
    a class with zero gradient is never the nearest, and the step is zero if all are.
    """
    norms = w.flatten(start_dim=2).norm(dim=2)  # (B, M)
    distances = torch.where(norms > 0, differences.abs() / norms, math.inf)
    nearest = distances.argmin(dim=1)
    batch = torch.arange(w.shape[0], device=w.device)
    distance, norm = distances[batch, nearest], norms[batch, nearest]
    length = torch.where(torch.isfinite(distance),
                         (distance + STEP_MARGIN) / norm.clamp_min(torch.finfo(w.dtype).tiny), 0.0)
    return length.reshape(-1, 1, 1, 1) * w[batch, nearest]


def _deepfool(model: nn.Module, images: Tensor, original_labels: Tensor | None, *,
              num_classes: int | None, overshoot: float, max_iter: int,
              clamp: bool) -> DeepFoolResult:
    """Multiclass DeepFool on a batch (inputs already checked, model already in eval mode).

    ``original_labels`` are the labels to move away from (default: the prediction on
    ``images``); images whose prediction already differs are returned at once with
    ``iterations == 0`` and ``converged`` True.
    """
    n, device, scale = images.shape[0], images.device, 1.0 + overshoot
    r_total = torch.zeros_like(images)  # sum of the steps r_i, (N, C, H, W)
    iterations = torch.zeros(n, dtype=torch.long, device=device)
    converged = torch.zeros(n, dtype=torch.bool, device=device)
    new_labels = torch.empty(n, dtype=torch.long, device=device)
    active = torch.arange(n, device=device)  # images whose label has not flipped yet
    candidates = None  # (N, k), fixed at the start as in the authors' code
    for step in range(max_iter + 1):
        point = images[active] + scale * r_total[active]  # the paper's x_i = x + (1 + o) r_tot
        point = (point.clamp(0.0, 1.0) if clamp else point).requires_grad_(True)
        with torch.enable_grad():
            logits = model(point)  # (A, K)
        _checks.check_logits(logits.detach(), num_images=len(point))
        scores = logits.detach()
        if candidates is None:
            original_labels = scores.argmax(dim=1) if original_labels is None else original_labels
            candidates = _candidate_classes(scores, original_labels, num_classes)
        predicted = scores.argmax(dim=1)
        new_labels[active] = predicted
        flipped = predicted != original_labels[active]
        converged[active[flipped]] = True
        if step == max_iter or bool(flipped.all()):
            break
        rows = (~flipped).nonzero().squeeze(1)  # rows of `point` still to move
        with torch.enable_grad():
            chosen = logits[rows].gather(1, candidates[active[rows]])  # (B, k) candidate logits
            differences = chosen[:, 1:] - chosen[:, :1]  # f'_k = f_k - f_label, (B, k - 1)
        w = _class_difference_gradients(differences, point)[rows]  # w'_k, (B, k - 1, C, H, W)
        moving = active[rows]
        r_total[moving] += _linearised_step(differences.detach(), w)
        iterations[moving] += 1
        active = moving
    perturbations = scale * r_total
    if clamp:
        perturbations = (images + perturbations).clamp(0.0, 1.0) - images
    return DeepFoolResult(perturbations=perturbations, iterations=iterations, converged=converged,
                          original_labels=original_labels, new_labels=new_labels)


def deepfool(
    model: nn.Module,
    images: Tensor,
    *,
    num_classes: int | None = None,
    overshoot: float = 0.02,
    max_iter: int = 50,
    clamp: bool = False,
    batch_size: int = 256,
) -> DeepFoolResult:
    """Multiclass DeepFool (Algorithm 2 of Moosavi-Dezfooli et al. (2016)), batched over images.

    For an image :math:`x_0` with label :math:`\\hat k(x_0)`, DeepFool linearises the logits
    :math:`f_k` around the current point :math:`x_i` and steps to the nearest linearised
    decision boundary:

    .. math::

        w'_k = \\nabla f_k(x_i) - \\nabla f_{\\hat k(x_0)}(x_i), \\qquad
        f'_k = f_k(x_i) - f_{\\hat k(x_0)}(x_i),

        \\hat l = \\arg\\min_{k \\ne \\hat k(x_0)} \\frac{|f'_k|}{\\|w'_k\\|_2}, \\qquad
        r_i = \\Bigl(\\frac{|f'_{\\hat l}|}{\\|w'_{\\hat l}\\|_2} + m\\Bigr)
              \\frac{w'_{\\hat l}}{\\|w'_{\\hat l}\\|_2},

    with :math:`x_{i+1} = x_0 + (1 + \\text{overshoot}) \\sum_{j \\le i} r_j`, until
    :math:`\\hat k(x_{i+1}) \\ne \\hat k(x_0)` or ``max_iter`` steps. The margin
    :math:`m` is :data:`STEP_MARGIN` (1e-4, as in the authors' code). The returned
    perturbation is :math:`(1 + \\text{overshoot}) \\sum_i r_i`. For an affine classifier one
    step lands past the nearest hyperplane, at distance
    :math:`(1 + \\text{overshoot})(|f'_{\\hat l}| / \\|w'_{\\hat l}\\|_2 + m)`.

    Each iteration runs one forward pass over the images still at their label, reads the new
    labels from it, and computes the class-difference gradients of all those images at once
    (one backward pass per class difference, or one vmapped pass for 1 or 2 images); an image
    leaves the batch as soon as its label flips.

    Parameters
    ----------
    model : nn.Module
        A classifier taking (N, C, H, W) images in [0, 1] and returning logits (N, K). It is run
        in eval mode (each submodule's mode is restored afterwards) and must treat the images
        of a batch independently.
    images : Tensor
        Shape (N, C, H, W), floating, values in [0, 1]. Not modified.
    num_classes : int, optional
        Number of candidate classes, in 2..K: the label and the ``num_classes - 1`` classes
        with the highest logits at ``images`` (as in the authors' code). Default: all K.
    overshoot : float
        Non-negative; the iterates and the result are scaled by ``1 + overshoot``.
    max_iter : int
        Maximum number of linearisation steps per image, >= 1.
    clamp : bool
        If False (default), the iterates are not clamped, as in the paper, and ``x + r`` may
        leave [0, 1]. If True, every iterate is ``clamp(x_i, 0, 1)``, so the model only sees
        valid images, and the result is ``clamp(x + r, 0, 1) - x``; steps then stall where
        pixels sit at 0 or 1 and need more iterations.
    batch_size : int
        Images per chunk, >= 1; bounds memory (a chunk's gradients take
        ``batch_size (K - 1) C H W`` numbers). Chunks are independent: it does not change the
        result.

    Returns
    -------
    DeepFoolResult
        ``perturbations`` (N, C, H, W), ``iterations`` (N,), ``converged`` (N,) bool,
        ``original_labels`` and ``new_labels`` (N,).

    Raises
    ------
    TypeError
        If ``model`` is not an ``nn.Module``, ``images`` is not a floating tensor, or an option
        has the wrong type.
    ValueError
        If ``images`` is not 4-D, empty or outside [0, 1]; ``num_classes`` outside 2..K;
        ``overshoot < 0``; ``max_iter < 1``; ``batch_size < 1``.

    References
    ----------
    - S.-M. Moosavi-Dezfooli, A. Fawzi and P. Frossard, "DeepFool: a simple and accurate
      method to fool deep neural networks", CVPR 2016.

    Examples
    --------
    An affine classifier with logits (x_0, x_1, x_2) on 2x2 images: the image below is class 0
    with margin 0.4 over class 1, at distance 0.4 / sqrt(2) from their boundary.

    >>> import torch
    >>> from backdoorlab.uap import deepfool
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    >>> with torch.no_grad():
    ...     _ = model[1].weight.copy_(torch.eye(3, 4))
    ...     _ = model[1].bias.zero_()
    >>> x = torch.tensor([[[[0.9, 0.5], [0.2, 0.0]]]])
    >>> result = deepfool(model, x)
    >>> result.original_labels, result.new_labels, result.iterations
    (tensor([0]), tensor([1]), tensor([1]))
    >>> round(result.perturbations.norm().item(), 4)  # 1.02 * (0.4 / sqrt(2) + 1e-4)
    0.2886
    """
    _check_model(model)
    _check_images(images)
    if num_classes is not None:
        _check_int("num_classes", num_classes, minimum=2)
    overshoot = _check_real("overshoot", overshoot, nonnegative=True)
    max_iter = _check_int("max_iter", max_iter, minimum=1)
    batch_size = _check_int("batch_size", batch_size, minimum=1)
    if not isinstance(clamp, bool):
        raise TypeError(f"clamp must be a bool, got {clamp!r}")
    images = images.detach()
    with _eval_mode(model):
        parts = [_deepfool(model, chunk, None, num_classes=num_classes, overshoot=overshoot,
                           max_iter=max_iter, clamp=clamp)
                 for chunk in images.split(batch_size)]
    return DeepFoolResult(*(torch.cat([getattr(part, field) for part in parts])
                            for field in DeepFoolResult.__dataclass_fields__))


# --------------------------------------------------------------------------- fooling rate


def fooling_rate(model: nn.Module, images: Tensor, v: Tensor, *,
                 batch_size: int = DEFAULT_BATCH_SIZE, clean_labels: Tensor | None = None) -> float:
    """Share of images whose predicted label changes under the perturbation ``v``.

    .. math::

        \\text{fooling rate} = \\frac{1}{N} \\sum_{n=1}^{N}
        \\mathbb{1}\\bigl[\\hat k(\\operatorname{clamp}(x_n + v, 0, 1)) \\ne \\hat k(x_n)\\bigr],

    against the clean prediction :math:`\\hat k(x_n)`, not the true label, as in Moosavi-Dezfooli et al. (2017). The
    perturbed images are clamped to [0, 1] (the module's convention).

    Parameters
    ----------
    model : nn.Module
        Classifier returning logits; run in eval mode, its modes restored afterwards.
    images : Tensor
        Shape (N, C, H, W), floating, values in [0, 1]. Not modified.
    v : Tensor
        Shape (C, H, W): one perturbation added to every image.
    batch_size : int
        Images per forward pass, >= 1.
    clean_labels : Tensor or None
        The clean predictions :math:`\\hat k(x_n)`, integer, shape (N,), if already known
        (e.g. ``backdoorlab.train.predict(model, images)``): they are then not recomputed, which
        halves the cost when many perturbations are measured on the same images. The result is
        the same as without them if they are the model's predictions; other labels give the
        share of images with :math:`\\hat k(\\operatorname{clamp}(x_n + v, 0, 1))` different
        from them. None (default) computes them.

    Returns
    -------
    float
        In [0, 1].

    Raises
    ------
    TypeError
        If ``model``, ``images``, ``v`` or ``clean_labels`` has the wrong type.
    ValueError
        If ``images`` is not 4-D, empty or outside [0, 1], ``v`` is not (C, H, W) or not finite,
        ``clean_labels`` is not of shape (N,), or ``batch_size < 1``.

    References
    ----------
    - S.-M. Moosavi-Dezfooli, A. Fawzi, O. Fawzi and P. Frossard, "Universal adversarial
      perturbations", CVPR 2017.

    Examples
    --------
    With logits (x_0, x_1) on 1x1x2 images, adding 0.3 to pixel 1 flips images whose pixel 0
    leads by less than 0.3.

    >>> import torch
    >>> from backdoorlab.uap import fooling_rate
    >>> model = torch.nn.Flatten()
    >>> images = torch.tensor([[[[0.5, 0.4]]], [[[0.9, 0.1]]], [[[0.2, 0.3]]]])
    >>> fooling_rate(model, images, torch.tensor([[[0.0, 0.3]]]))  # only the first flips
    0.3333333333333333

    The clean predictions, computed once, give the same rate for every later perturbation.

    >>> clean = model(images).argmax(dim=1)
    >>> fooling_rate(model, images, torch.tensor([[[0.0, 0.3]]]), clean_labels=clean)
    0.3333333333333333
    """
    _check_model(model)
    _check_images(images)
    _check_perturbation(v, tuple(images.shape[1:]))
    batch_size = _check_int("batch_size", batch_size, minimum=1)
    if clean_labels is not None:
        _checks.check_labels(clean_labels, name="clean_labels", length=images.shape[0])
    images, v = images.detach(), v.detach()
    with _eval_mode(model):
        clean = _predict(model, images, batch_size=batch_size) if clean_labels is None else clean_labels
        return _fooled_share(model, images, v, clean.to(images.device), batch_size=batch_size)


# --------------------------------------------------------------------------- Algorithm 1


def universal_perturbation(
    model: nn.Module,
    images: Tensor,
    *,
    xi: float,
    p: float,
    delta: float = 0.2,
    max_passes: int = 10,
    overshoot: float = 0.02,
    max_iter: int = 10,
    num_classes: int | None = None,
    batch_size: int = 1,
    seed: int = 0,
    eval_batch_size: int = DEFAULT_BATCH_SIZE,
    num_threads: int | None = 1,
) -> UAPResult:
    """Universal adversarial perturbation by Algorithm 1 of Moosavi-Dezfooli et al. (2017).

    Starting from :math:`v = 0`, each pass visits the images of :math:`X` in a random order
    (seeded; a new permutation per pass) and, for each :math:`x_i` not yet fooled, i.e.
    :math:`\\hat k(x_i + v) = \\hat k(x_i)`, computes the DeepFool perturbation from
    :math:`x_i + v` and projects:

    .. math::

        \\Delta v_i = \\arg\\min_r \\|r\\|_2
        \\ \\text{s.t.}\\ \\hat k(x_i + v + r) \\ne \\hat k(x_i), \\qquad
        v \\leftarrow P_{p,\\xi}(v + \\Delta v_i) .

    An update is accepted only if DeepFool converged (as in the authors' code). After each
    pass the fooling rate on :math:`X` is measured (batched); the passes stop once it reaches
    :math:`1 - \\delta`, or after ``max_passes``. Perturbed images are ``clamp(x + v, 0, 1)``
    throughout (module docstring); the not-yet-fooled test of :math:`x_i` is read from the
    first forward pass of its DeepFool call, so it costs nothing extra.

    Mini-batch variant (``batch_size = b > 1``, not in the paper): the visiting order is cut
    into groups of b images; DeepFool runs on the not-yet-fooled images of a group at once,
    all from the same :math:`v`, and the converged perturbations are summed before one
    projection, :math:`v \\leftarrow P_{p,\\xi}(v + \\sum_{i \\in B} \\Delta v_i)`. In the paper
    each image sees the :math:`v` updated by the image before it; here the images of a group do
    not, so the summed step can overshoot (the projection still bounds it). ``batch_size=1`` is
    the paper's algorithm.

    Parameters
    ----------
    model : nn.Module
        Classifier returning logits, (N, C, H, W) in [0, 1] -> (N, K). Run in eval mode; each
        submodule's mode is restored afterwards.
    images : Tensor
        The set X, shape (N, C, H, W), floating, values in [0, 1]. Not modified.
    xi : float
        Radius of the l_p ball, > 0, in the unit of the images (e.g. 0.3 for l_inf on MNIST).
    p : {2, math.inf}
        The norm of the constraint.
    delta : float
        In (0, 1): stop once the fooling rate on X reaches ``1 - delta``.
    max_passes : int
        Maximum number of passes over X, >= 1.
    overshoot, max_iter, num_classes
        DeepFool options (:func:`deepfool`); the authors' UAP code used ``max_iter=10``. DeepFool
        starts from ``clamp(x_i + v, 0, 1)`` and its iterates are not clamped (module docstring).
    batch_size : int
        Images per DeepFool call, >= 1; 1 is the paper's algorithm (see above).
    seed : int
        Seeds the visiting order (a ``torch.Generator``; the global RNG is not touched).
    eval_batch_size : int
        Images per forward pass for the clean labels and the fooling rate on X, >= 1.
    num_threads : int or None
        PyTorch intra-op threads while the function runs (the previous setting is restored
        afterwards), >= 1; None keeps the current setting. The default 1 suits DeepFool on one
        image at a time: on 2 CPU cores a second thread made no difference on an idle machine
        (2.4 s against 2.5 s for one pass over 400 MNIST images) and made a pass 20 times
        slower when other work shared the cores.

    Returns
    -------
    UAPResult
        ``perturbation`` (C, H, W) with ``||v||_p <= xi``, ``fooling_rate`` on X, the per-pass
        ``history`` and ``converged`` (the rate reached ``1 - delta``).

    Raises
    ------
    TypeError
        If an argument has the wrong type.
    ValueError
        If ``images`` is not 4-D, empty or outside [0, 1]; ``xi <= 0``; ``p`` not 2 or inf;
        ``delta`` outside (0, 1); or an integer option is below 1.

    References
    ----------
    - S.-M. Moosavi-Dezfooli, A. Fawzi, O. Fawzi and P. Frossard, "Universal adversarial
      perturbations", CVPR 2017.

    Examples
    --------
    Two-class images (logits = the two pixels) where pixel 0 leads pixel 1 by less than 0.15:
    moving every image by -0.075 and +0.075 fools them all, and one pass finds it.

    >>> import math, torch
    >>> from backdoorlab.uap import universal_perturbation
    >>> g = torch.Generator().manual_seed(0)
    >>> low = 0.3 + 0.4 * torch.rand(50, generator=g)
    >>> high = low + 0.15 * torch.rand(50, generator=g)
    >>> images = torch.stack([high, low], dim=1).reshape(50, 1, 1, 2)
    >>> result = universal_perturbation(torch.nn.Flatten(), images, xi=0.1, p=math.inf, seed=0)
    >>> result.converged, result.history
    (True, (1.0,))
    >>> result.perturbation
    tensor([[[-0.0749,  0.0749]]])
    """
    _check_model(model)
    _check_images(images)
    xi = _check_real("xi", xi, positive=True)
    p = _check_p(p)
    delta = _check_delta(delta)
    max_passes = _check_int("max_passes", max_passes, minimum=1)
    overshoot = _check_real("overshoot", overshoot, nonnegative=True)
    max_iter = _check_int("max_iter", max_iter, minimum=1)
    if num_classes is not None:
        _check_int("num_classes", num_classes, minimum=2)
    batch_size = _check_int("batch_size", batch_size, minimum=1)
    generator = torch.Generator().manual_seed(_check_seed(seed))
    eval_batch_size = _check_int("eval_batch_size", eval_batch_size, minimum=1)
    if num_threads is not None:
        num_threads = _check_int("num_threads", num_threads, minimum=1)
    images = images.detach()
    n = images.shape[0]
    v = torch.zeros_like(images[0])  # (C, H, W)
    history: list[float] = []
    with _eval_mode(model), _torch_threads(num_threads):
        clean = _predict(model, images, batch_size=eval_batch_size)
        for _ in range(max_passes):
            order = torch.randperm(n, generator=generator).to(images.device)
            for group in order.split(batch_size):
                # images already fooled at x + v come back with iterations == 0: no update
                step = _deepfool(model, _perturb(images[group], v), clean[group],
                                 num_classes=num_classes, overshoot=overshoot,
                                 max_iter=max_iter, clamp=False)
                accepted = step.converged & (step.iterations > 0)
                if bool(accepted.any()):
                    v = project_lp(v + step.perturbations[accepted].sum(dim=0), xi, p)
            history.append(_fooled_share(model, images, v, clean, batch_size=eval_batch_size))
            if history[-1] >= 1.0 - delta:
                break
    return UAPResult(perturbation=v, fooling_rate=history[-1], history=tuple(history),
                     converged=history[-1] >= 1.0 - delta)


# --------------------------------------------------------------------------- SGD variant


def sgd_universal_perturbation(
    model: nn.Module,
    images: Tensor,
    *,
    xi: float,
    p: float,
    epochs: int = 10,
    batch_size: int = 100,
    lr: float | None = None,
    delta: float = 0.2,
    loss_clamp: float = 10.0,
    seed: int = 0,
    eval_batch_size: int = DEFAULT_BATCH_SIZE,
) -> UAPResult:
    """Universal perturbation by projected stochastic gradient ascent, after Shafahi et al. (2020).

    Instead of accumulating DeepFool steps, maximise the clamped cross-entropy against the
    clean prediction over mini-batches B of X under the same constraint:

    .. math::

        \\max_{\\|v\\|_p \\le \\xi} \\ \\frac{1}{|B|} \\sum_{x \\in B}
        \\min\\bigl(\\ell(\\operatorname{clamp}(x + v, 0, 1), \\hat k(x)), \\beta\\bigr),

    with :math:`\\ell` the cross-entropy and :math:`\\beta` = ``loss_clamp``. Clamping the loss
    stops images that are already far across the boundary from dominating the gradient
    :math:`g`. Each step is the steepest ascent step for the norm, then the projection:

    .. math::

        v \\leftarrow P_{\\infty,\\xi}\\bigl(v + \\alpha \\operatorname{sign}(g)\\bigr)
        \\quad\\text{or}\\quad
        v \\leftarrow P_{2,\\xi}\\bigl(v + \\alpha\\, g / \\|g\\|_2\\bigr) .

    After each epoch (one pass over X in a seeded order) the fooling rate on X is measured;
    training stops once it reaches ``1 - delta``, as in :func:`universal_perturbation`.

    Parameters
    ----------
    model : nn.Module
        Classifier returning logits; run in eval mode, modes restored afterwards.
    images : Tensor
        The set X, shape (N, C, H, W), floating, values in [0, 1]. Not modified.
    xi : float
        Radius of the l_p ball, > 0.
    p : {2, math.inf}
        The norm.
    epochs : int
        Maximum number of passes over X, >= 1.
    batch_size : int
        Images per gradient step, >= 1.
    lr : float, optional
        Step length :math:`\\alpha` in the unit of the images, > 0. Default ``xi / 10``.
    delta : float
        In (0, 1): stop once the fooling rate on X reaches ``1 - delta``.
    loss_clamp : float
        :math:`\\beta` > 0, the cap on each image's cross-entropy (our default, 10).
    seed : int
        Seeds the order of the images (a ``torch.Generator``).
    eval_batch_size : int
        Images per forward pass for clean labels and fooling rates, >= 1.

    Returns
    -------
    UAPResult
        As :func:`universal_perturbation`, with one ``history`` entry per epoch.

    Raises
    ------
    TypeError
        If an argument has the wrong type.
    ValueError
        If ``images`` is not 4-D, empty or outside [0, 1]; ``xi``, ``lr`` or ``loss_clamp`` is
        not positive; ``p`` not 2 or inf; ``delta`` outside (0, 1); an integer option below 1.

    References
    ----------
    - A. Shafahi, M. Najibi, Z. Xu, J. Dickerson, L. S. Davis and T. Goldstein, "Universal
      adversarial training", AAAI 2020.

    Examples
    --------
    The two-class images of :func:`universal_perturbation`'s example; sign steps of
    ``lr = xi / 10`` reach the corner (-0.1, 0.1) of the l_inf ball in the second epoch.

    >>> import math, torch
    >>> from backdoorlab.uap import sgd_universal_perturbation
    >>> g = torch.Generator().manual_seed(0)
    >>> low = 0.3 + 0.4 * torch.rand(50, generator=g)
    >>> high = low + 0.15 * torch.rand(50, generator=g)
    >>> images = torch.stack([high, low], dim=1).reshape(50, 1, 1, 2)
    >>> result = sgd_universal_perturbation(torch.nn.Flatten(), images, xi=0.1, p=math.inf,
    ...                                     batch_size=10, seed=0)
    >>> result.history, result.perturbation
    ((0.58, 1.0), tensor([[[-0.1000,  0.1000]]]))
    """
    _check_model(model)
    _check_images(images)
    xi = _check_real("xi", xi, positive=True)
    p = _check_p(p)
    epochs = _check_int("epochs", epochs, minimum=1)
    batch_size = _check_int("batch_size", batch_size, minimum=1)
    lr = xi / 10 if lr is None else _check_real("lr", lr, positive=True)
    delta = _check_delta(delta)
    loss_clamp = _check_real("loss_clamp", loss_clamp, positive=True)
    generator = torch.Generator().manual_seed(_check_seed(seed))
    eval_batch_size = _check_int("eval_batch_size", eval_batch_size, minimum=1)
    images = images.detach()
    v = torch.zeros_like(images[0])  # (C, H, W)
    history: list[float] = []
    with _eval_mode(model):
        clean = _predict(model, images, batch_size=eval_batch_size)
        for _ in range(epochs):
            order = torch.randperm(images.shape[0], generator=generator).to(images.device)
            for group in order.split(batch_size):
                v_var = v.clone().requires_grad_(True)
                with torch.enable_grad():
                    losses = F.cross_entropy(model(_perturb(images[group], v_var)), clean[group],
                                             reduction="none")
                    (grad,) = torch.autograd.grad(losses.clamp(max=loss_clamp).mean(), v_var)
                if p == math.inf:
                    step = grad.sign()
                else:
                    step = grad / grad.norm().clamp_min(torch.finfo(grad.dtype).tiny)
                v = project_lp(v + lr * step, xi, p)
            history.append(_fooled_share(model, images, v, clean, batch_size=eval_batch_size))
            if history[-1] >= 1.0 - delta:
                break
    return UAPResult(perturbation=v, fooling_rate=history[-1], history=tuple(history),
                     converged=history[-1] >= 1.0 - delta)


# --------------------------------------------------------------------------- targeted variant


def _check_target(target: object, num_classes: int) -> int:
    if isinstance(target, bool) or not isinstance(target, numbers.Integral):
        raise TypeError(f"target must be an int, got {target!r}")
    if not 0 <= target < num_classes:
        raise ValueError(f"target must be in 0..{num_classes - 1} (the model's outputs), "
                         f"got {target!r}")
    return int(target)


@torch.no_grad()
def _target_share(model: nn.Module, images: Tensor, v: Tensor, target: int, *,
                  batch_size: int, clean_labels: Tensor | None = None) -> float:
    """Share of the images not predicted ``target`` clean that model(clamp(x + v)) sends there."""
    sent = eligible = 0
    labels = [None] * len(images.split(batch_size)) if clean_labels is None else clean_labels.split(batch_size)
    for chunk, known in zip(images.split(batch_size), labels):
        if known is None:
            known = _checks.check_logits(model(chunk), num_images=len(chunk)).argmax(dim=1)
        clean = known != target
        moved = _checks.check_logits(model(_perturb(chunk, v)), num_images=len(chunk)).argmax(dim=1) == target
        sent += (moved & clean).sum().item()
        eligible += clean.sum().item()
    return sent / eligible if eligible else 0.0


def targeted_success_rate(model: nn.Module, images: Tensor, v: Tensor, *, target: int,
                          batch_size: int = DEFAULT_BATCH_SIZE,
                          clean_labels: Tensor | None = None) -> float:
    """Share of images sent to class ``target`` by the perturbation ``v``.

    .. math::

        \\text{success rate} =
        \\frac{\\sum_n \\mathbb{1}\\bigl[\\hat k(\\operatorname{clamp}(x_n + v, 0, 1)) = t
               \\wedge \\hat k(x_n) \\ne t\\bigr]}
             {\\sum_n \\mathbb{1}\\bigl[\\hat k(x_n) \\ne t\\bigr]},

    over the images whose clean prediction is not already the target :math:`t` (the attack
    success rate of a backdoor trigger is measured the same way). 0 if there is no such image.

    Parameters
    ----------
    model : nn.Module
        Classifier returning logits (N, K); run in eval mode, its modes restored afterwards.
    images : Tensor
        Shape (N, C, H, W), floating, values in [0, 1]. Not modified.
    v : Tensor
        Shape (C, H, W): one perturbation added to every image.
    target : int
        The class, in 0..K-1.
    batch_size : int
        Images per forward pass, >= 1.
    clean_labels : Tensor or None
        The clean predictions :math:`\\hat k(x_n)`, integer, shape (N,), if already known (as in
        :func:`fooling_rate`): not recomputed, same result if they are the model's predictions.
        None (default) computes them.

    Returns
    -------
    float
        In [0, 1].

    Raises
    ------
    TypeError
        If an argument has the wrong type.
    ValueError
        If ``images`` is not 4-D, empty or outside [0, 1], ``v`` is not (C, H, W) or not
        finite, ``target`` is outside 0..K-1, ``clean_labels`` is not of shape (N,), or
        ``batch_size < 1``.

    Examples
    --------
    Logits (x_0, x_1) on 1x1x2 images; adding 0.3 to pixel 1 sends one of the two images
    predicted 0 to class 1 (the third image is already class 1 and is not counted).

    >>> import torch
    >>> from backdoorlab.uap import targeted_success_rate
    >>> images = torch.tensor([[[[0.5, 0.4]]], [[[0.9, 0.1]]], [[[0.2, 0.3]]]])
    >>> targeted_success_rate(torch.nn.Flatten(), images, torch.tensor([[[0.0, 0.3]]]), target=1)
    0.5
    >>> targeted_success_rate(torch.nn.Flatten(), images, torch.tensor([[[0.0, 0.3]]]), target=1,
    ...                       clean_labels=torch.tensor([0, 0, 1]))
    0.5
    """
    _check_model(model)
    _check_images(images)
    _check_perturbation(v, tuple(images.shape[1:]))
    batch_size = _check_int("batch_size", batch_size, minimum=1)
    if clean_labels is not None:
        clean_labels = _checks.check_labels(clean_labels, name="clean_labels", length=images.shape[0])
        clean_labels = clean_labels.to(images.device)
    images, v = images.detach(), v.detach()
    with _eval_mode(model), torch.no_grad():
        target = _check_target(target, _checks.check_logits(model(images[:1]), num_images=1).shape[1])
        return _target_share(model, images, v, target, batch_size=batch_size, clean_labels=clean_labels)


def targeted_universal_perturbation(
    model: nn.Module,
    images: Tensor,
    *,
    target: int,
    xi: float,
    p: float,
    epochs: int = 10,
    batch_size: int = 100,
    lr: float | None = None,
    seed: int = 0,
    eval_batch_size: int = DEFAULT_BATCH_SIZE,
) -> TargetedUAPResult:
    """Targeted universal perturbation: one small v that sends most images to class ``target``.

    The targeted counterpart of :func:`sgd_universal_perturbation`: projected stochastic
    gradient *descent* on the cross-entropy towards the target :math:`t` over mini-batches B
    of X,

    .. math::

        \\min_{\\|v\\|_p \\le \\xi} \\ \\frac{1}{|B|} \\sum_{x \\in B}
        \\ell\\bigl(\\operatorname{clamp}(x + v, 0, 1), t\\bigr),

    with the steepest descent step for the norm followed by the projection,
    :math:`v \\leftarrow P_{\\infty,\\xi}(v - \\alpha \\operatorname{sign}(g))` or
    :math:`v \\leftarrow P_{2,\\xi}(v - \\alpha\\, g / \\|g\\|_2)`. All ``epochs`` are run (no
    early stop); after each, :func:`targeted_success_rate` on X is recorded. Comparing the
    success rates of the targets at one budget shows which class is easiest to reach; a
    backdoor's target class is expected to stand out (the idea behind Neural Cleanse).

    Parameters
    ----------
    model : nn.Module
        Classifier returning logits (N, K); run in eval mode, modes restored afterwards.
    images : Tensor
        The set X, shape (N, C, H, W), floating, values in [0, 1]. Not modified.
    target : int
        The class t to send the images to, in 0..K-1.
    xi : float
        Radius of the l_p ball, > 0.
    p : {2, math.inf}
        The norm.
    epochs : int
        Passes over X, >= 1.
    batch_size : int
        Images per gradient step, >= 1.
    lr : float, optional
        Step length :math:`\\alpha`, > 0. Default ``xi / 10``.
    seed : int
        Seeds the order of the images (a ``torch.Generator``).
    eval_batch_size : int
        Images per forward pass for the success rates, >= 1.

    Returns
    -------
    TargetedUAPResult
        ``perturbation`` (C, H, W) with ``||v||_p <= xi``, ``target``, ``success_rate`` on X
        and the per-epoch ``history``.

    Raises
    ------
    TypeError
        If an argument has the wrong type.
    ValueError
        If ``images`` is not 4-D, empty or outside [0, 1]; ``target`` outside 0..K-1; ``xi``
        or ``lr`` not positive; ``p`` not 2 or inf; an integer option below 1.

    Examples
    --------
    Logits (x_0, x_1) on 1x1x2 images predicted 0 (pixel 0 leads by less than 0.15): sign
    steps of 0.01 towards class 1 reach the corner (-0.1, 0.1) and send every image there.

    >>> import math, torch
    >>> from backdoorlab.uap import targeted_universal_perturbation
    >>> g = torch.Generator().manual_seed(0)
    >>> low = 0.3 + 0.4 * torch.rand(50, generator=g)
    >>> high = low + 0.15 * torch.rand(50, generator=g)
    >>> images = torch.stack([high, low], dim=1).reshape(50, 1, 1, 2)
    >>> result = targeted_universal_perturbation(torch.nn.Flatten(), images, target=1, xi=0.1,
    ...                                          p=math.inf, epochs=2, batch_size=10)
    >>> result.history, result.perturbation
    ((0.58, 1.0), tensor([[[-0.1000,  0.1000]]]))
    """
    _check_model(model)
    _check_images(images)
    xi = _check_real("xi", xi, positive=True)
    p = _check_p(p)
    epochs = _check_int("epochs", epochs, minimum=1)
    batch_size = _check_int("batch_size", batch_size, minimum=1)
    lr = xi / 10 if lr is None else _check_real("lr", lr, positive=True)
    generator = torch.Generator().manual_seed(_check_seed(seed))
    eval_batch_size = _check_int("eval_batch_size", eval_batch_size, minimum=1)
    images = images.detach()
    v = torch.zeros_like(images[0])  # (C, H, W)
    history: list[float] = []
    with _eval_mode(model):
        with torch.no_grad():
            target = _check_target(target, _checks.check_logits(model(images[:1]), num_images=1).shape[1])
        for _ in range(epochs):
            order = torch.randperm(images.shape[0], generator=generator).to(images.device)
            for group in order.split(batch_size):
                v_var = v.clone().requires_grad_(True)
                with torch.enable_grad():
                    logits = model(_perturb(images[group], v_var))
                    labels = torch.full_like(group, target)
                    (grad,) = torch.autograd.grad(F.cross_entropy(logits, labels), v_var)
                if p == math.inf:
                    step = grad.sign()
                else:
                    step = grad / grad.norm().clamp_min(torch.finfo(grad.dtype).tiny)
                v = project_lp(v - lr * step, xi, p)  # descent: towards the target
            history.append(_target_share(model, images, v, target, batch_size=eval_batch_size))
    return TargetedUAPResult(perturbation=v, target=target, success_rate=history[-1],
                             history=tuple(history))


# --------------------------------------------------------------------------- controls


def span_perturbation(basis: Tensor, *, xi: float, seed: int) -> Tensor:
    """A random direction in the span of given vectors, scaled to l_2 norm ``xi``.

    With the rows :math:`b_1, \\dots, b_k` of ``basis`` orthonormal (e.g. the top-k right
    singular vectors of a matrix of boundary normals),

    .. math::

        v = \\xi \\, \\frac{\\sum_{j=1}^k z_j b_j}{\\lVert \\sum_{j=1}^k z_j b_j \\rVert_2},
        \\qquad z \\sim N(0, I_k),

    is uniform on the sphere of radius :math:`\\xi` of their span (the Gaussian is rotation
    invariant); the paper's test of its explanation compares such vectors with random vectors
    of the same norm in the whole space (:func:`random_perturbation` with ``p=2``).

    Parameters
    ----------
    basis : Tensor
        Shape (k, C, H, W), floating, finite, k >= 1: the spanning vectors, orthonormal for a
        uniform direction (any spanning set still gives a direction in the span).
    xi : float
        The l_2 norm of the result, > 0.
    seed : int
        Seeds a ``torch.Generator``; the same seed gives the same vector.

    Returns
    -------
    Tensor
        Shape (C, H, W), dtype of ``basis``, with ``||v||_2 = xi`` (up to rounding).

    Raises
    ------
    TypeError
        If ``basis`` is not a floating tensor, or ``xi`` or ``seed`` has the wrong type.
    ValueError
        If ``basis`` is not 4-D with k >= 1, is not finite, spans only 0, or ``xi <= 0``.

    Examples
    --------
    >>> import torch
    >>> from backdoorlab.uap import span_perturbation
    >>> basis = torch.eye(4)[:2].reshape(2, 1, 2, 2)       # the first two pixels
    >>> v = span_perturbation(basis, xi=3.0, seed=0)
    >>> round(v.norm().item(), 4), v.flatten()[2:].tolist()
    (3.0, [0.0, 0.0])
    """
    if not isinstance(basis, Tensor) or not basis.is_floating_point():
        raise TypeError(f"basis must be a floating torch.Tensor, got {type(basis).__name__}")
    if basis.ndim != 4 or basis.shape[0] < 1:
        raise ValueError(f"basis must have shape (k, C, H, W) with k >= 1, got {tuple(basis.shape)}")
    if not torch.isfinite(basis).all():
        raise ValueError("basis must be finite")
    xi = _check_real("xi", xi, positive=True)
    generator = torch.Generator().manual_seed(_check_seed(seed))
    z = torch.randn(basis.shape[0], generator=generator, dtype=basis.dtype)
    direction = torch.tensordot(z, basis, dims=1)  # (C, H, W)
    norm = direction.norm()
    if not norm > 0:
        raise ValueError("basis must span more than the zero vector")
    return xi * direction / norm


def random_perturbation(shape: tuple[int, int, int], *, xi: float, p: float, seed: int,
                        dtype: torch.dtype = torch.float32) -> Tensor:
    """A random perturbation on the sphere of the l_p ball: the control for a UAP of the same norm.

    For ``p = inf`` every pixel is :math:`\\pm\\xi` with a fair random sign; for ``p = 2`` the
    direction is Gaussian, :math:`v = \\xi\\, z / \\|z\\|_2` with :math:`z \\sim N(0, I)`, so
    :math:`\\|v\\|_p = \\xi` exactly (up to rounding).

    Parameters
    ----------
    shape : tuple of int
        (C, H, W).
    xi : float
        The norm, > 0.
    p : {2, math.inf}
        Which norm.
    seed : int
        Seeds a ``torch.Generator``; the same seed gives the same tensor.
    dtype : torch.dtype
        Floating dtype of the result.

    Returns
    -------
    Tensor
        Shape ``shape``.

    Raises
    ------
    TypeError, ValueError
        If ``shape`` is not three positive ints, or ``xi``, ``p`` or ``seed`` is invalid.

    Examples
    --------
    >>> import math
    >>> from backdoorlab.uap import random_perturbation
    >>> v = random_perturbation((1, 28, 28), xi=0.3, p=math.inf, seed=0)
    >>> sorted(set(v.flatten().tolist())) == [-0.30000001192092896, 0.30000001192092896]
    True
    >>> round(random_perturbation((3, 32, 32), xi=2.0, p=2, seed=0).norm().item(), 4)
    2.0
    """
    shape = _check_shape(shape)
    xi = _check_real("xi", xi, positive=True)
    p = _check_p(p)
    dtype = _checks.check_float_dtype(dtype)
    generator = torch.Generator().manual_seed(_check_seed(seed))
    if p == math.inf:
        signs = torch.randint(0, 2, shape, generator=generator).to(dtype) * 2 - 1
        return xi * signs
    z = torch.randn(shape, generator=generator, dtype=dtype)
    return xi * z / z.norm()


def checkerboard(shape: tuple[int, int, int], *, amplitude: float, square: int = 1,
                 dtype: torch.dtype = torch.float32) -> Tensor:
    """A checkerboard of ``+amplitude`` and ``-amplitude`` squares: a structured control.

    Pixel (c, h, w) is :math:`+a` if :math:`\\lfloor h/s \\rfloor + \\lfloor w/s \\rfloor` is
    even and :math:`-a` otherwise, for every channel c, with :math:`s` = ``square``. Its
    :math:`\\ell_\\infty` norm is ``amplitude``.

    Parameters
    ----------
    shape : tuple of int
        (C, H, W).
    amplitude : float
        > 0, in the unit of the images.
    square : int
        Side of the squares in pixels, >= 1.
    dtype : torch.dtype
        Floating dtype of the result.

    Returns
    -------
    Tensor
        Shape ``shape``.

    Raises
    ------
    TypeError, ValueError
        If ``shape`` is not three positive ints, ``amplitude <= 0`` or ``square < 1``.

    Examples
    --------
    >>> from backdoorlab.uap import checkerboard
    >>> checkerboard((1, 4, 4), amplitude=0.1, square=2)[0]
    tensor([[ 0.1000,  0.1000, -0.1000, -0.1000],
            [ 0.1000,  0.1000, -0.1000, -0.1000],
            [-0.1000, -0.1000,  0.1000,  0.1000],
            [-0.1000, -0.1000,  0.1000,  0.1000]])
    """
    channels, height, width = _check_shape(shape)
    amplitude = _check_real("amplitude", amplitude, positive=True)
    square = _check_int("square", square, minimum=1)
    dtype = _checks.check_float_dtype(dtype)
    rows = torch.arange(height) // square  # (H,)
    cols = torch.arange(width) // square  # (W,)
    parity = (rows[:, None] + cols[None, :]) % 2  # (H, W), 0 where the sign is +
    board = amplitude * (1 - 2 * parity).to(dtype)
    return board.expand(channels, height, width).clone()


def _check_shape(shape: object) -> tuple[int, int, int]:
    if not isinstance(shape, (tuple, list, torch.Size)) or len(shape) != 3:
        raise ValueError(f"shape must be (C, H, W), got {shape!r}")
    for size in shape:
        if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
            raise ValueError(f"shape must hold three positive ints, got {shape!r}")
    return tuple(int(size) for size in shape)  # type: ignore[return-value]
