"""Universal Litmus Patterns (Kolouri et al. 2020): detect a backdoored model from its outputs.

Feed M input patterns :math:`z_1, \\dots, z_M` to a model :math:`f`, concatenate its logits
and classify the model with a linear head,

.. math:: h(f) = w^\\top \\operatorname{LN}\\big([f(z_1); \\dots; f(z_M)]\\big) + b,

where LN standardises the concatenated logits (optional). The patterns and the head are
trained together over a labelled zoo of models :math:`(f_n, c_n)`:

.. math:: \\min_{z, w, b} \\; \\frac{1}{N} \\sum_n \\ell\\big(h(f_n), c_n\\big)
          + \\lambda \\sum_m \\operatorname{TV}(z_m),
          \\qquad z_m \\in [0, 1]^{C \\times H \\times W},

with the logistic loss :math:`\\ell` (a two-class softmax on one logit) and the total
variation :math:`\\operatorname{TV}(z) = \\sum |z_{c,i+1,j} - z_{c,i,j}| + |z_{c,i,j+1} - z_{c,i,j}|`.
The noise-input baseline keeps random patterns fixed and trains the head only.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch import nn

from . import _checks
from ._stacks import as_stack
from .zoo import ModelStack, Zoo, ZooCNN

__all__ = [
    "LitmusDetector",
    "ULPTraining",
    "auc",
    "total_variation",
    "train_detector",
    "train_detectors",
    "ulp_objective",
]


def total_variation(patterns: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation of each pattern: sum of absolute neighbour differences.

    Parameters
    ----------
    patterns : torch.Tensor
        (M, C, H, W).

    Returns
    -------
    torch.Tensor
        (M,) the total variation of each pattern.

    Examples
    --------
    >>> total_variation(torch.full((2, 1, 4, 4), 0.3)).tolist()
    [0.0, 0.0]
    >>> total_variation(torch.tensor([[[[0.0, 1.0], [0.0, 1.0]]]])).tolist()
    [2.0]
    """
    _checks.check_tensor("patterns", patterns, floating=True)
    if patterns.ndim != 4:
        raise ValueError(f"patterns must have shape (M, C, H, W), got {tuple(patterns.shape)}")
    _checks.check_finite("patterns", patterns)
    vertical = (patterns[:, :, 1:, :] - patterns[:, :, :-1, :]).abs().sum(dim=(1, 2, 3))
    horizontal = (patterns[:, :, :, 1:] - patterns[:, :, :, :-1]).abs().sum(dim=(1, 2, 3))
    return vertical + horizontal


class LitmusDetector(nn.Module):
    """M litmus patterns and a linear head that scores a model as backdoored.

    Parameters
    ----------
    num_patterns : int
        M >= 1.
    image_shape : tuple (C, H, W)
        Shape of the models' inputs.
    num_classes : int
        Number of logits of each model.
    learn_patterns : bool
        False gives the noise-input baseline: the patterns stay the random images they start as.
    normalize : bool
        Standardise the concatenated logits of each model (layer normalisation, no affine part).
    seed : int
        Seeds the initial patterns (uniform in [0, 1]) and head.

    Examples
    --------
    >>> from backdoorlab.zoo import ModelStack
    >>> detector = LitmusDetector(num_patterns=3, seed=0)
    >>> detector.score(ModelStack.initial([0, 1])).shape
    torch.Size([2])
    """

    def __init__(
        self,
        *,
        num_patterns: int,
        image_shape: tuple[int, int, int] = (1, 28, 28),
        num_classes: int = 10,
        learn_patterns: bool = True,
        normalize: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        _checks.check_int("num_patterns", num_patterns, minimum=1)
        _checks.check_int("num_classes", num_classes, minimum=2)
        if not isinstance(image_shape, tuple) or len(image_shape) != 3:
            raise TypeError(f"image_shape must be a tuple (C, H, W), got {image_shape!r}")
        for size in image_shape:
            _checks.check_int("image_shape", size, minimum=1)
        generator = torch.Generator().manual_seed(_checks.check_seed(seed))
        self.patterns = nn.Parameter(torch.rand(num_patterns, *image_shape, generator=generator),
                                     requires_grad=learn_patterns)
        features = num_patterns * num_classes
        self.num_classes = num_classes
        self.normalize = normalize
        bound = features ** -0.5
        with torch.random.fork_rng(devices=[]):  # its random initial weights are overwritten below
            self.head = nn.Linear(features, 1)
        with torch.no_grad():
            self.head.weight.copy_((torch.rand(1, features, generator=generator) * 2 - 1) * bound)
            self.head.bias.zero_()

    @property
    def learn_patterns(self) -> bool:
        """Whether the patterns are trained (False for the noise-input baseline)."""
        return self.patterns.requires_grad

    def features(self, stack: ModelStack, *, method: str = "batched") -> torch.Tensor:
        """The (normalised) concatenated logits of each model on the patterns: (K, M * num_classes).

        ``method="batched"`` evaluates all K models at once as one grouped-convolution network;
        ``method="loop"`` evaluates them one by one.
        """
        if stack.architecture["num_classes"] != self.num_classes:
            raise ValueError(
                f"models have {stack.architecture['num_classes']} classes, the detector expects {self.num_classes}"
            )
        if method == "batched":
            logits = stack(self.patterns)
        elif method == "loop":
            logits = torch.stack([stack.forward_one(k, self.patterns) for k in range(len(stack))])
        else:
            raise ValueError(f"method must be 'batched' or 'loop', got {method!r}")
        features = logits.flatten(1)
        if self.normalize:
            features = F.layer_norm(features, features.shape[1:])
        return features

    def forward(self, stack: ModelStack) -> torch.Tensor:
        """The detector's logit for each model of ``stack``: (K,); positive means backdoored."""
        return self.head(self.features(stack)).squeeze(1)

    @torch.no_grad()
    def score(self, models: ModelStack | Zoo | Sequence[ZooCNN]) -> torch.Tensor:
        """Probability that each model is backdoored: (K,) in [0, 1]."""
        return torch.sigmoid(self(as_stack(models)))

    @torch.no_grad()
    def score_modules(self, models: Sequence[nn.Module]) -> torch.Tensor:
        """Probability that each of ``models``, classifiers of any architecture, is backdoored.

        The models must take images of the patterns' shape in [0, 1] and return
        ``num_classes`` logits; they are run one by one on the patterns, and their logits go
        through the same normalisation and head as in :meth:`forward`. This is how a detector
        trained on one architecture is tried on another (transfer).

        Returns
        -------
        torch.Tensor
            (K,) in [0, 1].

        Examples
        --------
        >>> detector = LitmusDetector(num_patterns=2, seed=0)
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
        >>> detector.score_modules([net, net]).shape
        torch.Size([2])
        """
        if len(models) == 0:
            raise ValueError("models is empty")
        logits = []
        for index, model in enumerate(models):
            if not isinstance(model, nn.Module):
                raise TypeError(f"models[{index}] must be a torch.nn.Module, got {type(model).__name__}")
            output = model.eval()(self.patterns)
            if output.shape != (self.patterns.shape[0], self.num_classes):
                raise ValueError(f"models[{index}] returns shape {tuple(output.shape)}, expected "
                                 f"({self.patterns.shape[0]}, {self.num_classes})")
            logits.append(output)
        features = torch.stack(logits).flatten(1)
        if self.normalize:
            features = F.layer_norm(features, features.shape[1:])
        return torch.sigmoid(self.head(features).squeeze(1))


def auc(scores: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for the binary ``labels`` (1 = backdoored).

    Examples
    --------
    >>> auc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1]))
    0.75
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(np.unique(labels)) != 2:
        raise ValueError("labels must be one-dimensional and hold both classes (0 and 1)")
    if np.shape(scores) != labels.shape:
        raise ValueError(
            f"scores and labels must have the same shape, got {tuple(np.shape(scores))} and {labels.shape}"
        )
    if not np.isfinite(np.asarray(scores, dtype=np.float64)).all():
        raise ValueError("scores must be finite (a NaN score has no rank)")
    return float(roc_auc_score(labels, np.asarray(scores)))


@dataclass(frozen=True, eq=False)
class ULPTraining:
    """A trained detector and its training record.

    Attributes
    ----------
    detector : LitmusDetector
        The detector at the epoch of best validation AUC (the last epoch without validation).
    history : dict of str to list of float
        Per epoch: ``loss`` (mean training objective), ``train_auc`` (unless it was not
        tracked) and, with validation or monitoring zoos, ``val_auc`` and ``monitor_auc``.
    best_epoch : int
        The epoch whose detector was kept (0-based).
    seconds : float
        Training time.
    """

    detector: LitmusDetector
    history: dict[str, list[float]] = field(default_factory=dict)
    best_epoch: int = 0
    seconds: float = 0.0


def _check_zoo(zoo: Zoo, name: str) -> None:
    if not isinstance(zoo, Zoo):
        raise TypeError(f"{name} must be a Zoo, got {type(zoo).__name__}")
    if len(zoo) == 0:
        raise ValueError(f"{name} is empty")
    if len(zoo.labels) != len(zoo.stack):
        raise ValueError(f"{name} has {len(zoo.labels)} labels for {len(zoo.stack)} models")


def train_detector(
    detector: LitmusDetector,
    zoo: Zoo,
    *,
    epochs: int = 60,
    batch_size: int = 16,
    pattern_lr: float = 0.03,
    head_lr: float = 3e-3,
    tv_weight: float = 1e-4,
    weight_decay: float = 1e-3,
    validation: Zoo | None = None,
    monitor: Zoo | None = None,
    seed: int = 0,
    method: str = "batched",
    track_train_auc: bool = True,
) -> ULPTraining:
    """Train ``detector`` on the labelled ``zoo`` (patterns and head jointly), returning a copy.

    Each step takes a mini-batch of ``batch_size`` models, evaluates them on the patterns,
    and takes one Adam step on the mean logistic loss plus ``tv_weight`` times the patterns'
    total variation; the pattern gradient is thus the average over the batch's models. Patterns
    are clamped to [0, 1] after each step. The head has an L2 penalty ``weight_decay``. The
    defaults are the settings of the book's ULP chapter, chosen on its MNIST zoo.
    With ``validation``, the detector of the epoch with the best validation AUC is kept;
    ``monitor`` is only recorded (for training curves), never used to choose.
    ``track_train_auc=False`` skips the training zoo's AUC after each epoch (it is only
    recorded, and costs one pass over the zoo).

    When the patterns are fixed (``detector.learn_patterns`` is False: the noise-input
    baseline), the models' features on the patterns do not change during training; they are
    computed once per zoo, and each step trains the head on its batch's rows of them. This is
    the same objective and the same steps, without re-evaluating frozen models on frozen inputs.

    Examples
    --------
    >>> from backdoorlab.zoo import ModelStack, Zoo
    >>> stack = ModelStack.initial(range(4))
    >>> zoo = Zoo(stack, [None] * 4, torch.tensor([0, 1, 0, 1]), torch.ones(4), torch.ones(4))
    >>> run = train_detector(LitmusDetector(num_patterns=2), zoo, epochs=2)
    >>> len(run.history["loss"]), bool((run.detector.patterns >= 0).all() and (run.detector.patterns <= 1).all())
    (2, True)
    """
    _check_zoo(zoo, "zoo")
    for name, other in (("validation", validation), ("monitor", monitor)):
        if other is not None:
            _check_zoo(other, name)
    if not isinstance(detector, LitmusDetector):
        raise TypeError(f"detector must be a LitmusDetector, got {type(detector).__name__}")
    for name, other in (("zoo", zoo), ("validation", validation), ("monitor", monitor)):
        if other is not None and not bool(((other.labels == 0) | (other.labels == 1)).all()):
            raise ValueError(
                f"{name}.labels must be 0 (clean) or 1 (backdoored), got {sorted(set(other.labels.tolist()))}"
            )
    _checks.check_int("epochs", epochs, minimum=1)
    _checks.check_int("batch_size", batch_size, minimum=1)
    _checks.check_real("pattern_lr", pattern_lr, minimum=0.0, strict_minimum=True)
    _checks.check_real("head_lr", head_lr, minimum=0.0, strict_minimum=True)
    _checks.check_real("tv_weight", tv_weight, minimum=0.0)
    _checks.check_real("weight_decay", weight_decay, minimum=0.0)
    _checks.check_seed(seed)
    if method not in ("batched", "loop"):
        raise ValueError(f"method must be 'batched' or 'loop', got {method!r}")
    if not isinstance(track_train_auc, bool):
        raise TypeError(f"track_train_auc must be a bool, got {type(track_train_auc).__name__}")
    detector = copy.deepcopy(detector)
    groups = [{"params": detector.head.parameters(), "lr": head_lr, "weight_decay": weight_decay}]
    if detector.learn_patterns:
        groups.append({"params": [detector.patterns], "lr": pattern_lr, "weight_decay": 0.0})
    optimizer = torch.optim.Adam(groups)
    generator = torch.Generator().manual_seed(seed)
    labels = zoo.labels.float()
    fixed: dict[int, torch.Tensor] = {}  # features of each zoo when the patterns are fixed
    if not detector.learn_patterns:
        with torch.no_grad():
            for other in (zoo, validation, monitor):
                if other is not None and id(other) not in fixed:
                    fixed[id(other)] = detector.features(other.stack, method=method)

    def scores(other: Zoo) -> torch.Tensor:
        if id(other) in fixed:
            with torch.no_grad():
                return torch.sigmoid(detector.head(fixed[id(other)]).squeeze(1))
        return detector.score(other)

    history: dict[str, list[float]] = {"loss": []}
    if track_train_auc:
        history["train_auc"] = []
    best = (-1.0, 0, copy.deepcopy(detector.state_dict()))
    start = time.perf_counter()
    for epoch in range(epochs):
        order = torch.randperm(len(zoo), generator=generator)
        total = 0.0
        for begin in range(0, len(zoo), batch_size):
            batch = order[begin:begin + batch_size]
            if fixed:
                logits = detector.head(fixed[id(zoo)][batch]).squeeze(1)
                loss = F.binary_cross_entropy_with_logits(logits, labels[batch])
            else:
                loss = ulp_objective(detector, zoo.stack.select(batch), labels[batch], tv_weight=tv_weight,
                                     method=method)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                detector.patterns.clamp_(0.0, 1.0)
            total += loss.item() * len(batch)
        history["loss"].append(total / len(zoo))
        if track_train_auc:
            history["train_auc"].append(auc(scores(zoo), zoo.labels))
        for name, other in (("val_auc", validation), ("monitor_auc", monitor)):
            if other is not None:
                history.setdefault(name, []).append(auc(scores(other), other.labels))
        if validation is not None and history["val_auc"][-1] > best[0]:
            best = (history["val_auc"][-1], epoch, copy.deepcopy(detector.state_dict()))
    if validation is not None:
        detector.load_state_dict(best[2])
        best_epoch = best[1]
    else:
        best_epoch = epochs - 1
    return ULPTraining(detector, history, best_epoch, time.perf_counter() - start)


_WORKER_ZOO: Zoo | None = None


def _start_worker(zoo: Zoo) -> None:
    global _WORKER_ZOO
    torch.set_num_threads(1)
    _WORKER_ZOO = zoo


def _train_job(job: Mapping[str, object]) -> ULPTraining:
    options = dict(job)
    return train_detector(options.pop("detector"), _WORKER_ZOO, **options)


def train_detectors(jobs: Sequence[Mapping[str, object]], zoo: Zoo, *, num_workers: int = 1) -> list[ULPTraining]:
    """Several independent :func:`train_detector` runs on one ``zoo``, optionally in parallel processes.

    Each job is a dict of the keyword arguments of :func:`train_detector` with its
    ``detector`` (``{"detector": LitmusDetector(...), "seed": 3, "validation": zoo, ...}``).
    With ``num_workers > 1`` the jobs run in a pool of that many processes, one torch
    thread each, which receive ``zoo`` once; the jobs are handed out in the given order, so
    list the costly ones first. Every run depends only on its job and ``zoo`` (explicit seeds),
    so the results are those of calling :func:`train_detector` on each job in a loop.

    Parameters
    ----------
    jobs : sequence of dict
        Keyword arguments of :func:`train_detector`, each with the key ``detector``.
    zoo : Zoo
        The training zoo shared by all jobs.
    num_workers : int
        Processes that train at once; 1 trains in this process.

    Returns
    -------
    list of ULPTraining
        In the order of ``jobs``.

    Examples
    --------
    >>> from backdoorlab.zoo import ModelStack, Zoo
    >>> zoo = Zoo(ModelStack.initial(range(4)), [None] * 4, torch.tensor([0, 1, 0, 1]), torch.ones(4), torch.ones(4))
    >>> runs = train_detectors([{"detector": LitmusDetector(num_patterns=1, seed=s), "epochs": 1, "seed": s}
    ...                         for s in range(2)], zoo)
    >>> [len(run.history["loss"]) for run in runs]
    [1, 1]
    """
    _check_zoo(zoo, "zoo")
    _checks.check_int("num_workers", num_workers, minimum=1)
    if not isinstance(jobs, Sequence) or not jobs:
        raise ValueError("jobs must be a non-empty sequence of dicts of train_detector's keyword arguments")
    for index, job in enumerate(jobs):
        if not isinstance(job, Mapping) or not isinstance(job.get("detector"), LitmusDetector):
            raise TypeError(f"jobs[{index}] must be a dict with a LitmusDetector under 'detector', got {job!r}")
    if num_workers == 1 or len(jobs) == 1:
        return [train_detector(job["detector"], zoo, **{k: v for k, v in job.items() if k != "detector"})
                for job in jobs]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("spawn")  # a forked torch runtime can deadlock
    with ProcessPoolExecutor(min(num_workers, len(jobs)), mp_context=context, initializer=_start_worker,
                             initargs=(zoo,)) as pool:
        return list(pool.map(_train_job, [dict(job) for job in jobs]))


def ulp_objective(
    detector: LitmusDetector, stack: ModelStack, labels: torch.Tensor, *, tv_weight: float, method: str = "batched"
) -> torch.Tensor:
    """The ULP objective on one batch of models: mean logistic loss plus ``tv_weight`` * sum of TV."""
    if len(labels) != len(stack):
        raise ValueError(f"{len(labels)} labels for {len(stack)} models")
    _checks.check_real("tv_weight", tv_weight, minimum=0.0)
    logits = detector.head(detector.features(stack, method=method)).squeeze(1)
    loss = F.binary_cross_entropy_with_logits(logits, labels.float())
    if detector.learn_patterns and tv_weight:
        loss = loss + tv_weight * total_variation(detector.patterns).sum()
    return loss
