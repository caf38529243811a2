"""Contract tests over the whole public API of backdoorlab.

Every public function (and class with a validating constructor) is called with bad types,
shapes, ranges, NaN/inf, bad seeds and broken models; each call must raise ``ValueError`` or
``TypeError`` whose message names the offending argument, within a timeout (nothing hangs).
Valid calls must leave their inputs unchanged. A coverage test fails when a new public
function is added without contract cases, so the table grows with the package.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import backdoorlab as bl
from backdoorlab import attribution, cache, copula, data, dcae, models, plot, recipes, stats, train, triggers, uap
from backdoorlab import detectors, lab, mntd, neural_cleanse, poison_detection, uap_scan, ulp, zoo
from backdoorlab.data import ImageSet

TIMEOUT_SECONDS = 20
DIGITS = tuple("0123456789")


@contextlib.contextmanager
def time_limit(seconds: float):
    """Fail (TimeoutError) if the block runs longer than ``seconds`` (SIGALRM; main thread)."""
    def handler(signum, frame):
        raise TimeoutError(f"call did not return within {seconds} s")

    previous = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# --------------------------------------------------------------------------- tiny inputs


def images(n: int = 4, shape: tuple[int, int, int] = (1, 28, 28), seed: int = 0) -> torch.Tensor:
    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(seed))


def dataset(n: int = 40, seed: int = 0) -> ImageSet:
    return ImageSet(images(n, seed=seed), torch.arange(n) % 10, DIGITS)


class Linear(nn.Module):
    """A tiny valid classifier: (N, 1, 28, 28) -> (N, 10)."""

    def __init__(self) -> None:
        super().__init__()
        with train.seeded(0):
            self.layer = nn.Linear(28 * 28, 10)

    def forward(self, x):
        return self.layer(x.flatten(1))


class Broken(Linear):
    """A classifier with a defect: NaN logits, extra axis, one class, or flat output."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def forward(self, x):
        logits = super().forward(x)
        if self.kind == "nan":
            return logits * float("nan")
        if self.kind == "inf":
            return logits + float("inf")
        if self.kind == "extra_axis":
            return logits.unsqueeze(-1)
        if self.kind == "one_class":
            return logits[:, :1]
        return logits[:, 0]  # "flat": (N,)


BROKEN = ("nan", "inf", "extra_axis", "one_class", "flat")


def trigger() -> triggers.Trigger:
    return triggers.patch_trigger(image_shape=(1, 28, 28), size=3, position=(25, 25))


def tiny_zoo(labels=(0, 1, 0, 1)) -> zoo.Zoo:
    stack = zoo.ModelStack.initial(list(range(len(labels))))
    k = len(labels)
    return zoo.Zoo(stack, [zoo.ModelConfig(i) for i in range(k)], torch.tensor(labels), torch.ones(k), torch.ones(k))


def correlation() -> np.ndarray:
    return np.array([[1.0, 0.5, 0.2], [0.5, 1.0, 0.3], [0.2, 0.3, 1.0]])


def latents(n: int = 40) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n, 3))


def vine():
    return copula.gaussian_dvine(correlation())


def autoencoder() -> dcae.Autoencoder:
    with train.seeded(0):
        return dcae.NotebookAutoencoder(hidden=8, latent_dim=2)


def spec() -> zoo.PatchSpec:
    return zoo.PatchSpec(size=2, row=0, col=0, bits=(1, 0, 1, 1))


# --------------------------------------------------------------------------- bad calls


@dataclass(frozen=True)
class Bad:
    """A call that must raise ValueError/TypeError whose message contains ``names``."""

    target: str  # "module.function" covered by this case
    label: str
    call: Callable[[], Any]
    names: tuple[str, ...]


CASES: list[Bad] = []


def bad(target: str, label: str, names: str | tuple[str, ...], call: Callable[[], Any]) -> None:
    CASES.append(Bad(target, label, call, (names,) if isinstance(names, str) else names))


NAN, INF = float("nan"), float("inf")
BAD_SEEDS = (1.5, "0", -1, None, True, 2**64, NAN)
BAD_RATES = (NAN, -0.1, 1.5, INF, "0.1", None)

# ---- data
bad("data.check_images", "int images", "images", lambda: data.check_images(torch.zeros(1, 1, 2, 2, dtype=torch.long)))
bad("data.check_images", "3-D", "images", lambda: data.check_images(torch.zeros(1, 2, 2)))
bad("data.check_images", "NaN", "images", lambda: data.check_images(torch.full((1, 1, 2, 2), NAN)))
bad("data.check_images", "list", "images", lambda: data.check_images([[0.0]]))
bad("data.ImageSet", "labels float", "labels", lambda: ImageSet(images(2), torch.zeros(2), DIGITS))
bad("data.ImageSet", "labels short", "labels", lambda: ImageSet(images(2), torch.zeros(1, dtype=torch.long), DIGITS))
bad("data.ImageSet", "label out of range", "labels", lambda: ImageSet(images(2), torch.tensor([0, 10]), DIGITS))
bad("data.ImageSet", "classes str", "classes", lambda: ImageSet(images(2), torch.tensor([0, 1]), "ab"))
bad("data.ImageSet", "images >1", "images", lambda: ImageSet(images(2) + 1, torch.tensor([0, 1]), DIGITS))
for seed in BAD_SEEDS:
    bad("data.ImageSet.sample", f"seed {seed!r}", "seed", lambda seed=seed: dataset().sample(3, seed=seed))
bad("data.ImageSet.sample", "n too big", "n", lambda: dataset().sample(41, seed=0))
bad("data.ImageSet.sample", "n float", "n", lambda: dataset().sample(2.5, seed=0))
bad("data.ImageSet.subset", "float indices", "indices", lambda: dataset().subset([0.5]))
bad("data.ImageSet.subset", "index out of range", "indices", lambda: dataset().subset([40]))
bad("data.ImageSet.where", "int mask", "mask", lambda: dataset().where(torch.ones(40, dtype=torch.long)))
bad("data.ImageSet.batches", "batch_size 0", "batch_size", lambda: list(dataset().batches(0)))
bad("data.ImageSet.batches", "batch_size float", "batch_size", lambda: list(dataset().batches(2.0)))

# ---- models
bad("models.Normalize", "std 0", "std", lambda: models.Normalize([0.5], [0.0]))
bad("models.Normalize", "length", "mean", lambda: models.Normalize([0.5, 0.5], [1.0]))
bad("models.MnistCNN", "num_classes 0", "num_classes", lambda: models.MnistCNN(num_classes=0))
bad("models.MnistCNN", "channels float", "channels", lambda: models.MnistCNN(channels=(1.5, 2)))
bad("models.MnistCNN", "hidden -1", "hidden", lambda: models.MnistCNN(hidden=-1))
bad("models.MnistMLP", "hidden 0", "hidden", lambda: models.MnistMLP(hidden=(0,)))
bad("models.MnistMLP", "num_classes float", "num_classes", lambda: models.MnistMLP(num_classes=2.5))
bad("models.CifarCNN", "width 0", "width", lambda: models.CifarCNN(width=0))
bad("models.CifarCNN", "hidden 0", "hidden", lambda: models.CifarCNN(hidden=0))

# ---- train
for seed in BAD_SEEDS:
    bad("train.seeded", f"seed {seed!r}", "seed", lambda seed=seed: train.seeded(seed).__enter__())
    bad("train.fit", f"seed {seed!r}", "seed", lambda seed=seed: train.fit(Linear(), dataset(), epochs=1, seed=seed))
bad("train.fit", "epochs 0", "epochs", lambda: train.fit(Linear(), dataset(), epochs=0, seed=0))
bad("train.fit", "epochs float", "epochs", lambda: train.fit(Linear(), dataset(), epochs=1.5, seed=0))
bad("train.fit", "max_lr NaN", "max_lr", lambda: train.fit(Linear(), dataset(), epochs=1, seed=0, batch_size=8,
                                                           max_lr=NAN))
bad("train.fit", "max_lr inf", "max_lr", lambda: train.fit(Linear(), dataset(), epochs=1, seed=0, batch_size=8,
                                                           max_lr=INF))
bad("train.fit", "weight_decay -1", "weight_decay", lambda: train.fit(Linear(), dataset(), epochs=1, seed=0,
                                                                      batch_size=8, weight_decay=-1.0))
bad("train.fit", "batch_size big", "batch_size", lambda: train.fit(Linear(), dataset(), epochs=1, seed=0, batch_size=41))
bad("train.fit", "data tensor", "data", lambda: train.fit(Linear(), images(), epochs=1, seed=0))
bad("train.fit", "model not a module", "model", lambda: train.fit(lambda x: x, dataset(), epochs=1, seed=0))
bad("train.fit", "huge max_lr diverges", "loss", lambda: train.fit(Broken("nan"), dataset(), epochs=1, seed=0,
                                                                   batch_size=8, loss_fn=lambda z, y: z.sum()))
for kind in BROKEN:
    bad("train.fit", f"broken model {kind}", "model", lambda kind=kind: train.fit(Broken(kind), dataset(), epochs=1,
                                                                                  seed=0, batch_size=8))
    bad("train.predict", f"broken model {kind}", "model", lambda kind=kind: train.predict(Broken(kind), images()))
    bad("train.accuracy", f"broken model {kind}", "model", lambda kind=kind: train.accuracy(Broken(kind), dataset()))
bad("train.predict", "batch_size 0", "batch_size", lambda: train.predict(Linear(), images(), batch_size=0))
bad("train.predict", "NaN images", "images", lambda: train.predict(Linear(), torch.full((1, 1, 28, 28), NAN)))
bad("train.predict", "model None", "model", lambda: train.predict(None, images()))
bad("train.accuracy", "data tensor", "data", lambda: train.accuracy(Linear(), images()))

# ---- triggers
bad("triggers.Trigger", "mask int", "mask", lambda: triggers.Trigger(torch.ones(1, 4, 4, dtype=torch.long),
                                                                    torch.ones(1, 4, 4)))
bad("triggers.Trigger", "pattern NaN", "pattern", lambda: triggers.Trigger(torch.ones(1, 4, 4),
                                                                          torch.full((1, 4, 4), NAN)))
bad("triggers.Trigger", "shapes", "mask", lambda: triggers.Trigger(torch.ones(1, 3, 3), torch.ones(1, 4, 4)))
bad("triggers.Trigger.apply", "wrong image shape", "images", lambda: trigger().apply(images(2, (1, 27, 27))))
bad("triggers.Trigger.apply", "NaN images", "images", lambda: trigger().apply(torch.full((1, 1, 28, 28), NAN)))
bad("triggers.patch_trigger", "size 0", "size", lambda: triggers.patch_trigger(image_shape=(1, 8, 8), size=0,
                                                                              position=(0, 0)))
bad("triggers.patch_trigger", "size float", "size", lambda: triggers.patch_trigger(image_shape=(1, 8, 8), size=2.5,
                                                                                  position=(0, 0)))
bad("triggers.patch_trigger", "outside", "position", lambda: triggers.patch_trigger(image_shape=(1, 8, 8), size=2,
                                                                                   position=(7, 7)))
bad("triggers.patch_trigger", "image_shape 2-D", "image_shape", lambda: triggers.patch_trigger(image_shape=(8, 8),
                                                                                              size=2, position=(0, 0)))
bad("triggers.patch_trigger", "pattern name", "pattern", lambda: triggers.patch_trigger(image_shape=(1, 8, 8), size=2,
                                                                                       position=(0, 0), pattern="red"))
bad("triggers.blended_trigger", "alpha NaN", "alpha", lambda: triggers.blended_trigger(torch.ones(1, 4, 4), alpha=NAN))
bad("triggers.blended_trigger", "alpha 0", "alpha", lambda: triggers.blended_trigger(torch.ones(1, 4, 4), alpha=0.0))
bad("triggers.blended_trigger", "pattern list", "pattern", lambda: triggers.blended_trigger([[1.0]], alpha=0.5))
for rate in BAD_RATES:
    bad("triggers.poison", f"rate {rate!r}", "rate", lambda rate=rate: triggers.poison(dataset(), trigger(), rate=rate,
                                                                                       target=0, seed=0))
for seed in BAD_SEEDS:
    bad("triggers.poison", f"seed {seed!r}", "seed", lambda seed=seed: triggers.poison(dataset(), trigger(), rate=0.1,
                                                                                       target=0, seed=seed))
bad("triggers.poison", "target 10", "target", lambda: triggers.poison(dataset(), trigger(), rate=0.1, target=10, seed=0))
bad("triggers.poison", "target bool", "target", lambda: triggers.poison(dataset(), trigger(), rate=0.1, target=True,
                                                                        seed=0))
bad("triggers.poison", "source = target", "source", lambda: triggers.poison(dataset(), trigger(), rate=0.1, target=1,
                                                                            source=1, seed=0))
for kind in BROKEN:
    bad("triggers.attack_success_rate", f"broken model {kind}", "model",
        lambda kind=kind: triggers.attack_success_rate(Broken(kind), dataset(), trigger(), target=0))
bad("triggers.attack_success_rate", "trigger None", "trigger",
    lambda: triggers.attack_success_rate(Linear(), dataset(), None, target=0))
bad("triggers.attack_success_rate", "batch_size 0", "batch_size",
    lambda: triggers.attack_success_rate(Linear(), dataset(), trigger(), target=0, batch_size=0))

# ---- cache
bad("cache.cache_key", "empty name", "name", lambda: cache.cache_key("", {}, sources=[]))
bad("cache.cache_key", "NaN config", "config", lambda: cache.cache_key("a", {"x": NAN}, sources=[]))
bad("cache.cache_key", "int key", "config", lambda: cache.cache_key("a", {1: 2}, sources=[]))
bad("cache.cache_key", "config list", "config", lambda: cache.cache_key("a", [1], sources=[]))
bad("cache.cache_root", "int root", "root", lambda: cache.cache_root(3))
bad("cache.ArtifactCache", "int root", "root", lambda: cache.ArtifactCache(3))
bad("data.data_root", "int root", "root", lambda: data.data_root(3))
bad("data.mnist", "int root", "root", lambda: data.mnist(root=3, download=False))
bad("cache.tensor_digest", "not a tensor", "tensors", lambda: cache.tensor_digest([1.0]))
for name in ("../x", "/etc/passwd", "a/b", "..", "", "a\x00b", 3):
    bad("cache.ArtifactCache.get_or_build", f"name {name!r}", "name",
        lambda name=name: cache.ArtifactCache("/nonexistent-root").get_or_build(
            name, {}, lambda: cache.Artifact({"w": torch.zeros(1)})))
    bad("cache.ArtifactCache.path", f"name {name!r}", "name",
        lambda name=name: cache.ArtifactCache("/nonexistent-root").path(name, "a" * 64))
bad("cache.ArtifactCache.path", "key with slash", "key", lambda: cache.ArtifactCache("/r").path("a", "../" * 10))
bad("cache.ArtifactCache.get_or_build", "build not callable", "build",
    lambda: cache.ArtifactCache("/nonexistent-root").get_or_build("a", {}, 3))

# ---- uap
for kind in BROKEN:
    bad("uap.fooling_rate", f"broken model {kind}", "model",
        lambda kind=kind: uap.fooling_rate(Broken(kind), images(), torch.zeros(1, 28, 28)))
    bad("uap.sgd_universal_perturbation", f"broken model {kind}", "model",
        lambda kind=kind: uap.sgd_universal_perturbation(Broken(kind), images(), xi=0.1, p=math.inf, epochs=1))
    bad("uap.universal_perturbation", f"broken model {kind}", "model",
        lambda kind=kind: uap.universal_perturbation(Broken(kind), images(), xi=0.1, p=math.inf, max_passes=1))
    bad("uap.deepfool", f"broken model {kind}", "model", lambda kind=kind: uap.deepfool(Broken(kind), images(2)))
bad("uap.fooling_rate", "v NaN", "v", lambda: uap.fooling_rate(Linear(), images(), torch.full((1, 28, 28), NAN)))
bad("uap.fooling_rate", "v shape", "v", lambda: uap.fooling_rate(Linear(), images(), torch.zeros(28, 28)))
bad("uap.fooling_rate", "clean_labels length", "clean_labels",
    lambda: uap.fooling_rate(Linear(), images(), torch.zeros(1, 28, 28), clean_labels=torch.zeros(3, dtype=torch.long)))
bad("uap.fooling_rate", "clean_labels float", "clean_labels",
    lambda: uap.fooling_rate(Linear(), images(), torch.zeros(1, 28, 28), clean_labels=torch.zeros(4)))
bad("uap.targeted_success_rate", "clean_labels length", "clean_labels",
    lambda: uap.targeted_success_rate(Linear(), images(), torch.zeros(1, 28, 28), target=0,
                                      clean_labels=torch.zeros(3, dtype=torch.long)))
bad("uap.targeted_success_rate", "clean_labels float", "clean_labels",
    lambda: uap.targeted_success_rate(Linear(), images(), torch.zeros(1, 28, 28), target=0, clean_labels=torch.zeros(4)))
bad("uap.fooling_rate", "clean_labels 2-D", "clean_labels",
    lambda: uap.fooling_rate(Linear(), images(), torch.zeros(1, 28, 28), clean_labels=torch.zeros(4, 1, dtype=torch.long)))
bad("uap.deepfool", "overshoot NaN", "overshoot", lambda: uap.deepfool(Linear(), images(2), overshoot=NAN))
bad("uap.deepfool", "max_iter 0", "max_iter", lambda: uap.deepfool(Linear(), images(2), max_iter=0))
bad("uap.project_lp", "xi NaN", "xi", lambda: uap.project_lp(torch.zeros(1, 2, 2), NAN, 2))
bad("uap.project_lp", "p 1", "p", lambda: uap.project_lp(torch.zeros(1, 2, 2), 1.0, 1))
bad("uap.project_lp", "v list", "v", lambda: uap.project_lp([0.0], 1.0, 2))
for seed in BAD_SEEDS:
    bad("uap.random_perturbation", f"seed {seed!r}", "seed",
        lambda seed=seed: uap.random_perturbation((1, 4, 4), xi=0.1, p=2, seed=seed))
    bad("uap.universal_perturbation", f"seed {seed!r}", "seed",
        lambda seed=seed: uap.universal_perturbation(Linear(), images(), xi=0.1, p=2, seed=seed))
    bad("uap.sgd_universal_perturbation", f"seed {seed!r}", "seed",
        lambda seed=seed: uap.sgd_universal_perturbation(Linear(), images(), xi=0.1, p=2, seed=seed))
bad("uap.random_perturbation", "dtype int", "dtype",
    lambda: uap.random_perturbation((1, 4, 4), xi=0.1, p=2, seed=0, dtype=torch.int64))
bad("uap.random_perturbation", "dtype str", "dtype",
    lambda: uap.random_perturbation((1, 4, 4), xi=0.1, p=math.inf, seed=0, dtype="float32"))
bad("uap.random_perturbation", "xi inf", "xi", lambda: uap.random_perturbation((1, 4, 4), xi=INF, p=2, seed=0))
bad("uap.random_perturbation", "shape", "shape", lambda: uap.random_perturbation((4, 4), xi=0.1, p=2, seed=0))
bad("uap.checkerboard", "dtype int", "dtype", lambda: uap.checkerboard((1, 4, 4), amplitude=0.1, dtype=torch.int32))
bad("uap.checkerboard", "amplitude NaN", "amplitude", lambda: uap.checkerboard((1, 4, 4), amplitude=NAN))
bad("uap.checkerboard", "square 0", "square", lambda: uap.checkerboard((1, 4, 4), amplitude=0.1, square=0))
bad("uap.universal_perturbation", "delta 1", "delta",
    lambda: uap.universal_perturbation(Linear(), images(), xi=0.1, p=2, delta=1.0))
bad("uap.universal_perturbation", "xi NaN", "xi", lambda: uap.universal_perturbation(Linear(), images(), xi=NAN, p=2))
bad("uap.sgd_universal_perturbation", "lr NaN", "lr",
    lambda: uap.sgd_universal_perturbation(Linear(), images(), xi=0.1, p=2, lr=NAN))
bad("uap.sgd_universal_perturbation", "epochs 0", "epochs",
    lambda: uap.sgd_universal_perturbation(Linear(), images(), xi=0.1, p=2, epochs=0))
# targeted variant and span control
for kind in BROKEN:
    bad("uap.targeted_success_rate", f"broken model {kind}", "model",
        lambda kind=kind: uap.targeted_success_rate(Broken(kind), images(), torch.zeros(1, 28, 28), target=0))
    bad("uap.targeted_universal_perturbation", f"broken model {kind}", "model",
        lambda kind=kind: uap.targeted_universal_perturbation(Broken(kind), images(), target=0, xi=0.1, p=math.inf,
                                                              epochs=1))
bad("uap.targeted_success_rate", "model None", "model",
    lambda: uap.targeted_success_rate(None, images(), torch.zeros(1, 28, 28), target=0))
bad("uap.targeted_success_rate", "v NaN", "v",
    lambda: uap.targeted_success_rate(Linear(), images(), torch.full((1, 28, 28), NAN), target=0))
bad("uap.targeted_success_rate", "v shape", "v",
    lambda: uap.targeted_success_rate(Linear(), images(), torch.zeros(28, 28), target=0))
bad("uap.targeted_success_rate", "NaN images", "images",
    lambda: uap.targeted_success_rate(Linear(), torch.full((1, 1, 28, 28), NAN), torch.zeros(1, 28, 28), target=0))
bad("uap.targeted_success_rate", "target 10", "target",
    lambda: uap.targeted_success_rate(Linear(), images(), torch.zeros(1, 28, 28), target=10))
bad("uap.targeted_success_rate", "target float", "target",
    lambda: uap.targeted_success_rate(Linear(), images(), torch.zeros(1, 28, 28), target=0.5))
bad("uap.targeted_success_rate", "target bool", "target",
    lambda: uap.targeted_success_rate(Linear(), images(), torch.zeros(1, 28, 28), target=True))
bad("uap.targeted_success_rate", "batch_size 0", "batch_size",
    lambda: uap.targeted_success_rate(Linear(), images(), torch.zeros(1, 28, 28), target=0, batch_size=0))
for seed in BAD_SEEDS:
    bad("uap.targeted_universal_perturbation", f"seed {seed!r}", "seed",
        lambda seed=seed: uap.targeted_universal_perturbation(Linear(), images(), target=0, xi=0.1, p=2, epochs=1,
                                                              seed=seed))
    bad("uap.span_perturbation", f"seed {seed!r}", "seed",
        lambda seed=seed: uap.span_perturbation(torch.eye(4)[:2].reshape(2, 1, 2, 2), xi=1.0, seed=seed))
bad("uap.targeted_universal_perturbation", "target 10", "target",
    lambda: uap.targeted_universal_perturbation(Linear(), images(), target=10, xi=0.1, p=2, epochs=1))
bad("uap.targeted_universal_perturbation", "target float", "target",
    lambda: uap.targeted_universal_perturbation(Linear(), images(), target=1.0, xi=0.1, p=2, epochs=1))
bad("uap.targeted_universal_perturbation", "xi NaN", "xi",
    lambda: uap.targeted_universal_perturbation(Linear(), images(), target=0, xi=NAN, p=2, epochs=1))
bad("uap.targeted_universal_perturbation", "xi 0", "xi",
    lambda: uap.targeted_universal_perturbation(Linear(), images(), target=0, xi=0.0, p=2, epochs=1))
bad("uap.targeted_universal_perturbation", "p 1", "p",
    lambda: uap.targeted_universal_perturbation(Linear(), images(), target=0, xi=0.1, p=1, epochs=1))
bad("uap.targeted_universal_perturbation", "epochs 0", "epochs",
    lambda: uap.targeted_universal_perturbation(Linear(), images(), target=0, xi=0.1, p=2, epochs=0))
bad("uap.targeted_universal_perturbation", "lr inf", "lr",
    lambda: uap.targeted_universal_perturbation(Linear(), images(), target=0, xi=0.1, p=2, epochs=1, lr=INF))
bad("uap.targeted_universal_perturbation", "batch_size float", "batch_size",
    lambda: uap.targeted_universal_perturbation(Linear(), images(), target=0, xi=0.1, p=2, epochs=1, batch_size=2.0))
bad("uap.targeted_universal_perturbation", "eval_batch_size 0", "eval_batch_size",
    lambda: uap.targeted_universal_perturbation(Linear(), images(), target=0, xi=0.1, p=2, epochs=1,
                                                eval_batch_size=0))
bad("uap.targeted_universal_perturbation", "model None", "model",
    lambda: uap.targeted_universal_perturbation(None, images(), target=0, xi=0.1, p=2, epochs=1))
bad("uap.targeted_universal_perturbation", "images 3-D", "images",
    lambda: uap.targeted_universal_perturbation(Linear(), images()[0], target=0, xi=0.1, p=2, epochs=1))
bad("uap.span_perturbation", "basis list", "basis", lambda: uap.span_perturbation([[0.0]], xi=1.0, seed=0))
bad("uap.span_perturbation", "basis int", "basis",
    lambda: uap.span_perturbation(torch.ones(1, 1, 2, 2, dtype=torch.long), xi=1.0, seed=0))
bad("uap.span_perturbation", "basis 3-D", "basis", lambda: uap.span_perturbation(torch.ones(1, 2, 2), xi=1.0, seed=0))
bad("uap.span_perturbation", "basis NaN", "basis",
    lambda: uap.span_perturbation(torch.full((1, 1, 2, 2), NAN), xi=1.0, seed=0))
bad("uap.span_perturbation", "basis zero", "basis",
    lambda: uap.span_perturbation(torch.zeros(2, 1, 2, 2), xi=1.0, seed=0))
bad("uap.span_perturbation", "xi NaN", "xi", lambda: uap.span_perturbation(torch.ones(1, 1, 2, 2), xi=NAN, seed=0))
bad("uap.span_perturbation", "xi -1", "xi", lambda: uap.span_perturbation(torch.ones(1, 1, 2, 2), xi=-1.0, seed=0))

# ---- attribution
for kind in ("nan_images", "inf_images"):
    value = NAN if kind == "nan_images" else INF
    bad("attribution.integrated_gradients", kind, "images",
        lambda value=value: attribution.integrated_gradients(Linear(), torch.full((1, 1, 28, 28), value), target=0))
    bad("attribution.gradients", kind, "images",
        lambda value=value: attribution.gradients(Linear(), torch.full((1, 1, 28, 28), value), target=0))
    bad("attribution.gradient_times_input", kind, "images",
        lambda value=value: attribution.gradient_times_input(Linear(), torch.full((1, 1, 28, 28), value), target=0))
    bad("attribution.integrated_gradients", f"{kind} baseline", "baseline",
        lambda value=value: attribution.integrated_gradients(Linear(), images(1), target=0,
                                                             baseline=torch.full((1, 1, 28, 28), value)))
for kind in ("extra_axis", "flat"):  # one output is a valid scalar score for attribution
    bad("attribution.integrated_gradients", f"broken model {kind}", ("model", "output"),
        lambda kind=kind: attribution.integrated_gradients(Broken(kind), images(1), target=0))
bad("attribution.integrated_gradients", "num_steps 0", "num_steps",
    lambda: attribution.integrated_gradients(Linear(), images(1), target=0, num_steps=0))
bad("attribution.integrated_gradients", "target float", "target",
    lambda: attribution.integrated_gradients(Linear(), images(1), target=0.5))
bad("attribution.integrated_gradients", "method", "method",
    lambda: attribution.integrated_gradients(Linear(), images(1), target=0, method="simpson"))
bad("attribution.gradients", "batch_size 0", "batch_size",
    lambda: attribution.gradients(Linear(), images(1), target=0, batch_size=0))
bad("attribution.quadrature_rule", "num_steps float", "num_steps", lambda: attribution.quadrature_rule("riemann_left", 2.5))
bad("attribution.quadrature_rule", "method", "method", lambda: attribution.quadrature_rule("nope", 4))
bad("attribution.black_baseline", "list", "images", lambda: attribution.black_baseline([0.0]))
bad("attribution.blurred_baseline", "sigma NaN", "sigma", lambda: attribution.blurred_baseline(images(1), sigma=NAN))
bad("attribution.blurred_baseline", "sigma -1", "sigma", lambda: attribution.blurred_baseline(images(1), sigma=-1.0))
for seed in (1.5, "0", True):
    bad("attribution.uniform_noise_baseline", f"seed {seed!r}", "seed",
        lambda seed=seed: attribution.uniform_noise_baseline(images(1), seed=seed))
bad("attribution.uniform_noise_baseline", "seed -1", "seed", lambda: attribution.uniform_noise_baseline(images(1), seed=-1))
bad("attribution.uniform_noise_baseline", "low > high", ("low", "high"),
    lambda: attribution.uniform_noise_baseline(images(1), low=0.8, high=0.2))
bad("attribution.positive_mass_share", "mask shape", "mask",
    lambda: attribution.positive_mass_share(torch.rand(2, 1, 4, 4), torch.ones(3, 3)))
bad("attribution.positive_mass_share", "NaN attributions", "attributions",
    lambda: attribution.positive_mass_share(torch.full((2, 1, 4, 4), NAN), torch.ones(1, 4, 4)))
bad("attribution.affine_split", "not a module", "model", lambda: attribution.affine_split("model"))
# axioms and faithfulness
for kind in ("extra_axis", "flat"):  # as for integrated_gradients, one output is a valid scalar score
    bad("attribution.one_pixel_sensitivity", f"broken model {kind}", ("model", "output"),
        lambda kind=kind: attribution.one_pixel_sensitivity(Broken(kind), images(1), target=0,
                                                            pixels=torch.tensor([0]), num_steps=4))
    bad("attribution.perturbation_curve", f"broken model {kind}", ("model", "output"),
        lambda kind=kind: attribution.perturbation_curve(Broken(kind), images(2), torch.rand(2, 1, 28, 28), target=0,
                                                         step=392))
bad("attribution.one_pixel_sensitivity", "model None", "model",
    lambda: attribution.one_pixel_sensitivity(None, images(1), target=0, pixels=torch.tensor([0]), num_steps=4))
bad("attribution.one_pixel_sensitivity", "output_fn not callable", "output_fn",
    lambda: attribution.one_pixel_sensitivity(Linear(), images(1), target=0, pixels=torch.tensor([0]), num_steps=4,
                                              output_fn=3))
bad("attribution.one_pixel_sensitivity", "two images", "image",
    lambda: attribution.one_pixel_sensitivity(Linear(), images(2), target=0, pixels=torch.tensor([0]), num_steps=4))
bad("attribution.one_pixel_sensitivity", "NaN image", "image",
    lambda: attribution.one_pixel_sensitivity(Linear(), torch.full((1, 1, 28, 28), NAN), target=0,
                                              pixels=torch.tensor([0]), num_steps=4))
bad("attribution.one_pixel_sensitivity", "pixels float", "pixels",
    lambda: attribution.one_pixel_sensitivity(Linear(), images(1), target=0, pixels=torch.tensor([0.5]), num_steps=4))
bad("attribution.one_pixel_sensitivity", "pixels list", "pixels",
    lambda: attribution.one_pixel_sensitivity(Linear(), images(1), target=0, pixels=[0], num_steps=4))
bad("attribution.one_pixel_sensitivity", "pixels 784", "pixels",
    lambda: attribution.one_pixel_sensitivity(Linear(), images(1), target=0, pixels=torch.tensor([784]), num_steps=4))
bad("attribution.one_pixel_sensitivity", "pixels repeated", "pixels",
    lambda: attribution.one_pixel_sensitivity(Linear(), images(1), target=0, pixels=torch.tensor([3, 3]), num_steps=4))
bad("attribution.one_pixel_sensitivity", "pixels bool", "pixels",
    lambda: attribution.one_pixel_sensitivity(Linear(), images(1), target=0, pixels=torch.tensor([True, False]),
                                              num_steps=4))
bad("attribution.one_pixel_sensitivity", "pixels 2-D", "pixels",
    lambda: attribution.one_pixel_sensitivity(Linear(), images(1), target=0, pixels=torch.tensor([[0]]), num_steps=4))
bad("attribution.one_pixel_sensitivity", "pixels empty", "pixels",
    lambda: attribution.one_pixel_sensitivity(Linear(), images(1), target=0, pixels=torch.zeros(0, dtype=torch.long),
                                              num_steps=4))
for value in (NAN, INF, -1.0, "0"):
    bad("attribution.one_pixel_sensitivity", f"tolerance {value!r}", "tolerance",
        lambda value=value: attribution.one_pixel_sensitivity(Linear(), images(1), target=0, pixels=torch.tensor([0]),
                                                              num_steps=4, tolerance=value))
for value in (NAN, INF, "0", None):
    bad("attribution.one_pixel_sensitivity", f"value {value!r}", "value",
        lambda value=value: attribution.one_pixel_sensitivity(Linear(), images(1), target=0, pixels=torch.tensor([0]),
                                                              num_steps=4, value=value))
bad("attribution.one_pixel_sensitivity", "target 10", "target",
    lambda: attribution.one_pixel_sensitivity(Linear(), images(1), target=10, pixels=torch.tensor([0]), num_steps=4))
bad("attribution.one_pixel_sensitivity", "target float", "target",
    lambda: attribution.one_pixel_sensitivity(Linear(), images(1), target=0.5, pixels=torch.tensor([0]), num_steps=4))
bad("attribution.one_pixel_sensitivity", "num_steps 0", "num_steps",
    lambda: attribution.one_pixel_sensitivity(Linear(), images(1), target=0, pixels=torch.tensor([0]), num_steps=0))
bad("attribution.one_pixel_sensitivity", "method", "method",
    lambda: attribution.one_pixel_sensitivity(Linear(), images(1), target=0, pixels=torch.tensor([0]), method="x"))
bad("attribution.perturbation_curve", "model None", "model",
    lambda: attribution.perturbation_curve(None, images(2), torch.rand(2, 1, 28, 28), target=0, step=392))
bad("attribution.perturbation_curve", "output_fn not callable", "output_fn",
    lambda: attribution.perturbation_curve(Linear(), images(2), torch.rand(2, 1, 28, 28), target=0, step=392,
                                           output_fn=3))
bad("attribution.perturbation_curve", "ranking list", "ranking",
    lambda: attribution.perturbation_curve(Linear(), images(2), [0.0], target=0, step=392))
bad("attribution.perturbation_curve", "NaN images", "images",
    lambda: attribution.perturbation_curve(Linear(), torch.full((1, 1, 28, 28), NAN), torch.rand(1, 1, 28, 28),
                                           target=0, step=392))
bad("attribution.perturbation_curve", "ranking shape", "ranking",
    lambda: attribution.perturbation_curve(Linear(), images(2), torch.rand(1, 1, 28, 28), target=0, step=392))
bad("attribution.perturbation_curve", "ranking NaN", "ranking",
    lambda: attribution.perturbation_curve(Linear(), images(2), torch.full((2, 1, 28, 28), NAN), target=0, step=392))
bad("attribution.perturbation_curve", "mode", "mode",
    lambda: attribution.perturbation_curve(Linear(), images(2), torch.rand(2, 1, 28, 28), target=0, mode="both"))
bad("attribution.perturbation_curve", "step 0", "step",
    lambda: attribution.perturbation_curve(Linear(), images(2), torch.rand(2, 1, 28, 28), target=0, step=0))
bad("attribution.perturbation_curve", "step float", "step",
    lambda: attribution.perturbation_curve(Linear(), images(2), torch.rand(2, 1, 28, 28), target=0, step=8.0))
for value in (NAN, INF, "0"):
    bad("attribution.perturbation_curve", f"fill {value!r}", "fill",
        lambda value=value: attribution.perturbation_curve(Linear(), images(2), torch.rand(2, 1, 28, 28), target=0,
                                                           step=392, fill=value))
bad("attribution.perturbation_curve", "target float", "target",
    lambda: attribution.perturbation_curve(Linear(), images(2), torch.rand(2, 1, 28, 28), target=0.5, step=392))
bad("attribution.perturbation_curve", "target shape", "target",
    lambda: attribution.perturbation_curve(Linear(), images(2), torch.rand(2, 1, 28, 28), target=torch.tensor([0]),
                                           step=392))
bad("attribution.perturbation_curve", "target 10", "target",
    lambda: attribution.perturbation_curve(Linear(), images(2), torch.rand(2, 1, 28, 28), target=10, step=392))
bad("attribution.perturbation_curve", "batch_size 0", "batch_size",
    lambda: attribution.perturbation_curve(Linear(), images(2), torch.rand(2, 1, 28, 28), target=0, batch_size=0))
bad("attribution.occlude_top_k", "images list", "images", lambda: attribution.occlude_top_k([0.0], torch.rand(1), k=1))
bad("attribution.occlude_top_k", "NaN images", "images",
    lambda: attribution.occlude_top_k(torch.full((1, 1, 4, 4), NAN), torch.rand(1, 1, 4, 4), k=1))
bad("attribution.occlude_top_k", "ranking shape", "ranking",
    lambda: attribution.occlude_top_k(torch.rand(2, 1, 4, 4), torch.rand(1, 1, 4, 4), k=1))
bad("attribution.occlude_top_k", "ranking NaN", "ranking",
    lambda: attribution.occlude_top_k(torch.rand(1, 1, 4, 4), torch.full((1, 1, 4, 4), NAN), k=1))
for k in (-1, 17, 1.0, True):
    bad("attribution.occlude_top_k", f"k {k!r}", "k",
        lambda k=k: attribution.occlude_top_k(torch.rand(1, 1, 4, 4), torch.rand(1, 1, 4, 4), k=k))
for value in (NAN, INF, "0", None):
    bad("attribution.occlude_top_k", f"fill {value!r}", "fill",
        lambda value=value: attribution.occlude_top_k(torch.rand(1, 1, 4, 4), torch.rand(1, 1, 4, 4), k=1, fill=value))
bad("attribution.square_of_most_mass", "list", "attributions", lambda: attribution.square_of_most_mass([0.0], size=1))
bad("attribution.square_of_most_mass", "3-D", "attributions",
    lambda: attribution.square_of_most_mass(torch.rand(1, 4, 4), size=1))
bad("attribution.square_of_most_mass", "NaN", "attributions",
    lambda: attribution.square_of_most_mass(torch.full((1, 1, 4, 4), NAN), size=1))
bad("attribution.square_of_most_mass", "inf", "attributions",
    lambda: attribution.square_of_most_mass(torch.full((1, 1, 4, 4), INF), size=1))
for size in (0, 5, 2.0, True, None):
    bad("attribution.square_of_most_mass", f"size {size!r}", "size",
        lambda size=size: attribution.square_of_most_mass(torch.rand(1, 1, 4, 4), size=size))
bad("attribution.mask_iou", "list", "first", lambda: attribution.mask_iou([1, 0], torch.tensor([1, 0])))
bad("attribution.mask_iou", "shapes", ("first", "second"),
    lambda: attribution.mask_iou(torch.ones(1, 4, 4), torch.ones(1, 3, 3)))
bad("attribution.mask_iou", "both empty", ("first", "second"),
    lambda: attribution.mask_iou(torch.zeros(1, 4, 4), torch.zeros(1, 4, 4)))
bad("attribution.mask_iou", "NaN", "first",
    lambda: attribution.mask_iou(torch.full((1, 4, 4), NAN), torch.ones(1, 4, 4)))
bad("attribution.mask_iou", "inf", "second",
    lambda: attribution.mask_iou(torch.ones(1, 4, 4), torch.full((1, 4, 4), INF)))

# ---- zoo
bad("zoo.PatchSpec", "size 0", "size", lambda: zoo.PatchSpec(size=0, row=0, col=0, bits=()))
for alpha in (0.0, -0.1, 1.5, NAN, "0.1", True):
    bad("zoo.BlendSpec", f"alpha {alpha!r}", "alpha", lambda alpha=alpha: zoo.BlendSpec(alpha=alpha, seed=0))
for seed in BAD_SEEDS:
    bad("zoo.BlendSpec", f"seed {seed!r}", "seed", lambda seed=seed: zoo.BlendSpec(alpha=0.1, seed=seed))
bad("zoo.PatchSpec", "row float", "row", lambda: zoo.PatchSpec(size=1, row=0.5, col=0, bits=(1,)))
bad("zoo.PatchSpec", "col -1", "col", lambda: zoo.PatchSpec(size=1, row=0, col=-1, bits=(1,)))
bad("zoo.PatchSpec", "bits 2", "bits", lambda: zoo.PatchSpec(size=1, row=0, col=0, bits=(2,)))
bad("zoo.PatchSpec", "bits list", "bits", lambda: zoo.PatchSpec(size=1, row=0, col=0, bits=[1]))
for seed in BAD_SEEDS:
    bad("zoo.ModelConfig", f"seed {seed!r}", "seed", lambda seed=seed: zoo.ModelConfig(seed))
    bad("zoo.random_patch_triggers", f"seed {seed!r}", "seed", lambda seed=seed: zoo.random_patch_triggers(2, seed=seed))
    bad("zoo.zoo_spec", f"seed {seed!r}", "seed",
        lambda seed=seed: zoo.zoo_spec(num_clean=1, num_poisoned=1, triggers=[spec()], seed=seed))
for rate in BAD_RATES:
    bad("zoo.ModelConfig", f"rate {rate!r}", "rate", lambda rate=rate: zoo.ModelConfig(0, "all_to_one", spec(), 1,
                                                                                       None, rate))
bad("zoo.ModelConfig", "attack", "attack", lambda: zoo.ModelConfig(0, "other"))
bad("zoo.ModelConfig", "trigger type", "trigger", lambda: zoo.ModelConfig(0, "all_to_one", "patch", 1, None, 0.1))
bad("zoo.ModelConfig", "target float", "target", lambda: zoo.ModelConfig(0, "all_to_one", spec(), 1.5, None, 0.1))
bad("zoo.ModelConfig", "target -1", "target", lambda: zoo.ModelConfig(0, "all_to_one", spec(), -1, None, 0.1))
bad("zoo.random_patch_triggers", "min_on above one bit", "min_on",
    lambda: zoo.random_patch_triggers(3, seed=0, sizes=(1,), image_shape=(1, 1, 1), margin=0, min_on=1.0))
bad("zoo.random_patch_triggers", "count too many", "count",
    lambda: zoo.random_patch_triggers(5, seed=0, sizes=(1,), image_shape=(1, 2, 1), margin=0, min_on=0.0))
bad("zoo.random_patch_triggers", "min_on 2", "min_on", lambda: zoo.random_patch_triggers(2, seed=0, min_on=2.0))
bad("zoo.random_patch_triggers", "count NaN", "count", lambda: zoo.random_patch_triggers(NAN, seed=0))
bad("zoo.random_patch_triggers", "count float", "count", lambda: zoo.random_patch_triggers(2.0, seed=0))
bad("zoo.random_patch_triggers", "sizes too big", "sizes", lambda: zoo.random_patch_triggers(2, seed=0, sizes=(40,)))
bad("zoo.random_patch_triggers", "placement", "placement",
    lambda: zoo.random_patch_triggers(2, seed=0, placement="middle"))
bad("zoo.zoo_spec", "num_clean -1", "num_clean", lambda: zoo.zoo_spec(num_clean=-1, num_poisoned=1, triggers=[spec()],
                                                                      seed=0))
bad("zoo.zoo_spec", "num_poisoned float", "num_poisoned",
    lambda: zoo.zoo_spec(num_clean=1, num_poisoned=1.5, triggers=[spec()], seed=0))
bad("zoo.zoo_spec", "one_source_share NaN", "one_source_share",
    lambda: zoo.zoo_spec(num_clean=1, num_poisoned=2, triggers=[spec()], seed=0, one_source_share=NAN))
bad("zoo.zoo_spec", "num_classes 1", "num_classes",
    lambda: zoo.zoo_spec(num_clean=1, num_poisoned=2, triggers=[spec()], seed=0, num_classes=1))
bad("zoo.zoo_spec", "all_to_one_rate 2", "all_to_one_rate",
    lambda: zoo.zoo_spec(num_clean=1, num_poisoned=2, triggers=[spec()], seed=0, all_to_one_rate=2.0))
bad("zoo.ZooCNN", "channels 0", "channels", lambda: zoo.ZooCNN(channels=(0, 4)))
bad("zoo.ZooCNN", "num_classes 1", "num_classes", lambda: zoo.ZooCNN(num_classes=1))
bad("zoo.ModelStack.initial", "seed float", "seed", lambda: zoo.ModelStack.initial([1.5]))
bad("zoo.ModelStack.member", "index 9", "index", lambda: zoo.ModelStack.initial([0, 1]).member(9))
bad("zoo.ModelStack.from_models", "not ZooCNN", "models", lambda: zoo.ModelStack.from_models([Linear()]))
bad("zoo.training_plan", "subset_size 0", "subset_size",
    lambda: zoo.training_plan([zoo.ModelConfig(0)], dataset(), subset_size=0))
bad("zoo.training_plan", "target beyond classes", "target",
    lambda: zoo.training_plan([zoo.ModelConfig(0, "all_to_one", spec(), 12, None, 0.5)], dataset(), subset_size=20))
bad("zoo.train_stack", "max_lr NaN", "max_lr",
    lambda: zoo.train_stack([zoo.ModelConfig(0)], dataset(), subset_size=8, max_lr=NAN))
bad("zoo.train_stack", "epochs 0", "epochs", lambda: zoo.train_stack([zoo.ModelConfig(0)], dataset(), subset_size=8,
                                                                     epochs=0))
bad("zoo.train_stack", "method", "method", lambda: zoo.train_stack([zoo.ModelConfig(0)], dataset(), subset_size=8,
                                                                   method="vmap"))
bad("zoo.train_zoo", "configs dicts", "configs", lambda: zoo.train_zoo([{"seed": 0}], dataset(), dataset(),
                                                                      subset_size=8))
bad("zoo.train_zoo", "group_size 0", "group_size", lambda: zoo.train_zoo([zoo.ModelConfig(0)], dataset(), dataset(),
                                                                        subset_size=8, group_size=0))
bad("zoo.train_zoo", "min_accuracy NaN", "min_accuracy",
    lambda: zoo.train_zoo([zoo.ModelConfig(0)], dataset(), dataset(), subset_size=8, min_accuracy=NAN))
bad("zoo.train_zoo", "test tensor", "test", lambda: zoo.train_zoo([zoo.ModelConfig(0)], dataset(), images(),
                                                                 subset_size=8))
bad("zoo.evaluate_zoo", "configs length", "configs",
    lambda: zoo.evaluate_zoo(zoo.ModelStack.initial([0, 1]), [zoo.ModelConfig(0)], dataset()))
bad("zoo.evaluate_zoo", "batch_size 0", "batch_size",
    lambda: zoo.evaluate_zoo(zoo.ModelStack.initial([0]), [zoo.ModelConfig(0)], dataset(), batch_size=0))

# ---- ulp
bad("ulp.LitmusDetector", "num_patterns 0", "num_patterns", lambda: ulp.LitmusDetector(num_patterns=0))
bad("ulp.LitmusDetector", "num_patterns float", "num_patterns", lambda: ulp.LitmusDetector(num_patterns=2.5))
bad("ulp.LitmusDetector", "seed float", "seed", lambda: ulp.LitmusDetector(num_patterns=2, seed=1.5))
bad("ulp.LitmusDetector", "image_shape", "image_shape", lambda: ulp.LitmusDetector(num_patterns=2, image_shape=(28, 28)))
for option in ("pattern_lr", "head_lr"):
    for value in (NAN, 0.0, -1.0, INF):
        bad("ulp.train_detector", f"{option} {value}", option,
            lambda option=option, value=value: ulp.train_detector(ulp.LitmusDetector(num_patterns=1), tiny_zoo(),
                                                                  epochs=1, **{option: value}))
for option in ("tv_weight", "weight_decay"):
    for value in (NAN, -1.0, INF):
        bad("ulp.train_detector", f"{option} {value}", option,
            lambda option=option, value=value: ulp.train_detector(ulp.LitmusDetector(num_patterns=1), tiny_zoo(),
                                                                  epochs=1, **{option: value}))
bad("ulp.train_detector", "labels 0/2", "labels",
    lambda: ulp.train_detector(ulp.LitmusDetector(num_patterns=1), tiny_zoo((0, 2, 0, 2)), epochs=1))
bad("ulp.train_detector", "seed float", "seed",
    lambda: ulp.train_detector(ulp.LitmusDetector(num_patterns=1), tiny_zoo(), epochs=1, seed=0.5))
bad("ulp.train_detector", "epochs 0", "epochs",
    lambda: ulp.train_detector(ulp.LitmusDetector(num_patterns=1), tiny_zoo(), epochs=0))
bad("ulp.train_detector", "zoo list", "zoo", lambda: ulp.train_detector(ulp.LitmusDetector(num_patterns=1), [1]))
bad("ulp.train_detector", "track_train_auc int", "track_train_auc",
    lambda: ulp.train_detector(ulp.LitmusDetector(num_patterns=1), tiny_zoo(), epochs=1, track_train_auc=1))
bad("ulp.train_detectors", "jobs empty", "jobs", lambda: ulp.train_detectors([], tiny_zoo()))
bad("ulp.train_detectors", "job without detector", "jobs", lambda: ulp.train_detectors([{"epochs": 1}], tiny_zoo()))
bad("ulp.train_detectors", "num_workers 0", "num_workers",
    lambda: ulp.train_detectors([{"detector": ulp.LitmusDetector(num_patterns=1), "epochs": 1}], tiny_zoo(),
                                num_workers=0))
bad("ulp.train_detectors", "zoo list", "zoo",
    lambda: ulp.train_detectors([{"detector": ulp.LitmusDetector(num_patterns=1)}], [1]))
bad("ulp.ulp_objective", "labels length", "labels",
    lambda: ulp.ulp_objective(ulp.LitmusDetector(num_patterns=1), zoo.ModelStack.initial([0, 1]), torch.ones(3),
                              tv_weight=0.0))
bad("ulp.ulp_objective", "tv_weight NaN", "tv_weight",
    lambda: ulp.ulp_objective(ulp.LitmusDetector(num_patterns=1), zoo.ModelStack.initial([0, 1]), torch.ones(2),
                              tv_weight=NAN))
bad("ulp.total_variation", "3-D", "patterns", lambda: ulp.total_variation(torch.zeros(1, 4, 4)))
bad("ulp.total_variation", "NaN", "patterns", lambda: ulp.total_variation(torch.full((1, 1, 4, 4), NAN)))
bad("ulp.auc", "one class", "labels", lambda: ulp.auc(torch.rand(4), torch.zeros(4)))
bad("ulp.auc", "NaN scores", "scores", lambda: ulp.auc(torch.tensor([0.1, NAN]), torch.tensor([0, 1])))
bad("ulp.auc", "lengths", "labels", lambda: ulp.auc(torch.rand(3), torch.tensor([0, 1])))

# ---- dcae
bad("dcae.trigger_brightness", "mask NaN", "mask",
    lambda: dcae.trigger_brightness(images(2), torch.full((1, 28, 28), NAN)))
bad("dcae.trigger_brightness", "mask negative", "mask",
    lambda: dcae.trigger_brightness(images(2), -torch.ones(1, 28, 28)))
bad("dcae.trigger_brightness", "mask int", "mask",
    lambda: dcae.trigger_brightness(images(2), torch.ones(1, 28, 28, dtype=torch.long)))
bad("dcae.trigger_brightness", "mask zero", "mask", lambda: dcae.trigger_brightness(images(2), torch.zeros(1, 28, 28)))
bad("dcae.trigger_brightness", "mask channels", "mask",
    lambda: dcae.trigger_brightness(images(2), torch.ones(2, 28, 28)))
bad("dcae.trigger_rate", "threshold NaN", "threshold",
    lambda: dcae.trigger_rate(images(2), torch.ones(1, 28, 28), threshold=NAN))
bad("dcae.stamp_class", "source 10", "source", lambda: dcae.stamp_class(dataset(), trigger(), source=10))
bad("dcae.stamp_class", "trigger None", "trigger", lambda: dcae.stamp_class(dataset(), None, source=1))
bad("dcae.class_balanced_sample", "per_class float", "per_class",
    lambda: dcae.class_balanced_sample(dataset(), 1.5, seed=0))
bad("dcae.class_balanced_sample", "per_class 0", "per_class", lambda: dcae.class_balanced_sample(dataset(), 0, seed=0))
for seed in BAD_SEEDS:
    bad("dcae.class_balanced_sample", f"seed {seed!r}", "seed",
        lambda seed=seed: dcae.class_balanced_sample(dataset(), 1, seed=seed))
    bad("dcae.train_autoencoder", f"seed {seed!r}", "seed",
        lambda seed=seed: dcae.train_autoencoder(autoencoder(), dataset(), epochs=1, seed=seed, batch_size=8))
    bad("dcae.generate", f"seed {seed!r}", "seed",
        lambda seed=seed: dcae.generate(autoencoder(), images(8), num_samples=4, seed=seed))
bad("dcae.train_autoencoder", "max_lr NaN", "max_lr",
    lambda: dcae.train_autoencoder(autoencoder(), dataset(), epochs=1, seed=0, batch_size=8, max_lr=NAN))
bad("dcae.encode", "NaN images", "images", lambda: dcae.encode(autoencoder(), torch.full((1, 1, 28, 28), NAN)))
bad("dcae.encode", "batch_size 0", "batch_size", lambda: dcae.encode(autoencoder(), images(1), batch_size=0))
bad("dcae.decode", "latents NaN", "latents", lambda: dcae.decode(autoencoder(), torch.full((2, 2), NAN)))
bad("dcae.decode", "latents shape", "latents", lambda: dcae.decode(autoencoder(), torch.zeros(2, 3)))
bad("dcae.reconstruction_error", "images 3-D", "images", lambda: dcae.reconstruction_error(autoencoder(),
                                                                                           torch.zeros(1, 28, 28)))
bad("dcae.generate", "num_samples 0", "num_samples",
    lambda: dcae.generate(autoencoder(), images(8), num_samples=0, seed=0))
bad("dcae.NotebookAutoencoder", "latent_dim 0", "latent_dim", lambda: dcae.NotebookAutoencoder(latent_dim=0))
bad("dcae.MLPAutoencoder", "hidden 0", "hidden", lambda: dcae.MLPAutoencoder(hidden=(0,)))
bad("dcae.locate_trigger", "NaN images", "images",
    lambda: dcae.locate_trigger(torch.full((1, 1, 8, 8), NAN), torch.rand(2, 1, 8, 8), size=2))
bad("dcae.locate_trigger", "images list", "images", lambda: dcae.locate_trigger([0.0], torch.rand(2, 1, 8, 8), size=2))
bad("dcae.locate_trigger", "NaN reference", "reference",
    lambda: dcae.locate_trigger(torch.rand(2, 1, 8, 8), torch.full((1, 1, 8, 8), NAN), size=2))
bad("dcae.locate_trigger", "reference list", "reference", lambda: dcae.locate_trigger(torch.rand(2, 1, 8, 8), [0.0],
                                                                                      size=2))
bad("dcae.locate_trigger", "reference shape", "reference",
    lambda: dcae.locate_trigger(torch.rand(2, 1, 8, 8), torch.rand(2, 1, 7, 7), size=2))
bad("dcae.locate_trigger", "reference empty", "reference",
    lambda: dcae.locate_trigger(torch.rand(2, 1, 8, 8), torch.zeros(0, 1, 8, 8), size=2))
for size in (0, 9, 2.0, True, None):
    bad("dcae.locate_trigger", f"size {size!r}", "size",
        lambda size=size: dcae.locate_trigger(torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 8), size=size))
bad("dcae.nearest_neighbour_distance", "images 3-D", "images",
    lambda: dcae.nearest_neighbour_distance(torch.rand(1, 8, 8), torch.rand(2, 1, 8, 8)))
bad("dcae.nearest_neighbour_distance", "NaN images", "images",
    lambda: dcae.nearest_neighbour_distance(torch.full((1, 1, 8, 8), NAN), torch.rand(2, 1, 8, 8)))
bad("dcae.nearest_neighbour_distance", "NaN reference", "reference",
    lambda: dcae.nearest_neighbour_distance(torch.rand(2, 1, 8, 8), torch.full((1, 1, 8, 8), NAN)))
bad("dcae.nearest_neighbour_distance", "reference int", "reference",
    lambda: dcae.nearest_neighbour_distance(torch.rand(2, 1, 8, 8), torch.ones(1, 1, 8, 8, dtype=torch.long)))
bad("dcae.nearest_neighbour_distance", "reference shape", "reference",
    lambda: dcae.nearest_neighbour_distance(torch.rand(2, 1, 8, 8), torch.rand(2, 3, 8, 8)))
bad("dcae.nearest_neighbour_distance", "reference empty", "reference",
    lambda: dcae.nearest_neighbour_distance(torch.rand(2, 1, 8, 8), torch.zeros(0, 1, 8, 8)))
bad("dcae.nearest_neighbour_distance", "batch_size 0", "batch_size",
    lambda: dcae.nearest_neighbour_distance(torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 8), batch_size=0))
bad("dcae.compare_runs", "lengths", ("after", "before"), lambda: dcae.compare_runs([1.0, 2.0, 3.0], [1.0, 2.0]))
bad("dcae.compare_runs", "one pair", ("after", "before"), lambda: dcae.compare_runs([1.0], [1.0]))
bad("dcae.compare_runs", "before 0", "before", lambda: dcae.compare_runs([1.0, 2.0], [1.0, 0.0]))
bad("dcae.compare_runs", "after NaN", "after", lambda: dcae.compare_runs([1.0, NAN, 2.0], [1.0, 1.0, 1.0]))
bad("dcae.compare_runs", "before inf", "before", lambda: dcae.compare_runs([1.0, 2.0, 2.0], [1.0, INF, 1.0]))
bad("dcae.compare_runs", "after strings", "after", lambda: dcae.compare_runs(["a", "b"], [1.0, 1.0]))
bad("dcae.compare_runs", "after 2-D", "after", lambda: dcae.compare_runs([[1.0, 2.0]], [[1.0, 1.0]]))
for value in (NAN, INF, "0.2"):
    bad("dcae.compare_runs", f"claimed {value!r}", "claimed",
        lambda value=value: dcae.compare_runs([1.1, 1.2, 1.3], [1.0, 1.0, 1.0], claimed=value))
for value in (NAN, 1.0, 0.0, "0.95"):
    bad("dcae.compare_runs", f"level {value!r}", "level",
        lambda value=value: dcae.compare_runs([1.1, 1.2, 1.3], [1.0, 1.0, 1.0], level=value))

# ---- neural_cleanse (every bad call is refused before any optimisation)
bad("neural_cleanse.anomaly_index", "list", "norms", lambda: neural_cleanse.anomaly_index([[1.0, 2.0]]))
bad("neural_cleanse.anomaly_index", "1-D", "norms", lambda: neural_cleanse.anomaly_index(torch.ones(3)))
bad("neural_cleanse.anomaly_index", "one label", "norms", lambda: neural_cleanse.anomaly_index(torch.ones(2, 1)))
bad("neural_cleanse.anomaly_index", "no model", "norms", lambda: neural_cleanse.anomaly_index(torch.zeros(0, 3)))
bad("neural_cleanse.anomaly_index", "NaN", "norms", lambda: neural_cleanse.anomaly_index(torch.tensor([[1.0, NAN]])))
bad("neural_cleanse.anomaly_index", "inf", "norms", lambda: neural_cleanse.anomaly_index(torch.tensor([[1.0, INF]])))
bad("neural_cleanse.anomaly_index", "negative", "norms",
    lambda: neural_cleanse.anomaly_index(torch.tensor([[1.0, -1.0]])))
for kind in BROKEN:  # a Neural Cleanse scan takes zoo models (ZooCNN) only
    bad("neural_cleanse.neural_cleanse", f"broken model {kind}", "models",
        lambda kind=kind: neural_cleanse.neural_cleanse([Broken(kind)], images(8), labels=[0, 1], epochs=1))
    bad("neural_cleanse.neural_cleanse", f"broken module {kind}", "models",
        lambda kind=kind: neural_cleanse.neural_cleanse(Broken(kind), images(8), labels=[0, 1], epochs=1))


def nan_stack() -> zoo.ModelStack:
    """A stack of one ZooCNN whose output layer's bias is NaN (NaN logits for every image)."""
    stack = zoo.ModelStack.initial([0])
    with torch.no_grad():
        stack.parameter_dict()["fc.bias"].fill_(NAN)
    return stack


bad("neural_cleanse.neural_cleanse", "NaN weights", "models",
    lambda: neural_cleanse.neural_cleanse(nan_stack(), images(8), labels=[0, 1], epochs=1))
bad("neural_cleanse.neural_cleanse", "models empty", "models",
    lambda: neural_cleanse.neural_cleanse([], images(8), labels=[0, 1], epochs=1))
bad("neural_cleanse.neural_cleanse", "models None", "models",
    lambda: neural_cleanse.neural_cleanse(None, images(8), labels=[0, 1], epochs=1))
bad("neural_cleanse.neural_cleanse", "NaN images", "images",
    lambda: neural_cleanse.neural_cleanse(zoo.ModelStack.initial([0]), torch.full((2, 1, 28, 28), NAN), epochs=1))
bad("neural_cleanse.neural_cleanse", "images list", "images",
    lambda: neural_cleanse.neural_cleanse(zoo.ModelStack.initial([0]), [0.0], epochs=1))
bad("neural_cleanse.neural_cleanse", "images 3-D", "images",
    lambda: neural_cleanse.neural_cleanse(zoo.ModelStack.initial([0]), torch.rand(2, 28, 28), epochs=1))
bad("neural_cleanse.neural_cleanse", "images channels", "images",
    lambda: neural_cleanse.neural_cleanse(zoo.ModelStack.initial([0]), torch.rand(2, 3, 28, 28), epochs=1))
bad("neural_cleanse.neural_cleanse", "images empty", "images",
    lambda: neural_cleanse.neural_cleanse(zoo.ModelStack.initial([0]), torch.zeros(0, 1, 28, 28), epochs=1))
for labels in ([0], [1, 1], [0, 10], [-1, 0], [0.5, 1.5], ["a", 1], 3):
    bad("neural_cleanse.neural_cleanse", f"labels {labels!r}", "labels",
        lambda labels=labels: neural_cleanse.neural_cleanse(zoo.ModelStack.initial([0]), images(8), labels=labels,
                                                            epochs=1))
for seed in BAD_SEEDS:
    bad("neural_cleanse.neural_cleanse", f"seed {seed!r}", "seed",
        lambda seed=seed: neural_cleanse.neural_cleanse(zoo.ModelStack.initial([0]), images(8), labels=[0, 1],
                                                        epochs=1, seed=seed))
for option in ("epochs", "steps_per_epoch", "batch_size", "patience", "early_stop_patience", "model_chunk", "num_workers"):
    for value in (0, 1.5, True):
        bad("neural_cleanse.neural_cleanse", f"{option} {value!r}", option,
            lambda option=option, value=value: neural_cleanse.neural_cleanse(
                zoo.ModelStack.initial([0]), images(8), labels=[0, 1], **{"epochs": 1, option: value}))
for option in ("lr", "init_cost", "early_stop_threshold", "cost_multiplier", "attack_threshold"):
    for value in (NAN, INF, -1.0, "0.1"):
        bad("neural_cleanse.neural_cleanse", f"{option} {value!r}", option,
            lambda option=option, value=value: neural_cleanse.neural_cleanse(
                zoo.ModelStack.initial([0]), images(8), labels=[0, 1], epochs=1, **{option: value}))
bad("neural_cleanse.neural_cleanse", "cost_multiplier 1", "cost_multiplier",
    lambda: neural_cleanse.neural_cleanse(zoo.ModelStack.initial([0]), images(8), labels=[0, 1], epochs=1,
                                          cost_multiplier=1.0))
bad("neural_cleanse.neural_cleanse", "attack_threshold 1.5", "attack_threshold",
    lambda: neural_cleanse.neural_cleanse(zoo.ModelStack.initial([0]), images(8), labels=[0, 1], epochs=1,
                                          attack_threshold=1.5))
bad("neural_cleanse.neural_cleanse", "method", "method",
    lambda: neural_cleanse.neural_cleanse(zoo.ModelStack.initial([0]), images(8), labels=[0, 1], epochs=1,
                                          method="vmap"))

# ---- copula
for seed in (1.5, "0", -1, True, None):
    bad("copula.sample", f"seed {seed!r}", "seed", lambda seed=seed: copula.sample(vine(), 4, seed=seed, scale="copula"))
    bad("copula.mutual_information", f"seed {seed!r}", "seed",
        lambda seed=seed: copula.mutual_information(vine(), num_samples=10, seed=seed))
    bad("copula.kl_divergence", f"seed {seed!r}", "seed",
        lambda seed=seed: copula.kl_divergence(vine(), vine(), num_samples=10, seed=seed))
bad("copula.pseudo_observations", "NaN", "latents", lambda: copula.pseudo_observations(np.full((5, 2), NAN)))
bad("copula.pseudo_observations", "1-D", "latents", lambda: copula.pseudo_observations(np.zeros(5)))
bad("copula.fit_marginals", "strings", "latents", lambda: copula.fit_marginals([["a", "b"]]))
bad("copula.fit_vine", "inf", "latents", lambda: copula.fit_vine(np.full((10, 2), INF)))
bad("copula.fit_vine", "num_threads 0", "num_threads", lambda: copula.fit_vine(latents(), num_threads=0))
bad("copula.fit_vine", "structure", "structure", lambda: copula.fit_vine(latents(), structure="tree"))
bad("copula.sample", "num_samples 0", "num_samples", lambda: copula.sample(vine(), 0, seed=0, scale="copula"))
bad("copula.sample", "vine", "vine", lambda: copula.sample("vine", 4, seed=0, scale="copula"))
bad("copula.log_density", "u out of (0,1)", "u", lambda: copula.log_density(vine(), np.full((2, 3), 1.5)))
bad("copula.log_density", "u NaN", "u", lambda: copula.log_density(vine(), np.full((2, 3), NAN)))
bad("copula.mutual_information", "num_samples 1", "num_samples",
    lambda: copula.mutual_information(vine(), num_samples=1, seed=0))
bad("copula.kl_divergence", "q", "q", lambda: copula.kl_divergence(vine(), None, num_samples=10, seed=0))
bad("copula.grid_average", "points 0", "points_per_axis", lambda: copula.grid_average(vine(), points_per_axis=0))
bad("copula.pairwise_dependence", "measure", "measure", lambda: copula.pairwise_dependence(latents(), measure="rho"))
bad("copula.gaussian_mutual_information", "not PD", "correlation",
    lambda: copula.gaussian_mutual_information(np.array([[1.0, 2.0], [2.0, 1.0]])))
bad("copula.gaussian_mutual_information", "NaN", "correlation",
    lambda: copula.gaussian_mutual_information(np.full((2, 2), NAN)))
bad("copula.gaussian_kl_divergence", "shapes", "correlation",
    lambda: copula.gaussian_kl_divergence(correlation(), np.eye(2)))
bad("copula.gaussian_log_density", "u 1.5", "u", lambda: copula.gaussian_log_density(np.full((1, 3), 1.5), correlation()))
bad("copula.gaussian_dvine", "order", "order", lambda: copula.gaussian_dvine(correlation(), order=[0, 0, 1]))
bad("copula.gaussian_vine_correlation", "vine", "vine", lambda: copula.gaussian_vine_correlation(np.eye(2)))

# ---- stats
bad("stats.summarize", "NaN", "values", lambda: stats.summarize([1.0, NAN]))
bad("stats.summarize", "level 1", "level", lambda: stats.summarize([1.0, 2.0], level=1.0))
bad("stats.summarize", "strings", "values", lambda: stats.summarize(["a", "b"]))
bad("stats.auc", "one class", "labels", lambda: stats.auc([1, 1], [0.1, 0.2]))
bad("stats.auc", "NaN scores", "scores", lambda: stats.auc([0, 1], [0.1, NAN]))
bad("stats.auc_ci", "method", "method", lambda: stats.auc_ci([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4], method="wald"))
bad("stats.auc_ci", "num_resamples 0", "num_resamples",
    lambda: stats.auc_ci([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4], method="bootstrap", num_resamples=0))
bad("stats.auc_ci", "seed float", "seed",
    lambda: stats.auc_ci([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4], method="bootstrap", seed=0.5))
bad("stats.tpr_at_fpr", "fpr 2", "fpr", lambda: stats.tpr_at_fpr([0, 1], [0.1, 0.2], fpr=2.0))
bad("stats.paired_test", "lengths", ("a", "b"), lambda: stats.paired_test([1.0, 2.0], [1.0]))
bad("stats.paired_test", "inf", ("a", "b"), lambda: stats.paired_test([1.0, INF, 2.0], [1.0, 2.0, 3.0]))

# ---- plot
bad("plot.image_grid", "ncols 0", "ncols", lambda: plot.image_grid(images(2), ncols=0))
bad("plot.image_grid", "2-D", "images", lambda: plot.image_grid(torch.zeros(4, 4)))
bad("plot.heatmaps", "labels length", "labels", lambda: plot.heatmaps(torch.rand(2, 1, 4, 4), labels=["a"]))
bad("plot.curves", "series length", "series", lambda: plot.curves([1, 2], {"a": [1]}, xlabel="x", ylabel="y"))
bad("plot.roc_curves", "not a mapping", "curves_by_name", lambda: plot.roc_curves([1, 2]))

# ---- poison_detection
def feats(n: int = 12, d: int = 4) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(0))


LABELS12 = torch.arange(12) % 2
for kind in BROKEN:
    bad("poison_detection.penultimate_features", f"broken model {kind}", "model",
        lambda kind=kind: poison_detection.penultimate_features(Broken(kind), images(2)))
bad("poison_detection.penultimate_features", "not a module", "model",
    lambda: poison_detection.penultimate_features(lambda x: x, images(2)))
bad("poison_detection.penultimate_features", "stack", "model",
    lambda: poison_detection.penultimate_features(zoo.ModelStack.initial([0]), images(2)))
bad("poison_detection.penultimate_features", "NaN images", "images",
    lambda: poison_detection.penultimate_features(Linear(), torch.full((2, 1, 28, 28), NAN)))
bad("poison_detection.penultimate_features", "images 3-D", "images",
    lambda: poison_detection.penultimate_features(Linear(), torch.rand(2, 28, 28)))
bad("poison_detection.penultimate_features", "images empty", "images",
    lambda: poison_detection.penultimate_features(Linear(), torch.zeros(0, 1, 28, 28)))
bad("poison_detection.penultimate_features", "batch_size 0", "batch_size",
    lambda: poison_detection.penultimate_features(Linear(), images(2), batch_size=0))
for function in ("spectral_signatures", "activation_clustering"):
    call = getattr(poison_detection, function)
    bad(f"poison_detection.{function}", "features list", "features", lambda call=call: call([[0.0]], LABELS12))
    bad(f"poison_detection.{function}", "features 1-D", "features", lambda call=call: call(torch.ones(12), LABELS12))
    bad(f"poison_detection.{function}", "features empty", "features",
        lambda call=call: call(torch.ones(0, 3), LABELS12[:0]))
    bad(f"poison_detection.{function}", "features int", "features",
        lambda call=call: call(torch.ones(12, 3, dtype=torch.long), LABELS12))
    bad(f"poison_detection.{function}", "features NaN", "features",
        lambda call=call: call(torch.full((12, 3), NAN), LABELS12))
    bad(f"poison_detection.{function}", "features inf", "features",
        lambda call=call: call(torch.full((12, 3), INF), LABELS12))
    bad(f"poison_detection.{function}", "labels length", "labels", lambda call=call: call(feats(), LABELS12[:5]))
    bad(f"poison_detection.{function}", "labels float", "labels", lambda call=call: call(feats(), LABELS12.float()))
    bad(f"poison_detection.{function}", "labels negative", "labels", lambda call=call: call(feats(), LABELS12 - 1))
for seed in BAD_SEEDS:
    bad("poison_detection.activation_clustering", f"seed {seed!r}", "seed",
        lambda seed=seed: poison_detection.activation_clustering(feats(), LABELS12, seed=seed))
for option, values in (("num_dims", (0, 1.5, None)), ("silhouette_sample", (2, 2.0)),
                       ("size_threshold", (NAN, -0.1, 0.6, "0.3")), ("silhouette_threshold", (NAN, 1.5, None))):
    for value in values:
        bad("poison_detection.activation_clustering", f"{option} {value!r}", option,
            lambda option=option, value=value: poison_detection.activation_clustering(feats(), LABELS12,
                                                                                       **{option: value}))
bad("poison_detection.activation_clustering", "reduction", "reduction",
    lambda: poison_detection.activation_clustering(feats(), LABELS12, reduction="tsne"))
TRUTH12 = LABELS12 == 1
bad("poison_detection.detection_auroc", "scores list", "scores",
    lambda: poison_detection.detection_auroc([0.1] * 12, TRUTH12))
bad("poison_detection.detection_auroc", "scores 2-D", "scores",
    lambda: poison_detection.detection_auroc(torch.ones(12, 1), TRUTH12))
bad("poison_detection.detection_auroc", "scores NaN", "scores",
    lambda: poison_detection.detection_auroc(torch.full((12,), NAN), TRUTH12))
bad("poison_detection.detection_auroc", "poisoned int", "poisoned",
    lambda: poison_detection.detection_auroc(torch.rand(12), LABELS12))
bad("poison_detection.detection_auroc", "poisoned length", "poisoned",
    lambda: poison_detection.detection_auroc(torch.rand(12), TRUTH12[:5]))
bad("poison_detection.detection_auroc", "one class", "poisoned",
    lambda: poison_detection.detection_auroc(torch.rand(12), torch.zeros(12, dtype=torch.bool)))
for budget in (0, -1, 1.5, None, True):
    bad("poison_detection.top_scorers", f"budget {budget!r}", "budget",
        lambda budget=budget: poison_detection.top_scorers(torch.rand(12), budget=budget))
bad("poison_detection.top_scorers", "scores inf", "scores",
    lambda: poison_detection.top_scorers(torch.full((12,), INF), budget=2))
bad("poison_detection.top_scorers", "labels length", "labels",
    lambda: poison_detection.top_scorers(torch.rand(12), budget=2, labels=LABELS12[:3]))
bad("poison_detection.removal_quality", "removed list", "removed",
    lambda: poison_detection.removal_quality([True] * 12, TRUTH12))
bad("poison_detection.removal_quality", "removed int", "removed",
    lambda: poison_detection.removal_quality(LABELS12, TRUTH12))
bad("poison_detection.removal_quality", "removed none", "removed",
    lambda: poison_detection.removal_quality(torch.zeros(12, dtype=torch.bool), TRUTH12))
bad("poison_detection.removal_quality", "poisoned length", "poisoned",
    lambda: poison_detection.removal_quality(TRUTH12, TRUTH12[:4]))
bad("poison_detection.removal_quality", "poisoned none", "poisoned",
    lambda: poison_detection.removal_quality(TRUTH12, torch.zeros(12, dtype=torch.bool)))

# ---- recipes (argument checks run before any data is read or model trained)
bad("recipes.mnist_classifier", "architecture", "architecture", lambda: recipes.mnist_classifier(architecture="vit"))
bad("recipes.mnist_classifier", "poison_rate NaN", "poison_rate", lambda: recipes.mnist_classifier(poison_rate=NAN))
bad("recipes.mnist_classifier", "seed float", "seed", lambda: recipes.mnist_classifier(seed=1.5))
bad("recipes.clean_mnist_classifier", "seed -1", "seed", lambda: recipes.clean_mnist_classifier(seed=-1))
bad("recipes.badnets_mnist_classifier", "rate 2", "rate", lambda: recipes.badnets_mnist_classifier(rate=2.0))
bad("recipes.mnist_autoencoder", "architecture", "architecture", lambda: recipes.mnist_autoencoder(architecture="x"))
bad("recipes.mnist_autoencoder", "latent_dim 0", "latent_dim", lambda: recipes.mnist_autoencoder(latent_dim=0))
bad("recipes.mnist_zoos", "num_train", "num_train", lambda: recipes.mnist_zoos(num_train=(-1, 5)))
bad("recipes.mnist_zoos", "min_accuracy NaN", "min_accuracy", lambda: recipes.mnist_zoos(min_accuracy=NAN))
bad("recipes.mnist_autoencoders", "num_workers 0", "num_workers", lambda: recipes.mnist_autoencoders([], num_workers=0))
bad("recipes.mnist_autoencoders", "num_workers float", "num_workers",
    lambda: recipes.mnist_autoencoders([], num_workers=2.0))
bad("recipes.mnist_autoencoders", "num_workers bool", "num_workers",
    lambda: recipes.mnist_autoencoders([], num_workers=True))
bad("recipes.mnist_autoencoders", "configurations None", "configurations", lambda: recipes.mnist_autoencoders(None))
bad("recipes.mnist_autoencoders", "configurations of ints", "configurations", lambda: recipes.mnist_autoencoders([1]))
bad("recipes.mnist_autoencoders", "unknown option", ("configurations", "sed"),
    lambda: recipes.mnist_autoencoders([{"sed": 0}]))
bad("recipes.mnist_autoencoders", "seed float", "seed", lambda: recipes.mnist_autoencoders([{"seed": 1.5}]))
bad("recipes.mnist_autoencoders", "latent_dim 0", "latent_dim", lambda: recipes.mnist_autoencoders([{"latent_dim": 0}]))

bad("recipes.mnist_lab_grader", "num_patterns 0", "num_patterns", lambda: recipes.mnist_lab_grader(num_patterns=0))
bad("recipes.mnist_lab_grader", "seed float", "seed", lambda: recipes.mnist_lab_grader(seed=1.5))

# ---- mntd
for option, value in (("num_queries", 0), ("num_queries", 2.5), ("hidden", 0), ("nu", 0.0), ("nu", 1.0), ("nu", NAN),
                      ("seed", 1.5), ("seed", -1), ("num_classes", 1), ("image_shape", (28, 28))):
    bad("mntd.OneClassMetaClassifier", f"{option} {value!r}", option,
        lambda option=option, value=value: mntd.OneClassMetaClassifier(**{option: value}))
bad("mntd.OneClassMetaClassifier.score", "list of ints", "models",
    lambda: mntd.OneClassMetaClassifier(num_queries=1).score([1, 2]))
bad("mntd.OneClassMetaClassifier.score", "empty", "models", lambda: mntd.OneClassMetaClassifier(num_queries=1).score([]))
bad("mntd.OneClassMetaClassifier.score", "classes", "classes",
    lambda: mntd.OneClassMetaClassifier(num_queries=1, num_classes=5).score(zoo.ModelStack.initial([0])))
bad("mntd.one_class_objective", "detector", "detector",
    lambda: mntd.one_class_objective(ulp.LitmusDetector(num_patterns=1), zoo.ModelStack.initial([0])))
bad("mntd.train_one_class", "detector", "detector",
    lambda: mntd.train_one_class(ulp.LitmusDetector(num_patterns=1), zoo.ModelStack.initial([0, 1])))
bad("mntd.train_one_class", "models list", "models",
    lambda: mntd.train_one_class(mntd.OneClassMetaClassifier(num_queries=1), [zoo.ZooCNN()]))
bad("mntd.train_one_class", "one model", "models",
    lambda: mntd.train_one_class(mntd.OneClassMetaClassifier(num_queries=1), zoo.ModelStack.initial([0])))
bad("mntd.train_one_class", "backdoored", "models",
    lambda: mntd.train_one_class(mntd.OneClassMetaClassifier(num_queries=1), zoo.Zoo(
        zoo.ModelStack.initial([0, 1]), [None, None], torch.tensor([0, 1]), torch.ones(2), torch.ones(2))))
for option, value in (("epochs", 0), ("epochs", 1.5), ("batch_size", 0), ("lr", 0.0), ("lr", NAN),
                      ("query_lr", -1.0), ("seed", 1.5), ("seed", "0")):
    bad("mntd.train_one_class", f"{option} {value!r}", option,
        lambda option=option, value=value: mntd.train_one_class(
            mntd.OneClassMetaClassifier(num_queries=1), zoo.ModelStack.initial([0, 1]), **{option: value}))

# ---- uap_scan (every bad call is refused before any optimisation)
for option, value in (("budget", 0.0), ("budget", NAN), ("budget", "1"), ("p", 1), ("p", True), ("steps", 0),
                      ("steps", 1.5), ("batch_size", 0), ("model_chunk", 0), ("step_size", 0.0), ("step_size", INF),
                      ("labels", [1]), ("labels", [0, 0]), ("labels", [0, 10]), ("labels", "01"), ("seed", 1.5),
                      ("seed", -1)):
    bad("uap_scan.targeted_scan", f"{option} {value!r}", option,
        lambda option=option, value=value: uap_scan.targeted_scan(zoo.ModelStack.initial([0]), dataset(),
                                                                  **{option: value}))
bad("uap_scan.targeted_scan", "models None", "models", lambda: uap_scan.targeted_scan(None, dataset()))
bad("uap_scan.targeted_scan", "models empty", "models", lambda: uap_scan.targeted_scan([], dataset()))
bad("uap_scan.targeted_scan", "data tensor", "data", lambda: uap_scan.targeted_scan(zoo.ModelStack.initial([0]), images(4)))
bad("uap_scan.targeted_scan", "NaN weights", "models",
    lambda: uap_scan.targeted_scan(nan_stack(), dataset(), steps=1, batch_size=4))

# ---- detectors
def small_zoo(labels=(0, 0, 1, 1)) -> zoo.Zoo:
    n = len(labels)
    return zoo.Zoo(zoo.ModelStack.initial(range(n)), [None] * n, torch.tensor(labels), torch.ones(n), torch.ones(n))


def constant_detector(values, name="d") -> detectors.Detector:
    return detectors.Detector(name, lambda stack: torch.tensor(values, dtype=torch.float64))


for label, kwargs, name in (("name empty", {"name": ""}, "name"), ("score not callable", {"score": 1.0}, "score"),
                            ("needs unknown", {"needs": ("a GPU",)}, "needs"), ("needs str", {"needs": "clean zoo"}, "needs"),
                            ("fit_seconds NaN", {"fit_seconds": NAN}, "fit_seconds"),
                            ("fit_seconds negative", {"fit_seconds": -1.0}, "fit_seconds")):
    bad("detectors.Detector", label, name,
        lambda kwargs=kwargs: detectors.Detector(**{"name": "d", "score": lambda s: s, **kwargs}))
bad("detectors.compare", "zoo stack", "zoo", lambda: detectors.compare([constant_detector([0.0] * 4)], small_zoo().stack))
bad("detectors.compare", "one class", "zoo",
    lambda: detectors.compare([constant_detector([0.0] * 4)], small_zoo((0, 0, 0, 0))))
bad("detectors.compare", "detectors empty", "detectors", lambda: detectors.compare([], small_zoo()))
bad("detectors.compare", "detectors bare", "detectors", lambda: detectors.compare(constant_detector([0.0] * 4), small_zoo()))
bad("detectors.compare", "detectors of functions", "detectors", lambda: detectors.compare([lambda s: s], small_zoo()))
bad("detectors.compare", "names", "names",
    lambda: detectors.compare([constant_detector([0.0] * 4), constant_detector([1.0] * 4)], small_zoo()))
bad("detectors.compare", "scores shape", "shape", lambda: detectors.compare([constant_detector([0.0] * 3)], small_zoo()))
bad("detectors.compare", "scores NaN", "non-finite",
    lambda: detectors.compare([constant_detector([0.0, NAN, 0.0, 0.0])], small_zoo()))
for option, value in (("fpr", 1.0), ("fpr", NAN), ("level", 0.0), ("level", 1.0), ("level", "0.9")):
    bad("detectors.compare", f"{option} {value!r}", option,
        lambda option=option, value=value: detectors.compare([constant_detector([0.0, 0.1, 0.2, 0.3])], small_zoo(),
                                                             **{option: value}))
bad("detectors.rank_average", "none", "scores", lambda: detectors.rank_average())
bad("detectors.rank_average", "one entry", "scores", lambda: detectors.rank_average([1.0]))
bad("detectors.rank_average", "NaN", "scores", lambda: detectors.rank_average([1.0, NAN]))
bad("detectors.rank_average", "lengths", "scores", lambda: detectors.rank_average([1.0, 2.0], [1.0, 2.0, 3.0]))
bad("detectors.ulp_detector", "wrong detector", "litmus", lambda: detectors.ulp_detector(zoo.ZooCNN()))
bad("detectors.one_class_detector", "wrong detector", "detector",
    lambda: detectors.one_class_detector(ulp.LitmusDetector(num_patterns=1)))
bad("detectors.neural_cleanse_detector", "NaN images", "images",
    lambda: detectors.neural_cleanse_detector(torch.full((2, 1, 28, 28), NAN)))
bad("detectors.neural_cleanse_detector", "no images", "images",
    lambda: detectors.neural_cleanse_detector(torch.zeros(0, 1, 28, 28)))

# ---- lab (every bad submission is refused before anything is measured)
for scores in ([], [[0.1]], [0.1, NAN], [0.1, INF]):
    bad("lab.threshold_at_fpr", f"clean_scores {scores!r}", "clean_scores", lambda scores=scores: lab.threshold_at_fpr(scores))
for value in (NAN, -0.1, 1.0, "0.05", True):
    bad("lab.threshold_at_fpr", f"fpr {value!r}", "fpr", lambda value=value: lab.threshold_at_fpr([0.1, 0.2], fpr=value))


def tiny_grader() -> lab.Grader:
    return lab.Grader(detector=ulp.LitmusDetector(num_patterns=1), reference=zoo.ModelStack.initial([0, 1]),
                      test_set=dataset(), nc_images=images(8),
                      nc_options={"epochs": 1, "steps_per_epoch": 1, "batch_size": 4})


GRADER_OPTIONS = dict(detector=ulp.LitmusDetector(num_patterns=1), reference=zoo.ModelStack.initial([0, 1]),
                      test_set=dataset(), nc_images=images(8))
for option, value in (("detector", zoo.ZooCNN()), ("reference", [zoo.ZooCNN()]), ("test_set", images(4)),
                      ("nc_images", images(4, shape=(1, 8, 8))), ("nc_images", torch.full((2, 1, 28, 28), NAN)),
                      ("nc_images", torch.zeros(0, 1, 28, 28)), ("nc_options", [("epochs", 1)]),
                      ("fpr", NAN), ("fpr", 1.0), ("min_accuracy", 1.5), ("min_attack_success", -0.1),
                      ("min_accuracy", "0.98")):
    bad("lab.Grader", f"{option} {type(value).__name__}", option,
        lambda option=option, value=value: lab.Grader(**{**GRADER_OPTIONS, option: value}))
for label, model in (("a Linear", Linear()), ("a subclass", type("Sub", (zoo.ZooCNN,), {})()),
                     ("other channels", zoo.ZooCNN(channels=(4, 16))), ("NaN weights", nan_stack().member(0))):
    bad("lab.Grader.grade", f"model {label}", ("model", "fc.bias"),
        lambda model=model: tiny_grader().grade(model, recipes.mnist_patch_trigger(), target=0))
    bad("lab.grade", f"model {label}", ("model", "fc.bias"),
        lambda model=model: lab.grade(model, recipes.mnist_patch_trigger(), 0, grader=tiny_grader()))
for target in (10, -1, 1.5, True, "0"):
    bad("lab.Grader.grade", f"target {target!r}", "target",
        lambda target=target: tiny_grader().grade(zoo.ZooCNN(), recipes.mnist_patch_trigger(), target=target))
bad("lab.Grader.grade", "trigger tensor", "trigger",
    lambda: tiny_grader().grade(zoo.ZooCNN(), torch.ones(1, 28, 28), target=0))
bad("lab.Grader.grade", "trigger shape", "trigger",
    lambda: tiny_grader().grade(zoo.ZooCNN(), triggers.Trigger(torch.ones(1, 8, 8), torch.ones(1, 8, 8)), target=0))
bad("lab.grade", "grader", "grader", lambda: lab.grade(zoo.ZooCNN(), recipes.mnist_patch_trigger(), 0, grader=object()))


@pytest.mark.parametrize("case", CASES, ids=[f"{c.target}:{c.label}" for c in CASES])
def test_bad_call_raises_an_error_that_names_the_argument(case):
    with time_limit(TIMEOUT_SECONDS), pytest.raises((ValueError, TypeError)) as error:
        case.call()
    message = str(error.value)
    assert any(name in message for name in case.names), f"{type(error.value).__name__}: {message}"


# --------------------------------------------------------------------------- coverage of the API

#: Public names that are data, results or exceptions rather than operations on arguments.
NOT_CALLED = {
    "cache.Artifact": "a plain record of tensors and info",
    "cache.CorruptArtifactWarning": "a warning class",
    "cache.CachePermissionWarning": "a warning class",
    "data.DataNotFoundError": "an exception class",
    "data.mnist": "bad-file cases are in test_data (they need files on disk); a bad root is below",
    "data.cifar10": "bad-file cases are in test_data (they need files on disk)",
    "recipes.TrainedModel": "a result record",
    "recipes.mnist_patch_trigger": "takes no argument",
    "lab.Criterion": "a result record of Grader.grade",
    "detectors.DetectorRow": "a result record of compare",
    "uap_scan.TargetedScan": "a result record of targeted_scan",
    "detectors.Comparison": "a result record of compare",
    "mntd.OneClassTraining": "a result record of train_one_class",
    "lab.LabGrade": "a result record of Grader.grade",
    "train.FitResult": "a result record",
    "triggers.PoisonedSet": "a result record",
    "uap.DeepFoolResult": "a result record",
    "uap.UAPResult": "a result record",
    "uap.TargetedUAPResult": "a result record of targeted_universal_perturbation",
    "attribution.IGResult": "a result record",
    "attribution.QuadratureRule": "a result record of quadrature_rule",
    "attribution.OnePixelCheck": "a result record of one_pixel_sensitivity",
    "attribution.PerturbationCurve": "a result record of perturbation_curve",
    "copula.Estimate": "a result record",
    "copula.GridEstimate": "a result record",
    "copula.Marginals": "a result record of fit_marginals",
    "copula.FittedVine": "a result record of fit_vine",
    "dcae.DCAESamples": "a result record",
    "dcae.TriggerScan": "a result record of locate_trigger",
    "dcae.RunComparison": "a result record of compare_runs",
    "dcae.Autoencoder": "a base class taking arbitrary encoder and decoder modules",
    "stats.Summary": "a result record",
    "stats.AUCInterval": "a result record",
    "stats.PairedTest": "a result record",
    "ulp.ULPTraining": "a result record",
    "neural_cleanse.NeuralCleanseResult": "a result record of neural_cleanse",
    "poison_detection.SpectralSignatures": "a result record of spectral_signatures",
    "poison_detection.ActivationClusters": "a result record of activation_clustering",
    "poison_detection.RemovalQuality": "a result record of removal_quality",
    "zoo.TrainingPlan": "a result record of training_plan",
    "zoo.Zoo": "a result record of train_zoo",
}


def public_callables() -> list[str]:
    names = []
    for module_name in bl.__all__:
        module = getattr(bl, module_name)
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name)
            if inspect.isfunction(obj) or inspect.isclass(obj):
                names.append(f"{module_name}.{name}")
    return names


def test_every_public_function_has_contract_cases():
    covered = {case.target.rsplit(".", 1)[0] if case.target.count(".") == 2 else case.target for case in CASES}
    covered |= {case.target for case in CASES}
    missing = [name for name in public_callables() if name not in covered and name not in NOT_CALLED]
    assert not missing, f"public functions without contract cases: {missing}"


# --------------------------------------------------------------------------- inputs not mutated


def snapshot(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, ImageSet):
        return (value.images.clone(), value.labels.clone(), value.classes)
    if isinstance(value, nn.Module):  # weights, and the flags a call could leave changed
        return {k: v.detach().clone() for k, v in value.state_dict().items()} | {
            "requires_grad": [p.requires_grad for p in value.parameters()],
            "training": [m.training for m in value.modules()]}
    if isinstance(value, (list, tuple)):
        return [snapshot(v) for v in value]
    return value


def same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b) if not a.is_floating_point() else \
            a.shape == b.shape and bool(torch.equal(torch.nan_to_num(a), torch.nan_to_num(b)))
    if isinstance(a, np.ndarray):
        return a.shape == b.shape and np.array_equal(a, b, equal_nan=True)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def valid_calls():
    """(label, function, args): valid calls whose tensor, array, dataset and model args must survive."""
    model, x, d, t = Linear(), images(6), dataset(), trigger()
    ae, stack = autoencoder(), zoo.ModelStack.initial([0, 1])
    lat = latents()
    return [
        ("train.fit", lambda data: train.fit(Linear(), data, epochs=1, seed=0, batch_size=8), (d,)),
        ("zoo.train_stack", lambda data: zoo.train_stack([zoo.ModelConfig(0)], data, subset_size=16, batch_size=8),
         (d,)),
        ("train.predict", train.predict, (model, x)),
        ("train.accuracy", train.accuracy, (model, d)),
        ("triggers.apply", t.apply, (x,)),
        ("triggers.poison", lambda data: triggers.poison(data, t, rate=0.2, target=0, seed=0), (d,)),
        ("triggers.attack_success_rate", lambda m, data: triggers.attack_success_rate(m, data, t, target=0), (model, d)),
        ("uap.fooling_rate", uap.fooling_rate, (model, x, torch.full((1, 28, 28), 0.1))),
        ("uap.project_lp", lambda v: uap.project_lp(v, 0.5, 2), (torch.ones(1, 4, 4),)),
        ("uap.deepfool", lambda m, im: uap.deepfool(m, im, max_iter=2), (model, x)),
        ("uap.targeted_success_rate", lambda m, im, v: uap.targeted_success_rate(m, im, v, target=1),
         (model, x, torch.full((1, 28, 28), 0.1))),
        ("uap.targeted_universal_perturbation",
         lambda m, im: uap.targeted_universal_perturbation(m, im, target=1, xi=0.1, p=math.inf, epochs=1, batch_size=3),
         (model, x)),
        ("uap.span_perturbation", lambda b: uap.span_perturbation(b, xi=1.0, seed=0), (torch.randn(2, 1, 4, 4),)),
        ("attribution.integrated_gradients",
         lambda m, im, b: attribution.integrated_gradients(m, im, target=1, baseline=b, num_steps=4),
         (model, x, torch.zeros_like(x))),
        ("attribution.gradients", lambda m, im: attribution.gradients(m, im, target=1), (model, x)),
        ("attribution.blurred_baseline", attribution.blurred_baseline, (x,)),
        ("attribution.positive_mass_share", attribution.positive_mass_share, (torch.randn(6, 1, 28, 28),
                                                                             t.mask)),
        ("attribution.one_pixel_sensitivity",
         lambda m, im, px: attribution.one_pixel_sensitivity(m, im, target=1, pixels=px, num_steps=4),
         (model, x[:1], torch.tensor([0, 5, 783]))),
        ("attribution.perturbation_curve",
         lambda m, im, r: attribution.perturbation_curve(m, im, r, target=1, step=196),
         (model, x, torch.randn(6, 1, 28, 28))),
        ("attribution.occlude_top_k", lambda im, r: attribution.occlude_top_k(im, r, k=10),
         (x, torch.randn(6, 1, 28, 28))),
        ("attribution.square_of_most_mass", lambda a: attribution.square_of_most_mass(a, size=3),
         (torch.randn(6, 1, 28, 28),)),
        ("attribution.mask_iou", attribution.mask_iou, (t.mask, torch.ones(1, 28, 28))),
        ("dcae.stamp_class", lambda data: dcae.stamp_class(data, t, source=1), (d,)),
        ("dcae.encode", dcae.encode, (ae, x)),
        ("dcae.decode", dcae.decode, (ae, torch.zeros(3, 2))),
        ("dcae.trigger_brightness", dcae.trigger_brightness, (x, t.mask)),
        ("dcae.locate_trigger", lambda im, ref: dcae.locate_trigger(im, ref, size=3), (x, images(3, seed=1))),
        ("dcae.nearest_neighbour_distance", lambda im, ref: dcae.nearest_neighbour_distance(im, ref, batch_size=4),
         (x, images(3, seed=1))),
        ("dcae.compare_runs", lambda a, b: dcae.compare_runs(a, b, claimed=0.2), (np.array([1.1, 1.3, 1.2]),
                                                                                  np.array([1.0, 1.1, 0.9]))),
        ("zoo.evaluate_zoo", lambda s, data: zoo.evaluate_zoo(s, [zoo.ModelConfig(0), zoo.ModelConfig(1)], data),
         (stack, d)),
        ("ulp.total_variation", ulp.total_variation, (torch.rand(2, 1, 4, 4),)),
        ("neural_cleanse.anomaly_index", neural_cleanse.anomaly_index, (torch.rand(2, 5),)),
        ("neural_cleanse.neural_cleanse",
         lambda s, im: neural_cleanse.neural_cleanse(s, im, labels=[0, 1], epochs=1, steps_per_epoch=1, batch_size=4),
         (zoo.ModelStack.initial([0]), images(8))),
        ("poison_detection.penultimate_features",
         lambda m, im: poison_detection.penultimate_features(m, im, batch_size=4), (models.MnistCNN(), x)),
        ("poison_detection.spectral_signatures", poison_detection.spectral_signatures, (feats(), LABELS12)),
        ("poison_detection.activation_clustering",
         lambda f, y: poison_detection.activation_clustering(f, y, num_dims=2, seed=0), (feats(), LABELS12)),
        ("poison_detection.detection_auroc", poison_detection.detection_auroc, (torch.rand(12), TRUTH12)),
        ("poison_detection.top_scorers", lambda sc, y: poison_detection.top_scorers(sc, budget=2, labels=y),
         (torch.rand(12), LABELS12)),
        ("poison_detection.removal_quality", poison_detection.removal_quality, (TRUTH12 | (LABELS12 == 0), TRUTH12)),
        ("copula.pseudo_observations", copula.pseudo_observations, (lat,)),
        ("copula.fit_marginals", copula.fit_marginals, (lat,)),
        ("copula.log_density", lambda u: copula.log_density(vine(), u), (np.full((2, 3), 0.5),)),
        ("stats.summarize", stats.summarize, (np.array([1.0, 2.0, 4.0]),)),
        ("lab.threshold_at_fpr", lab.threshold_at_fpr, (torch.rand(5),)),
        ("uap_scan.targeted_scan", lambda s, d: uap_scan.targeted_scan(s, d, steps=1, batch_size=4),
         (zoo.ModelStack.initial([0]), dataset())),
        ("detectors.rank_average", detectors.rank_average, (np.array([1.0, 3.0, 2.0]), torch.tensor([0.5, 0.1, 0.2]))),
        ("detectors.compare", lambda z: detectors.compare([constant_detector([0.0, 0.1, 0.2, 0.3])], z), (small_zoo(),)),
        ("mntd.train_one_class", lambda d, s: mntd.train_one_class(d, s, epochs=1),
         (mntd.OneClassMetaClassifier(num_queries=1), zoo.ModelStack.initial([0, 1]))),
        ("lab.Grader.grade", lambda m, t: tiny_grader().grade(m, t, target=0),
         (zoo.ZooCNN(), recipes.mnist_patch_trigger())),
        ("stats.auc", stats.auc, (np.array([0, 1, 0, 1]), np.array([0.1, 0.4, 0.35, 0.8]))),
        ("stats.paired_test", stats.paired_test, (np.array([1.0, 2.0, 4.0]), np.array([1.5, 2.0, 5.0]))),
    ]


@pytest.mark.parametrize("label,function,args", valid_calls(), ids=[c[0] for c in valid_calls()])
def test_valid_calls_do_not_mutate_their_inputs(label, function, args):
    before = [snapshot(a) for a in args]
    with time_limit(TIMEOUT_SECONDS):
        function(*args)
    after = [snapshot(a) for a in args]
    for index, (b, a) in enumerate(zip(before, after)):
        assert same(b, a), f"{label} changed its argument {index}"


def test_global_rng_is_left_alone_by_constructors_and_members():
    """Item 9: LitmusDetector, ModelStack.member and train_stack(method='loop') used the global RNG.

    On main, each of these advanced ``torch``'s global generator (an ``nn.Linear`` or ``ZooCNN``
    built with random weights that are then overwritten), so a later unseeded draw changed.
    """
    stack = zoo.ModelStack.initial([0, 1])
    data_set = dataset(32)
    for label, call in (
        ("LitmusDetector", lambda: ulp.LitmusDetector(num_patterns=2)),
        ("ModelStack.member", lambda: stack.member(1)),
        ("train_stack loop", lambda: zoo.train_stack([zoo.ModelConfig(0)], data_set, subset_size=16, batch_size=8,
                                                     method="loop")),
    ):
        state = torch.get_rng_state()
        call()
        assert torch.equal(torch.get_rng_state(), state), f"{label} advanced the global RNG"


# --------------------------------------------------------------------------- regressions of issue 15
# Each test below failed on the code before the fix; its docstring says how.


@pytest.mark.parametrize("kind", ["nan", "extra_axis", "one_class"])
def test_fooling_rates_refuse_broken_models(kind):
    """Items 3 and 4: on main NaN logits gave ``fooling_rate`` 0.0 (every prediction class 0) and
    (N, 10, 1) or one-class outputs broadcast into plausible rates."""
    with time_limit(TIMEOUT_SECONDS), pytest.raises(ValueError, match="model"):
        uap.fooling_rate(Broken(kind), images(), torch.full((1, 28, 28), 0.1))
    with time_limit(TIMEOUT_SECONDS), pytest.raises(ValueError, match="model"):
        uap.sgd_universal_perturbation(Broken(kind), images(), xi=0.1, p=math.inf, epochs=1)


def test_attributions_refuse_non_finite_images_and_baselines():
    """Item 5: on main IG and gradient maps accepted NaN/inf inputs and returned NaN."""
    bad_images = images(1).clone()
    bad_images[0, 0, 3, 3] = float("nan")
    for call in (
        lambda: attribution.integrated_gradients(Linear(), bad_images, target=0, num_steps=4),
        lambda: attribution.gradients(Linear(), bad_images, target=0),
        lambda: attribution.gradient_times_input(Linear(), bad_images, target=0),
    ):
        with pytest.raises(ValueError, match="images"):
            call()
    with pytest.raises(ValueError, match="baseline"):
        attribution.integrated_gradients(Linear(), images(1), target=0, num_steps=4,
                                         baseline=torch.full((1, 1, 28, 28), float("inf")))


@pytest.mark.parametrize("kwargs,name", [
    (dict(count=3, min_on=1.5), "min_on"),  # no patch can have more than all its bits on
    (dict(count=5, sizes=(1,), image_shape=(1, 2, 1), margin=0, min_on=0.0), "count"),  # only 4 exist
    (dict(count=float("nan")), "count"),  # returned [] on main
])
def test_random_patch_triggers_never_hangs(kwargs, name):
    """Item 6: on main these calls looped forever (or returned [] for a NaN count)."""
    with time_limit(5), pytest.raises((ValueError, TypeError), match=name):
        zoo.random_patch_triggers(seed=0, **kwargs)


def test_random_patch_triggers_still_draws_every_possible_patch():
    """The bound on attempts does not refuse a request that can be met: all 4 patches of 2x1."""
    specs = zoo.random_patch_triggers(4, seed=0, sizes=(1,), image_shape=(1, 2, 1), margin=0, min_on=0.0)
    assert len(set(specs)) == 4


def test_item_9_small_contracts():
    """Item 9: on main each of these either raised from deep inside torch or silently went on."""
    empty = ImageSet(torch.zeros(0, 1, 28, 28), torch.zeros(0, dtype=torch.long), DIGITS)
    assert len(dcae.stamp_class(empty, trigger(), source=1)) == 0  # IndexError on main
    with pytest.raises(TypeError, match="dtype"):
        uap.random_perturbation((1, 4, 4), xi=0.1, p=math.inf, seed=0, dtype=torch.int64)  # silently float32
    with pytest.raises(TypeError, match="dtype"):
        uap.checkerboard((1, 4, 4), amplitude=0.1, dtype=torch.int32)  # silently all zeros
    with pytest.raises(ValueError, match="mask"):
        dcae.trigger_brightness(images(2), torch.full((1, 28, 28), float("nan")))  # returned NaN
    with pytest.raises(ValueError, match="labels"):
        ulp.train_detector(ulp.LitmusDetector(num_patterns=1), tiny_zoo((0, 2, 0, 2)), epochs=1)
    with pytest.raises(ValueError, match="head_lr"):
        ulp.train_detector(ulp.LitmusDetector(num_patterns=1), tiny_zoo(), epochs=1, head_lr=float("nan"))
    with pytest.raises(TypeError, match="seed"):
        zoo.ModelConfig(1.5)
    with pytest.raises(ValueError, match="col"):
        zoo.PatchSpec(size=1, row=0, col=-1, bits=(1,))


def test_evaluate_zoo_refuses_broken_models():
    """Item 3: on main a model with NaN weights predicted class 0 everywhere and got a rate."""
    stack = zoo.ModelStack.initial([0])
    with torch.no_grad():
        stack.parameter_dict()["fc.bias"].fill_(float("nan"))
    with pytest.raises(ValueError, match="stack"):
        zoo.evaluate_zoo(stack, [zoo.ModelConfig(0)], dataset())
