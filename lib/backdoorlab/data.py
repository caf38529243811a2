"""Image datasets held in memory as tensors.

Every dataset in the book is an :class:`ImageSet`: float32 images in [0, 1] of shape
(N, C, H, W), int64 labels of shape (N,), and the class names. The loaders go through
``torchvision.datasets`` so that a machine with a network downloads (and checksums) the
original files; a machine without one reads them from the data root.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import _checks

__all__ = [
    "DataNotFoundError",
    "ImageSet",
    "check_images",
    "cifar10",
    "data_root",
    "mnist",
]

MNIST_CLASSES = tuple(str(digit) for digit in range(10))
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)
_MNIST_FILES = {
    True: ("MNIST/raw/train-images-idx3-ubyte", "MNIST/raw/train-labels-idx1-ubyte"),
    False: ("MNIST/raw/t10k-images-idx3-ubyte", "MNIST/raw/t10k-labels-idx1-ubyte"),
}
_CIFAR10_FILES = {
    True: tuple(f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)),
    False: ("cifar-10-batches-py/test_batch",),
}


class DataNotFoundError(FileNotFoundError):
    """Raised when a dataset is neither on disk nor downloadable."""


def check_images(images: torch.Tensor, *, name: str = "images") -> None:
    """Check that ``images`` is a float tensor of shape (N, C, H, W) with values in [0, 1].

    Parameters
    ----------
    images : torch.Tensor
        The tensor to check.
    name : str
        The argument name used in the error message.

    Raises
    ------
    TypeError
        If ``images`` is not a floating-point tensor.
    ValueError
        If it is not 4-dimensional or has values outside [0, 1] (or NaN).

    Examples
    --------
    >>> check_images(torch.zeros(2, 1, 4, 4))
    """
    _checks.check_images(images, name=name)


@dataclass(frozen=True, eq=False)
class ImageSet:
    """A labelled image dataset held in memory.

    Parameters
    ----------
    images : torch.Tensor
        float32, shape (N, C, H, W), values in [0, 1].
    labels : torch.Tensor
        int64, shape (N,), values in ``range(len(classes))``.
    classes : tuple of str
        Class names; ``classes[k]`` names label ``k``.

    Examples
    --------
    >>> data = ImageSet(torch.zeros(4, 1, 8, 8), torch.tensor([0, 1, 0, 1]), ("a", "b"))
    >>> len(data), data.num_classes, data.image_shape
    (4, 2, (1, 8, 8))
    >>> len(data.subset([0, 2]))
    2
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        check_images(self.images)
        if self.images.dtype != torch.float32:
            raise TypeError(f"images must be float32, got {self.images.dtype}")
        if not isinstance(self.labels, torch.Tensor) or self.labels.dtype != torch.int64:
            raise TypeError("labels must be an int64 torch.Tensor")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"labels must have shape ({self.images.shape[0]},), "
                f"got {tuple(self.labels.shape)}"
            )
        if isinstance(self.classes, str) or not all(isinstance(c, str) for c in self.classes):
            raise TypeError(f"classes must be a sequence of str, got {self.classes!r}")
        object.__setattr__(self, "classes", tuple(self.classes))
        if len(self.labels) and not (
            self.labels.min() >= 0 and self.labels.max() < len(self.classes)
        ):
            raise ValueError(
                f"labels must lie in [0, {len(self.classes) - 1}], got range "
                f"[{self.labels.min().item()}, {self.labels.max().item()}]"
            )

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """Shape (C, H, W) of one image."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def subset(self, indices: Sequence[int] | torch.Tensor) -> ImageSet:
        """The images at ``indices`` (a copy), in that order."""
        index = torch.as_tensor(indices)
        if index.numel() == 0:
            index = index.to(torch.long)  # torch.as_tensor([]) is float32
        if index.is_floating_point() or index.dtype == torch.bool or index.ndim != 1:
            raise TypeError(f"indices must be a 1-D sequence of ints, got {index.dtype} of shape {tuple(index.shape)}")
        if index.numel() and not (-len(self) <= index.min() and index.max() < len(self)):
            raise ValueError(f"indices must lie in [{-len(self)}, {len(self) - 1}], got range "
                             f"[{index.min().item()}, {index.max().item()}]")
        index = index.to(torch.long)
        return ImageSet(self.images[index], self.labels[index], self.classes)

    def sample(self, n: int, *, seed: int) -> ImageSet:
        """``n`` images drawn without replacement, in a seeded random order.

        Examples
        --------
        >>> data = ImageSet(torch.zeros(10, 1, 2, 2), torch.arange(10) % 2, ("a", "b"))
        >>> len(data.sample(3, seed=0))
        3
        """
        _checks.check_int("n", n, minimum=0, maximum=len(self))
        seed = _checks.check_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        return self.subset(torch.randperm(len(self), generator=generator)[:n])

    def where(self, mask: torch.Tensor) -> ImageSet:
        """The images where the boolean ``mask`` of shape (N,) is true."""
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.shape != self.labels.shape:
            raise ValueError(f"mask must be a bool tensor of shape ({len(self)},)")
        return self.subset(mask.nonzero().flatten())

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Iterate over (images, labels) mini-batches, the last one possibly smaller.

        With ``shuffle=True`` the order is drawn from ``generator`` (required, so that the
        order is reproducible).
        """
        _checks.check_int("batch_size", batch_size, minimum=1)
        if shuffle:
            if generator is None:
                raise ValueError("shuffle=True needs a torch.Generator for a reproducible order")
            order = torch.randperm(len(self), generator=generator)
        else:
            order = torch.arange(len(self))
        for start in range(0, len(self), batch_size):
            index = order[start:start + batch_size]
            yield self.images[index], self.labels[index]


def data_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The folder datasets are read from (and downloaded to).

    ``root`` if given, else ``$BACKDOORLAB_DATA``, else ``~/.cache/backdoorlab/data``.
    """
    if root is not None:
        if not isinstance(root, (str, os.PathLike)):
            raise TypeError(f"root must be a path (str or os.PathLike) or None, got {type(root).__name__}")
        return Path(root).expanduser()
    from_env = os.environ.get("BACKDOORLAB_DATA")
    if from_env:
        return Path(from_env).expanduser()
    return Path.home() / ".cache" / "backdoorlab" / "data"


def _idx_problem(path: Path) -> str | None:
    """Why the IDX file at ``path`` cannot be read (missing, unreadable, truncated), or None."""
    if not path.exists():
        return "missing"
    try:
        with path.open("rb") as handle:
            header = handle.read(4)
            if len(header) < 4 or header[:2] != b"\x00\x00":
                return "damaged (not an IDX file)"
            dims = np.frombuffer(handle.read(4 * header[3]), dtype=">u4")
        if len(dims) != header[3]:
            return "damaged (truncated header)"
        expected = 4 + 4 * header[3] + int(np.prod(dims, dtype=np.int64))
        size = path.stat().st_size
    except PermissionError:
        return "unreadable (permission denied)"
    except OSError as error:
        return f"unreadable ({error})"
    if size != expected:
        return f"damaged (size {size} bytes, the header implies {expected})"
    return None


def _file_problems(root: Path, expected: Sequence[str]) -> list[str]:
    problems = []
    for name in expected:
        path = root / name
        if name.endswith("-ubyte"):
            problem = _idx_problem(path)
        elif not path.exists():
            problem = "missing"
        else:
            problem = None
        if problem is not None:
            problems.append(f"{name} is {problem}")
    return problems


def _load(dataset_class, root: Path, train: bool, download: bool, expected: Sequence[str], name: str):
    """Construct a torchvision dataset without a download first, then with one if allowed."""
    try:
        return dataset_class(str(root), train=train, download=False)
    except Exception as missing:  # RuntimeError, or a legacy file's UnpicklingError, ValueError, ...
        cause: BaseException = missing
    if download:
        try:
            return dataset_class(str(root), train=train, download=True)
        except Exception as failed:  # network errors come in many types
            cause = failed
    files = ", ".join(expected)
    problems = _file_problems(root, expected)
    found = (f"Of the files {files} expected under that root, " + "; ".join(problems) + "."
             if problems else f"The files {files} are present under that root but could not be read.")
    raise DataNotFoundError(
        f"{name} could not be loaded from the data root {root}"
        f"{' nor downloaded' if download else ' (download=False)'} "
        f"({type(cause).__name__}: {cause}). {found} "
        f"Set the environment variable BACKDOORLAB_DATA to the folder that holds them."
    ) from cause


def mnist(
    *,
    train: bool = True,
    root: str | os.PathLike[str] | None = None,
    download: bool = True,
) -> ImageSet:
    """The MNIST handwritten digits (LeCun et al. 1998) as an :class:`ImageSet`.

    Parameters
    ----------
    train : bool
        The 60,000 training images if true, else the 10,000 test images.
    root : path, optional
        Data root; see :func:`data_root`. Files are expected in torchvision's layout,
        ``MNIST/raw/*-idx?-ubyte``.
    download : bool
        Whether to try torchvision's download when the files are missing.

    Returns
    -------
    ImageSet
        Images of shape (N, 1, 28, 28) in [0, 1]; classes ``"0"`` to ``"9"``.

    Raises
    ------
    DataNotFoundError
        If the files are missing and cannot be downloaded; the message names the root,
        the expected files and the variable ``BACKDOORLAB_DATA``.

    Examples
    --------
    >>> test = mnist(train=False)  # doctest: +SKIP
    >>> test.images.shape  # doctest: +SKIP
    torch.Size([10000, 1, 28, 28])
    """
    from torchvision.datasets import MNIST

    base = data_root(root)
    # torchvision checks the files of both splits before it loads either
    dataset = _load(MNIST, base, train, download, _MNIST_FILES[train] + _MNIST_FILES[not train], "MNIST")
    images = dataset.data.to(torch.float32).div_(255.0).unsqueeze(1)
    return ImageSet(images, dataset.targets.to(torch.int64), MNIST_CLASSES)


def cifar10(
    *,
    train: bool = True,
    root: str | os.PathLike[str] | None = None,
    download: bool = True,
) -> ImageSet:
    """CIFAR-10 (Krizhevsky 2009) as an :class:`ImageSet`.

    Parameters
    ----------
    train : bool
        The 50,000 training images if true, else the 10,000 test images.
    root : path, optional
        Data root; see :func:`data_root`. Files are expected in the CIFAR-10 python
        format, ``cifar-10-batches-py/``.
    download : bool
        Whether to try torchvision's download when the files are missing.

    Returns
    -------
    ImageSet
        Images of shape (N, 3, 32, 32) in [0, 1], with the ten CIFAR-10 class names.

    Raises
    ------
    DataNotFoundError
        If the files are missing and cannot be downloaded.

    Examples
    --------
    >>> train = cifar10()  # doctest: +SKIP
    >>> train.images.shape  # doctest: +SKIP
    torch.Size([50000, 3, 32, 32])
    """
    from torchvision.datasets import CIFAR10

    base = data_root(root)
    dataset = _load(CIFAR10, base, train, download, _CIFAR10_FILES[train], "CIFAR-10")
    pixels = torch.from_numpy(np.ascontiguousarray(dataset.data))  # (N, H, W, C) uint8
    images = pixels.permute(0, 3, 1, 2).to(torch.float32).div_(255.0).contiguous()
    return ImageSet(images, torch.as_tensor(dataset.targets, dtype=torch.int64), CIFAR10_CLASSES)
