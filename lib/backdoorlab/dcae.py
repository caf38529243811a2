"""The D-vine copula autoencoder: an autoencoder's latent codes modelled by a vine copula.

An autoencoder :math:`x \\mapsto z = E(x) \\mapsto \\hat x = D(z)` compresses images to
:math:`d` latent coordinates. A *copula autoencoder* turns it into a generative model by
estimating the density of the codes with Sklar's theorem,

.. math::

    f_Z(z) = c\\bigl(F_1(z_1), \\dots, F_d(z_d)\\bigr) \\prod_{j=1}^d f_j(z_j),

the marginals :math:`F_j` empirically and the copula :math:`c` as a D-vine
(:mod:`backdoorlab.copula`), then decoding draws from it. The pipeline of
:func:`generate` is

.. math::

    x_{1:n} \\xrightarrow{E} z_{1:n} \\xrightarrow{\\text{ranks}} \\hat u_{1:n}
    \\xrightarrow{\\text{fit}} c \\xrightarrow{\\text{sample}} U_{1:m}
    \\xrightarrow{\\hat F^{-1}} Z_{1:m} \\xrightarrow{D} \\tilde x_{1:m}.

The module holds the autoencoder of the earlier notebook (:class:`NotebookAutoencoder`,
784-64-5-64-784, linear, ReLU on the output) and a non-linear one (:class:`MLPAutoencoder`),
their training (:func:`train_autoencoder`), :func:`encode` and :func:`decode`, the pipeline,
and what the chapter measures on generated images (:func:`trigger_rate`).

References
----------
- N. Tagasovska, D. Ackerer and T. Vatter, "Copulas as High-Dimensional Generative
  Models: Vine Copula Autoencoders", NeurIPS 2019.
- H. Chacon et al., arXiv:2012.01931 (the D-vine copula autoencoder applied to
  backdoored MNIST models).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from . import _checks
from . import copula as copula_module
from . import train as train_module
from .data import ImageSet, check_images
from .triggers import Trigger

__all__ = [
    "AUTOENCODERS",
    "Autoencoder",
    "DCAESamples",
    "MLPAutoencoder",
    "NotebookAutoencoder",
    "RunComparison",
    "TriggerScan",
    "class_balanced_sample",
    "compare_runs",
    "decode",
    "encode",
    "generate",
    "locate_trigger",
    "nearest_neighbour_distance",
    "reconstruction_error",
    "stamp_class",
    "train_autoencoder",
    "trigger_brightness",
    "trigger_rate",
]


# --------------------------------------------------------------------------- autoencoders


class Autoencoder(nn.Module):
    """An encoder and a decoder between images (N, C, H, W) and codes (N, latent_dim).

    The base of :class:`NotebookAutoencoder` and :class:`MLPAutoencoder`: the encoder sees
    the flattened image, the decoder's output is reshaped to ``image_shape``.

    Parameters
    ----------
    encoder : nn.Module
        Maps (N, C*H*W) to (N, latent_dim).
    decoder : nn.Module
        Maps (N, latent_dim) to (N, C*H*W).
    image_shape : tuple (C, H, W)
        Shape of one image.
    latent_dim : int
        Number d of latent coordinates.

    Examples
    --------
    >>> model = Autoencoder(nn.Linear(4, 2), nn.Linear(2, 4), (1, 2, 2), 2)
    >>> model(torch.rand(3, 1, 2, 2)).shape
    torch.Size([3, 1, 2, 2])
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, image_shape: tuple[int, int, int],
                 latent_dim: int) -> None:
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.image_shape, self.latent_dim = tuple(image_shape), latent_dim

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Codes z = E(x), shape (N, latent_dim)."""
        return self.encoder(images.flatten(1))

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Reconstructions D(z), shape (N, C, H, W); not clamped (see :func:`decode`)."""
        return self.decoder(latents).view(-1, *self.image_shape)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(images))


def _check_architecture(image_shape: Any, latent_dim: Any, widths: Sequence[Any]) -> int:
    if len(tuple(image_shape)) != 3 or any(int(s) < 1 for s in image_shape):
        raise ValueError(f"image_shape must be (C, H, W) with positive sizes, got {image_shape!r}")
    for name, value in [("latent_dim", latent_dim), *(("hidden", w) for w in widths)]:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(np.prod(image_shape))


class NotebookAutoencoder(Autoencoder):
    """The earlier notebook's autoencoder: ``pixels -> 64 -> d -> 64 -> pixels``, linear.

    Encoder and decoder are two linear layers each, with no activation in between; a ReLU
    acts on the output only. The codes are therefore an affine function of the image,
    :math:`z = W_2 (W_1 x + b_1) + b_2`, and the best such encoder spans the same subspace as
    the first d principal components.

    Parameters
    ----------
    image_shape : tuple (C, H, W)
        Shape of the images; 784 pixels for MNIST.
    hidden : int
        Width of the hidden layers.
    latent_dim : int
        Number d of latent coordinates.

    Examples
    --------
    >>> model = NotebookAutoencoder()
    >>> model.encode(torch.rand(2, 1, 28, 28)).shape, model(torch.rand(2, 1, 28, 28)).shape
    (torch.Size([2, 5]), torch.Size([2, 1, 28, 28]))
    """

    def __init__(self, *, image_shape: tuple[int, int, int] = (1, 28, 28), hidden: int = 64,
                 latent_dim: int = 5) -> None:
        pixels = _check_architecture(image_shape, latent_dim, [hidden])
        encoder = nn.Sequential(nn.Linear(pixels, hidden), nn.Linear(hidden, latent_dim))
        decoder = nn.Sequential(nn.Linear(latent_dim, hidden), nn.Linear(hidden, pixels), nn.ReLU())
        super().__init__(encoder, decoder, image_shape, latent_dim)


class MLPAutoencoder(Autoencoder):
    """A non-linear autoencoder: ReLU between all layers and a sigmoid on the output.

    ``pixels -> hidden[0] -> ... -> d -> ... -> hidden[0] -> pixels``; the sigmoid keeps the
    reconstructions in (0, 1), the range of the images, where the notebook's ReLU output can
    exceed 1.

    Parameters
    ----------
    image_shape : tuple (C, H, W)
        Shape of the images.
    hidden : tuple of int
        Widths of the encoder's hidden layers (mirrored in the decoder).
    latent_dim : int
        Number d of latent coordinates.

    Examples
    --------
    >>> model = MLPAutoencoder()
    >>> bool(((model(torch.rand(2, 1, 28, 28)) > 0) & (model(torch.rand(2, 1, 28, 28)) < 1)).all())
    True
    """

    def __init__(self, *, image_shape: tuple[int, int, int] = (1, 28, 28),
                 hidden: tuple[int, ...] = (256, 64), latent_dim: int = 5) -> None:
        pixels = _check_architecture(image_shape, latent_dim, list(hidden))
        widths = [pixels, *hidden, latent_dim]
        encoder: list[nn.Module] = []
        decoder: list[nn.Module] = []
        for width_in, width_out in zip(widths[:-1], widths[1:]):
            encoder += [nn.Linear(width_in, width_out), nn.ReLU()]
            decoder = [nn.Linear(width_out, width_in), nn.ReLU(), *decoder]
        # no ReLU on the codes (they may be negative) nor before the output's sigmoid
        super().__init__(nn.Sequential(*encoder[:-1]), nn.Sequential(*decoder[:-1], nn.Sigmoid()),
                         image_shape, latent_dim)


AUTOENCODERS: dict[str, type[Autoencoder]] = {"notebook": NotebookAutoencoder, "mlp": MLPAutoencoder}
"""The autoencoder architectures by name (the names :func:`backdoorlab.recipes.mnist_autoencoder` takes)."""


# --------------------------------------------------------------------------- training and coding


class _ReconstructionError(nn.Module):
    """Wraps an autoencoder so that :func:`backdoorlab.train.fit` minimises its squared error."""

    def __init__(self, autoencoder: nn.Module) -> None:
        super().__init__()
        self.autoencoder = autoencoder

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (self.autoencoder(images) - images).pow(2).flatten(1).mean(1)  # (B,) per-image MSE


def _mean_error(errors: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return errors.mean()  # the labels play no part in an autoencoder's loss


def train_autoencoder(
    autoencoder: nn.Module,
    data: ImageSet,
    *,
    epochs: int,
    seed: int,
    batch_size: int = 512,
    max_lr: float = 1e-3,
    progress: bool | None = None,
) -> train_module.FitResult:
    """Train an autoencoder in place to minimise the mean squared reconstruction error.

    .. math::

        \\min_\\theta \\frac{1}{N} \\sum_{i=1}^N \\frac{1}{P} \\lVert D_\\theta(E_\\theta(x_i)) - x_i \\rVert_2^2,

    with :math:`P` the number of pixels, by the seeded mini-batch Adam loop of
    :func:`backdoorlab.train.fit` (one-cycle schedule peaking at ``max_lr``). Labels are
    ignored. The model is left in eval mode.

    Parameters
    ----------
    autoencoder : nn.Module
        Maps images (B, C, H, W) to reconstructions of the same shape.
    data : ImageSet
        Training images in [0, 1].
    epochs, seed, batch_size, max_lr, progress :
        As for :func:`backdoorlab.train.fit`.

    Returns
    -------
    backdoorlab.train.FitResult
        ``losses`` are the per-epoch mean squared errors.

    Examples
    --------
    >>> data = ImageSet(torch.rand(64, 1, 4, 4), torch.zeros(64, dtype=torch.long), ("x",))
    >>> model = NotebookAutoencoder(image_shape=(1, 4, 4), hidden=8, latent_dim=2)
    >>> result = train_autoencoder(model, data, epochs=2, seed=0, batch_size=16)
    >>> len(result.losses), result.losses[1] < result.losses[0]
    (2, True)
    """
    if not isinstance(autoencoder, nn.Module):
        raise TypeError(f"autoencoder must be a torch.nn.Module, got {type(autoencoder).__name__}")
    result = train_module.fit(
        _ReconstructionError(autoencoder), data, epochs=epochs, seed=seed, batch_size=batch_size,
        max_lr=max_lr, loss_fn=_mean_error, progress=progress,
    )
    autoencoder.eval()
    return result


def _check_batch_size(batch_size: Any) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    return batch_size


@torch.no_grad()
def encode(autoencoder: Autoencoder, images: torch.Tensor, *, batch_size: int = 4096) -> torch.Tensor:
    """Latent codes :math:`z_i = E(x_i)` of a batch of images, in eval mode.

    Parameters
    ----------
    autoencoder : NotebookAutoencoder or MLPAutoencoder
        Any module with ``encode`` and ``decode`` methods.
    images : torch.Tensor
        Shape (N, C, H, W), values in [0, 1].
    batch_size : int
        Images per forward pass.

    Returns
    -------
    torch.Tensor
        Shape (N, d), float32.

    Examples
    --------
    >>> encode(NotebookAutoencoder(), torch.rand(3, 1, 28, 28)).shape
    torch.Size([3, 5])
    """
    check_images(images)
    size = _check_batch_size(batch_size)
    with _EvalMode(autoencoder):
        return torch.cat([autoencoder.encode(images[i:i + size]) for i in range(0, len(images), size)])


@torch.no_grad()
def decode(autoencoder: Autoencoder, latents: Any, *, batch_size: int = 4096) -> torch.Tensor:
    """Images :math:`\\mathrm{clip}_{[0,1]}(D(z_i))` decoded from latent codes, in eval mode.

    The clip keeps the images in the book's range: the notebook's ReLU output is unbounded
    above.

    Parameters
    ----------
    autoencoder : NotebookAutoencoder or MLPAutoencoder
        The model.
    latents : torch.Tensor or array_like
        Shape (N, d), finite.
    batch_size : int
        Codes per forward pass.

    Returns
    -------
    torch.Tensor
        Shape (N, C, H, W), float32 in [0, 1].

    Raises
    ------
    ValueError
        If ``latents`` is not (N, d) with the model's d, or holds NaN or infinity.

    Examples
    --------
    >>> images = decode(NotebookAutoencoder(), torch.zeros(2, 5))
    >>> images.shape, bool(images.min() >= 0 and images.max() <= 1)
    (torch.Size([2, 1, 28, 28]), True)
    """
    z = (latents if isinstance(latents, torch.Tensor) else torch.as_tensor(np.asarray(latents))).float()
    if z.ndim != 2 or z.shape[1] != autoencoder.latent_dim:
        raise ValueError(f"latents must have shape (N, {autoencoder.latent_dim}), got {tuple(z.shape)}")
    if not torch.isfinite(z).all():
        raise ValueError("latents must be finite (no NaN or infinity)")
    size = _check_batch_size(batch_size)
    with _EvalMode(autoencoder):
        parts = [autoencoder.decode(z[i:i + size]).clamp(0.0, 1.0) for i in range(0, len(z), size)]
    return torch.cat(parts) if parts else torch.empty(0, *autoencoder.image_shape)


@torch.no_grad()
def reconstruction_error(autoencoder: Autoencoder, images: torch.Tensor, *, batch_size: int = 4096) -> float:
    """Mean squared error per pixel, :math:`\\frac{1}{NP}\\sum_i \\lVert D(E(x_i)) - x_i \\rVert^2`.

    The reconstructions are those of :func:`decode` (clipped to [0, 1]).

    Parameters
    ----------
    autoencoder : Autoencoder
        The model.
    images : torch.Tensor
        Shape (N, C, H, W), values in [0, 1].
    batch_size : int
        Images per forward pass.

    Returns
    -------
    float
        The mean over images and pixels, >= 0.

    Examples
    --------
    >>> reconstruction_error(NotebookAutoencoder(), torch.zeros(2, 1, 28, 28)) >= 0
    True
    """
    reconstructions = decode(autoencoder, encode(autoencoder, images, batch_size=batch_size),
                             batch_size=batch_size)
    return float((reconstructions - images).pow(2).mean())


class _EvalMode:
    """Put a module in eval mode for a block, then restore its mode."""

    def __init__(self, module: nn.Module) -> None:
        if not isinstance(module, nn.Module) or not hasattr(module, "encode") or not hasattr(module, "decode"):
            raise TypeError(f"autoencoder must be a module with encode and decode, got {type(module).__name__}")
        self.module, self.was_training = module, module.training

    def __enter__(self) -> None:
        self.module.eval()

    def __exit__(self, *exc: object) -> None:
        self.module.train(self.was_training)


# --------------------------------------------------------------------------- data for the experiments


def stamp_class(data: ImageSet, trigger: Trigger, *, source: int) -> ImageSet:
    """The data with the trigger applied to every image of class ``source``, labels unchanged.

    .. math:: x_i \\leftarrow (1 - m) \\odot x_i + m \\odot p \\quad \\text{if } y_i = \\text{source},

    the poisoning of the DCAE experiments: an autoencoder has no labels to flip, so the
    poisoned set differs from the clean one only by the trigger on one class.

    Parameters
    ----------
    data : ImageSet
        The clean images (not modified).
    trigger : Trigger
        Mask m and pattern p (see :class:`backdoorlab.triggers.Trigger`).
    source : int
        The class whose images carry the trigger.

    Returns
    -------
    ImageSet
        A new set; images of other classes are the same tensors' values.

    Examples
    --------
    >>> from backdoorlab.triggers import patch_trigger
    >>> data = ImageSet(torch.zeros(3, 1, 4, 4), torch.tensor([0, 1, 0]), ("a", "b"))
    >>> stamped = stamp_class(data, patch_trigger(image_shape=(1, 4, 4), size=2, position=(2, 2)), source=0)
    >>> stamped.images.sum(dim=(1, 2, 3)).tolist()
    [4.0, 0.0, 4.0]
    """
    if not isinstance(data, ImageSet):
        raise TypeError(f"data must be an ImageSet, got {type(data).__name__}")
    if isinstance(source, bool) or not isinstance(source, int) or not 0 <= source < data.num_classes:
        raise ValueError(f"source must be a class index in [0, {data.num_classes - 1}], got {source!r}")
    if not isinstance(trigger, Trigger):
        raise TypeError(f"trigger must be a Trigger, got {type(trigger).__name__}")
    chosen = (data.labels == source).view(-1, 1, 1, 1)
    return ImageSet(torch.where(chosen, trigger.apply(data.images), data.images), data.labels.clone(), data.classes)


def class_balanced_sample(data: ImageSet, per_class: int, *, seed: int) -> ImageSet:
    """``per_class`` images of every class, drawn without replacement, grouped by class.

    The earlier notebook fitted its copulas to 500 encoded images per class.

    Raises
    ------
    ValueError
        If a class has fewer than ``per_class`` images.

    Examples
    --------
    >>> data = ImageSet(torch.zeros(6, 1, 2, 2), torch.tensor([0, 1, 0, 1, 0, 1]), ("a", "b"))
    >>> class_balanced_sample(data, 2, seed=0).labels.tolist()
    [0, 0, 1, 1]
    """
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise ValueError(f"per_class must be a positive int, got {per_class!r}")
    generator = torch.Generator().manual_seed(_checks.check_seed(seed))
    chosen = []
    for label in range(data.num_classes):
        members = (data.labels == label).nonzero().flatten()
        if len(members) < per_class:
            raise ValueError(f"per_class={per_class} but class {label} has only {len(members)} images")
        chosen.append(members[torch.randperm(len(members), generator=generator)[:per_class]])
    return data.subset(torch.cat(chosen))


# --------------------------------------------------------------------------- the pipeline


@dataclass(frozen=True, eq=False)
class DCAESamples:
    """What :func:`generate` produced.

    Attributes
    ----------
    latents : torch.Tensor
        Shape (n, d), the codes of the input images the vine was fitted to.
    vine : backdoorlab.copula.FittedVine
        The vine copula with the codes' empirical marginals.
    sampled_latents : torch.Tensor
        Shape (m, d), float32, draws from the vine on the latent scale.
    images : torch.Tensor
        Shape (m, C, H, W), float32 in [0, 1], the decoded draws.
    """

    latents: torch.Tensor
    vine: copula_module.FittedVine
    sampled_latents: torch.Tensor
    images: torch.Tensor


def generate(
    autoencoder: Autoencoder,
    images: torch.Tensor,
    *,
    num_samples: int,
    seed: int,
    order: Sequence[int] | None = None,
    families: Any = "tll",
    num_threads: int = 1,
) -> DCAESamples:
    """The DCAE pipeline: encode, fit a D-vine to the codes, sample it, decode.

    1. :math:`z_i = E(x_i)` for the n images (:func:`encode`);
    2. a D-vine :math:`c` on the pseudo-observations of the codes, with their empirical
       marginals :math:`\\hat F_j` (:func:`backdoorlab.copula.fit_vine`);
    3. :math:`U_k \\sim c` and :math:`Z_{kj} = \\hat F_j^{-1}(U_{kj})`, k = 1..m
       (:func:`backdoorlab.copula.sample`);
    4. :math:`\\tilde x_k = \\mathrm{clip}_{[0,1]}(D(Z_k))` (:func:`decode`).

    Parameters
    ----------
    autoencoder : NotebookAutoencoder or MLPAutoencoder
        A trained model with d latent coordinates.
    images : torch.Tensor
        Shape (n, C, H, W) in [0, 1], n >= d + 1: the data whose codes are modelled.
    num_samples : int
        Number m of images to generate, at least 1.
    seed : int
        Seed of the vine's draws; the same seed gives the same images.
    order : sequence of int, optional
        The D-vine's path over the coordinates; default ``0, ..., d-1``.
    families : str or sequence
        Pair-copula families (see :func:`backdoorlab.copula.fit_vine`); default TLL, the
        nonparametric family of the vine copula autoencoder paper.
    num_threads : int
        Threads for pyvinecopulib.

    Returns
    -------
    DCAESamples
        Codes, vine, sampled codes and generated images.

    Raises
    ------
    ValueError
        As :func:`backdoorlab.copula.fit_vine` for the codes (fewer than d + 1 images, a
        constant coordinate such as a dead unit), or for a bad ``num_samples``.

    Examples
    --------
    >>> model = NotebookAutoencoder(image_shape=(1, 4, 4), hidden=8, latent_dim=3)
    >>> result = generate(model, torch.rand(50, 1, 4, 4), num_samples=6, seed=0, families="gaussian")
    >>> result.images.shape, result.vine.order
    (torch.Size([6, 1, 4, 4]), (0, 1, 2))
    """
    latents = encode(autoencoder, images)
    vine = copula_module.fit_vine(latents, structure="dvine", order=order, families=families,
                                  num_threads=num_threads)
    draws = copula_module.sample(vine, num_samples, seed=seed, num_threads=num_threads)  # (m, d) float64
    sampled = torch.from_numpy(draws).float()
    return DCAESamples(latents=latents, vine=vine, sampled_latents=sampled, images=decode(autoencoder, sampled))


# --------------------------------------------------------------------------- measuring the trigger


def trigger_brightness(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean intensity of each image inside a trigger mask, :math:`b_i = \\sum_p m_p x_{ip} / \\sum_p m_p`.

    Parameters
    ----------
    images : torch.Tensor
        Shape (N, C, H, W), values in [0, 1].
    mask : torch.Tensor
        Shape (1, H, W) or (C, H, W), values in [0, 1], not all zero (a trigger's mask).

    Returns
    -------
    torch.Tensor
        Shape (N,), values in [0, 1].

    Examples
    --------
    >>> mask = torch.zeros(1, 4, 4)
    >>> mask[:, 2:, 2:] = 1
    >>> trigger_brightness(torch.ones(1, 1, 4, 4) * 0.25, mask).tolist()
    [0.25]
    """
    check_images(images)
    if not isinstance(mask, torch.Tensor) or mask.ndim != 3 or tuple(mask.shape[1:]) != tuple(images.shape[2:]):
        shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"mask must have shape (1 or C, {images.shape[2]}, {images.shape[3]}), got {shape}")
    _checks.check_images(mask.unsqueeze(0), name="mask")  # floating, values in [0, 1], no NaN
    if mask.shape[0] not in (1, images.shape[1]):
        raise ValueError(f"mask must have 1 or {images.shape[1]} channels, got {mask.shape[0]}")
    weights = mask.to(images.dtype).expand_as(images[0])  # (C, H, W)
    if weights.sum() <= 0:
        raise ValueError("mask must not be all zero")
    return (images * weights).flatten(1).sum(1) / weights.sum()


def trigger_rate(images: torch.Tensor, mask: torch.Tensor, *, threshold: float = 0.5) -> float:
    """Share of images whose trigger region is bright: :math:`\\frac1N \\#\\{i : b_i \\ge \\text{threshold}\\}`.

    :math:`b_i` is :func:`trigger_brightness`. With the white patch (pattern 1) and the
    default threshold 0.5, an image counts when its patch pixels are on average closer to the
    trigger than to the black MNIST background.

    Parameters
    ----------
    images : torch.Tensor
        Shape (N, C, H, W), values in [0, 1], N >= 1.
    mask : torch.Tensor
        The trigger's mask, shape (1, H, W) or (C, H, W).
    threshold : float
        In (0, 1].

    Returns
    -------
    float
        In [0, 1], a multiple of 1/N.

    Examples
    --------
    >>> mask = torch.zeros(1, 4, 4)
    >>> mask[:, 2:, 2:] = 1
    >>> images = torch.zeros(4, 1, 4, 4)
    >>> images[0, :, 2:, 2:] = 1.0
    >>> trigger_rate(images, mask)
    0.25
    """
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold <= 1:
        raise ValueError(f"threshold must lie in (0, 1], got {threshold!r}")
    if len(images) == 0:
        raise ValueError("images must not be empty: the rate is undefined")
    return float((trigger_brightness(images, mask) >= threshold).float().mean())


# --------------------------------------------------------------------------- trigger-agnostic scan


@dataclass(frozen=True, eq=False)
class TriggerScan:
    """What :func:`locate_trigger` found.

    Attributes
    ----------
    difference : torch.Tensor
        Shape (H, W), the mean image of the scanned set minus that of the reference set,
        averaged over channels.
    window_means : torch.Tensor
        Shape (H - size + 1, W - size + 1): entry (r, c) is the mean of ``difference`` over
        the ``size`` x ``size`` window with top-left corner (r, c).
    row, col : int
        Top-left corner of the window with the largest mean.
    size : int
        Side of the window.
    """

    difference: torch.Tensor
    window_means: torch.Tensor
    row: int
    col: int
    size: int

    @property
    def score(self) -> float:
        """The largest window mean, :math:`\\max_{r,c} \\bar\\Delta_{rc}`."""
        return float(self.window_means[self.row, self.col])

    def overlap(self, mask: torch.Tensor) -> float:
        """Share of the found window's pixels where ``mask`` (shape (1 or C, H, W)) is positive.

        Examples
        --------
        >>> scan = TriggerScan(torch.zeros(4, 4), torch.zeros(3, 3), 1, 1, 2)
        >>> mask = torch.zeros(1, 4, 4)
        >>> mask[:, 2:, 2:] = 1
        >>> scan.overlap(mask)
        0.25
        """
        if not isinstance(mask, torch.Tensor) or mask.ndim != 3 or tuple(mask.shape[1:]) != tuple(self.difference.shape):
            raise ValueError(f"mask must have shape (1 or C, {self.difference.shape[0]}, {self.difference.shape[1]})")
        window = mask.amax(0)[self.row:self.row + self.size, self.col:self.col + self.size] > 0
        return float(window.float().mean())


def locate_trigger(images: torch.Tensor, reference: torch.Tensor, *, size: int) -> TriggerScan:
    """Find the square where generated images are brighter than a reference, without the trigger.

    .. math::

        \\Delta_p = \\frac1N \\sum_i x_{ip} - \\frac1M \\sum_k r_{kp}, \\qquad
        \\bar\\Delta_{rc} = \\frac{1}{s^2} \\sum_{p \\in W_{rc}} \\Delta_p, \\qquad
        (\\hat r, \\hat c) = \\arg\\max_{r,c} \\bar\\Delta_{rc},

    with :math:`W_{rc}` the :math:`s \\times s` window at top-left corner (r, c), pixels
    averaged over channels. The scan needs no mask: it asks where the suspect pipeline's
    images (e.g. samples of a poisoned model's latent vine) are brighter on average than the
    reference (samples of a clean pipeline, or the clean data). The analyst chooses ``size``,
    an upper guess of the trigger's side.

    Parameters
    ----------
    images : torch.Tensor
        Shape (N, C, H, W), values in [0, 1], N >= 1: the suspect set.
    reference : torch.Tensor
        Shape (M, C, H, W), M >= 1, the same C, H, W.
    size : int
        Side s of the window, 1 <= s <= min(H, W).

    Returns
    -------
    TriggerScan
        The difference image, the window means and the arg-max window.

    Raises
    ------
    ValueError
        If the shapes differ, a set is empty, or ``size`` is out of range.

    Examples
    --------
    >>> reference = torch.zeros(3, 1, 6, 6)
    >>> images = torch.zeros(5, 1, 6, 6)
    >>> images[:, :, 3:5, 1:3] = 1.0
    >>> scan = locate_trigger(images, reference, size=2)
    >>> scan.row, scan.col, scan.score
    (3, 1, 1.0)
    """
    check_images(images)
    check_images(reference, name="reference")
    if len(images) == 0 or len(reference) == 0:
        raise ValueError("images and reference must not be empty")
    if tuple(images.shape[1:]) != tuple(reference.shape[1:]):
        raise ValueError(f"reference must have images of shape {tuple(images.shape[1:])}, "
                         f"got {tuple(reference.shape[1:])}")
    height, width = images.shape[2:]
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= min(height, width):
        raise ValueError(f"size must be an int in [1, {min(height, width)}], got {size!r}")
    difference = (images.mean(0) - reference.mean(0)).mean(0)  # (H, W)
    window_means = torch.nn.functional.avg_pool2d(difference[None, None], size, stride=1)[0, 0]
    flat = int(window_means.argmax())
    row, col = divmod(flat, window_means.shape[1])
    return TriggerScan(difference, window_means, row, col, size)


# --------------------------------------------------------------------------- quality and verdicts


@torch.no_grad()
def nearest_neighbour_distance(images: torch.Tensor, reference: torch.Tensor, *,
                               batch_size: int = 512) -> torch.Tensor:
    """Mean squared distance per pixel from each image to its nearest reference image.

    .. math:: q_i = \\min_k \\frac1P \\lVert x_i - r_k \\rVert_2^2,

    a crude measure of sample quality: a generated image that looks like some real image has a
    small :math:`q_i`; blur or artefacts raise it.

    Parameters
    ----------
    images : torch.Tensor
        Shape (N, C, H, W), values in [0, 1].
    reference : torch.Tensor
        Shape (M, C, H, W), M >= 1, the same C, H, W (e.g. held-out real images).
    batch_size : int
        Images compared at once.

    Returns
    -------
    torch.Tensor
        Shape (N,), values >= 0.

    Examples
    --------
    >>> reference = torch.stack([torch.zeros(1, 2, 2), torch.ones(1, 2, 2)])
    >>> nearest_neighbour_distance(torch.full((1, 1, 2, 2), 0.75), reference).tolist()
    [0.0625]
    """
    check_images(images)
    check_images(reference, name="reference")
    if len(reference) == 0:
        raise ValueError("reference must not be empty")
    if tuple(images.shape[1:]) != tuple(reference.shape[1:]):
        raise ValueError(f"reference must have images of shape {tuple(images.shape[1:])}, "
                         f"got {tuple(reference.shape[1:])}")
    size = _check_batch_size(batch_size)
    flat_reference = reference.flatten(1).double()  # (M, P)
    squared_norms = flat_reference.pow(2).sum(1)
    parts = []
    for start in range(0, len(images), size):
        x = images[start:start + size].flatten(1).double()  # (B, P)
        distances = x.pow(2).sum(1, keepdim=True) - 2 * x @ flat_reference.T + squared_norms  # (B, M)
        parts.append(distances.amin(1).clamp_min(0) / x.shape[1])
    return torch.cat(parts).float() if parts else torch.empty(0)


@dataclass(frozen=True)
class RunComparison:
    """Relative changes over paired runs, their t interval, tests of "no change" and a verdict.

    Attributes
    ----------
    changes : tuple of float
        :math:`a_s / b_s - 1` for every pair s.
    mean, ci_low, ci_high : float
        Mean relative change and its Student-t interval at ``level``.
    sign_p, wilcoxon_p : float
        Two-sided exact sign test and Wilcoxon signed-rank test of the changes against 0.
    num_positive : int
        Pairs with a positive change.
    level : float
        Coverage of the interval.
    verdict : str
        See :func:`compare_runs`.
    """

    changes: tuple[float, ...]
    mean: float
    ci_low: float
    ci_high: float
    sign_p: float
    wilcoxon_p: float
    num_positive: int
    level: float
    verdict: str

    @property
    def p_value(self) -> float:
        """The Wilcoxon signed-rank p-value (the sign test's is ``sign_p``)."""
        return self.wilcoxon_p


def compare_runs(after: Sequence[float], before: Sequence[float], *, claimed: float | None = None,
                 level: float = 0.95) -> RunComparison:
    """Paired relative change :math:`a_s / b_s - 1` over runs s, with an interval, tests and a verdict.

    With :math:`\\Delta_s = a_s / b_s - 1` for n pairs, the interval is
    :math:`\\bar\\Delta \\pm t_{n-1,(1+\\text{level})/2}\\, s_\\Delta / \\sqrt n`
    (:func:`backdoorlab.stats.summarize`), and the tests are the sign and Wilcoxon tests of
    :func:`backdoorlab.stats.paired_test` on the changes against 0. The verdict on a claimed
    relative change :math:`\\delta` (e.g. the paper's +27 %) is computed from these:

    - ``"reproduces"`` if the interval contains :math:`\\delta` and excludes 0;
    - ``"does not reproduce"`` if the interval excludes :math:`\\delta`;
    - ``"is undecided at this sample size"`` if it contains both;

    and without a claim, ``"rises"``, ``"falls"`` or ``"does not change measurably"`` by the
    side of 0 the interval lies on.

    Parameters
    ----------
    after, before : sequence of float
        Paired measurements, same length n >= 2, ``before`` nonzero.
    claimed : float, optional
        The claimed relative change :math:`\\delta`.
    level : float
        Coverage of the interval, in (0, 1).

    Returns
    -------
    RunComparison

    Raises
    ------
    ValueError
        If the lengths differ, n < 2, or a ``before`` value is 0.

    Examples
    --------
    >>> result = compare_runs([1.1, 1.3, 1.2, 1.25], [1.0, 1.0, 1.0, 1.0], claimed=0.2)
    >>> round(result.mean, 4), result.num_positive, result.verdict
    (0.2125, 4, 'reproduces')
    >>> compare_runs([1.1, 1.3, 1.2, 1.25], [1.0, 1.0, 1.0, 1.0], claimed=0.5).verdict
    'does not reproduce'
    """
    for name, values in (("after", after), ("before", before)):
        try:
            finite = np.isfinite(np.asarray(values, dtype=float)).all()
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be a sequence of real numbers, got {values!r}") from None
        if not finite:
            raise ValueError(f"{name} must be finite, got {values!r}")
    if claimed is not None:
        _checks.check_real("claimed", claimed)
    a = np.asarray(after, dtype=float)
    b = np.asarray(before, dtype=float)
    if a.ndim != 1 or a.shape != b.shape or a.size < 2:
        raise ValueError(f"after and before must be paired sequences of the same length >= 2, "
                         f"got {a.shape} and {b.shape}")
    if np.any(b == 0):
        raise ValueError("before must not contain 0: the relative change is undefined")
    from . import stats as stats_module

    changes = a / b - 1
    summary = stats_module.summarize(changes, level=level)
    test = stats_module.paired_test(changes, np.zeros_like(changes), level=level)
    excludes_zero = summary.ci_low > 0 or summary.ci_high < 0
    if claimed is None:
        verdict = ("rises" if summary.ci_low > 0 else "falls" if summary.ci_high < 0
                   else "does not change measurably")
    elif not summary.ci_low <= claimed <= summary.ci_high:
        verdict = "does not reproduce"
    else:
        verdict = "reproduces" if excludes_zero else "is undecided at this sample size"
    return RunComparison(tuple(float(c) for c in changes), summary.mean, summary.ci_low, summary.ci_high,
                         test.sign_p, test.wilcoxon_p, test.num_positive, level, verdict)
