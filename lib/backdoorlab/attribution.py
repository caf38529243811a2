"""Integrated Gradients, its quadrature rules and baselines, and plain gradient maps.

*Integrated Gradients* (IG; Sundararajan, Taly and Yan, 2017) attributes a model's score for
one class to the input pixels.
It integrates the gradient of the score along the straight path from a *baseline* image
:math:`x'` to the input :math:`x`:

.. math::

    \\mathrm{IG}_i(x) = (x_i - x'_i) \\int_0^1
        \\frac{\\partial F\\bigl(x' + \\alpha (x - x')\\bigr)}{\\partial x_i} \\, d\\alpha .

By the fundamental theorem of calculus for path integrals the attributions add up to the
change of the score, :math:`\\sum_i \\mathrm{IG}_i(x) = F(x) - F(x')` (*completeness*). The
integral is computed with a quadrature rule, so the sum misses by a *completeness gap* that
tells how good the quadrature is; :func:`integrated_gradients` returns it with the attributions.

Plain gradients :func:`gradients` and gradient times input :func:`gradient_times_input` are
here for comparison. Baselines are functions of the images: :func:`black_baseline`,
:func:`blurred_baseline`, :func:`uniform_noise_baseline`.

References
----------
M. Sundararajan, A. Taly and Q. Yan, "Axiomatic Attribution for Deep Networks", ICML 2017.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backdoorlab import _checks
from backdoorlab.models import Normalize

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "METHODS",
    "IGResult",
    "OnePixelCheck",
    "PerturbationCurve",
    "QuadratureRule",
    "affine_split",
    "black_baseline",
    "blurred_baseline",
    "gradient_times_input",
    "positive_mass_share",
    "gradients",
    "integrated_gradients",
    "mask_iou",
    "occlude_top_k",
    "one_pixel_sensitivity",
    "perturbation_curve",
    "quadrature_rule",
    "square_of_most_mass",
    "uniform_noise_baseline",
]

METHODS: tuple[str, ...] = (
    "gausslegendre",
    "riemann_left",
    "riemann_right",
    "riemann_middle",
    "riemann_trapezoid",
)
"""Names of the quadrature rules accepted by :func:`quadrature_rule`."""

DEFAULT_BATCH_SIZE: int = 256
"""Path points per forward/backward pass; memory grows linearly with it. For the book's MNIST
CNN (64 images, 50 steps, 2 idle CPU cores) blocks of 128 to 512 rows were about equally fast,
1024 rows about 25 % and all 3,200 at once about 60 % slower: large blocks no longer reuse freed
memory and page-fault their activations afresh on every pass (``benchmarks/ig.py``)."""

OutputFn = Callable[[Tensor], Tensor]
Baseline = Tensor | Callable[[Tensor], Tensor] | None


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, eq=False)
class QuadratureRule:
    """Nodes and weights of a quadrature rule on [0, 1]: ``sum_k weights[k] * f(nodes[k])``.

    Attributes
    ----------
    method : str
        One of :data:`METHODS`.
    nodes : Tensor
        Shape (num_steps,), float64, values in [0, 1], increasing: the path positions alpha_k.
    weights : Tensor
        Shape (num_steps,), float64, positive, summing to 1 (the length of [0, 1]).
    """

    method: str
    nodes: Tensor
    weights: Tensor

    @property
    def num_steps(self) -> int:
        """Number of nodes."""
        return self.nodes.numel()


@dataclass(frozen=True, eq=False)
class IGResult:
    """Integrated Gradients of a batch of images, with the completeness check.

    Attributes
    ----------
    attributions : Tensor
        Shape (N, C, H, W) like the images, same dtype: IG_i(x) for every pixel.
    completeness_gap : Tensor
        Shape (N,): ``sum_i IG_i(x) - (F(x) - F(x'))``, zero for exact integration.
    scores : Tensor
        Shape (N,): the target score F(x) of each image.
    baseline_scores : Tensor
        Shape (N,): the target score F(x') of each baseline.
    baseline : Tensor
        Shape (N, C, H, W): the baseline x' used for each image.
    method : str
        The quadrature rule, one of :data:`METHODS`.
    num_steps : int
        Number of path points per image.
    """

    attributions: Tensor
    completeness_gap: Tensor
    scores: Tensor
    baseline_scores: Tensor
    baseline: Tensor
    method: str
    num_steps: int

    @property
    def relative_gap(self) -> Tensor:
        """Shape (N,): ``|completeness_gap| / |F(x) - F(x')|``.

        The check of Sundararajan et al. (2017): below 0.05, the integral is
        approximated well enough.
        The denominator is floored at the dtype's smallest normal number.
        """
        change = (self.scores - self.baseline_scores).abs()
        return self.completeness_gap.abs() / change.clamp_min(torch.finfo(change.dtype).tiny)


# --------------------------------------------------------------------------- quadrature


def quadrature_rule(method: str, num_steps: int) -> QuadratureRule:
    """Nodes and weights of a quadrature rule for integrals over [0, 1].

    With h = 1 / num_steps and k = 0, ..., num_steps - 1 the rules are

    * ``riemann_left``: alpha_k = k h, w_k = h;
    * ``riemann_right``: alpha_k = (k + 1) h, w_k = h (the paper's Eq. (3));
    * ``riemann_middle``: alpha_k = (k + 1/2) h, w_k = h;
    * ``riemann_trapezoid``: alpha_k = k / (n - 1), w_k = 1 / (n - 1), halved at k = 0 and
      k = n - 1 (n = num_steps >= 2);
    * ``gausslegendre``: the Gauss-Legendre nodes t_k and weights v_k of [-1, 1] mapped to
      [0, 1] by alpha_k = (1 + t_k) / 2, w_k = v_k / 2. It integrates polynomials of degree
      up to 2 n - 1 exactly.

    Every rule's weights sum to 1, so a constant integrand (the gradient of a linear model)
    is integrated exactly and completeness holds to rounding error.

    Parameters
    ----------
    method : str
        One of :data:`METHODS`.
    num_steps : int
        Number of nodes, at least 1 (at least 2 for ``riemann_trapezoid``).

    Returns
    -------
    QuadratureRule
        float64 nodes in [0, 1] and positive weights, both of shape (num_steps,).

    Raises
    ------
    TypeError
        If ``num_steps`` is not an int.
    ValueError
        If ``method`` is unknown or ``num_steps`` is too small.

    Notes
    -----
    Captum 0.9.0 places its trapezoid nodes at k / (n - 1) but gives them the weights
    1 / n (halved at both ends), which sum to (n - 1) / n: its trapezoid attributions are
    those of the rule above times (n - 1) / n.

    Examples
    --------
    >>> rule = quadrature_rule("riemann_trapezoid", 5)
    >>> rule.nodes.tolist()
    [0.0, 0.25, 0.5, 0.75, 1.0]
    >>> rule.weights.tolist()
    [0.125, 0.25, 0.25, 0.25, 0.125]
    >>> rule = quadrature_rule("gausslegendre", 3)
    >>> round(float((rule.weights * rule.nodes**5).sum()), 12)  # integral of a^5 is 1/6
    0.166666666667
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}")
    _check_int("num_steps", num_steps, minimum=2 if method == "riemann_trapezoid" else 1)
    n = num_steps
    k = torch.arange(n, dtype=torch.float64)
    if method == "gausslegendre":
        t, v = np.polynomial.legendre.leggauss(n)
        nodes, weights = torch.from_numpy((1.0 + t) / 2.0), torch.from_numpy(v / 2.0)
    elif method == "riemann_trapezoid":
        nodes = k / (n - 1)
        weights = torch.full((n,), 1.0 / (n - 1), dtype=torch.float64)
        weights[[0, -1]] /= 2.0
    else:
        offset = {"riemann_left": 0.0, "riemann_middle": 0.5, "riemann_right": 1.0}[method]
        nodes = (k + offset) / n
        weights = torch.full((n,), 1.0 / n, dtype=torch.float64)
    return QuadratureRule(method=method, nodes=nodes, weights=weights)


# --------------------------------------------------------------------------- baselines


def black_baseline(images: Tensor) -> Tensor:
    """The black image x' = 0, the baseline the IG paper recommends for images.

    Parameters
    ----------
    images : Tensor
        Shape (N, C, H, W), floating point.

    Returns
    -------
    Tensor
        Zeros of the shape, dtype and device of ``images``.

    References
    ----------
    M. Sundararajan, A. Taly and Q. Yan, "Axiomatic Attribution for Deep Networks",
    ICML 2017.

    Examples
    --------
    >>> black_baseline(torch.ones(2, 1, 4, 4)).abs().sum().item()
    0.0
    """
    _check_images(images)
    return torch.zeros_like(images)


def blurred_baseline(images: Tensor, *, sigma: float = 3.0) -> Tensor:
    """A Gaussian blur of each image: x' = G_sigma * x, per channel.

    The kernel is g(d) proportional to exp(-d^2 / (2 sigma^2)) for integer offsets
    ``|d| <= ceil(3 sigma)``, normalised to sum 1 and applied along rows, then columns. Borders
    are padded by replicating the edge pixels, so every output pixel is a convex combination
    of input pixels: values stay in the input's range and a constant image is unchanged.

    Parameters
    ----------
    images : Tensor
        Shape (N, C, H, W), floating point, values in [0, 1]. Not modified.
    sigma : float, optional
        Standard deviation of the blur in pixels, > 0. Larger sigma removes more of the
        image's structure from the baseline.

    Returns
    -------
    Tensor
        Shape, dtype and device of ``images``; values in [min(images), max(images)].

    Raises
    ------
    TypeError
        If ``images`` is not a floating-point tensor or ``sigma`` is not a number.
    ValueError
        If ``images`` is not 4-D or ``sigma`` is not a positive finite number.

    Examples
    --------
    >>> images = torch.zeros(1, 1, 9, 9)
    >>> images[0, 0, 4, 4] = 1.0
    >>> blurred = blurred_baseline(images, sigma=1.0)
    >>> blurred.shape, round(float(blurred.sum()), 4)
    (torch.Size([1, 1, 9, 9]), 1.0)
    """
    _check_images(images)
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)):
        raise TypeError(f"sigma must be a number; got {type(sigma).__name__}")
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a positive finite number; got {sigma!r}")
    radius = math.ceil(3 * sigma)
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()  # (2r+1,), sums to 1
    channels = images.shape[1]
    padded = F.pad(images.detach(), (radius, radius, radius, radius), mode="replicate")
    # depthwise convolutions: (C, 1, 1, 2r+1) blurs along W, (C, 1, 2r+1, 1) along H
    rows = F.conv2d(padded, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(rows, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


def uniform_noise_baseline(
    images: Tensor,
    *,
    seed: int | torch.Generator = 0,
    low: float = 0.0,
    high: float = 1.0,
) -> Tensor:
    """Independent uniform noise x'_i ~ U[low, high) in the shape of the images.

    Parameters
    ----------
    images : Tensor
        Shape (N, C, H, W), floating point; only its shape, dtype and device are used.
    seed : int or torch.Generator, optional
        An int seeds a fresh generator (the same int gives the same noise); a generator is
        used, and advanced, as given. The global RNG is never touched.
    low, high : float, optional
        Range of the noise, ``low < high``.

    Returns
    -------
    Tensor
        Shape, dtype and device of ``images``, values in [low, high).

    Raises
    ------
    TypeError
        If ``images`` is not a floating-point tensor or ``seed`` is neither an int nor a
        generator.
    ValueError
        If ``images`` is not 4-D or ``low >= high``.

    Examples
    --------
    >>> images = torch.zeros(2, 1, 4, 4)
    >>> a = uniform_noise_baseline(images, seed=1)
    >>> b = uniform_noise_baseline(images, seed=1)
    >>> torch.equal(a, b), bool(a.min() >= 0), bool(a.max() < 1)
    (True, True, True)
    """
    _check_images(images)
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"low and high must be finite with low < high; got {low!r}, {high!r}")
    generator = _generator(seed)
    noise = torch.rand(
        images.shape, generator=generator, dtype=images.dtype, device=generator.device
    )
    return (low + (high - low) * noise).to(images.device)


# --------------------------------------------------------------------------- attributions


def integrated_gradients(
    model: nn.Module,
    images: Tensor,
    *,
    target: int | Tensor,
    baseline: Baseline = None,
    num_steps: int = 50,
    method: str = "gausslegendre",
    batch_size: int = DEFAULT_BATCH_SIZE,
    output_fn: OutputFn | None = None,
    affine_prefix: bool = True,
) -> IGResult:
    """Integrated Gradients of the target class's score, Eq. (1) of the IG paper, by quadrature.

    With the rule's nodes alpha_k and weights w_k (:func:`quadrature_rule`),

    .. math::

        \\mathrm{IG}_i(x) \\approx (x_i - x'_i) \\sum_{k=1}^{m} w_k \\,
            \\frac{\\partial F\\bigl(x' + \\alpha_k (x - x')\\bigr)}{\\partial x_i},

    where F is the target column of ``output_fn(model(.))`` (the logit by default). The
    m x N path points are evaluated in blocks of at most ``batch_size`` rows (whole steps of
    all images, or slices of the images of one step), one forward and one backward pass per
    block; one more batched forward pass over x and x' gives F(x) and F(x'). The result
    carries the completeness gap ``sum_i IG_i(x) - (F(x) - F(x'))`` (Proposition 1 of the paper
    says it is 0 for the exact integral); if it is large relative to ``F(x) - F(x')``, use
    more steps.

    When the model starts with affine layers, F = G o L with L(x) = A x + b
    (:func:`affine_split`), the path and the sum are moved behind L, which is exact:
    L maps the straight path to the straight path z' + alpha_k (z - z') from z' = L(x') to
    z = L(x), and the chain rule gives dF/dx = A^T dG/dz with the same A at every point, so

    .. math::

        \\sum_k w_k \\, \\nabla_x F(x_k) = A^\\top \\sum_k w_k \\, \\nabla_z G(z_k).

    L then runs twice per image (at x and x') instead of once per path point, and its
    backward pass (the product with A^T) once per image after the sum.

    Parameters
    ----------
    model : nn.Module
        Maps a (B, C, H, W) batch to outputs of shape (B, K). Used as given, in its current
        train/eval mode (call ``model.eval()`` first if it has dropout or batch norm: each row
        must be scored independently of the others). Its mode, parameters and their
        ``requires_grad`` flags are left unchanged and no parameter gradients accumulate.
    images : Tensor
        Shape (N, C, H, W), floating point; the inputs x, in [0, 1] for the book's models.
        Not modified.
    target : int or Tensor
        The class whose score is attributed: one int for all images, or an integer tensor of
        shape (N,) with one class per image, each in [0, K).
    baseline : Tensor or callable or None, optional
        x'. None means black (zeros). A tensor must broadcast to the shape of ``images``
        (e.g. (C, H, W) or (1, C, H, W)); a callable is called on ``images`` and must return
        such a tensor (e.g. :func:`blurred_baseline`). Not modified; ``IGResult.baseline``
        may be a view of it.
    num_steps : int, optional
        Number m of path points per image, >= 1 (>= 2 for the trapezoid rule).
    method : str, optional
        Quadrature rule, one of :data:`METHODS`.
    batch_size : int, optional
        Maximum number of path points per forward/backward pass, >= 1. Bounds memory.
    output_fn : callable, optional
        Applied to the model's output before the target column is taken; it must map
        (B, K) to (B, K') row by row. For example ``lambda z: z.softmax(dim=1)`` attributes
        the class probability instead of the logit.
    affine_prefix : bool, optional
        Move the path behind the model's leading affine layers, as above, when
        :func:`affine_split` finds any. L runs in float64 (at x and x' only, and for the
        pull-back), the points z_k are formed in float64 and then rounded to the images'
        dtype, and the sum over k is kept in float64. Rounding keeps signs and order, so
        the first ReLU or max pooling of G sees every z_k on the side float64 puts it;
        without this, a point within float32 rounding of a ReLU's kink can fall on the
        other side and move the attributions by about 1e-3 of the largest (the gradient
        jumps there). False evaluates the whole model, in the images' dtype, at every
        path point, and is exposed to that rounding at every kink.

    Returns
    -------
    IGResult
        ``attributions`` (N, C, H, W), ``completeness_gap`` (N,), ``scores`` F(x) (N,),
        ``baseline_scores`` F(x') (N,), the ``baseline`` used, ``method``, ``num_steps``.

    Raises
    ------
    TypeError
        If ``images`` is not a floating-point tensor, ``num_steps`` or ``batch_size`` is not
        an int, ``target`` is not an int or integer tensor, or ``baseline`` is of a wrong type.
    ValueError
        If ``images`` is not 4-D or empty, ``method`` is unknown, ``num_steps`` or
        ``batch_size`` is too small, ``baseline`` does not broadcast to the images, ``target``
        has a wrong shape or a class outside [0, K), or the model output is not (B, K).

    References
    ----------
    M. Sundararajan, A. Taly and Q. Yan, "Axiomatic Attribution for Deep Networks",
    ICML 2017.

    Examples
    --------
    >>> gen = torch.Generator().manual_seed(0)
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    >>> for p in model.parameters():
    ...     _ = nn.init.normal_(p, std=0.5, generator=gen)
    >>> images = torch.rand(2, 1, 4, 4, generator=gen)
    >>> result = integrated_gradients(model, images, target=torch.tensor([0, 2]), num_steps=64)
    >>> result.attributions.shape, result.completeness_gap.shape
    (torch.Size([2, 1, 4, 4]), torch.Size([2]))
    >>> bool((result.relative_gap < 0.05).all())
    True
    """
    _check_images(images)
    _check_int("batch_size", batch_size, minimum=1)
    rule = quadrature_rule(method, num_steps)  # checks method and num_steps
    images = images.detach()
    baseline_images = _resolve_baseline(baseline, images)
    target_classes = _resolve_target(target, images)
    endpoints = torch.cat([images, baseline_images])  # (2N, C, H, W)
    endpoint_scores = _scores_no_grad(
        model, endpoints, target_classes.repeat(2), output_fn, batch_size
    )
    scores, baseline_scores = endpoint_scores.chunk(2)  # (N,), (N,)
    split = affine_split(model) if affine_prefix else None
    if split is None:
        mean_gradient = _path_gradient_integral(
            model, images, baseline_images, target_classes, output_fn, rule, batch_size
        )
    else:
        prefix, rest = split
        # L runs in float64 (twice per image): the path points z_k are formed in float64 and
        # only then rounded to the images' dtype, which keeps their signs and order, so the
        # first ReLU (or max pooling) of G sees every z_k on the side float64 puts it
        prefix_wide = _widened(prefix, images.dtype)
        wide = torch.promote_types(images.dtype, torch.float64)
        # z = L(x) and z' = L(x'); 4-D activations in channels-last layout, where max pooling
        # and its backward pass ran about twice as fast as in the default layout
        end, start = (_channels_last(_map_no_grad(prefix_wide, endpoints_.to(wide), batch_size))
                      for endpoints_ in (images, baseline_images))
        inner = _path_gradient_integral(
            rest, end, start, target_classes, output_fn, rule, batch_size,
            points_dtype=images.dtype,
        )  # sum_k w_k dG(z_k)/dz, shape of z, float64
        mean_gradient = _pull_back(prefix_wide, images.to(wide), inner, batch_size)  # A^T inner
        mean_gradient = mean_gradient.to(images.dtype)
    attributions = (images - baseline_images) * mean_gradient  # (N, C, H, W)
    gap = attributions.flatten(1).sum(dim=1) - (scores - baseline_scores)
    return IGResult(
        attributions=attributions,
        completeness_gap=gap,
        scores=scores,
        baseline_scores=baseline_scores,
        baseline=baseline_images,
        method=method,
        num_steps=num_steps,
    )


def affine_split(model: nn.Module) -> tuple[nn.Sequential, nn.Sequential] | None:
    """Split a model into its leading affine layers L and the rest G, so that F = G o L.

    The model must be an ``nn.Sequential`` (not a subclass) or have an ``as_sequential()``
    method that returns one computing the same function (the models in
    :mod:`backdoorlab.models` do); nested ``nn.Sequential`` containers are flattened. L is the longest run of leading layers that are affine maps of their input:
    :class:`~backdoorlab.models.Normalize`, linear and convolution layers, ``Flatten``,
    ``Unflatten``, ``Identity`` and average pooling; batch normalisation and dropout in eval
    mode (with running statistics), since in training mode they depend on the batch or on
    chance. Layers are matched by exact type, so a subclass with its own ``forward`` ends L;
    so does a layer with forward hooks.

    Parameters
    ----------
    model : nn.Module
        The classifier; not modified. The returned containers share its layers.

    Returns
    -------
    tuple of nn.Sequential, or None
        ``(L, G)``; G is empty (the identity) when the whole model is affine. None if the
        model has no sequential form, has forward hooks itself, or does not start with an
        affine layer.

    Examples
    --------
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    >>> prefix, rest = affine_split(model)
    >>> len(prefix), len(rest)
    (2, 2)
    >>> x = torch.rand(5, 1, 2, 2)
    >>> torch.equal(rest(prefix(x)), model(x))
    True
    """
    _checks.check_model(model)
    if _has_hooks(model):
        return None
    if type(model) is nn.Sequential:  # a subclass may have its own forward
        sequence = model
    elif callable(getattr(model, "as_sequential", None)):
        sequence = model.as_sequential()
    else:
        return None
    layers = list(_flat_layers(sequence))
    cut = 0
    while cut < len(layers) and _is_affine(layers[cut]):
        cut += 1
    if cut == 0:
        return None
    return nn.Sequential(*layers[:cut]), nn.Sequential(*layers[cut:])


def gradients(
    model: nn.Module,
    images: Tensor,
    *,
    target: int | Tensor,
    batch_size: int = DEFAULT_BATCH_SIZE,
    output_fn: OutputFn | None = None,
) -> Tensor:
    """The gradient of the target score with respect to the pixels, dF(x)/dx_i.

    The plain gradient (the signed "saliency map"); Sundararajan et al. point out that
    it breaks sensitivity where the model saturates, which IG repairs.

    Parameters
    ----------
    model : nn.Module
        Maps (B, C, H, W) to (B, K); used as given (see :func:`integrated_gradients`).
    images : Tensor
        Shape (N, C, H, W), floating point. Not modified.
    target : int or Tensor
        One class for all images, or an integer tensor of shape (N,); classes in [0, K).
    batch_size : int, optional
        Maximum number of images per forward/backward pass, >= 1.
    output_fn : callable, optional
        Applied row-wise to the model's output before the target column is taken.

    Returns
    -------
    Tensor
        Shape (N, C, H, W), dtype of ``images``.

    Raises
    ------
    TypeError, ValueError
        As :func:`integrated_gradients`, for ``images``, ``target`` and ``batch_size``.

    References
    ----------
    M. Sundararajan, A. Taly and Q. Yan, "Axiomatic Attribution for Deep Networks",
    ICML 2017.

    Examples
    --------
    >>> gen = torch.Generator().manual_seed(0)
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    >>> grads = gradients(model, torch.rand(3, 1, 2, 2, generator=gen), target=1)
    >>> torch.allclose(grads[0].flatten(), model[1].weight[1])
    True
    """
    _check_images(images)
    _check_int("batch_size", batch_size, minimum=1)
    images = images.detach()
    target_classes = _resolve_target(target, images)
    chunks = [
        _gradients_of_scores(model, images[start : start + batch_size],
                             target_classes[start : start + batch_size], output_fn)
        for start in range(0, images.shape[0], batch_size)
    ]
    return torch.cat(chunks)


def gradient_times_input(
    model: nn.Module,
    images: Tensor,
    *,
    target: int | Tensor,
    batch_size: int = DEFAULT_BATCH_SIZE,
    output_fn: OutputFn | None = None,
) -> Tensor:
    """Gradient times input, x_i * dF(x)/dx_i.

    It equals IG with the black baseline and a single right-endpoint step
    (``method="riemann_right", num_steps=1``): a one-point quadrature of Eq. (1) of the IG
    paper, exact only where F is linear on the path.

    Parameters
    ----------
    model : nn.Module
        Maps (B, C, H, W) to (B, K); used as given (see :func:`integrated_gradients`).
    images : Tensor
        Shape (N, C, H, W), floating point. Not modified.
    target : int or Tensor
        One class for all images, or an integer tensor of shape (N,); classes in [0, K).
    batch_size : int, optional
        Maximum number of images per forward/backward pass, >= 1.
    output_fn : callable, optional
        Applied row-wise to the model's output before the target column is taken.

    Returns
    -------
    Tensor
        Shape (N, C, H, W), dtype of ``images``.

    Raises
    ------
    TypeError, ValueError
        As :func:`gradients`.

    References
    ----------
    M. Sundararajan, A. Taly and Q. Yan, "Axiomatic Attribution for Deep Networks",
    ICML 2017.

    Examples
    --------
    >>> gen = torch.Generator().manual_seed(0)
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    >>> images = torch.rand(3, 1, 2, 2, generator=gen)
    >>> gxi = gradient_times_input(model, images, target=0)
    >>> torch.allclose(gxi.flatten(1).sum(1), model(images)[:, 0] - model[1].bias[0])
    True
    """
    grads = gradients(model, images, target=target, batch_size=batch_size, output_fn=output_fn)
    return images.detach() * grads


def positive_mass_share(attributions: Tensor, mask: Tensor) -> Tensor:
    """Share of each map's positive attribution that falls inside a region.

    For a map :math:`a` and the region :math:`P = \\{i : m_i > 0\\}` of a mask :math:`m`
    (for example a trigger's),

    .. math:: \\mu_P(a) = \\frac{\\sum_{i \\in P} \\max(a_i, 0)}{\\sum_i \\max(a_i, 0)} \\in [0, 1].

    Negative attributions (evidence against the class) are left out. A map spread evenly
    over the image gives the region's share of the pixels, :math:`|P| / d`.

    Parameters
    ----------
    attributions : Tensor
        Shape (N, C, H, W).
    mask : Tensor
        Shape (C, H, W) or (1, H, W); nonzero entries mark the region.

    Returns
    -------
    Tensor
        Shape (N,), values in [0, 1]; NaN for a map with no positive attribution at all.

    Raises
    ------
    TypeError, ValueError
        If ``attributions`` is not a 4-D floating tensor or ``mask`` does not fit its images.

    Examples
    --------
    >>> maps = torch.tensor([[[[3.0, 1.0], [-2.0, 0.0]]]])
    >>> mask = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    >>> positive_mass_share(maps, mask)
    tensor([0.7500])
    """
    _check_images(attributions, "attributions")
    if not isinstance(mask, Tensor) or mask.ndim != 3:
        raise TypeError(f"mask must be a 3-D tensor (C, H, W), got {type(mask).__name__}")
    channels = attributions.shape[1]
    if mask.shape[1:] != attributions.shape[2:] or mask.shape[0] not in (1, channels):
        raise ValueError(
            f"mask of shape {tuple(mask.shape)} does not fit attributions of shape {tuple(attributions.shape)}"
        )
    region = (mask != 0).expand(channels, -1, -1).flatten()  # (C*H*W,)
    positive = attributions.detach().flatten(1).clamp_min(0)  # (N, C*H*W)
    total = positive.sum(dim=1)
    share = positive[:, region].sum(dim=1) / total
    return torch.where(total > 0, share, torch.full_like(share, float("nan")))


# --------------------------------------------------------------------------- axioms, faithfulness


@dataclass(frozen=True, eq=False)
class OnePixelCheck:
    """Sensitivity (a) tested pixel by pixel: x' equals x except at one pixel.

    Attributes
    ----------
    pixels : Tensor
        Shape (P,), int64: flat indices (into C*H*W) of the pixels changed, one per baseline.
    score_change : Tensor
        Shape (P,): F(x) - F(x'_p) for the baseline x'_p that differs from x at pixel p only.
    gradient : Tensor
        Shape (P,): dF(x)/dx_p, the plain gradient's attribution of pixel p.
    integrated_gradients : Tensor
        Shape (P,): IG_p(x) against x'_p (the only pixel IG can credit, since x_i = x'_i
        elsewhere).
    tolerance : float
        A score change or attribution counts as nonzero when its absolute value exceeds it.
    """

    pixels: Tensor
    score_change: Tensor
    gradient: Tensor
    integrated_gradients: Tensor
    tolerance: float

    @property
    def changed(self) -> Tensor:
        """Shape (P,), bool: baselines whose score change exceeds the tolerance in size."""
        return self.score_change.abs() > self.tolerance

    @property
    def gradient_violations(self) -> int:
        """Baselines that change F but get a zero gradient (size at most the tolerance)."""
        return int((self.changed & (self.gradient.abs() <= self.tolerance)).sum())

    @property
    def ig_violations(self) -> int:
        """Baselines that change F but get a zero IG attribution (size at most the tolerance)."""
        return int((self.changed & (self.integrated_gradients.abs() <= self.tolerance)).sum())


def one_pixel_sensitivity(
    model: nn.Module,
    image: Tensor,
    *,
    target: int,
    pixels: Tensor,
    value: float = 0.0,
    num_steps: int = 50,
    method: str = "gausslegendre",
    tolerance: float = 1e-6,
    batch_size: int = DEFAULT_BATCH_SIZE,
    output_fn: OutputFn | None = None,
) -> OnePixelCheck:
    """Test sensitivity (a) of the plain gradient and of IG with one-pixel baselines.

    For every pixel p the baseline x'_p equals the image x except x'_p[p] = ``value``.
    Sensitivity (a) asks that a_p(x) != 0 whenever F(x) != F(x'_p). Since x and x'_p differ
    only at p, IG credits p alone and completeness gives IG_p(x) = F(x) - F(x'_p) up to the
    quadrature error; the plain gradient a_p = dF(x)/dx_p can be 0 where F is saturated.

    Parameters
    ----------
    model : nn.Module
        Maps (B, C, H, W) to (B, K); used as given (see :func:`integrated_gradients`).
    image : Tensor
        Shape (1, C, H, W), floating point.
    target : int
        The class whose score F is attributed.
    pixels : Tensor
        Shape (P,), integer flat indices into C*H*W, distinct.
    value : float, optional
        The baseline's value at the changed pixel.
    num_steps, method : optional
        Quadrature of IG (:func:`integrated_gradients`).
    tolerance : float, optional
        Threshold below which a score change or an attribution counts as zero, >= 0.
    batch_size : int, optional
        Path points per pass.
    output_fn : callable, optional
        As in :func:`integrated_gradients`.

    Returns
    -------
    OnePixelCheck
        Score changes, gradients and IG attributions of the P pixels.

    Raises
    ------
    TypeError, ValueError
        If ``image`` is not one 4-D floating image, ``pixels`` is not a 1-D integer tensor of
        distinct indices in range, or ``tolerance`` is negative.

    Examples
    --------
    >>> class Saturating(nn.Module):  # F(x) = 1 - ReLU(1 - x), saturated for x >= 1
    ...     def forward(self, x):
    ...         return 1 - torch.relu(1 - x.flatten(1))
    >>> check = one_pixel_sensitivity(Saturating(), torch.full((1, 1, 1, 1), 2.0), target=0,
    ...                               pixels=torch.tensor([0]), num_steps=64)
    >>> check.score_change.tolist(), check.gradient.abs().tolist()
    ([1.0], [0.0])
    >>> check.gradient_violations, check.ig_violations
    (1, 0)
    """
    _checks.check_model(model)
    _checks.check_labels(pixels, name="pixels")  # a 1-D integer tensor (a bool mask is refused)
    _checks.check_real("value", value)
    _checks.check_real("tolerance", tolerance, minimum=0.0)
    if output_fn is not None and not callable(output_fn):
        raise TypeError(f"output_fn must be callable or None, got {type(output_fn).__name__}")
    _check_images(image, "image")
    if image.shape[0] != 1:
        raise ValueError(f"image must hold exactly one image; got shape {tuple(image.shape)}")
    if not isinstance(pixels, Tensor) or pixels.ndim != 1 or pixels.is_floating_point():
        raise TypeError("pixels must be a 1-D integer tensor of flat pixel indices")
    size = image[0].numel()
    if pixels.numel() == 0 or pixels.unique().numel() != pixels.numel() or \
            int(pixels.min()) < 0 or int(pixels.max()) >= size:
        raise ValueError(f"pixels must be distinct indices in [0, {size}), at least one")
    if not (isinstance(tolerance, (int, float)) and tolerance >= 0):
        raise ValueError(f"tolerance must be a number >= 0; got {tolerance!r}")
    pixels = pixels.to(device=image.device, dtype=torch.long)
    count = pixels.numel()
    images = image.detach().expand(count, *image.shape[1:])
    baselines = images.flatten(1).clone()
    baselines[torch.arange(count, device=image.device), pixels] = value
    baselines = baselines.view_as(images)
    result = integrated_gradients(model, images, target=target, baseline=baselines,
                                  num_steps=num_steps, method=method, batch_size=batch_size,
                                  output_fn=output_fn)
    rows = torch.arange(count, device=image.device)
    grad = gradients(model, image, target=target, output_fn=output_fn).flatten()
    return OnePixelCheck(
        pixels=pixels,
        score_change=result.scores - result.baseline_scores,
        gradient=grad[pixels],
        integrated_gradients=result.attributions.flatten(1)[rows, pixels],
        tolerance=float(tolerance),
    )


@dataclass(frozen=True, eq=False)
class PerturbationCurve:
    """Scores of images whose top-ranked features are deleted (or inserted) step by step.

    Attributes
    ----------
    counts : Tensor
        Shape (K,), int64, increasing from 0 to d = C*H*W: features changed at each point.
    scores : Tensor
        Shape (N, K): the target score of every image after ``counts[k]`` features.
    mode : str
        ``"deletion"`` or ``"insertion"``.
    """

    counts: Tensor
    scores: Tensor
    mode: str

    @property
    def fractions(self) -> Tensor:
        """Shape (K,): counts / d, from 0 to 1."""
        return self.counts.to(self.scores.dtype) / self.counts[-1]

    @property
    def auc(self) -> Tensor:
        """Shape (N,): area under each image's curve over the fraction in [0, 1] (trapezoid)."""
        return torch.trapezoid(self.scores, self.fractions, dim=1)


def perturbation_curve(
    model: nn.Module,
    images: Tensor,
    ranking: Tensor,
    *,
    target: int | Tensor,
    mode: str = "deletion",
    step: int = 8,
    fill: float = 0.0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    output_fn: OutputFn | None = None,
) -> PerturbationCurve:
    r"""Deletion or insertion curve of an attribution: a test of its faithfulness.

    Features are ordered by decreasing ``ranking`` (ties by index). With
    :math:`S_k` the first :math:`c_k` features of that order,

    * deletion: :math:`x^{(k)}_i = \mathrm{fill}` for :math:`i \in S_k`, else :math:`x_i`;
    * insertion: :math:`x^{(k)}_i = x_i` for :math:`i \in S_k`, else fill;

    and the curve is :math:`F(x^{(k)})` against :math:`c_k / d`. A faithful attribution makes
    the deletion curve fall fast (small area) and the insertion curve rise fast (large area)
    (Petsiuk, Das and Saenko, 2018).

    Parameters
    ----------
    model : nn.Module
        Maps (B, C, H, W) to (B, K); used as given.
    images : Tensor
        Shape (N, C, H, W), floating point.
    ranking : Tensor
        Shape (N, C, H, W): the attributions (or any scores) that order the features.
    target : int or Tensor
        One class, or an integer tensor of shape (N,).
    mode : str, optional
        ``"deletion"`` or ``"insertion"``.
    step : int, optional
        Features changed between two points of the curve, >= 1; the last point is d.
    fill : float, optional
        The value of a deleted (or not yet inserted) feature.
    batch_size : int, optional
        Images per forward pass.
    output_fn : callable, optional
        Applied row-wise to the model's output, e.g. a softmax to score probabilities.

    Returns
    -------
    PerturbationCurve
        counts (K,), scores (N, K), mode.

    Raises
    ------
    TypeError, ValueError
        For a wrong ``images``, ``ranking`` shape, ``mode``, ``step`` or ``target``.

    Examples
    --------
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 1))
    >>> with torch.no_grad():
    ...     _ = model[1].weight.copy_(torch.tensor([[4.0, 3.0, 2.0, 1.0]]))
    ...     _ = model[1].bias.zero_()
    >>> images = torch.ones(1, 1, 2, 2)
    >>> curve = perturbation_curve(model, images, model[1].weight.view(1, 1, 2, 2), target=0,
    ...                            step=1)
    >>> curve.counts.tolist(), curve.scores.tolist()
    ([0, 1, 2, 3, 4], [[10.0, 6.0, 3.0, 1.0, 0.0]])
    >>> float(curve.auc)  # (8 + 4.5 + 2 + 0.5) / 4
    3.75
    """
    _check_images(images)
    if not isinstance(ranking, Tensor) or ranking.shape != images.shape:
        raise ValueError(f"ranking must be a tensor of the images' shape {tuple(images.shape)}")
    _checks.check_finite("ranking", ranking)
    _checks.check_real("fill", fill)
    _checks.check_model(model)
    if output_fn is not None and not callable(output_fn):
        raise TypeError(f"output_fn must be callable or None, got {type(output_fn).__name__}")
    if mode not in ("deletion", "insertion"):
        raise ValueError(f"mode must be 'deletion' or 'insertion'; got {mode!r}")
    _check_int("step", step, minimum=1)
    _check_int("batch_size", batch_size, minimum=1)
    images = images.detach()
    target_classes = _resolve_target(target, images)
    rank = _ranks(ranking)  # (N, d): position of each feature in the order
    size = rank.shape[1]
    counts = list(range(0, size, step)) + [size]
    flat = images.flatten(1)
    scores = []
    for count in counts:
        chosen = rank < count  # (N, d)
        if mode == "insertion":
            chosen = ~chosen
        points = flat.masked_fill(chosen, fill).view_as(images)
        scores.append(_scores_no_grad(model, points, target_classes, output_fn, batch_size))
    return PerturbationCurve(counts=torch.tensor(counts), scores=torch.stack(scores, dim=1),
                             mode=mode)


def occlude_top_k(images: Tensor, ranking: Tensor, *, k: int, fill: float = 0.0) -> Tensor:
    """The images with their k top-ranked features set to ``fill``.

    :math:`\\tilde x_i = \\mathrm{fill}` for the k features with the largest ``ranking``
    (ties by index), :math:`\\tilde x_i = x_i` otherwise. With a random ranking it occludes k
    random features, the control.

    Parameters
    ----------
    images : Tensor
        Shape (N, C, H, W), floating point. Not modified.
    ranking : Tensor
        Shape (N, C, H, W).
    k : int
        Number of features occluded per image, 0 <= k <= C*H*W.
    fill : float, optional
        The value written.

    Returns
    -------
    Tensor
        Shape and dtype of ``images``.

    Raises
    ------
    TypeError, ValueError
        For a wrong ``images`` or ``ranking`` or ``k`` out of range.

    Examples
    --------
    >>> images = torch.ones(1, 1, 2, 2)
    >>> occlude_top_k(images, torch.tensor([[[[0.1, 0.9], [0.5, 0.2]]]]), k=2).flatten().tolist()
    [1.0, 0.0, 0.0, 1.0]
    """
    _check_images(images)
    if not isinstance(ranking, Tensor) or ranking.shape != images.shape:
        raise ValueError(f"ranking must be a tensor of the images' shape {tuple(images.shape)}")
    _checks.check_finite("ranking", ranking)
    _checks.check_real("fill", fill)
    _check_int("k", k, minimum=0)
    if k > images[0].numel():
        raise ValueError(f"k must be at most {images[0].numel()}; got {k}")
    chosen = _ranks(ranking) < k
    return images.detach().flatten(1).masked_fill(chosen, fill).view_as(images)


def square_of_most_mass(attributions: Tensor, *, size: int) -> Tensor:
    """The size x size square with the largest mean positive attribution over the maps.

    With :math:`\\bar a_{hw} = \\frac1N \\sum_n \\sum_c \\max(a^{(n)}_{chw}, 0)`, the square's
    top-left corner is :math:`\\arg\\max_{(h, w)} \\sum_{0 \\le u, v < \\mathrm{size}}
    \\bar a_{h+u, w+v}` (the first in row-major order on ties). It localises a patch trigger
    from attributions alone, with no knowledge of where the trigger is.

    Parameters
    ----------
    attributions : Tensor
        Shape (N, C, H, W).
    size : int
        Side of the square, 1 <= size <= min(H, W).

    Returns
    -------
    Tensor
        Shape (1, H, W), bool: the square.

    Examples
    --------
    >>> maps = torch.zeros(2, 1, 5, 5)
    >>> maps[:, 0, 3:5, 2:4] = 1.0
    >>> square_of_most_mass(maps, size=2)[0].nonzero().tolist()
    [[3, 2], [3, 3], [4, 2], [4, 3]]
    """
    _check_images(attributions, "attributions")
    height, width = attributions.shape[2:]
    _check_int("size", size, minimum=1)
    if size > min(height, width):
        raise ValueError(f"size must be at most {min(height, width)}; got {size}")
    mean = attributions.detach().clamp_min(0).sum(dim=1).mean(dim=0)  # (H, W)
    sums = F.avg_pool2d(mean[None, None], size, stride=1)[0, 0]  # (H-size+1, W-size+1)
    corner = int(sums.flatten().argmax())
    row, col = divmod(corner, sums.shape[1])
    square = torch.zeros(1, height, width, dtype=torch.bool, device=attributions.device)
    square[0, row : row + size, col : col + size] = True
    return square


def mask_iou(first: Tensor, second: Tensor) -> float:
    """Intersection over union of two masks (their nonzero entries A and B).

    .. math:: \\mathrm{IoU}(A, B) = \\frac{|A \\cap B|}{|A \\cup B|}

    Parameters
    ----------
    first, second : Tensor
        Masks of the same shape, not both empty.

    Returns
    -------
    float
        In [0, 1].

    Examples
    --------
    >>> mask_iou(torch.tensor([1, 1, 0, 0]), torch.tensor([0, 1, 1, 0]))
    0.3333333333333333
    """
    if not isinstance(first, Tensor) or not isinstance(second, Tensor):
        raise TypeError("first and second must be tensors")
    _checks.check_finite("first", first)
    _checks.check_finite("second", second)
    if first.shape != second.shape:
        raise ValueError(f"first and second must have the same shape, got {tuple(first.shape)} and "
                         f"{tuple(second.shape)}")
    a, b = first != 0, second != 0
    union = int((a | b).sum())
    if union == 0:
        raise ValueError("first and second are both empty masks: their IoU is undefined")
    return int((a & b).sum()) / union


def _ranks(ranking: Tensor) -> Tensor:
    """Shape (N, d): the position of each feature when sorted by decreasing score."""
    flat = ranking.detach().flatten(1)
    order = flat.argsort(dim=1, descending=True, stable=True)
    positions = torch.arange(flat.shape[1], device=flat.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, positions)


# --------------------------------------------------------------------------- the math


def _path_gradient_integral(
    model: nn.Module,
    end: Tensor,
    start: Tensor,
    target: Tensor,
    output_fn: OutputFn | None,
    rule: QuadratureRule,
    batch_size: int,
    points_dtype: torch.dtype | None = None,
) -> Tensor:
    """sum_k w_k dF(x' + alpha_k (x - x'))/dx, shape of x, in chunks of path points.

    The points are formed in the dtype of ``end`` and ``start`` and rounded to
    ``points_dtype`` (default: the same) before F sees them; the sum is kept in the dtype of
    ``end``.

    x = ``end`` and x' = ``start`` have shape (N, ...): images, or the activations behind an
    affine prefix. The m x N grid of (step, image) path points is cut into blocks of at most
    batch_size points: whole steps of all images when batch_size >= N, else slices of images
    of one step. Blocks are built on the fly from slices, so only one block of points exists
    at a time; they keep the memory layout of ``start`` and ``end``.
    """
    num_images = end.shape[0]
    alphas = rule.nodes.to(end)  # (m,)
    weights = rule.weights  # (m,), float64; each is used as a Python float
    direction = end - start  # (N, ...)
    total = torch.zeros_like(end)
    steps_per_block = max(1, batch_size // num_images)
    images_per_block = min(batch_size, num_images)
    for s0 in range(0, rule.num_steps, steps_per_block):
        steps = slice(s0, min(s0 + steps_per_block, rule.num_steps))
        for i0 in range(0, num_images, images_per_block):
            rows = slice(i0, min(i0 + images_per_block, num_images))
            alpha = alphas[steps].view(-1, *(1,) * end.ndim)  # (S, 1, ..., 1)
            points = torch.addcmul(start[rows], alpha, direction[rows])  # (S, B, ...)
            if points_dtype is not None:
                points = points.to(points_dtype)
            grads = _gradients_of_scores(
                model, points.flatten(0, 1), target[rows].repeat(len(alpha)), output_fn
            ).view(points.shape)
            block_total = total[rows]  # a view: (B, ...)
            for weight, grad in zip(weights[steps].tolist(), grads):  # in place, any layout
                block_total.add_(grad, alpha=weight)
    return total


def _widened(layers: nn.Module, dtype: torch.dtype) -> nn.Module:
    """The layers in float64: a float64 copy if ``dtype`` is narrower, else the layers."""
    if torch.promote_types(dtype, torch.float64) == dtype:
        return layers
    return copy.deepcopy(layers).to(torch.float64)


def _map_no_grad(layers: nn.Module, inputs: Tensor, batch_size: int) -> Tensor:
    """layers(inputs) in chunks of batch_size rows, without a graph."""
    with torch.no_grad():
        return torch.cat([layers(inputs[start : start + batch_size])
                          for start in range(0, inputs.shape[0], batch_size)])


def _pull_back(prefix: nn.Module, images: Tensor, outer: Tensor, batch_size: int) -> Tensor:
    """A^T outer for the affine prefix L(x) = A x + b: its vector-Jacobian product, per row.

    The Jacobian of an affine map is the same at every point, so it is taken at the images.
    """
    chunks = []
    for start in range(0, images.shape[0], batch_size):
        points = images[start : start + batch_size].detach().requires_grad_(True)
        with torch.enable_grad():
            (grads,) = torch.autograd.grad(prefix(points), points,
                                           grad_outputs=outer[start : start + batch_size])
        chunks.append(grads)
    return torch.cat(chunks).contiguous()


def _channels_last(activations: Tensor) -> Tensor:
    """4-D activations in channels-last layout (same values); others unchanged."""
    if activations.ndim != 4:
        return activations
    return activations.contiguous(memory_format=torch.channels_last)


_AFFINE_LAYERS = (
    Normalize, nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Flatten, nn.Unflatten,
    nn.Identity, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
)
_AFFINE_IN_EVAL = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_IDENTITY_IN_EVAL = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)


def _is_affine(layer: nn.Module) -> bool:
    """Whether the layer is, as it will run, an affine map of its input alone."""
    kind = type(layer)
    if _has_hooks(layer):
        return False
    if kind in _AFFINE_LAYERS or (kind in _IDENTITY_IN_EVAL and not layer.training):
        return True
    if kind in _AFFINE_IN_EVAL:  # uses the running statistics only in eval mode
        return not layer.training and layer.running_mean is not None
    return False


def _has_hooks(layer: nn.Module) -> bool:
    return bool(layer._forward_hooks or layer._forward_pre_hooks)


def _flat_layers(sequence: nn.Sequential):
    """The layers of a Sequential, with nested Sequentials opened up, in order."""
    for layer in sequence:
        if type(layer) is nn.Sequential and not _has_hooks(layer):
            yield from _flat_layers(layer)
        else:
            yield layer


def _gradients_of_scores(
    model: nn.Module, points: Tensor, target: Tensor, output_fn: OutputFn | None
) -> Tensor:
    """Row-wise dF_target(p)/dp for a batch p of shape (B, C, H, W)."""
    points = points.detach().requires_grad_(True)
    with torch.enable_grad():
        scores = _target_scores(model, points, target, output_fn)  # (B,)
        if not scores.requires_grad:  # the output does not depend on the input
            return torch.zeros_like(points)
        # rows are scored independently, so the gradient of the sum is every row's gradient
        (grads,) = torch.autograd.grad(scores.sum(), points, allow_unused=True)
    return torch.zeros_like(points) if grads is None else grads


def _scores_no_grad(
    model: nn.Module, images: Tensor, target: Tensor, output_fn: OutputFn | None,
    batch_size: int,
) -> Tensor:
    """F_target of every image, shape (N,), in chunks of batch_size."""
    with torch.no_grad():
        return torch.cat([
            _target_scores(model, images[start : start + batch_size],
                           target[start : start + batch_size], output_fn)
            for start in range(0, images.shape[0], batch_size)
        ])


def _target_scores(
    model: nn.Module, points: Tensor, target: Tensor, output_fn: OutputFn | None
) -> Tensor:
    """Column target[b] of row b of output_fn(model(points)), shape (B,)."""
    outputs = model(points)
    if output_fn is not None:
        outputs = output_fn(outputs)
    if not isinstance(outputs, Tensor) or outputs.ndim != 2 or outputs.shape[0] != len(points):
        shape = tuple(outputs.shape) if isinstance(outputs, Tensor) else type(outputs).__name__
        raise ValueError(
            f"model output (after output_fn) must have shape ({len(points)}, num_classes); "
            f"got {shape}"
        )
    num_classes = outputs.shape[1]
    bad = (target < 0) | (target >= num_classes)
    if bad.any():
        raise ValueError(
            f"target must be in [0, {num_classes}) for a model with {num_classes} outputs; "
            f"got {int(target[bad][0])}"
        )
    return outputs.gather(1, target.view(-1, 1)).squeeze(1)


# --------------------------------------------------------------------------- input checks


def _check_int(name: str, value: object, *, minimum: int) -> None:
    _checks.check_int(name, value)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {value}")


def _check_images(images: object, name: str = "images") -> None:
    if not isinstance(images, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(images).__name__}")
    if images.ndim != 4:
        raise ValueError(
            f"{name} must have shape (N, C, H, W); got shape {tuple(images.shape)}"
        )
    if not images.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor; got dtype {images.dtype}")
    if images.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one image; got shape "
                         f"{tuple(images.shape)}")
    _checks.check_finite(name, images)


def _resolve_baseline(baseline: Baseline, images: Tensor) -> Tensor:
    """The baseline as a tensor of the images' shape, dtype and device (possibly expanded)."""
    if baseline is None:
        return torch.zeros_like(images)
    if not isinstance(baseline, Tensor):
        if not callable(baseline):
            raise TypeError(
                f"baseline must be None, a tensor or a callable; got {type(baseline).__name__}"
            )
        baseline = baseline(images)
        if not isinstance(baseline, Tensor):
            raise TypeError(
                f"baseline callable must return a tensor; got {type(baseline).__name__}"
            )
    if not baseline.is_floating_point():
        raise TypeError(f"baseline must be a floating-point tensor; got dtype {baseline.dtype}")
    _checks.check_finite("baseline", baseline)
    try:
        shape = torch.broadcast_shapes(baseline.shape, images.shape)
    except RuntimeError:
        shape = None
    if shape != images.shape:
        raise ValueError(
            f"baseline of shape {tuple(baseline.shape)} does not broadcast to images of "
            f"shape {tuple(images.shape)}"
        )
    return baseline.detach().to(dtype=images.dtype, device=images.device).expand_as(images)


def _resolve_target(target: int | Tensor, images: Tensor) -> Tensor:
    """The target class of every image, int64 of shape (N,); range checked at the forward."""
    num_images = images.shape[0]
    if isinstance(target, Tensor):
        if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
            raise TypeError(f"target must be an int or an integer tensor; got dtype {target.dtype}")
        if target.ndim == 0:
            target = target.expand(num_images)
        if target.shape != (num_images,):
            raise ValueError(
                f"target tensor must have shape ({num_images},), one class per image; "
                f"got {tuple(target.shape)}"
            )
        return target.detach().to(device=images.device, dtype=torch.long)
    if isinstance(target, bool) or not isinstance(target, int):
        raise TypeError(f"target must be an int or an integer tensor; got {type(target).__name__}")
    return torch.full((num_images,), target, dtype=torch.long, device=images.device)


def _generator(seed: int | torch.Generator) -> torch.Generator:
    if isinstance(seed, torch.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int or a torch.Generator; got {type(seed).__name__}")
    return torch.Generator().manual_seed(_checks.check_seed(seed))
