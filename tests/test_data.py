"""Tests of backdoorlab.data: the real loaders on files the fixtures write."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backdoorlab import data
from backdoorlab.data import DataNotFoundError, ImageSet
from conftest import MNIST_TEST, MNIST_TRAIN, synthetic_digits


def test_mnist_reads_idx_files_into_unit_range(mnist_root):
    train = data.mnist(root=mnist_root, download=False)
    images, labels = synthetic_digits(MNIST_TRAIN, seed=1)
    assert train.images.shape == (MNIST_TRAIN, 1, 28, 28)
    assert train.images.dtype == torch.float32 and train.labels.dtype == torch.int64
    assert torch.equal(train.images[:, 0], torch.from_numpy(images).float() / 255)
    assert torch.equal(train.labels, torch.from_numpy(labels.astype(np.int64)))
    assert train.classes == tuple("0123456789")


def test_mnist_test_split_is_the_t10k_files(mnist_root):
    test = data.mnist(train=False, root=mnist_root, download=False)
    _, labels = synthetic_digits(MNIST_TEST, seed=2)
    assert len(test) == MNIST_TEST
    assert test.labels.tolist() == labels.tolist()


def test_data_root_prefers_argument_then_environment(tmp_path, monkeypatch):
    assert data.data_root().name == "data"  # the default under the home folder
    monkeypatch.setenv("BACKDOORLAB_DATA", str(tmp_path / "env"))
    assert data.data_root() == tmp_path / "env"
    assert data.data_root(tmp_path / "arg") == tmp_path / "arg"


def test_mnist_reads_the_root_from_the_environment(mnist_root, monkeypatch):
    monkeypatch.setenv("BACKDOORLAB_DATA", str(mnist_root))
    assert len(data.mnist(train=False, download=False)) == MNIST_TEST


def test_missing_mnist_names_root_files_and_variable(tmp_path):
    with pytest.raises(DataNotFoundError) as error:
        data.mnist(root=tmp_path / "nowhere", download=False)
    message = str(error.value)
    assert str(tmp_path / "nowhere") in message
    assert "train-images-idx3-ubyte" in message and "BACKDOORLAB_DATA" in message


def test_failed_download_is_reported_as_data_error(tmp_path, monkeypatch):
    from torchvision.datasets import MNIST

    def no_network(self):
        raise OSError("network unreachable")

    monkeypatch.setattr(MNIST, "download", no_network)
    with pytest.raises(DataNotFoundError, match="network unreachable"):
        data.mnist(train=False, root=tmp_path, download=True)


def test_cifar10_reads_python_batches_in_channel_order(cifar_root):
    import pickle

    train = data.cifar10(root=cifar_root, download=False)
    test = data.cifar10(train=False, root=cifar_root, download=False)
    assert train.images.shape == (20, 3, 32, 32) and len(test) == 3
    with open(cifar_root / "cifar-10-batches-py" / "test_batch", "rb") as handle:
        raw = pickle.load(handle)  # the test's own file, to know the expected pixels
    expected = torch.from_numpy(raw["data"]).float().div(255).view(3, 3, 32, 32)
    assert torch.allclose(test.images, expected)
    assert test.labels.tolist() == raw["labels"]
    assert test.classes[0] == "airplane" and test.num_classes == 10


def test_missing_cifar10_names_the_expected_folder(tmp_path):
    with pytest.raises(DataNotFoundError, match="cifar-10-batches-py/data_batch_1"):
        data.cifar10(root=tmp_path, download=False)


@pytest.mark.parametrize(
    ("images", "labels", "error"),
    [
        (torch.zeros(2, 28, 28), torch.zeros(2, dtype=torch.long), ValueError),  # no channel axis
        (torch.full((2, 1, 4, 4), 1.5), torch.zeros(2, dtype=torch.long), ValueError),
        (torch.full((2, 1, 4, 4), float("nan")), torch.zeros(2, dtype=torch.long), ValueError),
        (torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(2, dtype=torch.long), TypeError),
        (torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.int32), TypeError),
        (torch.zeros(2, 1, 4, 4), torch.zeros(3, dtype=torch.long), ValueError),
        (torch.zeros(2, 1, 4, 4), torch.tensor([0, 2]), ValueError),  # class 2 of 2
    ],
)
def test_imageset_rejects_bad_input(images, labels, error):
    with pytest.raises(error):
        ImageSet(images, labels, ("a", "b"))


def test_check_images_names_the_argument():
    with pytest.raises(ValueError, match="patterns must have values in"):
        data.check_images(torch.full((1, 1, 2, 2), -0.1), name="patterns")
    with pytest.raises(TypeError, match="images must be a floating-point"):
        data.check_images(np.zeros((1, 1, 2, 2)))


def test_subset_sample_and_where(tiny_set):
    first = tiny_set.subset([5, 1])
    assert torch.equal(first.images[0], tiny_set.images[5]) and first.labels[1] == tiny_set.labels[1]
    a, b = tiny_set.sample(50, seed=7), tiny_set.sample(50, seed=7)
    assert torch.equal(a.images, b.images)
    assert not torch.equal(a.labels, tiny_set.sample(50, seed=8).labels)
    threes = tiny_set.where(tiny_set.labels == 3)
    assert len(threes) == int((tiny_set.labels == 3).sum()) and (threes.labels == 3).all()
    with pytest.raises(ValueError, match="n must lie"):
        tiny_set.sample(len(tiny_set) + 1, seed=0)


def test_shuffled_batches_visit_every_image_once(tiny_set):
    seen = torch.cat([labels for _, labels in tiny_set.batches(64, shuffle=True, generator=torch.Generator().manual_seed(0))])
    assert len(seen) == len(tiny_set)
    assert sorted(seen.tolist()) == sorted(tiny_set.labels.tolist())
    with pytest.raises(ValueError, match="Generator"):
        next(tiny_set.batches(64, shuffle=True))


# --------------------------------------------------------------------------- reliability (issue 15)

import shutil


def copy_root(mnist_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(mnist_root, root)
    return root


def test_a_truncated_file_is_named_as_damaged(mnist_root, tmp_path):
    """Item 10: on main a damaged file was reported as "not found ... expected the files"."""
    root = copy_root(mnist_root, tmp_path)
    path = root / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataNotFoundError) as error:
        data.mnist(train=False, root=root, download=False)
    message = str(error.value)
    assert "t10k-images-idx3-ubyte is damaged" in message
    assert "t10k-labels-idx1-ubyte" in message and "labels-idx1-ubyte is" not in message


def test_with_some_files_present_the_message_names_the_missing_one(mnist_root, tmp_path):
    """Item 10: the message says which file is missing, not the whole expected list as missing."""
    root = copy_root(mnist_root, tmp_path)
    (root / "MNIST" / "raw" / "train-labels-idx1-ubyte").unlink()
    with pytest.raises(DataNotFoundError) as error:
        data.mnist(train=True, root=root, download=False)
    message = str(error.value)
    assert "train-labels-idx1-ubyte is missing" in message
    assert "train-images-idx3-ubyte is" not in message
    with pytest.raises(DataNotFoundError, match="train-labels-idx1-ubyte is missing"):
        data.mnist(train=False, root=root, download=False)  # torchvision needs the files of both splits


class LegacyPayload:
    """Pickled into a legacy ``processed/*.pt`` file; ``weights_only=True`` refuses it."""


def test_a_refused_legacy_file_is_a_data_error(mnist_root, tmp_path):
    """Item 10: on main torchvision's ``weights_only=True`` refusal escaped as a bare UnpicklingError."""
    root = copy_root(mnist_root, tmp_path)
    processed = root / "MNIST" / "processed"
    processed.mkdir()
    for name in ("training.pt", "test.pt"):
        torch.save({"payload": LegacyPayload()}, processed / name)
    with pytest.raises(DataNotFoundError, match="Unpickling|weights_only"):
        data.mnist(train=False, root=root, download=False)
