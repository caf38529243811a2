"""Argument checks shared by every module of :mod:`backdoorlab` (private).

Each check raises ``TypeError`` for a value of the wrong kind and ``ValueError`` for a value
of the right kind out of range, and its message starts with the argument's name, so a bad call
fails at the call with a message that names the problem rather than deep inside torch.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import torch
from torch import nn

#: Seeds must fit torch's and NumPy's generators: non-negative 63-bit integers.
MAX_SEED = 2**63 - 1


def _is_integral(value: Any) -> bool:
    return not isinstance(value, (bool, np.bool_)) and isinstance(value, (numbers.Integral, np.integer))


def check_int(name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an int in [``minimum``, ``maximum``]; bools and floats (even 2.0) are refused.

    Examples
    --------
    >>> check_int("epochs", 3, minimum=1)
    3
    """
    if not _is_integral(value):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    value = int(value)
    if minimum is not None and maximum is not None and not minimum <= value <= maximum:
        raise ValueError(f"{name} must lie in [{minimum}, {maximum}], got {value}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be at most {maximum}, got {value}")
    return value


def check_seed(value: Any, *, name: str = "seed") -> int:
    """A seed: an int in [0, 2**63 - 1] (what both torch's and NumPy's generators accept).

    Examples
    --------
    >>> check_seed(7)
    7
    """
    value = check_int(name, value)
    if value < 0:
        raise ValueError(f"{name} must be non-negative, got {value}")
    if value > MAX_SEED:
        raise ValueError(f"{name} must be at most 2**63 - 1, got {value}")
    return value


def check_real(
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    strict_minimum: bool = False,
    strict_maximum: bool = False,
) -> float:
    """``value`` as a finite float within the given bounds (strict bounds exclude the end).

    Examples
    --------
    >>> check_real("max_lr", 1e-3, minimum=0, strict_minimum=True)
    0.001
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    low = "(" if strict_minimum else "["
    high = ")" if strict_maximum else "]"
    interval = f"{low}{'-inf' if minimum is None else minimum}, {'inf' if maximum is None else maximum}{high}"
    if minimum is not None and (value < minimum or (strict_minimum and value == minimum)):
        raise ValueError(f"{name} must lie in {interval}, got {value!r}")
    if maximum is not None and (value > maximum or (strict_maximum and value == maximum)):
        raise ValueError(f"{name} must lie in {interval}, got {value!r}")
    return value


def check_rate(name: str, value: Any, *, strict_minimum: bool = False) -> float:
    """A share or probability: a finite float in [0, 1] (or (0, 1] with ``strict_minimum``).

    Examples
    --------
    >>> check_rate("rate", 0.1)
    0.1
    """
    return check_real(name, value, minimum=0.0, maximum=1.0, strict_minimum=strict_minimum)


def check_float_dtype(dtype: Any, *, name: str = "dtype") -> torch.dtype:
    """A floating-point torch.dtype (results of that dtype can hold fractions)."""
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"{name} must be a torch.dtype, got {type(dtype).__name__} {dtype!r}")
    if not dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating-point dtype, got {dtype}")
    return dtype


def check_tensor(name: str, value: Any, *, floating: bool = False) -> torch.Tensor:
    """``value`` is a torch.Tensor (floating-point if asked)."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if floating and not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point torch.Tensor, got {value.dtype}")
    return value


def check_finite(name: str, tensor: torch.Tensor) -> None:
    """Refuse NaN and infinite entries of a tensor."""
    if tensor.is_floating_point() and tensor.numel() and not bool(torch.isfinite(tensor).all()):
        bad = int((~torch.isfinite(tensor)).sum())
        raise ValueError(f"{name} must be finite, got {bad} NaN or infinite values")


def check_images(images: Any, *, name: str = "images", nonempty: bool = False) -> None:
    """A float tensor of shape (N, C, H, W) with values in [0, 1] (NaN refused); N >= 1 if ``nonempty``."""
    if not isinstance(images, torch.Tensor) or not images.is_floating_point():
        kind = images.dtype if isinstance(images, torch.Tensor) else type(images).__name__
        raise TypeError(f"{name} must be a floating-point torch.Tensor, got {kind}")
    if images.ndim != 4:
        raise ValueError(f"{name} must have shape (N, C, H, W), got {tuple(images.shape)}")
    if nonempty and images.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one image, got shape {tuple(images.shape)}")
    if images.numel() and not (images.min() >= 0 and images.max() <= 1):
        # NaN fails both comparisons, so it is caught here too.
        raise ValueError(
            f"{name} must have values in [0, 1], got range "
            f"[{images.min().item():.4g}, {images.max().item():.4g}]"
        )


def check_labels(
    labels: Any, *, name: str = "labels", length: int | None = None, num_classes: int | None = None
) -> torch.Tensor:
    """An integer tensor of shape (N,) (of ``length`` if given) with values in [0, ``num_classes``)."""
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(labels).__name__}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got {labels.dtype}")
    if labels.ndim != 1 or (length is not None and labels.shape[0] != length):
        expected = f"({length},)" if length is not None else "(N,)"
        raise ValueError(f"{name} must have shape {expected}, got {tuple(labels.shape)}")
    if num_classes is not None and labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"{name} must lie in [0, {num_classes - 1}], got range [{labels.min().item()}, {labels.max().item()}]"
        )
    return labels


def check_model(model: Any, *, name: str = "model") -> nn.Module:
    """``model`` is a torch.nn.Module."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module, got {type(model).__name__}")
    return model


def check_logits(logits: Any, *, num_images: int, name: str = "model") -> torch.Tensor:
    """A classifier's output for ``num_images`` inputs: finite logits of shape (N, K), K >= 2.

    Outputs of another shape (N, K, 1) or a single class would otherwise broadcast into
    plausible-looking accuracies, and NaN logits would make every argmax class 0.
    """
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        kind = logits.dtype if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise TypeError(f"{name} must return a floating-point tensor of logits, got {kind}")
    if logits.ndim != 2 or logits.shape[0] != num_images or logits.shape[1] < 2:
        raise ValueError(
            f"{name} must return logits of shape ({num_images}, K) with K >= 2 classes, "
            f"got {tuple(logits.shape)}"
        )
    if not bool(torch.isfinite(logits).all()):
        raise ValueError(f"{name} returned non-finite logits (NaN or inf): its weights are broken")
    return logits
