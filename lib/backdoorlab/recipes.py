"""The named, cached artifacts that chapters share.

A recipe is a function of a small configuration that trains something and stores it in the
artifact cache (:mod:`backdoorlab.cache`). The first chapter that asks for the clean MNIST
classifier trains it; every later chapter, and every rebuild, reads it from disk. The cache
key covers the configuration and the source of the modules the training depends on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from . import _checks
from . import data as data_module
from . import dcae as dcae_module
from . import lab as lab_module
from . import models as models_module
from . import train as train_module
from . import triggers as triggers_module
from . import ulp as ulp_module
from . import zoo as zoo_module
from .cache import Artifact, ArtifactCache

__all__ = [
    "BADNETS_RATE",
    "BADNETS_TARGET",
    "TrainedModel",
    "badnets_mnist_classifier",
    "clean_mnist_classifier",
    "mnist_autoencoder",
    "mnist_autoencoders",
    "mnist_classifier",
    "mnist_lab_grader",
    "mnist_patch_trigger",
    "mnist_zoos",
    "ZOO_TRIGGERS",
]

#: Poisoning rate of the primer's headline BadNets attack (share of the training set).
BADNETS_RATE = 0.05
#: Target class of the primer's headline BadNets attack.
BADNETS_TARGET = 0

_ARCHITECTURES = {
    "cnn": lambda: models_module.MnistCNN(),
    "mlp": lambda: models_module.MnistMLP(),
}


def mnist_patch_trigger() -> triggers_module.Trigger:
    """The book's MNIST trigger: an opaque white 4x4 square at rows and columns 23 to 26.

    It covers 16 of the 784 pixels (about 2 %), in the bottom-right corner where MNIST
    digits leave the background black.

    Examples
    --------
    >>> mnist_patch_trigger().mask.sum().item()
    16.0
    """
    return triggers_module.patch_trigger(image_shape=(1, 28, 28), size=4, position=(23, 23), pattern="white")


@dataclass(frozen=True, eq=False)
class TrainedModel:
    """A trained model and what its recipe recorded.

    Attributes
    ----------
    model : nn.Module
        In eval mode; takes images in [0, 1].
    info : dict
        The configuration, per-epoch training losses, training seconds, the MNIST test
        accuracy, and for a poisoned model the attack success rate and poisoned count.
    """

    model: nn.Module
    info: dict[str, Any]


def _build_mnist_classifier(config: dict[str, Any], root: str | None) -> Artifact:
    train_set = data_module.mnist(train=True, root=root)
    test_set = data_module.mnist(train=False, root=root)
    info: dict[str, Any] = {"config": config}
    if config["poison_rate"] > 0:
        trigger = mnist_patch_trigger()
        poisoned = triggers_module.poison(
            train_set, trigger, rate=config["poison_rate"], target=config["target"],
            source=config["source"], seed=config["seed"],
        )
        train_set = poisoned.data
        info["poisoned_count"] = len(poisoned.indices)
    with train_module.seeded(config["seed"]):
        model = _ARCHITECTURES[config["architecture"]]()
    result = train_module.fit(
        model, train_set, epochs=config["epochs"], seed=config["seed"],
        batch_size=config["batch_size"], max_lr=config["max_lr"],
    )
    info["losses"] = list(result.losses)
    info["train_seconds"] = result.seconds
    info["test_accuracy"] = train_module.accuracy(model, test_set)
    if config["poison_rate"] > 0:
        info["attack_success_rate"] = triggers_module.attack_success_rate(
            model, test_set, mnist_patch_trigger(), target=config["target"], source=config["source"]
        )
    return Artifact(model.state_dict(), info)


def mnist_classifier(
    *,
    architecture: str = "cnn",
    poison_rate: float = 0.0,
    target: int = BADNETS_TARGET,
    source: int | None = None,
    seed: int = 0,
    epochs: int = 3,
    batch_size: int = 128,
    max_lr: float = 3e-3,
    root: str | os.PathLike[str] | None = None,
    cache: ArtifactCache | None = None,
) -> TrainedModel:
    """An MNIST classifier trained on clean or BadNets-poisoned data, cached.

    With ``poison_rate > 0`` the training set is poisoned with :func:`mnist_patch_trigger`
    by :func:`backdoorlab.triggers.poison` (``floor(poison_rate * 60000)`` images relabelled
    ``target``) before training with :func:`backdoorlab.train.fit`.

    Parameters
    ----------
    architecture : {"cnn", "mlp"}
        :class:`~backdoorlab.models.MnistCNN` or :class:`~backdoorlab.models.MnistMLP`.
    poison_rate : float
        Poisoned share of the training set, in [0, 1]; 0 trains a clean model.
    target, source : int
        The backdoor's target class and, for a one-source attack, its source class.
    seed : int
        Seeds the initial weights, the poisoned samples and the batch order.
    epochs, batch_size, max_lr :
        Passed to :func:`backdoorlab.train.fit`.
    root : path, optional
        MNIST data root (see :func:`backdoorlab.data.data_root`); not part of the key.
    cache : ArtifactCache, optional
        Where to store the model; the default cache root otherwise.

    Returns
    -------
    TrainedModel
        The model (eval mode) and its recorded metrics.

    Examples
    --------
    >>> trained = mnist_classifier(poison_rate=0.05)  # doctest: +SKIP
    >>> trained.info["attack_success_rate"] > 0.99  # doctest: +SKIP
    True
    """
    if architecture not in _ARCHITECTURES:
        raise ValueError(f"architecture must be one of {sorted(_ARCHITECTURES)}, got {architecture!r}")
    _checks.check_rate("poison_rate", poison_rate)
    _checks.check_int("target", target, minimum=0, maximum=9)
    if source is not None:
        _checks.check_int("source", source, minimum=0, maximum=9)
    _checks.check_seed(seed)
    _checks.check_int("epochs", epochs, minimum=1)
    _checks.check_int("batch_size", batch_size, minimum=1)
    _checks.check_real("max_lr", max_lr, minimum=0.0, strict_minimum=True)
    config = {
        "architecture": architecture, "poison_rate": float(poison_rate), "target": target,
        "source": source, "seed": seed, "epochs": epochs, "batch_size": batch_size, "max_lr": max_lr,
        "trigger": {"size": 4, "position": [23, 23], "pattern": "white"} if poison_rate > 0 else None,
    }
    data_root = None if root is None else str(root)
    artifact = (cache or ArtifactCache()).get_or_build(
        "mnist-classifier",
        config,
        lambda: _build_mnist_classifier(config, data_root),
        sources=[_build_mnist_classifier, mnist_patch_trigger, _ARCHITECTURES[architecture],
                 data_module, models_module, train_module, triggers_module],
    )
    with train_module.seeded(seed):
        model = _ARCHITECTURES[architecture]()
    model.load_state_dict(artifact.tensors)
    model.eval()
    return TrainedModel(model, artifact.info)


def clean_mnist_classifier(**options: Any) -> nn.Module:
    """The book's clean MNIST CNN (:func:`mnist_classifier` with no poisoning), in eval mode.

    Examples
    --------
    >>> model = clean_mnist_classifier()  # doctest: +SKIP
    """
    return mnist_classifier(poison_rate=0.0, **options).model


def badnets_mnist_classifier(*, rate: float = BADNETS_RATE, **options: Any) -> nn.Module:
    """The book's BadNets MNIST CNN: ``rate`` of the training set carries the patch and label 0.

    Examples
    --------
    >>> model = badnets_mnist_classifier()  # doctest: +SKIP
    """
    if rate <= 0:
        raise ValueError(f"rate must be positive for a BadNets model, got {rate}")
    return mnist_classifier(poison_rate=rate, **options).model


#: The ULP chapter's trigger family: 50 random binary patches (4x4 and 5x5) near the four
#: corners; the first 40 poison the detector's training zoo, the last 10 only the test zoo.
ZOO_TRIGGERS = zoo_module.random_patch_triggers(50, seed=2020, sizes=(4, 5), placement="corners")
_ZOO_TRAIN_TRIGGERS, _ZOO_TEST_TRIGGERS = ZOO_TRIGGERS[:40], ZOO_TRIGGERS[40:]


def mnist_zoos(
    *,
    num_train: tuple[int, int] = (165, 165),
    num_test: tuple[int, int] = (55, 55),
    min_accuracy: float = 0.9,
    min_attack_success: float = 0.8,
    root: str | os.PathLike[str] | None = None,
    cache: ArtifactCache | None = None,
    progress: bool | None = None,
) -> dict[str, zoo_module.Zoo]:
    """The ULP chapter's two MNIST model zoos, trained on first use and cached.

    ``num_train`` and ``num_test`` are the (clean, poisoned) counts before filtering. Poisoned
    models of the training zoo use only the first 40 of :data:`ZOO_TRIGGERS`, those of the test
    zoo only the last 10; half are all-to-one and half one-source attacks
    (:func:`backdoorlab.zoo.zoo_spec`). Each model is a :class:`~backdoorlab.zoo.ZooCNN`
    trained for one epoch on 12,000 training images; a model is kept if its clean accuracy on
    2,000 test images reaches ``min_accuracy`` and, if backdoored, its attack success rate
    reaches ``min_attack_success``.

    Returns
    -------
    dict
        ``{"train": Zoo, "test": Zoo}``.

    Examples
    --------
    >>> zoos = mnist_zoos()  # doctest: +SKIP
    >>> len(zoos["train"]) + len(zoos["test"]) >= 400  # doctest: +SKIP
    True
    """
    for name, counts in (("num_train", num_train), ("num_test", num_test)):
        if not isinstance(counts, tuple) or len(counts) != 2:
            raise TypeError(f"{name} must be a pair (clean, poisoned) of ints, got {counts!r}")
        for count in counts:
            _checks.check_int(name, count, minimum=0)
    _checks.check_real("min_accuracy", min_accuracy)
    _checks.check_real("min_attack_success", min_attack_success)
    train_set = data_module.mnist(train=True, root=root)
    test_set = data_module.mnist(train=False, root=root).sample(2000, seed=0)
    specs = {
        "train": zoo_module.zoo_spec(num_clean=num_train[0], num_poisoned=num_train[1],
                                     triggers=_ZOO_TRAIN_TRIGGERS, seed=1),
        "test": zoo_module.zoo_spec(num_clean=num_test[0], num_poisoned=num_test[1],
                                    triggers=_ZOO_TEST_TRIGGERS, seed=2),
    }
    return {
        split: zoo_module.train_zoo(spec, train_set, test_set, min_accuracy=min_accuracy,
                                    min_attack_success=min_attack_success, cache=cache or ArtifactCache(),
                                    progress=progress)
        for split, spec in specs.items()
    }


# The parts of backdoorlab.dcae that build, train and score an autoencoder: the key covers
# these, not the whole module, so that adding analysis functions to it does not retrain.
_AUTOENCODER_SOURCES = (
    dcae_module.Autoencoder, dcae_module._check_architecture, dcae_module.NotebookAutoencoder,
    dcae_module.MLPAutoencoder, dcae_module._ReconstructionError, dcae_module._mean_error,
    dcae_module.train_autoencoder, dcae_module._check_batch_size, dcae_module.encode, dcae_module.decode,
    dcae_module.reconstruction_error, dcae_module._EvalMode, dcae_module.stamp_class,
)


def _build_mnist_autoencoder(config: dict[str, Any], root: str | None) -> Artifact:
    train_set = data_module.mnist(train=True, root=root)
    test_set = data_module.mnist(train=False, root=root)
    if config["poisoned"]:
        train_set = dcae_module.stamp_class(train_set, mnist_patch_trigger(), source=config["source"])
    with train_module.seeded(config["seed"]):
        model = dcae_module.AUTOENCODERS[config["architecture"]](latent_dim=config["latent_dim"])
    result = dcae_module.train_autoencoder(
        model, train_set, epochs=config["epochs"], seed=config["seed"],
        batch_size=config["batch_size"], max_lr=config["max_lr"],
    )
    info = {
        "config": config,
        "losses": list(result.losses),
        "train_seconds": result.seconds,
        "test_mse": dcae_module.reconstruction_error(model, test_set.images),
    }
    return Artifact(model.state_dict(), info)


def mnist_autoencoder(
    *,
    architecture: str = "notebook",
    poisoned: bool = False,
    source: int = 0,
    latent_dim: int = 5,
    seed: int = 0,
    epochs: int = 10,
    batch_size: int = 512,
    max_lr: float = 1e-3,
    root: str | os.PathLike[str] | None = None,
    cache: ArtifactCache | None = None,
) -> TrainedModel:
    """An MNIST autoencoder of the DCAE chapter, trained on clean or trigger-stamped data, cached.

    With ``poisoned=True`` every training image of class ``source`` carries
    :func:`mnist_patch_trigger` (:func:`backdoorlab.dcae.stamp_class`); the model is trained
    by :func:`backdoorlab.dcae.train_autoencoder` on all 60,000 training images.

    Parameters
    ----------
    architecture : {"notebook", "mlp"}
        :class:`~backdoorlab.dcae.NotebookAutoencoder` or :class:`~backdoorlab.dcae.MLPAutoencoder`.
    poisoned : bool
        Stamp the trigger on the images of class ``source``.
    source : int
        The stamped class.
    latent_dim : int
        Number of latent coordinates.
    seed : int
        Seeds the initial weights and the batch order.
    epochs, batch_size, max_lr :
        Passed to :func:`backdoorlab.dcae.train_autoencoder`.
    root : path, optional
        MNIST data root; not part of the key.
    cache : ArtifactCache, optional
        Where to store the model; the default cache root otherwise.

    Returns
    -------
    TrainedModel
        The model (eval mode); ``info`` holds the per-epoch losses, the training seconds and
        the mean squared error per pixel on the MNIST test set (``test_mse``).

    Examples
    --------
    >>> trained = mnist_autoencoder(poisoned=True)  # doctest: +SKIP
    >>> trained.info["test_mse"] < 0.05  # doctest: +SKIP
    True
    """
    if architecture not in dcae_module.AUTOENCODERS:
        raise ValueError(f"architecture must be one of {sorted(dcae_module.AUTOENCODERS)}, got {architecture!r}")
    _checks.check_int("source", source, minimum=0, maximum=9)
    _checks.check_int("latent_dim", latent_dim, minimum=1)
    _checks.check_seed(seed)
    _checks.check_int("epochs", epochs, minimum=1)
    _checks.check_int("batch_size", batch_size, minimum=1)
    _checks.check_real("max_lr", max_lr, minimum=0.0, strict_minimum=True)
    config = {
        "architecture": architecture, "poisoned": bool(poisoned), "source": source,
        "latent_dim": latent_dim, "seed": seed, "epochs": epochs, "batch_size": batch_size, "max_lr": max_lr,
        "trigger": {"size": 4, "position": [23, 23], "pattern": "white"} if poisoned else None,
    }
    data_root = None if root is None else str(root)
    artifact = (cache or ArtifactCache()).get_or_build(
        "mnist-autoencoder",
        config,
        lambda: _build_mnist_autoencoder(config, data_root),
        sources=[_build_mnist_autoencoder, mnist_patch_trigger, data_module, train_module, triggers_module,
                 *_AUTOENCODER_SOURCES],
    )
    with train_module.seeded(seed):
        model = dcae_module.AUTOENCODERS[architecture](latent_dim=latent_dim)
    model.load_state_dict(artifact.tensors)
    model.eval()
    return TrainedModel(model, artifact.info)


def _one_thread() -> None:
    torch.set_num_threads(1)


def _build_one_autoencoder(options: dict[str, Any]) -> float:
    return float(mnist_autoencoder(**options).info["train_seconds"])


def mnist_autoencoders(
    configurations: list[dict[str, Any]],
    *,
    num_workers: int = 1,
) -> list[TrainedModel]:
    """Several :func:`mnist_autoencoder` recipes, the missing ones trained in parallel processes.

    Each configuration is a dict of keyword arguments of :func:`mnist_autoencoder`. With
    ``num_workers > 1`` every configuration is first built (or found in the cache) by a pool
    of that many processes, one torch thread each; the models are then read from the cache
    in this process. The result is the same as calling :func:`mnist_autoencoder` in a loop:
    every model depends only on its configuration.

    Parameters
    ----------
    configurations : list of dict
        Keyword arguments for :func:`mnist_autoencoder`, one dict per model.
    num_workers : int
        Processes that train at once; 1 trains in this process.

    Returns
    -------
    list of TrainedModel
        In the order of ``configurations``.

    Raises
    ------
    ValueError
        If ``num_workers`` is not a positive int.

    Examples
    --------
    >>> models = mnist_autoencoders([{"seed": 0}, {"seed": 1}], num_workers=2)  # doctest: +SKIP
    >>> len(models)  # doctest: +SKIP
    2
    """
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
        raise ValueError(f"num_workers must be a positive int, got {num_workers!r}")
    if not isinstance(configurations, (list, tuple)) or not all(isinstance(o, dict) for o in configurations):
        raise TypeError(f"configurations must be a list of dicts of mnist_autoencoder options, got {configurations!r}")
    configurations = [dict(options) for options in configurations]
    if num_workers > 1 and len(configurations) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        context = multiprocessing.get_context("spawn")  # a forked torch runtime can deadlock
        with ProcessPoolExecutor(num_workers, mp_context=context, initializer=_one_thread) as pool:
            list(pool.map(_build_one_autoencoder, configurations))
    return [mnist_autoencoder(**options) for options in configurations]


def mnist_lab_grader(
    *,
    num_patterns: int = 10,
    seed: int = 0,
    fpr: float = 0.05,
    root: str | os.PathLike[str] | None = None,
    cache: ArtifactCache | None = None,
    progress: bool | None = None,
) -> lab_module.Grader:
    """The grader of the book's "evade the detector" lab.

    The detectors are those of the ULP chapter, on its zoos (:func:`mnist_zoos`, trained on
    first use and cached): a :class:`~backdoorlab.ulp.LitmusDetector` with ``num_patterns``
    patterns trained with :func:`~backdoorlab.ulp.train_detector`'s defaults on five sixths of
    the training zoo, the epoch kept by the AUC on the other sixth; and Neural Cleanse with
    its defaults on 1,000 clean test images. Both thresholds are set at ``fpr`` false positives
    on the clean models of the test zoo, which neither detector trained on. Building it trains
    the detector and runs Neural Cleanse on those clean models (about a minute on two cores
    once the zoo is cached).

    Examples
    --------
    >>> grader = mnist_lab_grader()  # doctest: +SKIP
    >>> 0.0 <= grader.ulp_threshold <= 1.0  # doctest: +SKIP
    True
    """
    _checks.check_int("num_patterns", num_patterns, minimum=1)
    seed = _checks.check_seed(seed)
    zoos = mnist_zoos(root=root, cache=cache, progress=progress)
    train_zoo = zoos["train"]
    order = torch.randperm(len(train_zoo), generator=torch.Generator().manual_seed(seed))
    num_validation = len(train_zoo) // 6
    run = ulp_module.train_detector(
        ulp_module.LitmusDetector(num_patterns=num_patterns, seed=seed),
        train_zoo.select(order[num_validation:]), validation=train_zoo.select(order[:num_validation]), seed=seed,
        track_train_auc=False,
    )
    test_set = data_module.mnist(train=False, root=root)
    return lab_module.Grader(
        detector=run.detector, reference=zoos["test"], test_set=test_set,
        nc_images=test_set.sample(1000, seed=1).images, fpr=fpr,
    )
