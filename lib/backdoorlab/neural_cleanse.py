"""Neural Cleanse (Wang et al. 2019): reverse-engineer a trigger for every label, flag outliers.

For a model :math:`f` and each label :math:`t`, Neural Cleanse looks for the smallest
trigger that sends clean images to :math:`t`: a mask :math:`m \\in [0, 1]^{H \\times W}`
and a pattern :math:`p \\in [0, 1]^{C \\times H \\times W}` minimising

.. math:: \\mathbb{E}_x\\, \\operatorname{CE}\\big(f((1 - m) \\odot x + m \\odot p), t\\big)
          + \\lambda \\, \\lVert m \\rVert_1,

with :math:`m = \\tanh(\\mu) / (2 - \\epsilon) + 1/2` and :math:`p = \\tanh(\\pi) / (2 - \\epsilon) + 1/2`
so that Adam works on unconstrained :math:`\\mu, \\pi`. The weight :math:`\\lambda` follows the
authors' schedule: it is 0 until the attack succeeds, then starts at ``init_cost`` and is
multiplied (attack success above the threshold for ``patience`` epochs in a row) or divided
(below it) as the optimisation goes. A backdoored label needs a much smaller mask than the
others; the *anomaly index* of the smallest mask norm,

.. math:: a = \\frac{\\operatorname{median}_t \\lVert m_t \\rVert_1 - \\min_t \\lVert m_t \\rVert_1}
                 {1.4826 \\cdot \\operatorname{median}_t \\big| \\lVert m_t \\rVert_1
                  - \\operatorname{median}_s \\lVert m_s \\rVert_1 \\big|},

flags the model above 2. Here every (model, label) problem is solved at once: K models of a
:class:`~backdoorlab.zoo.ModelStack` run as one grouped-convolution network, and the labels
form a batch dimension.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import _checks
from ._stacks import as_stack
from .zoo import ModelStack, Zoo, ZooCNN

__all__ = ["NeuralCleanseResult", "anomaly_index", "neural_cleanse", "MAD_CONSISTENCY"]

#: Scales the median absolute deviation into a standard deviation for normal data.
MAD_CONSISTENCY = 1.4826
_EPSILON = 1e-7  # Keras' epsilon, used by the authors in the tanh parametrisation


@dataclass(frozen=True, eq=False)
class NeuralCleanseResult:
    """Reverse-engineered triggers of K models x L labels and each model's anomaly index.

    Attributes
    ----------
    masks : torch.Tensor
        (K, L, H, W) in [0, 1]: the kept mask of each (model, label).
    patterns : torch.Tensor
        (K, L, C, H, W) in [0, 1].
    norms : torch.Tensor
        (K, L) L1 norms of the masks.
    attack_success : torch.Tensor
        (K, L) the share of the batch images sent to the label in the epoch whose mask was kept.
    epochs : torch.Tensor
        int64 (K, L): epochs run before the early stop (or the budget) ended the problem.
    anomaly_index : torch.Tensor
        (K,) anomaly index of each model's smallest norm (its score for an ROC curve).
    flagged : torch.Tensor
        bool (K,): anomaly index above 2.
    suspect_label : torch.Tensor
        int64 (K,): the label of the smallest norm.
    labels : tuple of int
        The L labels, in the order of the second axis.
    seconds : float
        Wall time of the optimisation.
    """

    masks: torch.Tensor
    patterns: torch.Tensor
    norms: torch.Tensor
    attack_success: torch.Tensor
    epochs: torch.Tensor
    anomaly_index: torch.Tensor
    flagged: torch.Tensor
    suspect_label: torch.Tensor
    labels: tuple[int, ...]
    seconds: float


def anomaly_index(norms: torch.Tensor) -> torch.Tensor:
    """Anomaly index of the smallest of each row of mask norms (median and MAD over the row).

    .. math:: a = \\frac{\\operatorname{med}(n) - \\min(n)}{1.4826 \\cdot \\operatorname{med}(|n - \\operatorname{med}(n)|)}

    The median of an even number of values is the mean of the two middle ones (as NumPy's,
    which the authors use; ``torch.median`` would return the lower one). If the MAD is 0 the
    index is 0 when the smallest norm equals the median and ``inf`` otherwise.

    Parameters
    ----------
    norms : torch.Tensor
        (K, L) mask norms, L >= 2 labels per model.

    Returns
    -------
    torch.Tensor
        (K,) non-negative anomaly indices.

    Examples
    --------
    >>> anomaly_index(torch.tensor([[10.0, 11.0, 9.0, 10.0, 2.0]])).tolist()
    [5.395925998687744]
    >>> anomaly_index(torch.tensor([[3.0, 3.0, 3.0], [1.0, 3.0, 3.0]])).tolist()
    [0.0, inf]
    """
    if not isinstance(norms, torch.Tensor):
        raise TypeError(f"norms must be a torch.Tensor, got {type(norms).__name__}")
    if norms.ndim != 2 or norms.shape[0] < 1 or norms.shape[1] < 2:
        raise ValueError(f"norms must have shape (K, L) with K >= 1 and L >= 2, got {tuple(norms.shape)}")
    if not torch.isfinite(norms).all() or (norms < 0).any():
        raise ValueError("norms must be finite and non-negative")
    norms = norms.double()
    median = norms.quantile(0.5, dim=1)
    mad = MAD_CONSISTENCY * (norms - median[:, None]).abs().quantile(0.5, dim=1)
    gap = median - norms.min(dim=1).values
    index = torch.where(mad > 0, gap / mad.clamp(min=torch.finfo(torch.float64).tiny),
                        torch.where(gap > 0, torch.full_like(gap, float("inf")), torch.zeros_like(gap)))
    return index.float()


def _to_unit(raw: torch.Tensor) -> torch.Tensor:
    return torch.tanh(raw) / (2 - _EPSILON) + 0.5


def _from_unit(value: torch.Tensor) -> torch.Tensor:
    return torch.atanh((value - 0.5) * (2 - _EPSILON))


@dataclass
class _Schedule:
    """The authors' per-problem bookkeeping of lambda, best mask and early stop, as (P,) tensors."""

    cost: torch.Tensor
    set_counter: torch.Tensor
    up_counter: torch.Tensor
    down_counter: torch.Tensor
    up_flag: torch.Tensor
    down_flag: torch.Tensor
    reg_best: torch.Tensor
    stop_counter: torch.Tensor
    stop_reg_best: torch.Tensor

    @classmethod
    def start(cls, shape: torch.Size) -> _Schedule:
        zeros = torch.zeros(shape)
        ints = torch.zeros(shape, dtype=torch.long)
        inf = torch.full(shape, float("inf"))
        falses = torch.zeros(shape, dtype=torch.bool)
        return cls(zeros.clone(), ints.clone(), ints.clone(), ints.clone(), falses.clone(), falses.clone(),
                   inf.clone(), ints.clone(), inf.clone())


def _update(s: _Schedule, success: torch.Tensor, reg: torch.Tensor, *, init_cost: float, patience: int,
            multiplier: float, threshold: float, stop_threshold: float, stop_patience: int
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """One epoch of the schedule (in place): which problems keep their mask now, which stop."""
    hit = success >= threshold
    better = hit & (reg < s.reg_best)
    s.reg_best = torch.where(better, reg, s.reg_best)
    found = torch.isfinite(s.reg_best)
    stalled = s.reg_best >= stop_threshold * s.stop_reg_best
    s.stop_counter = torch.where(found, torch.where(stalled, s.stop_counter + 1, 0), s.stop_counter)
    s.stop_reg_best = torch.minimum(s.reg_best, s.stop_reg_best)
    stop = s.up_flag & s.down_flag & (s.stop_counter >= stop_patience)
    # lambda starts at 0 and is set to init_cost after `patience` successful epochs
    waiting = (s.cost == 0) & hit
    s.set_counter = torch.where(waiting, s.set_counter + 1, 0)
    armed = s.set_counter >= patience
    s.cost = torch.where(armed, torch.full_like(s.cost, init_cost), s.cost)
    for name in ("up_counter", "down_counter"):
        setattr(s, name, torch.where(armed, 0, getattr(s, name)))
    s.up_flag, s.down_flag = s.up_flag & ~armed, s.down_flag & ~armed
    s.up_counter = torch.where(hit, s.up_counter + 1, 0)
    s.down_counter = torch.where(hit, 0, s.down_counter + 1)
    up, down = s.up_counter >= patience, (s.up_counter < patience) & (s.down_counter >= patience)
    s.cost = torch.where(up, s.cost * multiplier, torch.where(down, s.cost / multiplier ** 1.5, s.cost))
    s.up_counter = torch.where(up, 0, s.up_counter)
    s.down_counter = torch.where(down, 0, s.down_counter)
    s.up_flag, s.down_flag = s.up_flag | up, s.down_flag | down
    return better, stop


def _batch_rows(num_images: int, epoch: int, steps: int, batch_size: int, seed: int) -> torch.Tensor:
    """The image indices of one epoch, (steps, batch_size): the same for every problem."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    rows = torch.cat([torch.randperm(num_images, generator=generator)
                      for _ in range(-(-steps * batch_size // num_images))])
    return rows[:steps * batch_size].view(steps, batch_size)


def _solve(stack: ModelStack, images: torch.Tensor, labels: torch.Tensor, mask_init: torch.Tensor,
           pattern_init: torch.Tensor, *, epochs: int, steps_per_epoch: int, batch_size: int, lr: float,
           seed: int, **schedule: float) -> tuple[torch.Tensor, ...]:
    """Solve the K x L problems of ``stack`` and ``labels`` jointly; initial masks (K, L, H, W)."""
    k, num_labels = mask_init.shape[:2]
    mask_raw = _from_unit(mask_init).requires_grad_(True)
    pattern_raw = _from_unit(pattern_init).requires_grad_(True)
    optimizer = torch.optim.Adam([mask_raw, pattern_raw], lr=lr, betas=(0.5, 0.9))
    state = _Schedule.start(torch.Size((k, num_labels)))
    best_mask, best_pattern = _to_unit(mask_raw).detach().clone(), _to_unit(pattern_raw).detach().clone()
    best_success = torch.zeros(k, num_labels)
    ever_hit = torch.zeros(k, num_labels, dtype=torch.bool)
    active = torch.ones(k, num_labels, dtype=torch.bool)
    epochs_run = torch.zeros(k, num_labels, dtype=torch.long)
    target = labels.view(1, num_labels, 1).expand(k, num_labels, batch_size)
    for epoch in range(epochs):
        if not active.any():
            break
        hits = torch.zeros(k, num_labels)
        regs = torch.zeros(k, num_labels)
        for rows in _batch_rows(len(images), epoch, steps_per_epoch, batch_size, seed):
            mask = _to_unit(mask_raw).unsqueeze(2)  # (K, L, 1, H, W), one mask for all channels
            pattern = _to_unit(pattern_raw)  # (K, L, C, H, W)
            x = images[rows]  # (B, C, H, W)
            stamped = (1 - mask.unsqueeze(2)) * x + (mask * pattern).unsqueeze(2)  # (K, L, B, C, H, W)
            logits = stack(stamped.flatten(1, 2)).view(k, num_labels, batch_size, -1)
            ce = F.cross_entropy(logits.flatten(0, 2), target.flatten(), reduction="none").view(k, num_labels, -1)
            reg = mask.abs().sum(dim=(2, 3, 4))  # (K, L)
            loss = (ce.mean(2) + state.cost * reg).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            before = (mask_raw.detach().clone(), pattern_raw.detach().clone())
            optimizer.step()
            with torch.no_grad():  # finished problems keep their parameters
                mask_raw.copy_(torch.where(active[:, :, None, None], mask_raw, before[0]))
                pattern_raw.copy_(torch.where(active[:, :, None, None, None], pattern_raw, before[1]))
            hits += (logits.argmax(-1) == target).float().mean(2).detach()
            regs += reg.detach()
        success, reg_mean = hits / steps_per_epoch, regs / steps_per_epoch
        epochs_run += active.long()
        frozen = _Schedule(**{name: value.clone() for name, value in vars(state).items()})
        better, stop = _update(state, success, reg_mean, **schedule)
        for name, value in vars(frozen).items():  # finished problems keep their schedule
            setattr(state, name, torch.where(active, getattr(state, name), value))
        better, stop = better & active, stop & active
        ever_hit |= better
        with torch.no_grad():
            best_mask = torch.where(better[:, :, None, None], _to_unit(mask_raw), best_mask)
            best_pattern = torch.where(better[:, :, None, None, None], _to_unit(pattern_raw), best_pattern)
        best_success = torch.where(better, success, best_success)
        last = active & ~ever_hit  # never successful: the authors keep the last mask
        with torch.no_grad():
            best_mask = torch.where(last[:, :, None, None], _to_unit(mask_raw), best_mask)
            best_pattern = torch.where(last[:, :, None, None, None], _to_unit(pattern_raw), best_pattern)
        best_success = torch.where(last, success, best_success)
        active &= ~stop
    return best_mask.detach(), best_pattern.detach(), best_success, epochs_run


def _one_thread() -> None:
    torch.set_num_threads(1)


def _solve_problem(argument: tuple) -> tuple[torch.Tensor, ...]:
    stack, images, labels, mask_init, pattern_init, options = argument
    return _solve(stack, images, labels, mask_init, pattern_init, **options)


def neural_cleanse(
    models: ModelStack | Zoo | Sequence[ZooCNN],
    images: torch.Tensor,
    *,
    labels: Sequence[int] | None = None,
    epochs: int = 15,
    steps_per_epoch: int = 5,
    batch_size: int = 16,
    lr: float = 0.1,
    init_cost: float = 1e-3,
    patience: int = 2,
    cost_multiplier: float = 2.0,
    attack_threshold: float = 0.99,
    early_stop_threshold: float = 1.0,
    early_stop_patience: int = 10,
    model_chunk: int = 20,
    method: str = "batched",
    seed: int = 0,
    num_workers: int = 1,
) -> NeuralCleanseResult:
    """Neural Cleanse on every model of ``models``: one trigger per label, then the anomaly index.

    For each model k and label t, Adam (learning rate ``lr``, betas 0.5 and 0.9, as the authors)
    minimises the mean cross-entropy to t of the stamped batch plus lambda times :math:`\\lVert m \\rVert_1`
    over ``epochs`` epochs of ``steps_per_epoch`` batches of ``batch_size`` clean images. After
    each epoch the authors' schedule updates lambda from the epoch's attack success (0 until the
    attack has succeeded for ``patience`` epochs, then ``init_cost``, multiplied by
    ``cost_multiplier`` or divided by ``cost_multiplier ** 1.5`` after ``patience`` epochs above
    or below ``attack_threshold``); the mask of the epoch with the smallest mean norm among those
    with success at least ``attack_threshold`` is kept (the last one if none succeeded), and a
    problem stops once lambda has gone both up and down and the best norm has not dropped below
    ``early_stop_threshold`` times its previous best for ``early_stop_patience`` epochs.

    The defaults keep the authors' GTSRB example where it is not a budget (lr 0.1, Adam betas,
    lambda 1e-3, multiplier 2, success threshold 0.99, early-stop threshold 1.0) and cut the
    budget so that a zoo of about a hundred models fits a chapter: the authors run up to 1000
    epochs of 31 batches of 32 images with patience 5 and early-stop patience 25 epochs; the
    defaults here run at most 15 epochs of 5 batches of 16 images (75 steps), with patience 2
    and early-stop patience 10 epochs, so that lambda can still change several times within the
    budget. These settings were fixed before looking at any zoo, not tuned.

    ``method="batched"`` solves the problems of ``model_chunk`` models and all labels at once
    (one grouped network, labels as a batch axis); ``method="loop"`` solves each (model, label)
    alone. Both draw the same initial masks and patterns (uniform, from ``seed``) and the same
    image batches, so they agree up to floating-point rounding.
    The problems are independent: with ``num_workers > 1`` they are solved in a pool of that
    many processes, one torch thread each, with the same results up to rounding.

    Parameters
    ----------
    models : ModelStack, Zoo or sequence of ZooCNN
        The K models to scan; they take images in [0, 1].
    images : torch.Tensor
        (N, C, H, W) clean images in [0, 1] (the defender's small clean set).
    labels : sequence of int, optional
        The labels to scan (default: all); at least 2.

    Returns
    -------
    NeuralCleanseResult

    Raises
    ------
    ValueError
        On a bad shape or value of ``images``, ``labels`` or an option.
    TypeError
        If ``models`` or ``images`` has the wrong type.

    Examples
    --------
    >>> from backdoorlab.zoo import ModelStack
    >>> result = neural_cleanse(ModelStack.initial([0, 1]), torch.rand(64, 1, 28, 28), labels=[0, 1, 2],
    ...                         epochs=2, steps_per_epoch=2, batch_size=8)
    >>> result.masks.shape, result.anomaly_index.shape
    (torch.Size([2, 3, 28, 28]), torch.Size([2]))
    """
    stack = as_stack(models)
    for name, value in stack.parameter_dict().items():
        _checks.check_finite(f"models (parameter {name})", value)
    _checks.check_images(images, nonempty=True)
    if labels is not None and not isinstance(labels, Sequence):
        raise TypeError(f"labels must be a sequence of ints, got {type(labels).__name__}")
    labels = None if labels is None else [_checks.check_int("labels", t) for t in labels]
    for name, value in (("epochs", epochs), ("steps_per_epoch", steps_per_epoch), ("batch_size", batch_size),
                        ("patience", patience), ("early_stop_patience", early_stop_patience),
                        ("model_chunk", model_chunk)):
        _checks.check_int(name, value)
    _checks.check_int("num_workers", num_workers, minimum=1)
    for name, value in (("lr", lr), ("init_cost", init_cost), ("cost_multiplier", cost_multiplier),
                        ("attack_threshold", attack_threshold), ("early_stop_threshold", early_stop_threshold)):
        _checks.check_real(name, value)
    _checks.check_seed(seed)
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    in_channels, num_classes = stack.architecture["in_channels"], stack.architecture["num_classes"]
    if images.ndim != 4 or images.shape[1] != in_channels or len(images) == 0:
        raise ValueError(f"images must have shape (N, {in_channels}, H, W) with N >= 1, got {tuple(images.shape)}")
    if not images.is_floating_point() or images.min() < 0 or images.max() > 1:
        raise ValueError("images must be floating point with values in [0, 1]")
    labels = tuple(range(num_classes)) if labels is None else tuple(int(t) for t in labels)
    if len(labels) < 2 or len(set(labels)) != len(labels) or not all(0 <= t < num_classes for t in labels):
        raise ValueError(f"labels must be at least 2 distinct classes in [0, {num_classes - 1}], got {labels}")
    for name, value in (("epochs", epochs), ("steps_per_epoch", steps_per_epoch), ("batch_size", batch_size),
                        ("patience", patience), ("early_stop_patience", early_stop_patience),
                        ("model_chunk", model_chunk)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    for name, value in (("lr", lr), ("init_cost", init_cost), ("early_stop_threshold", early_stop_threshold)):
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {value}")
    if not cost_multiplier > 1:
        raise ValueError(f"cost_multiplier must be > 1, got {cost_multiplier}")
    if not 0 < attack_threshold <= 1:
        raise ValueError(f"attack_threshold must be in (0, 1], got {attack_threshold}")
    if method not in ("batched", "loop"):
        raise ValueError(f"method must be 'batched' or 'loop', got {method!r}")
    k, num_labels, (c, h, w) = len(stack), len(labels), images.shape[1:]
    generator = torch.Generator().manual_seed(seed)
    mask_init = torch.rand(k, num_labels, h, w, generator=generator)
    pattern_init = torch.rand(k, num_labels, c, h, w, generator=generator)
    target = torch.tensor(labels)
    options = dict(epochs=epochs, steps_per_epoch=steps_per_epoch, batch_size=batch_size, lr=lr, seed=seed,
                   init_cost=init_cost, patience=patience, multiplier=cost_multiplier, threshold=attack_threshold,
                   stop_threshold=early_stop_threshold, stop_patience=early_stop_patience)
    if method == "batched":
        problems = [(list(range(s, min(s + model_chunk, k))), list(range(num_labels))) for s in range(0, k, model_chunk)]
    else:
        problems = [([i], [j]) for i in range(k) for j in range(num_labels)]
    masks, patterns = torch.zeros(k, num_labels, h, w), torch.zeros(k, num_labels, c, h, w)
    success, epochs_run = torch.zeros(k, num_labels), torch.zeros(k, num_labels, dtype=torch.long)
    start = time.perf_counter()
    frozen = stack  # select() below copies the parameters: the caller's stack is not frozen
    index_pairs = [(torch.tensor(members)[:, None], torch.tensor(columns)[None, :]) for members, columns in problems]
    arguments = [(frozen.select(members).requires_grad_(False), images, target[columns], mask_init[rows, cols],
                  pattern_init[rows, cols], options) for (members, columns), (rows, cols) in zip(problems, index_pairs)]
    if num_workers > 1 and len(problems) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        context = multiprocessing.get_context("spawn")  # a forked torch runtime can deadlock
        with ProcessPoolExecutor(min(num_workers, len(problems)), mp_context=context,
                                 initializer=_one_thread) as pool:
            outputs = list(pool.map(_solve_problem, arguments))
    else:
        outputs = [_solve_problem(argument) for argument in arguments]
    for (rows, cols), out in zip(index_pairs, outputs):
        masks[rows, cols], patterns[rows, cols], success[rows, cols], epochs_run[rows, cols] = out
    seconds = time.perf_counter() - start
    norms = masks.sum(dim=(2, 3))
    index = anomaly_index(norms)
    return NeuralCleanseResult(masks, patterns, norms, success, epochs_run, index, index > 2,
                               norms.argmin(dim=1), labels, seconds)
