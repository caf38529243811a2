"""Figure helpers in one style: small, titled by captions, colour-blind safe.

Every helper returns a new :class:`matplotlib.figure.Figure` and leaves pyplot's global
state alone apart from creating that figure; close it after use (``plt.close(fig)``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from . import _checks

__all__ = ["PALETTE", "STYLE", "curves", "heatmaps", "image_grid", "roc_curves"]

#: Okabe and Ito's colour-blind-safe palette (black first).
PALETTE = ("#000000", "#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7")

#: Matplotlib settings shared by every figure of the book.
STYLE = {
    "figure.dpi": 110,
    "savefig.dpi": 110,
    "font.size": 9,
    "axes.labelsize": 9,
    "axes.titlesize": 9,
    "legend.fontsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "lines.linewidth": 1.5,
    "lines.markersize": 4,
    "axes.prop_cycle": mpl.cycler(color=PALETTE[1:] + PALETTE[:1]),
}


def _as_numpy_images(images: torch.Tensor | np.ndarray) -> np.ndarray:
    array = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if array.ndim != 4:
        raise ValueError(f"images must have shape (N, C, H, W), got {array.shape}")
    return array.transpose(0, 2, 3, 1)  # (N, H, W, C) for imshow


def _panels(count: int, *, ncols: int, size: float, labels: Sequence[str] | None) -> tuple[Figure, list]:
    """A figure with ``count`` bare square panels on a grid of ``ncols`` columns, labelled below."""
    _checks.check_int("ncols", ncols, minimum=1)
    ncols = max(1, min(ncols, count))
    nrows = -(-count // ncols)
    label_room = 0.25 if labels is not None else 0.0
    fig, grid = plt.subplots(nrows, ncols, figsize=(size * ncols, (size + label_room) * nrows), squeeze=False)
    axes = list(grid.flat)
    for extra in axes[count:]:
        fig.delaxes(extra)
    for index, ax in enumerate(axes[:count]):
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
        if labels is not None:
            ax.set_xlabel(labels[index], labelpad=2)
    return fig, axes[:count]


def image_grid(
    images: torch.Tensor | np.ndarray,
    *,
    labels: Sequence[str] | None = None,
    ncols: int = 8,
    size: float = 0.9,
) -> Figure:
    """Show images of shape (N, C, H, W) in [0, 1] on a grid, each with an optional label below.

    Examples
    --------
    >>> fig = image_grid(torch.rand(3, 1, 8, 8), labels=["a", "b", "c"])
    >>> len(fig.axes)
    3
    """
    array = _as_numpy_images(images)
    count = len(array)
    if labels is not None and len(labels) != count:
        raise ValueError(f"labels must have one entry per image ({count}), got {len(labels)}")
    with plt.rc_context(STYLE):
        fig, axes = _panels(count, ncols=ncols, size=size, labels=labels)
        for index, ax in enumerate(axes):
            image = array[index]
            if image.shape[-1] == 1:
                ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=1)
            else:
                ax.imshow(np.clip(image, 0, 1))
        fig.tight_layout(pad=0.3)
    return fig


def heatmaps(
    maps: torch.Tensor | np.ndarray,
    *,
    images: torch.Tensor | np.ndarray | None = None,
    labels: Sequence[str] | None = None,
    ncols: int = 8,
    size: float = 0.9,
    symmetric: bool = True,
) -> Figure:
    """Show attribution maps of shape (N, C, H, W), channels summed, on a diverging scale.

    With ``symmetric`` each map's colour scale is centred at 0 (blue negative, red
    positive); with ``images`` the image is drawn in grey underneath.

    Examples
    --------
    >>> fig = heatmaps(torch.randn(2, 1, 8, 8), images=torch.rand(2, 1, 8, 8))
    >>> len(fig.axes)
    2
    """
    array = _as_numpy_images(maps).sum(axis=-1)
    count = len(array)
    background = None if images is None else _as_numpy_images(images).mean(axis=-1)
    if labels is not None and len(labels) != count:
        raise ValueError(f"labels must have one entry per map ({count}), got {len(labels)}")
    with plt.rc_context(STYLE):
        fig, axes = _panels(count, ncols=ncols, size=size, labels=labels)
        for index, ax in enumerate(axes):
            limit = float(np.abs(array[index]).max()) or 1.0
            if background is not None:
                ax.imshow(background[index], cmap="gray", vmin=0, vmax=1, alpha=0.35)
            ax.imshow(array[index], cmap="RdBu_r" if symmetric else "magma",
                      vmin=-limit if symmetric else None, vmax=limit if symmetric else None,
                      alpha=0.85 if background is not None else 1.0)
        fig.tight_layout(pad=0.3)
    return fig


def curves(
    x: Sequence[float] | np.ndarray,
    series: Mapping[str, Sequence[float] | np.ndarray],
    *,
    xlabel: str,
    ylabel: str,
    xscale: str = "linear",
    yscale: str = "linear",
    errors: Mapping[str, Sequence[float] | np.ndarray] | None = None,
    marker: str = "o",
    figsize: tuple[float, float] = (4.2, 2.8),
) -> Figure:
    """Plot one or more named series against ``x`` with labelled axes and a legend.

    ``errors`` maps a series name to symmetric error bars of the same length.

    Examples
    --------
    >>> fig = curves([1, 2, 3], {"train": [0.5, 0.3, 0.2]}, xlabel="epoch", ylabel="loss")
    >>> fig.axes[0].get_xlabel()
    'epoch'
    """
    x = np.asarray(x, dtype=float)
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=figsize)
        handles = []
        for name, values in series.items():
            values = np.asarray(values, dtype=float)
            if values.shape != x.shape:
                raise ValueError(f"series {name!r} has shape {values.shape}, x has {x.shape}")
            if errors is not None and name in errors:
                handles.append(ax.errorbar(x, values, yerr=np.asarray(errors[name], dtype=float),
                                           marker=marker, capsize=2, label=name))
            else:
                handles.append(ax.plot(x, values, marker=marker, label=name)[0])
        ax.set_xscale(xscale)
        ax.set_yscale(yscale)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if len(series) > 1:
            ax.legend(handles=handles, frameon=False)  # in the order given
        fig.tight_layout(pad=0.4)
    return fig


def roc_curves(
    curves_by_name: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    figsize: tuple[float, float] = (3.2, 3.0),
) -> Figure:
    """ROC curves: ``{name: (false_positive_rate, true_positive_rate)}``, with the chance diagonal.

    Examples
    --------
    >>> fig = roc_curves({"detector": ([0, 0.1, 1], [0, 0.8, 1])})
    >>> fig.axes[0].get_xlabel()
    'false positive rate'
    """
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=figsize)
        ax.plot([0, 1], [0, 1], linestyle=":", color="0.6", linewidth=1)
        if not isinstance(curves_by_name, Mapping):
            raise TypeError(
                f"curves_by_name must be a mapping of name to (fpr, tpr), got {type(curves_by_name).__name__}"
            )
        for name, (fpr, tpr) in curves_by_name.items():
            ax.plot(fpr, tpr, label=name, drawstyle="steps-post")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.set_aspect("equal")
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.legend(frameon=False, loc="lower right")
        fig.tight_layout(pad=0.4)
    return fig
