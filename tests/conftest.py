"""Shared fixtures: tiny datasets in the original file formats, and an isolated cache.

No test reads the real MNIST or CIFAR-10: the fixtures below write small files in the
formats torchvision reads (IDX for MNIST, the pickled python batches for CIFAR-10) into a
temporary data root, and the real loaders run on them.
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

MNIST_TRAIN, MNIST_TEST = 600, 200


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array in the IDX format of LeCun's MNIST files."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def synthetic_digits(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Learnable 28x28 uint8 images: class k has a bright bar on rows 2k+2..2k+3, plus noise.

    The bottom-right corner (rows and columns 23 to 27) stays dark, as in MNIST, so a
    trigger placed there is visible.
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=count).astype(np.uint8)
    images = rng.integers(0, 60, size=(count, 28, 28)).astype(np.uint8)
    for index, label in enumerate(labels):
        images[index, 2 * label + 2:2 * label + 4, 4:20] = 230
    images[:, 23:, 23:] = 0
    return images, labels


@pytest.fixture(scope="session")
def mnist_root(tmp_path_factory) -> Path:
    """A data root holding tiny MNIST files in torchvision's raw layout."""
    root = tmp_path_factory.mktemp("data")
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, count, seed in (("train", MNIST_TRAIN, 1), ("t10k", MNIST_TEST, 2)):
        images, labels = synthetic_digits(count, seed)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return root


@pytest.fixture()
def cifar_root(tmp_path, monkeypatch) -> Path:
    """A data root holding tiny CIFAR-10 python batches (5 train of 4 images, 1 test of 3).

    torchvision checks each file's MD5 against the real CIFAR-10's; the fixture registers the
    checksums of the files it writes, so that check still runs.
    """
    from torchvision.datasets import CIFAR10

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    checksums = {}

    def dump(name: str, content: dict) -> None:
        path = folder / name
        path.write_bytes(pickle.dumps(content, protocol=2))
        checksums[name] = hashlib.md5(path.read_bytes()).hexdigest()

    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        count = 3 if name == "test_batch" else 4
        pixels = rng.integers(0, 256, size=(count, 3 * 32 * 32), dtype=np.uint8)
        dump(name, {"data": pixels, "labels": rng.integers(0, 10, size=count).tolist()})
    dump("batches.meta", {"label_names": ["airplane", "automobile", "bird", "cat", "deer",
                                          "dog", "frog", "horse", "ship", "truck"]})
    monkeypatch.setattr(CIFAR10, "train_list", [[n, checksums[n]] for n in names[:5]])
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", checksums["test_batch"]]])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": checksums["batches.meta"]})
    return tmp_path


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path, monkeypatch):
    """Every test gets its own artifact cache and no data root from the environment."""
    monkeypatch.setenv("BACKDOORLAB_CACHE", str(tmp_path / "artifacts"))
    monkeypatch.delenv("BACKDOORLAB_DATA", raising=False)


@pytest.fixture()
def tiny_set():
    """A small learnable ImageSet built in memory (600 images of 28x28)."""
    from backdoorlab.data import MNIST_CLASSES, ImageSet

    images, labels = synthetic_digits(MNIST_TRAIN, seed=3)
    return ImageSet(
        torch.from_numpy(images).float().div(255).unsqueeze(1),
        torch.from_numpy(labels.astype(np.int64)),
        MNIST_CLASSES,
    )


def bar_images(n: int, seed: int):
    """Ten easy classes for planted-backdoor tests: class c is a bright horizontal bar at row
    3 + 2c, on weak noise (an ImageSet of n 28x28 images)."""
    from backdoorlab.data import ImageSet

    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 10
    images = torch.rand(n, 1, 28, 28, generator=generator) * 0.2
    for c in range(10):
        images[labels == c, 0, 3 + 2 * c:5 + 2 * c, 4:20] += 0.7
    return ImageSet(images.clamp(0, 1), labels, [str(i) for i in range(10)])
