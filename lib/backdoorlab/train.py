"""Seeded training and evaluation loops.

Training is plain mini-batch Adam with a one-cycle learning-rate schedule (Smith and
Topin 2019), which reaches high accuracy in few epochs: the budget that matters on a CPU.
All randomness (initialisation, shuffling) comes from the ``seed`` argument; torch's global
random state is left as it was found.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from . import _checks
from .data import ImageSet, check_images

__all__ = ["FitResult", "accuracy", "fit", "predict", "seeded"]


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with torch's global generator seeded, then restore its state.

    Layer constructors draw their initial weights from the global generator; building a
    model inside ``with seeded(seed):`` makes its weights a function of ``seed`` alone
    without leaking state to the caller.

    Examples
    --------
    >>> with seeded(0):
    ...     a = torch.rand(2)
    >>> with seeded(0):
    ...     b = torch.rand(2)
    >>> bool((a == b).all())
    True
    """
    seed = _checks.check_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@dataclass(frozen=True)
class FitResult:
    """What :func:`fit` did.

    Attributes
    ----------
    losses : tuple of float
        Mean training cross-entropy of each epoch.
    seconds : float
        Wall time of the training loop.
    """

    losses: tuple[float, ...]
    seconds: float


def _show_progress(progress: bool | None) -> bool:
    # Auto: bars in a terminal, none in notebooks executed for the book (no TTY there).
    return sys.stderr.isatty() if progress is None else progress


def fit(
    model: nn.Module,
    data: ImageSet,
    *,
    epochs: int,
    seed: int,
    batch_size: int = 128,
    max_lr: float = 3e-3,
    weight_decay: float = 0.0,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
    progress: bool | None = None,
) -> FitResult:
    """Train ``model`` in place on ``data`` by mini-batch Adam with a one-cycle schedule.

    Minimises the empirical risk :math:`\\frac1N\\sum_i \\ell(f_\\theta(x_i), y_i)` over
    ``epochs`` passes, each a seeded random permutation of ``data`` cut into batches of
    ``batch_size`` (the last partial batch is dropped, so every step sees a full batch).
    The learning rate rises to ``max_lr`` over the first 30 % of steps and anneals to about
    zero (``OneCycleLR``). The model is left in eval mode.

    Parameters
    ----------
    model : nn.Module
        Maps images (B, C, H, W) in [0, 1] to logits (B, K).
    data : ImageSet
        Training set.
    epochs : int
        Passes over ``data``; at least 1.
    seed : int
        Seeds the batch order (and any randomness in the model's forward pass).
    batch_size : int
        Images per step, at most ``len(data)``.
    max_lr : float
        Peak learning rate.
    weight_decay : float
        Adam's L2 penalty.
    loss_fn : callable
        ``loss_fn(logits, labels)``, a scalar; cross-entropy by default.
    progress : bool or None
        Show a progress bar; ``None`` shows one only when stderr is a terminal.

    Returns
    -------
    FitResult
        Mean loss per epoch and the wall time.

    Raises
    ------
    ValueError
        For bad arguments, a model whose output is not (B, K) finite logits, and as soon as
        the training loss is NaN or infinite (a diverged run must not pass for a trained model).

    Examples
    --------
    >>> from backdoorlab.models import MnistCNN
    >>> data = ImageSet(torch.rand(64, 1, 28, 28), torch.arange(64) % 10, tuple("0123456789"))
    >>> result = fit(MnistCNN(), data, epochs=1, seed=0, batch_size=32)
    >>> len(result.losses)
    1
    """
    if not isinstance(data, ImageSet):
        raise TypeError(f"data must be an ImageSet, got {type(data).__name__}")
    _checks.check_model(model)
    _checks.check_int("epochs", epochs, minimum=1)
    _checks.check_seed(seed)
    if len(data) == 0:
        raise ValueError("data is empty: there is nothing to train on")
    _checks.check_int("batch_size", batch_size, minimum=1, maximum=len(data))
    max_lr = _checks.check_real("max_lr", max_lr, minimum=0.0, strict_minimum=True)
    weight_decay = _checks.check_real("weight_decay", weight_decay, minimum=0.0)
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
    steps_per_epoch = len(data) // batch_size
    optimizer = torch.optim.Adam(model.parameters(), lr=max_lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=max_lr, total_steps=epochs * steps_per_epoch
    )
    generator = torch.Generator().manual_seed(seed)
    losses = []
    start = time.perf_counter()
    model.train()
    with seeded(seed), tqdm(
        total=epochs * steps_per_epoch, desc="fit", unit="batch", disable=not _show_progress(progress)
    ) as bar:
        for _ in range(epochs):
            total = 0.0
            order = torch.randperm(len(data), generator=generator)
            for step in range(steps_per_epoch):
                index = order[step * batch_size:(step + 1) * batch_size]
                logits = model(data.images[index])
                if step == 0 and loss_fn is F.cross_entropy:  # other shapes would train on broadcast nonsense
                    _checks.check_logits(logits.detach(), num_images=len(index))
                loss = loss_fn(logits, data.labels[index])
                if not bool(torch.isfinite(loss.detach()).all()):
                    raise ValueError(
                        f"the training loss became {loss.item()} at epoch {len(losses) + 1}, step {step + 1}: "
                        f"training diverged (is max_lr={max_lr} too large?) or data or model is broken"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                total += loss.item()
                bar.update()
            losses.append(total / steps_per_epoch)
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
    model.eval()
    return FitResult(tuple(losses), time.perf_counter() - start)


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, *, batch_size: int = 2000) -> torch.Tensor:
    """Predicted labels ``argmax_k f_k(x)`` of shape (N,), computed in eval mode.

    The model's train/eval mode is restored afterwards.

    Examples
    --------
    >>> from backdoorlab.models import MnistCNN
    >>> predict(MnistCNN(), torch.rand(3, 1, 28, 28)).shape
    torch.Size([3])
    """
    _checks.check_model(model)
    check_images(images)
    _checks.check_int("batch_size", batch_size, minimum=1)
    was_training = model.training
    model.eval()
    try:
        labels = [
            _checks.check_logits(model(chunk), num_images=len(chunk)).argmax(dim=1)
            for chunk in images.split(batch_size)
        ]
    finally:
        model.train(was_training)
    return torch.cat(labels) if labels else torch.empty(0, dtype=torch.long)


def accuracy(model: nn.Module, data: ImageSet, *, batch_size: int = 2000) -> float:
    """Share of ``data`` whose predicted label equals the true label, a float in [0, 1].

    Examples
    --------
    >>> from backdoorlab.models import MnistCNN
    >>> data = ImageSet(torch.rand(8, 1, 28, 28), torch.zeros(8, dtype=torch.long), tuple("0123456789"))
    >>> 0.0 <= accuracy(MnistCNN(), data) <= 1.0
    True
    """
    if not isinstance(data, ImageSet):
        raise TypeError(f"data must be an ImageSet, got {type(data).__name__}")
    if len(data) == 0:
        raise ValueError("data is empty: accuracy is undefined")
    predicted = predict(model, data.images, batch_size=batch_size)
    return (predicted == data.labels).double().mean().item()
