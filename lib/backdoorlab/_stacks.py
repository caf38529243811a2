"""The one conversion every zoo-level detector applies to its ``models`` argument."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from .zoo import ModelStack, Zoo, ZooCNN


def as_stack(models: ModelStack | Zoo | Sequence[ZooCNN]) -> ModelStack:
    """``models`` as a :class:`~backdoorlab.zoo.ModelStack`: a zoo's stack, a stack, or a sequence stacked.

    Raises
    ------
    TypeError
        If ``models`` is a single module or not a sequence.
    ValueError
        If the sequence is empty.
    """
    if isinstance(models, Zoo):
        return models.stack
    if isinstance(models, ModelStack):
        return models
    if isinstance(models, nn.Module) or not isinstance(models, Sequence):
        raise TypeError(f"models must be a ModelStack, a Zoo or a sequence of ZooCNN, got {type(models).__name__}")
    if len(models) == 0:
        raise ValueError("models is empty")
    return ModelStack.from_models(list(models))
