"""Which training images are poisoned? Spectral signatures and activation clustering.

Both detectors look at a trained, possibly backdoored classifier through its *penultimate
representation* :math:`r(x) \\in \\mathbb{R}^D`, the input of its last linear layer, and
inspect each class of the training set separately (classes are the training labels, which
for poisoned images are the attacker's target). Within the target class, the poisoned
images are a sub-population that the network has learned to map to the class through the
trigger rather than through the class's own features, and that sub-population leaves a
trace in :math:`r`:

- :func:`spectral_signatures` (Tran, Li and Madry 2018): the trace is a direction of large
  variance; each sample's score is its squared projection on the top right singular vector
  of the class's centred representation matrix;
- :func:`activation_clustering` (Chen et al. 2018, arXiv 1811.03728): the trace is a
  separate cluster; the class is reduced to 10 dimensions and split by 2-means, and a small,
  well-separated cluster is flagged.

Both assume the poisoned images are a minority of their class: with half of the class or
more poisoned, the smaller cluster and the far end of the top direction are the clean images,
and both rankings invert (in the book's BadNets MNIST setting, 3,000 poisoned images join
5,923 clean zeros: a third of the class).

:func:`penultimate_features` computes :math:`r` for the book's models, and
:func:`detection_auroc`, :func:`top_scorers` and :func:`removal_quality` score a detector
against the known poisoned indices (AUROC over training images; precision and recall when
a removal budget of the highest scorers is taken out).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from . import _checks
from . import stats

__all__ = [
    "ActivationClusters",
    "RemovalQuality",
    "SpectralSignatures",
    "activation_clustering",
    "detection_auroc",
    "penultimate_features",
    "removal_quality",
    "spectral_signatures",
    "top_scorers",
]


# --------------------------------------------------------------------------- representations


def penultimate_features(model: nn.Module, images: torch.Tensor, *, batch_size: int = 1000) -> torch.Tensor:
    """The input of the model's last linear layer for each image: :math:`r(x)` with :math:`f(x) = W r(x) + b`.

    Every ``nn.Linear`` of the model gets a temporary forward hook; the one whose output *is*
    the model's output (the logits) is the last layer, and its input is the representation.
    This covers :class:`~backdoorlab.models.MnistCNN` and :class:`~backdoorlab.models.MnistMLP`
    (the hidden layer after its ReLU: 128 and 256 values), :class:`~backdoorlab.models.CifarCNN`
    and :class:`~backdoorlab.zoo.ZooCNN` (the flattened, pooled convolution features: 256
    values), and any model whose output comes straight from one ``nn.Linear`` called once per
    forward pass. A model whose output does not (a :class:`~backdoorlab.zoo.ModelStack`,
    which computes with functional calls, or a model that post-processes its logits) is
    refused with a ``ValueError`` rather than cut at a guessed place.

    The model runs in eval mode under ``torch.no_grad`` in batches of ``batch_size``; its mode
    is restored and its hooks removed afterwards, so the model is left as it was.

    Parameters
    ----------
    model : nn.Module
        A classifier taking images in [0, 1] and returning logits (N, K).
    images : torch.Tensor
        (N, C, H, W) images in [0, 1], N >= 1.
    batch_size : int
        Images per forward pass.

    Returns
    -------
    torch.Tensor
        (N, D) float32 representations.

    Raises
    ------
    TypeError
        If ``model`` is not a module or ``images`` not a float tensor.
    ValueError
        If the model has no ``nn.Linear`` producing its output, or on bad ``images``/``batch_size``.

    Examples
    --------
    >>> from backdoorlab.models import MnistCNN
    >>> penultimate_features(MnistCNN(), torch.rand(5, 1, 28, 28)).shape
    torch.Size([5, 128])
    """
    _checks.check_model(model)
    _checks.check_images(images, nonempty=True)
    batch_size = _checks.check_int("batch_size", batch_size, minimum=1)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"model ({type(model).__name__}) has no nn.Linear layer: cannot find its penultimate layer")
    calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def record(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        calls.append((inputs[0], output))

    handles = [m.register_forward_hook(record) for m in linears]
    was_training = [m.training for m in model.modules()]
    model.eval()
    chunks = []
    try:
        with torch.no_grad():
            for chunk in images.split(batch_size):
                calls.clear()
                logits = _checks.check_logits(model(chunk), num_images=len(chunk))
                matches = [inp for inp, out in calls if out is logits]
                if len(matches) != 1:
                    raise ValueError(
                        f"model ({type(model).__name__}) does not return the output of exactly one nn.Linear call "
                        f"({len(matches)} found): cannot find its penultimate layer")
                chunks.append(matches[0].flatten(1).float().clone())
    finally:
        for handle in handles:
            handle.remove()
        for module, flag in zip(model.modules(), was_training):
            module.training = flag
    return torch.cat(chunks)


def _check_features(features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    _checks.check_tensor("features", features, floating=True)
    if features.ndim != 2 or features.shape[0] < 1 or features.shape[1] < 1:
        raise ValueError(f"features must have shape (N, D) with N, D >= 1, got {tuple(features.shape)}")
    _checks.check_finite("features", features)
    labels = _checks.check_labels(labels, length=features.shape[0])
    if labels.min() < 0:
        raise ValueError(f"labels must be non-negative class indices, got minimum {labels.min().item()}")
    return features.detach().double(), labels


# --------------------------------------------------------------------------- spectral signatures


@dataclass(frozen=True, eq=False)
class SpectralSignatures:
    """Outlier scores of spectral signatures and the direction each class was scored along.

    Attributes
    ----------
    scores : torch.Tensor
        float64 (N,): :math:`\\tau_i = ((r_i - \\bar r_{y_i}) \\cdot v_{y_i})^2`, higher meaning
        "more likely poisoned" (comparable within a class).
    classes : tuple of int
        The classes present in ``labels``, in increasing order.
    directions : torch.Tensor
        float64 (len(classes), D): :math:`v_y`, the top right singular vector of each class's
        centred representation matrix (unit norm; its sign is arbitrary).
    singular_values : torch.Tensor
        float64 (len(classes),): the top singular value of each class's centred matrix.
    """

    scores: torch.Tensor
    classes: tuple[int, ...]
    directions: torch.Tensor
    singular_values: torch.Tensor


def spectral_signatures(features: torch.Tensor, labels: torch.Tensor) -> SpectralSignatures:
    """Spectral-signature scores (Tran, Li and Madry 2018, Algorithm 1), class by class.

    For each class :math:`y`, with :math:`R_y` the :math:`n_y \\times D` matrix of the
    representations of the training images labelled :math:`y` and :math:`\\bar r_y` its row
    mean, let :math:`v_y` be the top right singular vector of the centred matrix
    :math:`M_y = R_y - \\mathbf{1} \\bar r_y^\\top`. Each image of the class scores

    .. math:: \\tau_i = \\big( (r_i - \\bar r_y) \\cdot v_y \\big)^2 .

    If a sub-population of the class (the poisoned images) has a mean far from the rest's
    along some direction, that direction dominates the covariance and the sub-population's
    projections on it are large: its members score highest. Algorithm 1 of the paper then
    removes the :math:`1.5\\,\\varepsilon` highest scorers of each class, with :math:`\\varepsilon`
    an upper bound on the number of poisoned images; :func:`top_scorers` with
    ``budget=math.ceil(1.5 * epsilon)`` and ``labels`` does that, and the model is retrained
    without them (not done here).

    Parameters
    ----------
    features : torch.Tensor
        (N, D) floating-point representations (e.g. :func:`penultimate_features`).
    labels : torch.Tensor
        int (N,) training labels (for poisoned images, the label they were given).

    Returns
    -------
    SpectralSignatures

    Raises
    ------
    TypeError, ValueError
        On bad ``features`` or ``labels`` (naming the argument).

    Examples
    --------
    A class of 200 points with 20 shifted by 6 along the first axis: the top direction is
    that axis and the 20 shifted points score highest.

    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(200, 5, generator=g)
    >>> x[:20, 0] += 6.0
    >>> result = spectral_signatures(x, torch.zeros(200, dtype=torch.long))
    >>> round(abs(result.directions[0, 0].item()), 2)
    0.99
    >>> sorted(result.scores.argsort(descending=True)[:20].tolist()) == list(range(20))
    True
    """
    x, labels = _check_features(features, labels)
    classes = tuple(int(c) for c in torch.unique(labels))
    scores = torch.zeros(len(x), dtype=torch.float64)
    directions = torch.zeros(len(classes), x.shape[1], dtype=torch.float64)
    singular_values = torch.zeros(len(classes), dtype=torch.float64)
    for row, c in enumerate(classes):
        members = labels == c
        centred = x[members] - x[members].mean(dim=0)  # (n_y, D)
        _, s, vh = torch.linalg.svd(centred, full_matrices=False)
        directions[row], singular_values[row] = vh[0], s[0]
        scores[members] = (centred @ vh[0]) ** 2
    return SpectralSignatures(scores, classes, directions, singular_values)


# --------------------------------------------------------------------------- activation clustering


@dataclass(frozen=True, eq=False)
class ActivationClusters:
    """Per-class 2-means clusterings of activation clustering, its flags and a continuous score.

    Attributes
    ----------
    scores : torch.Tensor
        float64 (N,): :math:`s_y^+ \\, t_i`, the position of the sample on the axis between the
        two centroids (:math:`t = -1` at the larger cluster's centroid, :math:`+1` at the
        smaller's, 0 on the 2-means boundary) weighted by its class's silhouette (clamped at 0).
    in_smaller : torch.Tensor
        bool (N,): the sample is in the smaller cluster of its class.
    flagged : torch.Tensor
        bool (N,): in the smaller cluster of a flagged class (the samples the rule removes).
    classes : tuple of int
        The classes present in ``labels``, in increasing order.
    relative_size : torch.Tensor
        float64 (len(classes),): size of the smaller cluster over the class's size, in [0, 0.5].
    silhouette : torch.Tensor
        float64 (len(classes),): mean silhouette of the class's 2-means clustering, in [-1, 1].
    flagged_classes : torch.Tensor
        bool (len(classes),): relative size at most ``size_threshold`` and silhouette above
        ``silhouette_threshold``. A class that cannot be split (fewer than 3 images, or all
        alike) has relative size 0 and silhouette 0 and is never flagged.
    """

    scores: torch.Tensor
    in_smaller: torch.Tensor
    flagged: torch.Tensor
    classes: tuple[int, ...]
    relative_size: torch.Tensor
    silhouette: torch.Tensor
    flagged_classes: torch.Tensor


def _reduce(x: np.ndarray, num_dims: int, reduction: str, seed: int) -> np.ndarray:
    """(n, D) -> (n, min(num_dims, D, n)) by PCA (centred SVD) or FastICA."""
    dims = min(num_dims, x.shape[1], x.shape[0])
    centred = x - x.mean(axis=0)
    if reduction == "pca":
        _, _, vh = np.linalg.svd(centred, full_matrices=False)
        return centred @ vh[:dims].T
    from sklearn.decomposition import FastICA

    return FastICA(n_components=dims, random_state=seed, whiten="unit-variance", max_iter=1000).fit_transform(centred)


def _class_seed(seed: int, c: int) -> int:
    return int(np.random.SeedSequence([seed, c]).generate_state(1)[0])


def _cluster_class(z: np.ndarray, *, seed: int, silhouette_sample: int) -> tuple[np.ndarray, np.ndarray, float, float]:
    """2-means of one class's reduced activations: (in_smaller, t, relative size, silhouette)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    n = len(z)
    if n < 3 or np.ptp(z, axis=0).max(initial=0.0) == 0.0:  # nothing to split
        return np.zeros(n, bool), np.zeros(n), 0.0, 0.0
    kmeans = KMeans(n_clusters=2, n_init=10, random_state=seed).fit(z)
    assignment = kmeans.labels_
    counts = np.bincount(assignment, minlength=2)
    if counts.min() == 0:
        return np.zeros(n, bool), np.zeros(n), 0.0, 0.0
    small = int(np.argmin(counts))
    in_smaller = assignment == small
    mu_small, mu_large = kmeans.cluster_centers_[small], kmeans.cluster_centers_[1 - small]
    axis = mu_small - mu_large
    # ||z - mu_l||^2 - ||z - mu_s||^2 = 2 (z - midpoint) . axis; divided by ||axis||^2: -1 at mu_l, +1 at mu_s
    t = 2.0 * (z - (mu_small + mu_large) / 2) @ axis / float(axis @ axis)
    sample = None if n <= silhouette_sample else silhouette_sample
    silhouette = float(silhouette_score(z, assignment, sample_size=sample, random_state=seed))
    return in_smaller, t, float(counts.min() / n), silhouette


def activation_clustering(
    features: torch.Tensor,
    labels: torch.Tensor,
    *,
    num_dims: int = 10,
    reduction: str = "pca",
    size_threshold: float = 0.35,
    silhouette_threshold: float = 0.10,
    silhouette_sample: int = 2000,
    seed: int = 0,
) -> ActivationClusters:
    """Activation clustering (Chen et al. 2018), class by class, with a continuous score.

    For each class :math:`y`, the centred activations of its training images are reduced to
    ``num_dims`` dimensions and split into two clusters by k-means (k = 2, scikit-learn,
    10 seeded restarts). With :math:`n_s \\le n_l` the cluster sizes, the class is *flagged*
    when the smaller cluster is small and the split is clean:

    .. math:: \\frac{n_s}{n_s + n_l} \\le \\text{size\\_threshold}
              \\quad\\text{and}\\quad s_y > \\text{silhouette\\_threshold},

    where :math:`s_y` is the mean silhouette of the clustering (on a seeded subsample of
    ``silhouette_sample`` points when the class is larger). The paper proposes both criteria
    (relative size against the largest poisoned share one expects, and the silhouette score);
    the defaults 0.35 and 0.10 are those of the IBM Adversarial Robustness Toolbox, the
    authors' group's implementation, fixed here before looking at any data. A single blob
    cut in two by k-means has a relative size near 0.5 and is not flagged.

    The flags are class-level decisions; for an ROC curve every sample also gets a score.
    With :math:`\\mu_s, \\mu_l` the centroids of the smaller and the larger cluster and
    :math:`z_i` the reduced activation,

    .. math:: t_i = \\frac{2\\,(z_i - \\tfrac12(\\mu_s + \\mu_l)) \\cdot (\\mu_s - \\mu_l)}
                         {\\lVert \\mu_s - \\mu_l \\rVert^2}, \\qquad
              \\text{score}_i = \\max(s_y, 0)\\, t_i .

    :math:`t_i` is k-means' own decision variable (positive exactly on the smaller cluster,
    as :math:`\\lVert z - \\mu_l \\rVert^2 - \\lVert z - \\mu_s \\rVert^2 = 2 (z - \\tfrac12(\\mu_s + \\mu_l))
    \\cdot (\\mu_s - \\mu_l)`), rescaled so that the centroids sit at :math:`\\pm 1` in every
    class; within a class it ranks samples by how far they lie towards the smaller cluster.
    The silhouette weight makes classes comparable: a class whose clusters are well separated
    ranks its smaller cluster above a class that k-means merely cut in half.

    The paper reduces with ICA; PCA is the default here because it is a deterministic SVD with
    no iterative solver to converge, and the top principal components keep the direction
    that separates a shifted sub-population (the same direction spectral signatures finds).
    ``reduction="ica"`` runs scikit-learn's FastICA (seeded) instead.

    Parameters
    ----------
    features : torch.Tensor
        (N, D) floating-point representations (e.g. :func:`penultimate_features`).
    labels : torch.Tensor
        int (N,) training labels.
    num_dims : int
        Dimensions kept (at most D and the class size).
    reduction : {"pca", "ica"}
    size_threshold : float
        In [0, 0.5].
    silhouette_threshold : float
        In [-1, 1].
    silhouette_sample : int
        Largest number of points the silhouette is computed on (it costs :math:`O(n^2)`).
    seed : int
        Seeds k-means, ICA and the silhouette subsample (class :math:`y` uses a seed derived
        from ``seed`` and :math:`y`).

    Returns
    -------
    ActivationClusters

    Raises
    ------
    TypeError, ValueError
        On bad ``features``, ``labels`` or an option (naming the argument).

    Examples
    --------
    Class 0 holds a blob and a small far cluster; class 1 a single blob.

    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(400, 20, generator=g)
    >>> x[:30, 3] += 8.0
    >>> labels = (torch.arange(400) >= 200).long()
    >>> result = activation_clustering(x, labels, seed=0)
    >>> result.flagged_classes.tolist()
    [True, False]
    >>> result.flagged.nonzero().flatten().tolist() == list(range(30))
    True
    """
    x, labels = _check_features(features, labels)
    num_dims = _checks.check_int("num_dims", num_dims, minimum=1)
    if reduction not in ("pca", "ica"):
        raise ValueError(f"reduction must be 'pca' or 'ica', got {reduction!r}")
    size_threshold = _checks.check_real("size_threshold", size_threshold, minimum=0.0, maximum=0.5)
    silhouette_threshold = _checks.check_real("silhouette_threshold", silhouette_threshold, minimum=-1.0, maximum=1.0)
    silhouette_sample = _checks.check_int("silhouette_sample", silhouette_sample, minimum=3)
    seed = _checks.check_seed(seed)
    classes = tuple(int(c) for c in torch.unique(labels))
    n = len(x)
    scores, in_smaller = np.zeros(n), np.zeros(n, bool)
    relative_size, silhouette = np.zeros(len(classes)), np.zeros(len(classes))
    data, label_array = x.numpy(), labels.numpy()
    for row, c in enumerate(classes):
        members = label_array == c
        class_seed = _class_seed(seed, c)
        z = _reduce(data[members], num_dims, reduction, class_seed)
        small, t, relative_size[row], silhouette[row] = _cluster_class(
            z, seed=class_seed, silhouette_sample=silhouette_sample)
        in_smaller[members] = small
        scores[members] = max(silhouette[row], 0.0) * t
    split = np.array([in_smaller[label_array == c].any() for c in classes], dtype=bool)  # False: nothing to split
    flagged_classes = split & (relative_size <= size_threshold) & (silhouette > silhouette_threshold)
    flagged = in_smaller & np.isin(label_array, np.array(classes)[flagged_classes])
    return ActivationClusters(
        torch.from_numpy(scores), torch.from_numpy(in_smaller), torch.from_numpy(flagged), classes,
        torch.from_numpy(relative_size), torch.from_numpy(silhouette), torch.from_numpy(flagged_classes))


# --------------------------------------------------------------------------- evaluation


def _check_scores(scores: torch.Tensor, name: str = "scores") -> torch.Tensor:
    _checks.check_tensor(name, scores, floating=True)
    if scores.ndim != 1 or scores.numel() == 0:
        raise ValueError(f"{name} must have shape (N,) with N >= 1, got {tuple(scores.shape)}")
    _checks.check_finite(name, scores)
    return scores


def _check_mask(mask: torch.Tensor, name: str, length: int) -> torch.Tensor:
    _checks.check_tensor(name, mask)
    if mask.dtype != torch.bool:
        raise TypeError(f"{name} must be a bool tensor, got {mask.dtype}")
    if mask.shape != (length,):
        raise ValueError(f"{name} must have shape ({length},), got {tuple(mask.shape)}")
    return mask


def detection_auroc(scores: torch.Tensor, poisoned: torch.Tensor) -> float:
    """AUROC of per-image scores against the truth (poisoned images are the positives).

    .. math:: \\text{AUROC} = P(\\text{score}_i > \\text{score}_j) + \\tfrac12 P(\\text{score}_i = \\text{score}_j),
              \\quad i \\text{ poisoned}, j \\text{ clean},

    computed by :func:`backdoorlab.stats.auc`. Restrict both arguments to a class (e.g.
    ``scores[labels == target]``) for the AUROC within the target class.

    Parameters
    ----------
    scores : torch.Tensor
        (N,) floating-point scores, higher meaning "more likely poisoned".
    poisoned : torch.Tensor
        bool (N,) with both values present.

    Returns
    -------
    float
        In [0, 1]; 0.5 is chance.

    Examples
    --------
    >>> detection_auroc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([False, False, True, True]))
    0.75
    """
    scores = _check_scores(scores)
    poisoned = _check_mask(poisoned, "poisoned", len(scores))
    if poisoned.all() or not poisoned.any():
        raise ValueError("poisoned must mark at least one poisoned and one clean image")
    return stats.auc(poisoned.long().numpy(), scores.double().numpy())


def top_scorers(scores: torch.Tensor, *, budget: int, labels: torch.Tensor | None = None) -> torch.Tensor:
    """The ``budget`` highest-scoring images, overall or (given ``labels``) within every class.

    With ``labels`` this is the removal step of spectral signatures' Algorithm 1 (``budget``
    :math:`= \\lceil 1.5\\,\\varepsilon \\rceil` per class); a class with fewer images loses all
    of them. Ties are broken by position (the earlier image first), so the set is
    deterministic.

    Parameters
    ----------
    scores : torch.Tensor
        (N,) floating-point scores.
    budget : int
        Images removed (per class with ``labels``), at least 1.
    labels : torch.Tensor, optional
        int (N,) classes.

    Returns
    -------
    torch.Tensor
        bool (N,): True for a removed image.

    Examples
    --------
    >>> top_scorers(torch.tensor([0.5, 0.9, 0.1, 0.7]), budget=2).tolist()
    [False, True, False, True]
    >>> top_scorers(torch.tensor([0.5, 0.9, 0.1, 0.7]), budget=1, labels=torch.tensor([0, 0, 1, 1])).tolist()
    [False, True, False, True]
    """
    scores = _check_scores(scores)
    budget = _checks.check_int("budget", budget, minimum=1)
    if labels is None:
        groups = [torch.arange(len(scores))]
    else:
        labels = _checks.check_labels(labels, length=len(scores))
        groups = [torch.nonzero(labels == c).flatten() for c in torch.unique(labels)]
    removed = torch.zeros(len(scores), dtype=torch.bool)
    for members in groups:
        order = torch.sort(scores[members], descending=True, stable=True).indices
        removed[members[order[:budget]]] = True
    return removed


@dataclass(frozen=True)
class RemovalQuality:
    """How well a removed set matches the poisoned images.

    Attributes
    ----------
    precision : float
        Poisoned share of the removed images (``num_caught / num_removed``).
    recall : float
        Removed share of the poisoned images (``num_caught / num_poisoned``).
    num_removed, num_poisoned, num_caught : int
    """

    precision: float
    recall: float
    num_removed: int
    num_poisoned: int
    num_caught: int


def removal_quality(removed: torch.Tensor, poisoned: torch.Tensor) -> RemovalQuality:
    """Precision and recall of a removal set against the poisoned images.

    .. math:: \\text{precision} = \\frac{|R \\cap P|}{|R|}, \\qquad \\text{recall} = \\frac{|R \\cap P|}{|P|}.

    Parameters
    ----------
    removed : torch.Tensor
        bool (N,), at least one True (e.g. from :func:`top_scorers`).
    poisoned : torch.Tensor
        bool (N,), at least one True.

    Returns
    -------
    RemovalQuality

    Examples
    --------
    >>> q = removal_quality(torch.tensor([True, True, False, True]), torch.tensor([True, False, False, True]))
    >>> round(q.precision, 4), q.recall, q.num_caught
    (0.6667, 1.0, 2)
    """
    _checks.check_tensor("removed", removed)
    if removed.ndim != 1:
        raise ValueError(f"removed must have shape (N,), got {tuple(removed.shape)}")
    removed = _check_mask(removed, "removed", len(removed))
    poisoned = _check_mask(poisoned, "poisoned", len(removed))
    if not removed.any():
        raise ValueError("removed must mark at least one image")
    if not poisoned.any():
        raise ValueError("poisoned must mark at least one image")
    caught, num_removed, num_poisoned = int((removed & poisoned).sum()), int(removed.sum()), int(poisoned.sum())
    return RemovalQuality(caught / num_removed, caught / num_poisoned, num_removed, num_poisoned, caught)
