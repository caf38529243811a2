"""The "evade the detector" lab: an automatic grader for a student's backdoored MNIST model.

A submission is a :class:`~backdoorlab.zoo.ZooCNN` (the architecture of the defender's zoo),
its trigger and its target class. :class:`Grader` measures everything itself from the model's
weights, never from numbers the student supplies:

- clean accuracy on the MNIST test images, at least ``min_accuracy`` (0.98);
- attack success rate of the trigger on the test images of every other class, at least
  ``min_attack_success`` (0.9);
- the score of each detector (a trained :class:`~backdoorlab.ulp.LitmusDetector` and Neural
  Cleanse's anomaly index), which must not exceed the detector's threshold at a false-positive
  rate of ``fpr`` (5 %) on the clean models of a reference zoo the detectors never trained on.

The model passes when every criterion holds.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from . import _checks
from .data import ImageSet
from .neural_cleanse import neural_cleanse
from .train import accuracy
from .triggers import Trigger, attack_success_rate
from .ulp import LitmusDetector
from .zoo import ModelStack, Zoo, ZooCNN

__all__ = ["Criterion", "LabGrade", "Grader", "threshold_at_fpr", "grade"]


def threshold_at_fpr(clean_scores: torch.Tensor | Sequence[float], *, fpr: float = 0.05) -> float:
    """The smallest threshold that flags at most a share ``fpr`` of the clean models.

    A model is flagged when its score is strictly above the threshold. With the clean scores
    sorted from the largest, :math:`s_{(1)} \\ge s_{(2)} \\ge \\dots \\ge s_{(n)}`, the threshold
    is :math:`s_{(k+1)}` with :math:`k = \\lfloor \\mathrm{fpr} \\cdot n \\rfloor`: the k largest
    clean scores (and no more, unless tied with it) lie above it.

    Parameters
    ----------
    clean_scores : torch.Tensor or sequence of float
        (n,) finite scores of clean models, n >= 1; larger means more suspicious.
    fpr : float
        In [0, 1).

    Returns
    -------
    float

    Examples
    --------
    >>> threshold_at_fpr([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0], fpr=0.1)
    0.9
    >>> threshold_at_fpr([0.1, 0.2, 0.3], fpr=0.05)
    0.3
    """
    scores = torch.as_tensor(clean_scores, dtype=torch.float64)
    if scores.ndim != 1 or len(scores) == 0:
        raise ValueError(f"clean_scores must be one-dimensional and non-empty, got shape {tuple(scores.shape)}")
    if not bool(torch.isfinite(scores).all()):
        raise ValueError("clean_scores must be finite")
    _checks.check_real("fpr", fpr, minimum=0.0, maximum=1.0, strict_maximum=True)
    ranked = scores.sort(descending=True).values
    return float(ranked[math.floor(fpr * len(ranked))])


@dataclass(frozen=True)
class Criterion:
    """One criterion of a grade: a measured value against a bound.

    ``passed`` is ``value >= bound`` for a ``"min"`` rule and ``value <= bound`` for ``"max"``.
    """

    name: str
    value: float
    bound: float
    rule: str
    passed: bool


@dataclass(frozen=True, eq=False)
class LabGrade:
    """The grade of one submission.

    Attributes
    ----------
    criteria : tuple of Criterion
        Clean accuracy, attack success rate, then one per detector.
    passed : bool
        Every criterion holds.
    seconds : float
        Time taken to grade.
    """

    criteria: tuple[Criterion, ...]
    passed: bool
    seconds: float

    def __getitem__(self, name: str) -> Criterion:
        for criterion in self.criteria:
            if criterion.name == name:
                return criterion
        raise KeyError(name)

    def report(self) -> str:
        """A short plain-text report, one line per criterion and a verdict."""
        lines = []
        for c in self.criteria:
            sign = ">=" if c.rule == "min" else "<="
            lines.append(f"{'PASS' if c.passed else 'FAIL'}  {c.name:<22} {c.value:8.4f}  (needs {sign} {c.bound:.4f})")
        lines.append(f"{'passed' if self.passed else 'not passed'}: {sum(c.passed for c in self.criteria)} "
                     f"of {len(self.criteria)} criteria hold ({self.seconds:.1f} s)")
        return "\n".join(lines)


def _reference_stack(reference: Zoo | ModelStack) -> ModelStack:
    if isinstance(reference, Zoo):
        clean = torch.nonzero(reference.labels == 0).flatten()
        if len(clean) == 0:
            raise ValueError("reference holds no clean model")
        return reference.stack.select(clean)
    if isinstance(reference, ModelStack):
        return reference
    raise TypeError(f"reference must be a Zoo or a ModelStack of clean models, got {type(reference).__name__}")


class Grader:
    """Grades submissions against fixed detectors and thresholds.

    Parameters
    ----------
    detector : LitmusDetector
        A trained ULP detector for the zoo's architecture.
    reference : Zoo or ModelStack
        Clean models the detectors never trained on (of a zoo, its clean models are used): the
        thresholds are set at a false-positive rate ``fpr`` on them.
    test_set : ImageSet
        Clean MNIST test images for accuracy and attack success.
    nc_images : torch.Tensor
        (N, 1, 28, 28) the defender's clean images for Neural Cleanse.
    fpr : float
        False-positive rate of the thresholds (0.05).
    min_accuracy, min_attack_success : float
        The attack's bars (0.98 and 0.9).
    nc_options : dict, optional
        Options of :func:`~backdoorlab.neural_cleanse.neural_cleanse` (its defaults otherwise).

    Attributes
    ----------
    ulp_threshold, nc_threshold : float
        The thresholds; a score above one is flagged.
    reference_seconds : float
        Time taken to score the reference models.

    Examples
    --------
    >>> from backdoorlab.zoo import ModelStack
    >>> reference = ModelStack.initial(range(3))
    >>> data = ImageSet(torch.rand(20, 1, 28, 28), torch.arange(20) % 10, tuple("0123456789"))
    >>> grader = Grader(detector=LitmusDetector(num_patterns=2), reference=reference, test_set=data,
    ...                 nc_images=data.images, nc_options={"epochs": 1, "steps_per_epoch": 1, "batch_size": 4})
    >>> result = grader.grade(ZooCNN(), Trigger(torch.ones(1, 28, 28), torch.zeros(1, 28, 28)), target=0)
    >>> [c.name for c in result.criteria]
    ['clean accuracy', 'attack success rate', 'ULP score', 'Neural Cleanse index']
    """

    def __init__(
        self,
        *,
        detector: LitmusDetector,
        reference: Zoo | ModelStack,
        test_set: ImageSet,
        nc_images: torch.Tensor,
        fpr: float = 0.05,
        min_accuracy: float = 0.98,
        min_attack_success: float = 0.9,
        nc_options: dict | None = None,
    ) -> None:
        if not isinstance(detector, LitmusDetector):
            raise TypeError(f"detector must be a LitmusDetector, got {type(detector).__name__}")
        if not isinstance(test_set, ImageSet):
            raise TypeError(f"test_set must be an ImageSet, got {type(test_set).__name__}")
        _checks.check_images(nc_images, name="nc_images", nonempty=True)
        _checks.check_real("fpr", fpr, minimum=0.0, maximum=1.0, strict_maximum=True)
        _checks.check_real("min_accuracy", min_accuracy, minimum=0.0, maximum=1.0)
        _checks.check_real("min_attack_success", min_attack_success, minimum=0.0, maximum=1.0)
        if nc_options is not None and not isinstance(nc_options, dict):
            raise TypeError(f"nc_options must be a dict, got {type(nc_options).__name__}")
        stack = _reference_stack(reference)
        self.architecture = dict(stack.architecture)
        if tuple(nc_images.shape[1:]) != (self.architecture["in_channels"], 28, 28):
            raise ValueError(f"nc_images must have shape (N, {self.architecture['in_channels']}, 28, 28), "
                             f"got {tuple(nc_images.shape)}")
        self.detector = copy.deepcopy(detector).eval()
        self.test_set = test_set
        self.nc_images = nc_images
        self.fpr = float(fpr)
        self.min_accuracy = float(min_accuracy)
        self.min_attack_success = float(min_attack_success)
        self.nc_options = dict(nc_options or {})
        start = time.perf_counter()
        self.ulp_threshold = threshold_at_fpr(self.detector.score(stack), fpr=fpr)
        self.nc_threshold = threshold_at_fpr(self._nc_index(stack), fpr=fpr)
        self.reference_seconds = time.perf_counter() - start

    def _nc_index(self, stack: ModelStack) -> torch.Tensor:
        index = neural_cleanse(stack, self.nc_images, **self.nc_options).anomaly_index
        # an infinite index (MAD 0 and an outlier) ranks above every finite one
        return torch.nan_to_num(index.double(), posinf=torch.finfo(torch.float64).max)

    def _checked_model(self, model: object) -> ZooCNN:
        """A fresh ZooCNN carrying the submission's weights: no custom forward, hooks or buffers."""
        if type(model) is not ZooCNN:
            raise TypeError(f"model must be a backdoorlab.zoo.ZooCNN (not a subclass), got {type(model).__name__}")
        if dict(model.architecture) != self.architecture:
            raise ValueError(f"model has architecture {model.architecture}, the lab's is {self.architecture}")
        fresh = ZooCNN(channels=(self.architecture["c1"], self.architecture["c2"]),
                       in_channels=self.architecture["in_channels"], num_classes=self.architecture["num_classes"])
        state = model.state_dict()
        expected = fresh.state_dict()
        if set(state) != set(expected):
            raise ValueError(f"model's parameters {sorted(state)} differ from a ZooCNN's {sorted(expected)}")
        for key, value in state.items():
            if value.shape != expected[key].shape:
                raise ValueError(f"model's {key} has shape {tuple(value.shape)}, expected {tuple(expected[key].shape)}")
            if not bool(torch.isfinite(value).all()):
                raise ValueError(f"model's {key} is not finite")
            if key.startswith("normalize.") and not torch.equal(value, expected[key]):
                raise ValueError(f"model's input normalisation ({key}) must stay the architecture's")
        fresh.load_state_dict({key: value.detach().clone().float() for key, value in state.items()})
        return fresh.eval()

    def grade(self, model: ZooCNN, trigger: Trigger, *, target: int) -> LabGrade:
        """Grade one submission (see the module's description).

        Parameters
        ----------
        model : ZooCNN
            The backdoored model; its weights are copied into a fresh ZooCNN.
        trigger : Trigger
            Its trigger, for images of shape (1, 28, 28).
        target : int
            The class the trigger sends images to.

        Returns
        -------
        LabGrade
        """
        start = time.perf_counter()
        checked = self._checked_model(model)
        if not isinstance(trigger, Trigger):
            raise TypeError(f"trigger must be a Trigger, got {type(trigger).__name__}")
        if trigger.image_shape != self.test_set.image_shape:
            raise ValueError(f"trigger is for images of shape {trigger.image_shape}, "
                             f"the lab's are {self.test_set.image_shape}")
        _checks.check_int("target", target, minimum=0)
        if target >= self.test_set.num_classes:
            raise ValueError(f"target must be a class in [0, {self.test_set.num_classes - 1}], got {target}")
        with torch.no_grad():
            clean_accuracy = accuracy(checked, self.test_set)
            success = attack_success_rate(checked, self.test_set, trigger, target=target)
            stack = ModelStack.from_models([checked])
            ulp_score = float(self.detector.score(stack)[0])
        nc_index = float(self._nc_index(stack)[0])
        criteria = (
            Criterion("clean accuracy", clean_accuracy, self.min_accuracy, "min", clean_accuracy >= self.min_accuracy),
            Criterion("attack success rate", success, self.min_attack_success, "min",
                      success >= self.min_attack_success),
            Criterion("ULP score", ulp_score, self.ulp_threshold, "max", ulp_score <= self.ulp_threshold),
            Criterion("Neural Cleanse index", nc_index, self.nc_threshold, "max", nc_index <= self.nc_threshold),
        )
        return LabGrade(criteria, all(c.passed for c in criteria), time.perf_counter() - start)


_DEFAULT_GRADER: list[Grader] = []


def grade(model: ZooCNN, trigger: Trigger, target: int, *, grader: Grader | None = None) -> LabGrade:
    """Grade a submission with ``grader``, by default the book's (built once per process).

    The default grader is :func:`backdoorlab.recipes.mnist_lab_grader`: the ULP chapter's zoos
    (trained on first use and cached), a ULP detector with M = 10 trained on the training zoo,
    Neural Cleanse with its defaults, thresholds at 5 % false positives on the clean models of
    the test zoo.

    Examples
    --------
    >>> from backdoorlab import recipes
    >>> result = grade(ZooCNN(), recipes.mnist_patch_trigger(), 0)  # doctest: +SKIP
    >>> result["clean accuracy"].passed  # an untrained model  # doctest: +SKIP
    False
    """
    if grader is None:
        if not _DEFAULT_GRADER:
            from .recipes import mnist_lab_grader
            _DEFAULT_GRADER.append(mnist_lab_grader())
        grader = _DEFAULT_GRADER[0]
    elif not isinstance(grader, Grader):
        raise TypeError(f"grader must be a Grader, got {type(grader).__name__}")
    return grader.grade(model, trigger, target=target)
