"""One shape for every model-level backdoor detector, and a harness that compares them on one zoo.

A :class:`Detector` is what the harness needs to know about a fitted detector: a name, a
function from a :class:`~backdoorlab.zoo.ModelStack` to one score per model (higher meaning
"more likely backdoored"), and what the detector needed to be built (a labelled zoo, clean
models only, clean images). :func:`compare` scores one zoo with every detector, timing each,
and returns the AUC with its confidence interval, the true-positive rate at a fixed
false-positive rate, the cost per model, and the scores for ROC curves.

The constructors :func:`ulp_detector`, :func:`neural_cleanse_detector` and
:func:`one_class_detector` wrap the book's detectors.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.metrics import roc_curve

from . import _checks, stats
from .mntd import OneClassMetaClassifier
from .neural_cleanse import neural_cleanse
from .ulp import LitmusDetector
from .zoo import ModelStack, Zoo

__all__ = [
    "NEEDS", "Detector", "DetectorRow", "Comparison", "compare", "rank_average",
    "ulp_detector", "neural_cleanse_detector", "one_class_detector",
]

#: What a detector may need before it can score a model, in the words of the comparison table.
NEEDS = ("labelled zoo", "clean zoo", "clean images")


@dataclass(frozen=True, eq=False)
class Detector:
    """A fitted model-level detector.

    Attributes
    ----------
    name : str
        Its name in tables and figures.
    score : callable
        ``score(stack)`` returns a (K,) tensor or array of finite scores for the K models of a
        :class:`~backdoorlab.zoo.ModelStack`; higher means more likely backdoored.
    needs : tuple of str
        Entries of :data:`NEEDS`: what building the detector required.
    fit_seconds : float
        Time it took to build (train) the detector, if known.

    Examples
    --------
    >>> detector = Detector("bias", lambda stack: stack.parameter_dict()["fc.bias"].abs().amax(1), needs=())
    >>> detector.score(ModelStack.initial([0, 1])).shape
    torch.Size([2])
    """

    name: str
    score: Callable[[ModelStack], torch.Tensor | np.ndarray]
    needs: tuple[str, ...] = ()
    fit_seconds: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"name must be a non-empty str, got {self.name!r}")
        if not callable(self.score):
            raise TypeError(f"score must be callable, got {type(self.score).__name__}")
        if not isinstance(self.needs, tuple) or any(need not in NEEDS for need in self.needs):
            raise ValueError(f"needs must be a tuple of entries of {NEEDS}, got {self.needs!r}")
        _checks.check_real("fit_seconds", self.fit_seconds, minimum=0.0)


@dataclass(frozen=True)
class DetectorRow:
    """One detector's line of a comparison.

    ``auc`` with its interval ``[ci_low, ci_high]`` (DeLong) over the zoo's models;
    ``tpr`` is the share of backdoored models detected at the threshold whose false-positive
    rate is at most the comparison's ``fpr``; ``seconds_per_model`` is the scoring time
    divided by the number of models.
    """

    name: str
    auc: float
    ci_low: float
    ci_high: float
    tpr: float
    seconds_per_model: float
    fit_seconds: float
    needs: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class Comparison:
    """Every detector on one zoo.

    Attributes
    ----------
    rows : tuple of DetectorRow
        In the order the detectors were given.
    scores : dict of str to numpy.ndarray
        Each detector's (K,) scores.
    labels : numpy.ndarray
        (K,) 1 for backdoored models, 0 for clean ones.
    fpr : float
        The false-positive rate of the ``tpr`` column.
    level : float
        Coverage of the intervals.
    """

    rows: tuple[DetectorRow, ...]
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0))
    fpr: float = 0.05
    level: float = 0.95

    def __getitem__(self, name: str) -> DetectorRow:
        for row in self.rows:
            if row.name == name:
                return row
        raise KeyError(name)

    def roc(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """False- and true-positive rates of ``name``'s ROC curve."""
        false_rates, true_rates, _ = roc_curve(self.labels, self.scores[self[name].name])
        return false_rates, true_rates

    def best(self) -> str:
        """The name of the detector with the largest AUC (the first one on a tie)."""
        return max(self.rows, key=lambda row: row.auc).name

    def table(self) -> str:
        """The comparison as a plain-text table."""
        level = round(100 * self.level)
        lines = [f"{'detector':<16} {'AUC':>6} {f'{level} % CI':>15} {f'TPR@{self.fpr:.0%}':>9} "
                 f"{'s / model':>10}  needs"]
        for r in self.rows:
            lines.append(f"{r.name:<16} {r.auc:>6.3f} {f'[{r.ci_low:.3f}, {r.ci_high:.3f}]':>15} {r.tpr:>9.3f} "
                         f"{r.seconds_per_model:>10.4f}  {', '.join(r.needs) or 'nothing'}")
        return "\n".join(lines)


def _scores(detector: Detector, stack: ModelStack) -> np.ndarray:
    values = detector.score(stack)
    array = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    if array.shape != (len(stack),):
        raise ValueError(f"detector {detector.name!r} returned scores of shape {array.shape}, expected ({len(stack)},)")
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise ValueError(f"detector {detector.name!r} returned non-finite scores")
    return array


def compare(detectors: Sequence[Detector], zoo: Zoo, *, fpr: float = 0.05, level: float = 0.95) -> Comparison:
    """Score every model of ``zoo`` with every detector and compare them.

    Each detector scores the whole zoo once, timed. Its AUC over the zoo's labels comes with
    a DeLong interval (:func:`backdoorlab.stats.auc_ci`), its true-positive rate at ``fpr``
    from :func:`backdoorlab.stats.tpr_at_fpr`.

    Parameters
    ----------
    detectors : sequence of Detector
        With distinct names.
    zoo : Zoo
        Labelled models (both clean and backdoored ones).
    fpr : float
        In [0, 1).
    level : float
        Coverage of the intervals, in (0, 1).

    Returns
    -------
    Comparison

    Examples
    --------
    >>> stack = ModelStack.initial(range(6))
    >>> zoo = Zoo(stack, [None] * 6, torch.tensor([0, 0, 0, 1, 1, 1]), torch.ones(6), torch.ones(6))
    >>> oracle = Detector("oracle", lambda s: zoo.labels.float(), needs=("labelled zoo",))
    >>> compare([oracle], zoo)["oracle"].auc
    1.0
    """
    if not isinstance(zoo, Zoo):
        raise TypeError(f"zoo must be a Zoo, got {type(zoo).__name__}")
    labels = zoo.labels.numpy()
    if len(np.unique(labels)) != 2:
        raise ValueError("zoo must hold both clean and backdoored models")
    if isinstance(detectors, Detector) or not isinstance(detectors, Sequence) or len(detectors) == 0:
        raise TypeError("detectors must be a non-empty sequence of Detector")
    for index, detector in enumerate(detectors):
        if not isinstance(detector, Detector):
            raise TypeError(f"detectors[{index}] must be a Detector, got {type(detector).__name__}")
    names = [detector.name for detector in detectors]
    if len(set(names)) != len(names):
        raise ValueError(f"detectors must have distinct names, got {names}")
    _checks.check_real("fpr", fpr, minimum=0.0, maximum=1.0, strict_maximum=True)
    _checks.check_real("level", level, minimum=0.0, maximum=1.0, strict_minimum=True, strict_maximum=True)
    rows, scores = [], {}
    for detector in detectors:
        start = time.perf_counter()
        values = _scores(detector, zoo.stack)
        seconds = time.perf_counter() - start
        interval = stats.auc_ci(labels, values, level=level)
        rows.append(DetectorRow(detector.name, interval.auc, interval.low, interval.high,
                                stats.tpr_at_fpr(labels, values, fpr=fpr), seconds / len(zoo),
                                detector.fit_seconds, detector.needs))
        scores[detector.name] = values
    return Comparison(tuple(rows), scores, labels, float(fpr), float(level))


def rank_average(*scores: np.ndarray | torch.Tensor | Sequence[float]) -> np.ndarray:
    """The mean of the scores' ranks (ties get their mean rank), scaled to [0, 1].

    A simple way to combine detectors whose scores live on different scales: each model's
    combined score is :math:`\\frac{1}{D} \\sum_d \\frac{\\mathrm{rank}_d - 1}{K - 1}`.

    Examples
    --------
    >>> rank_average([0.1, 0.5, 0.9], [30.0, 10.0, 20.0]).tolist()
    [0.5, 0.25, 0.75]
    """
    if not scores:
        raise ValueError("scores must hold at least one score vector")
    arrays = []
    for index, values in enumerate(scores):
        array = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values, dtype=float)
        if array.ndim != 1 or len(array) < 2:
            raise ValueError(f"scores[{index}] must be one-dimensional with at least 2 entries, got {array.shape}")
        if not np.isfinite(array).all():
            raise ValueError(f"scores[{index}] must be finite")
        arrays.append(array)
    if len({len(array) for array in arrays}) != 1:
        raise ValueError(f"scores must have equal lengths, got {[len(array) for array in arrays]}")
    from scipy.stats import rankdata

    ranks = np.stack([(rankdata(array) - 1) / (len(array) - 1) for array in arrays])
    return ranks.mean(axis=0)


def ulp_detector(litmus: LitmusDetector, *, name: str = "ULP", fit_seconds: float = 0.0) -> Detector:
    """A trained :class:`~backdoorlab.ulp.LitmusDetector` (ULP or the noise baseline); needs a labelled zoo."""
    if not isinstance(litmus, LitmusDetector):
        raise TypeError(f"litmus must be a LitmusDetector, got {type(litmus).__name__}")
    return Detector(name, litmus.score, ("labelled zoo",), fit_seconds)


def neural_cleanse_detector(images: torch.Tensor, *, name: str = "Neural Cleanse", **options) -> Detector:
    """Neural Cleanse's anomaly index with ``options`` of :func:`~backdoorlab.neural_cleanse.neural_cleanse`.

    It needs clean images and nothing else. An infinite index (MAD 0 and an outlier) is
    scored as the largest finite float, so that it ranks above every finite one.
    """
    _checks.check_images(images, nonempty=True)

    def score(stack: ModelStack) -> torch.Tensor:
        index = neural_cleanse(stack, images, **options).anomaly_index.double()
        return torch.nan_to_num(index, posinf=float(np.finfo(np.float64).max))

    return Detector(name, score, ("clean images",), 0.0)


def one_class_detector(detector: OneClassMetaClassifier, *, name: str = "MNTD one-class",
                       fit_seconds: float = 0.0) -> Detector:
    """A trained :class:`~backdoorlab.mntd.OneClassMetaClassifier`; needs clean models only."""
    if not isinstance(detector, OneClassMetaClassifier):
        raise TypeError(f"detector must be a OneClassMetaClassifier, got {type(detector).__name__}")
    return Detector(name, detector.score, ("clean zoo",), fit_seconds)
