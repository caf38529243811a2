"""Tests of backdoorlab.uap: DeepFool, the l_p projection, Algorithm 1, the SGD variant.

The models are tiny and defined here: an affine classifier (DeepFool's closed form) and a small
CNN trained for a few steps on synthetic 8x8 images with three classes, in float64.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from backdoorlab import uap
from backdoorlab.uap import (
    STEP_MARGIN,
    checkerboard,
    deepfool,
    fooling_rate,
    project_lp,
    random_perturbation,
    sgd_universal_perturbation,
    targeted_success_rate,
    universal_perturbation,
)

NORMS = [2, math.inf]
TOL = 1e-9  # float64 rounding allowance on norms


def lp_norm(v: torch.Tensor, p: float) -> torch.Tensor:
    flat = v.flatten(start_dim=v.ndim - 3)
    return flat.abs().amax(dim=-1) if p == math.inf else flat.norm(dim=-1)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Run on one thread: these models are tiny, and on 2 shared cores a second thread made
    the per-image loops 20 to 40 times slower (threads waiting on each other)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def synthetic_images(n: int, *, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n images (1, 8, 8) in [0, 1], float64: class c has a bright bar on rows 2c+1, 2c+2."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    images = 0.25 * torch.rand(n, 1, 8, 8, generator=g, dtype=torch.float64)
    for c in range(3):
        images[labels == c, :, 2 * c + 1 : 2 * c + 3, 1:7] += 0.7
    return images.clamp(0, 1), labels


class TinyCNN(nn.Module):
    def __init__(self, *, seed: int) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Linear(4 * 4 * 4, 3)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for param in self.parameters():
                param.copy_(0.3 * torch.randn(param.shape, generator=g))
        self.double()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images - 0.3).flatten(1))


@pytest.fixture(scope="module")
def cnn() -> TinyCNN:
    """A TinyCNN trained with 40 Adam steps: clean accuracy near 1 on its data."""
    model = TinyCNN(seed=0)
    images, labels = synthetic_images(90, seed=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(40):
        loss = nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    return model


@pytest.fixture(scope="module")
def data() -> torch.Tensor:
    return synthetic_images(60, seed=2)[0]


def affine_model(num_features: int, num_classes: int, *, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(num_features, num_classes)).double()
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(num_classes, num_features, generator=g,
                                          dtype=torch.float64))
        model[1].bias.copy_(torch.randn(num_classes, generator=g, dtype=torch.float64))
    return model


# --------------------------------------------------------------------------- projection


@pytest.mark.parametrize("p", NORMS)
def test_projection_lands_in_ball_and_is_idempotent(p):
    g = torch.Generator().manual_seed(0)
    v = 3 * torch.randn(5, 2, 4, 4, generator=g, dtype=torch.float64)
    xi = 0.5
    projected = project_lp(v, xi, p)
    assert torch.all(lp_norm(projected, p) <= xi + TOL)
    assert torch.allclose(project_lp(projected, xi, p), projected, rtol=0, atol=1e-12)


def test_projection_closed_forms():
    g = torch.Generator().manual_seed(1)
    v = torch.randn(3, 1, 5, 5, generator=g, dtype=torch.float64)
    xi = 0.7
    norms = v.flatten(1).norm(dim=1)
    expected_l2 = v * torch.minimum(torch.ones(3, dtype=v.dtype), xi / norms).reshape(3, 1, 1, 1)
    assert torch.allclose(project_lp(v, xi, 2), expected_l2, rtol=0, atol=1e-12)
    expected_inf = v.sign() * torch.minimum(v.abs(), torch.tensor(xi, dtype=v.dtype))
    assert torch.equal(project_lp(v, xi, math.inf), expected_inf)


@pytest.mark.parametrize("p", NORMS)
def test_projection_is_identity_inside_ball(p):
    g = torch.Generator().manual_seed(2)
    v = torch.randn(2, 3, 3, generator=g, dtype=torch.float64)  # one (C, H, W) perturbation
    xi = float(lp_norm(v, p)) * 1.01
    assert torch.equal(project_lp(v, xi, p), v)
    assert torch.equal(project_lp(torch.zeros_like(v), 0.1, p), torch.zeros_like(v))


def test_projection_is_per_perturbation_and_does_not_mutate():
    g = torch.Generator().manual_seed(3)
    scales = torch.tensor([0.1, 1, 5, 20], dtype=torch.float64).reshape(4, 1, 1, 1)
    v = torch.randn(4, 1, 3, 3, generator=g, dtype=torch.float64) * scales
    before = v.clone()
    stacked = project_lp(v, 1.0, 2)
    assert torch.equal(v, before)
    for k in range(4):
        assert torch.allclose(stacked[k], project_lp(v[k], 1.0, 2), rtol=0, atol=1e-15)
    assert torch.equal(stacked[0], v[0])  # norm about 0.3 < 1: untouched


def test_projection_errors():
    v = torch.zeros(1, 2, 2)
    with pytest.raises(ValueError, match="xi"):
        project_lp(v, 0.0, 2)
    with pytest.raises(ValueError, match="xi"):
        project_lp(v, -1.0, math.inf)
    with pytest.raises(ValueError, match="p must be 2 or math.inf, got 1"):
        project_lp(v, 1.0, 1)
    with pytest.raises(TypeError, match="p must be"):
        project_lp(v, 1.0, "inf")
    with pytest.raises(ValueError, match="shape"):
        project_lp(torch.zeros(4), 1.0, 2)
    with pytest.raises(TypeError, match="v must be"):
        project_lp(torch.zeros(1, 2, 2, dtype=torch.long), 1.0, 2)


# --------------------------------------------------------------------------- DeepFool


@pytest.mark.parametrize("overshoot", [0.0, 0.02, 0.5])
def test_deepfool_on_affine_classifier_is_one_closed_form_step(overshoot):
    # small weights keep x + r inside [0, 1], so clamping does not act
    model = affine_model(16, 5, seed=4)
    with torch.no_grad():
        model[1].weight.mul_(4.0)
    images = 0.4 + 0.2 * torch.rand(12, 1, 4, 4, generator=torch.Generator().manual_seed(5),
                                     dtype=torch.float64)
    weight, bias = model[1].weight.detach(), model[1].bias.detach()
    logits = images.flatten(1) @ weight.T + bias
    labels = logits.argmax(dim=1)
    expected = torch.empty_like(images)
    for n in range(images.shape[0]):
        w = weight - weight[labels[n]]  # rows w_k = grad f_k - grad f_label
        f = logits[n] - logits[n, labels[n]]
        distance = f.abs() / w.norm(dim=1)
        distance[labels[n]] = math.inf
        nearest = int(distance.argmin())
        unit = w[nearest] / w[nearest].norm()
        expected[n] = ((1 + overshoot) * (distance[nearest] + STEP_MARGIN) * unit).reshape(1, 4, 4)
    assert 0 <= float((images + expected).min()) and float((images + expected).max()) <= 1
    for clamp in (False, True):
        result = deepfool(model, images, overshoot=overshoot, clamp=clamp)
        assert torch.equal(result.iterations, torch.ones(12, dtype=torch.long))
        assert bool(result.converged.all())
        assert torch.equal(result.original_labels, labels)
        assert torch.allclose(result.perturbations, expected, rtol=0, atol=1e-12)
        new_logits = model(images + result.perturbations)
        assert torch.equal(result.new_labels, new_logits.argmax(dim=1))
        assert bool((result.new_labels != labels).all())


def test_deepfool_minimal_norm_is_distance_to_nearest_hyperplane():
    # two classes: f_1 - f_0 = a . x + b, distance |a . x + b| / ||a||
    model = affine_model(4, 2, seed=6)
    images = torch.full((1, 1, 2, 2), 0.5, dtype=torch.float64)
    a = (model[1].weight[1] - model[1].weight[0]).detach()
    b = (model[1].bias[1] - model[1].bias[0]).detach()
    distance = float((a @ images.flatten() + b).abs() / a.norm())
    result = deepfool(model, images, overshoot=0.02, clamp=False)
    expected = 1.02 * (distance + STEP_MARGIN)
    assert float(result.perturbations.norm()) == pytest.approx(expected, rel=1e-12)


def test_batched_deepfool_equals_one_image_at_a_time(cnn, data):
    images = data[:10]
    batched = deepfool(cnn, images, max_iter=20)
    chunked = deepfool(cnn, images, max_iter=20, batch_size=3)
    for n in range(images.shape[0]):
        single = deepfool(cnn, images[n : n + 1], max_iter=20)  # the one-image gradient path
        assert torch.allclose(batched.perturbations[n], single.perturbations[0], rtol=0, atol=1e-10)
        assert batched.iterations[n] == single.iterations[0]
        assert batched.new_labels[n] == single.new_labels[0]
        assert batched.converged[n] == single.converged[0]
    for field in ("perturbations", "iterations", "converged", "original_labels", "new_labels"):
        assert torch.allclose(getattr(chunked, field).double(), getattr(batched, field).double(),
                              rtol=0, atol=1e-10)


@pytest.mark.parametrize("clamp", [True, False])
def test_deepfool_flips_labels_of_a_cnn(cnn, data, clamp):
    images = data[:20]
    result = deepfool(cnn, images, max_iter=30, clamp=clamp)
    assert bool(result.converged.all())
    assert torch.equal(result.original_labels, cnn(images).argmax(dim=1))
    perturbed = images + result.perturbations
    assert torch.equal(cnn(perturbed).argmax(dim=1), result.new_labels)
    assert bool((result.new_labels != result.original_labels).all())
    assert bool((result.iterations >= 1).all()) and bool((result.iterations <= 30).all())
    if clamp:
        assert 0 <= float(perturbed.min()) and float(perturbed.max()) <= 1


def test_deepfool_stops_at_max_iter_when_a_class_is_flat():
    # the label can never change: every other logit has zero gradient and stays below
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2)).double()
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.copy_(torch.tensor([1.0, 0.0]))
    images = torch.full((2, 1, 2, 2), 0.5, dtype=torch.float64)
    result = deepfool(model, images, max_iter=3)
    assert torch.equal(result.iterations, torch.tensor([3, 3]))
    assert not bool(result.converged.any())
    assert torch.equal(result.perturbations, torch.zeros_like(images))


def test_deepfool_num_classes_limits_candidates():
    # the nearest boundary is with class 2, which has the lowest logit; with num_classes=2 the
    # only candidate is the runner-up class 1
    model = nn.Sequential(nn.Flatten(), nn.Linear(2, 3)).double()
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 10.0]]))
        model[1].bias.copy_(torch.tensor([0.0, 0.0, -1.2]))
    images = torch.tensor([[[[0.5, 0.05]]]], dtype=torch.float64)  # logits 0.5, 0, -0.7
    assert deepfool(model, images, clamp=False).new_labels.item() == 2
    assert deepfool(model, images, num_classes=2, clamp=False).new_labels.item() == 1
    with pytest.raises(ValueError, match="num_classes"):
        deepfool(model, images, num_classes=4)


# --------------------------------------------------------------------------- fooling rate


def test_fooling_rate_against_hand_count():
    # logits (2 x_0, 1 - x_1) on 1x1x2 images; v lowers pixel 1 by 0.5, clamped at 0
    model = nn.Sequential(nn.Flatten(), nn.Linear(2, 2))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[2.0, 0.0], [0.0, -1.0]]))
        model[1].bias.copy_(torch.tensor([0.0, 1.0]))
    images = torch.tensor([
        [0.60, 0.10],  # clean (1.2, 0.9): 0; x_1 -> 0 (clamped): (1.2, 1.0): 0, not fooled
        [0.30, 0.70],  # clean (0.6, 0.3): 0; x_1 -> 0.2: (0.6, 0.8): 1, fooled
        [0.20, 0.20],  # clean (0.4, 0.8): 1; x_1 -> 0 (clamped): (0.4, 1.0): 1, not fooled
        [0.45, 0.90],  # clean (0.9, 0.1): 0; x_1 -> 0.4: (0.9, 0.6): 0, not fooled
        [0.40, 0.50],  # clean (0.8, 0.5): 0; x_1 -> 0: (0.8, 1.0): 1, fooled
    ]).reshape(5, 1, 1, 2)
    v = torch.tensor([[[0.0, -0.5]]])
    assert fooling_rate(model, images, v) == pytest.approx(2 / 5)
    assert fooling_rate(model, images, v, batch_size=2) == pytest.approx(2 / 5)
    # without clamping the first image would be (1.2, 1.4) and fooled: 3 / 5
    with torch.no_grad():
        unclamped = (model(images + v).argmax(1) != model(images).argmax(1)).double().mean()
    assert float(unclamped) == pytest.approx(3 / 5)
    assert fooling_rate(model, images, torch.zeros(1, 1, 2)) == 0.0
    # the same count from given clean labels; other labels count against those labels
    clean = torch.tensor([0, 0, 1, 0, 0])
    assert fooling_rate(model, images, v, clean_labels=clean) == pytest.approx(2 / 5)
    # perturbed predictions are (0, 1, 1, 0, 1): against all-ones labels, 2 of 5 differ
    assert fooling_rate(model, images, v, clean_labels=torch.ones(5, dtype=torch.long)) == pytest.approx(2 / 5)
    assert fooling_rate(model, images, v, clean_labels=torch.zeros(5, dtype=torch.long)) == pytest.approx(3 / 5)


def test_fooling_rate_with_cached_clean_labels_equals_the_uncached_call(cnn, data):
    # the rate is (1/N) sum 1[k(clamp(x + v)) != k(x)]: given k(x), it must not change
    from backdoorlab.train import predict
    clean = predict(cnn, data)
    for seed in range(4):
        v = random_perturbation(tuple(data.shape[1:]), xi=0.5, p=math.inf, seed=seed, dtype=data.dtype)
        assert fooling_rate(cnn, data, v, clean_labels=clean) == fooling_rate(cnn, data, v)
        assert fooling_rate(cnn, data, v, clean_labels=clean, batch_size=7) == fooling_rate(cnn, data, v)


def test_targeted_success_rate_with_cached_clean_labels_equals_the_uncached_call(cnn, data):
    from backdoorlab.train import predict
    clean = predict(cnn, data)
    for seed, target in zip(range(4), (0, 1, 2, 1)):
        v = random_perturbation(tuple(data.shape[1:]), xi=0.5, p=math.inf, seed=seed, dtype=data.dtype)
        expected = targeted_success_rate(cnn, data, v, target=target)
        assert targeted_success_rate(cnn, data, v, target=target, clean_labels=clean) == expected
        assert targeted_success_rate(cnn, data, v, target=target, clean_labels=clean, batch_size=7) == expected
    with pytest.raises(ValueError, match="clean_labels"):
        targeted_success_rate(cnn, data, v, target=0, clean_labels=clean[:-1])


def test_fooling_rate_refuses_bad_clean_labels(cnn, data):
    v = torch.zeros(tuple(data.shape[1:]), dtype=data.dtype)
    with pytest.raises(ValueError, match="clean_labels"):
        fooling_rate(cnn, data, v, clean_labels=torch.zeros(len(data) + 1, dtype=torch.long))
    with pytest.raises(TypeError, match="clean_labels"):
        fooling_rate(cnn, data, v, clean_labels=torch.zeros(len(data)))
    with pytest.raises(TypeError, match="clean_labels"):
        fooling_rate(cnn, data, v, clean_labels=[0] * len(data))


# --------------------------------------------------------------------------- Algorithm 1


def reference_algorithm_1(model, images, *, xi, p, passes, seed, max_iter=10):
    """Algorithm 1 one image at a time from the public pieces: the test oracle."""
    generator = torch.Generator().manual_seed(seed)
    clean = model(images).argmax(dim=1)
    v = torch.zeros_like(images[0])
    for _ in range(passes):
        for i in torch.randperm(images.shape[0], generator=generator).tolist():
            start = (images[i : i + 1] + v).clamp(0, 1)
            if model(start).argmax(dim=1).item() != clean[i].item():
                continue
            step = deepfool(model, start, max_iter=max_iter)
            if step.converged.item():
                v = project_lp(v + step.perturbations[0], xi, p)
    return v


@pytest.mark.parametrize("p, xi, max_iter",
                         [(math.inf, 0.15, 10), (2, 0.8, 10), (math.inf, 0.3, 1)])
def test_universal_perturbation_follows_algorithm_1(cnn, data, p, xi, max_iter):
    # max_iter=1: most DeepFool calls do not converge, and their steps must be dropped
    images = data[:15]
    result = universal_perturbation(cnn, images, xi=xi, p=p, delta=0.01, max_passes=2,
                                    max_iter=max_iter, seed=3)
    expected = reference_algorithm_1(cnn, images, xi=xi, p=p, passes=len(result.history), seed=3,
                                     max_iter=max_iter)
    assert torch.allclose(result.perturbation, expected, rtol=0, atol=1e-10)
    assert torch.any(expected != 0)


@pytest.mark.parametrize("p, xi", [(math.inf, 0.2), (2, 1.0)])
def test_every_update_stays_in_the_ball(cnn, data, monkeypatch, p, xi):
    outputs = []

    def recording_projection(v, radius, norm):
        out = project_lp(v, radius, norm)
        outputs.append(out)
        return out

    monkeypatch.setattr(uap, "project_lp", recording_projection)
    result = uap.universal_perturbation(cnn, data, xi=xi, p=p, delta=0.05, max_passes=3, seed=0)
    assert len(outputs) >= 3
    assert max(float(lp_norm(out, p)) for out in outputs) <= xi + TOL
    assert torch.equal(result.perturbation, outputs[-1])
    sgd_outputs = len(outputs)
    sgd = uap.sgd_universal_perturbation(cnn, data, xi=xi, p=p, epochs=2, batch_size=20, seed=0)
    assert len(outputs) == sgd_outputs + 3 * len(sgd.history)  # one projection per step
    assert max(float(lp_norm(out, p)) for out in outputs) <= xi + TOL


def test_uap_beats_random_perturbation_of_same_norm(cnn):
    # X mostly of class 0, so that one perturbation moving class 0 away fools most of it; a
    # random sign image of the same l_inf norm fools none, for every visiting order
    images, labels = synthetic_images(120, seed=2)
    X = torch.cat([images[labels == 0][:36], images[labels == 1][:6], images[labels == 2][:6]])
    xi = 0.5
    control = random_perturbation((1, 8, 8), xi=xi, p=math.inf, seed=0).double()
    assert fooling_rate(cnn, X, control) <= 0.05
    for seed in range(4):
        result = universal_perturbation(cnn, X, xi=xi, p=math.inf, delta=0.4, max_passes=2,
                                        seed=seed)
        assert result.fooling_rate >= 0.5


def test_result_is_consistent(cnn, data):
    for result, max_len in [
        (universal_perturbation(cnn, data, xi=0.2, p=math.inf, delta=0.3, max_passes=3, seed=1), 3),
        (sgd_universal_perturbation(cnn, data, xi=0.2, p=math.inf, delta=0.3, epochs=4,
                                    batch_size=16, seed=1), 4),
    ]:
        assert 1 <= len(result.history) <= max_len
        assert result.fooling_rate == result.history[-1]
        assert result.fooling_rate == pytest.approx(fooling_rate(cnn, data, result.perturbation))
        assert result.converged == (result.fooling_rate >= 0.7)
        # it stops at the first pass reaching 1 - delta, not later
        assert all(rate < 0.7 for rate in result.history[:-1])
        assert result.perturbation.shape == (1, 8, 8) and result.perturbation.dtype == torch.float64


def test_minibatch_variant_sums_deepfool_steps_at_the_same_v(cnn, data):
    # one group holding all of X: one update, v = P(sum of the converged DeepFool steps at v = 0)
    xi = 0.25
    result = universal_perturbation(cnn, data, xi=xi, p=math.inf, delta=0.01, max_passes=1,
                                    batch_size=data.shape[0], seed=0)
    steps = deepfool(cnn, data, max_iter=10)
    expected = project_lp(steps.perturbations[steps.converged].sum(dim=0), xi, math.inf)
    assert torch.allclose(result.perturbation, expected, rtol=0, atol=1e-12)


def test_same_seed_same_perturbation_and_other_seed_other_order(cnn, data):
    kwargs = dict(xi=0.2, p=math.inf, delta=0.01, max_passes=2)
    first = universal_perturbation(cnn, data, seed=7, **kwargs)
    again = universal_perturbation(cnn, data, seed=7, **kwargs)
    other = universal_perturbation(cnn, data, seed=8, **kwargs)
    assert torch.equal(first.perturbation, again.perturbation) and first.history == again.history
    assert not torch.equal(first.perturbation, other.perturbation)
    sgd = [sgd_universal_perturbation(cnn, data, xi=0.2, p=2, epochs=2, batch_size=16, seed=s)
           for s in (7, 7, 8)]
    assert torch.equal(sgd[0].perturbation, sgd[1].perturbation)
    assert not torch.equal(sgd[0].perturbation, sgd[2].perturbation)


def test_universal_perturbation_does_not_touch_global_rng(cnn, data):
    state = torch.get_rng_state()
    universal_perturbation(cnn, data[:10], xi=0.2, p=math.inf, max_passes=1, seed=0)
    sgd_universal_perturbation(cnn, data[:10], xi=0.2, p=math.inf, epochs=1, seed=0)
    random_perturbation((1, 8, 8), xi=0.1, p=2, seed=0)
    assert torch.equal(torch.get_rng_state(), state)


def test_universal_perturbation_sets_its_threads_and_restores_them(cnn, data, monkeypatch):
    seen = []
    original = uap._deepfool

    def recording(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return original(*args, **kwargs)

    monkeypatch.setattr(uap, "_deepfool", recording)
    torch.set_num_threads(2)
    try:
        first = universal_perturbation(cnn, data[:8], xi=0.2, p=math.inf, max_passes=1, seed=0)
        assert set(seen) == {1} and torch.get_num_threads() == 2  # the default, then restored
        seen.clear()
        second = universal_perturbation(cnn, data[:8], xi=0.2, p=math.inf, max_passes=1,
                                        seed=0, num_threads=None)
        assert set(seen) == {2}  # None: left alone
    finally:
        torch.set_num_threads(1)
    assert torch.allclose(first.perturbation, second.perturbation, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="num_threads"):
        universal_perturbation(cnn, data[:2], xi=0.2, p=math.inf, num_threads=0)


# --------------------------------------------------------------------------- SGD variant


def test_sgd_first_step_is_a_sign_step_against_the_clean_label():
    # two-pixel images, all of clean class 0 (logits = pixels): the cross-entropy gradient in v
    # is (p_0 - 1, p_1), so the l_inf ascent step is lr * (-1, +1)
    images = torch.tensor([[0.6, 0.5], [0.7, 0.2], [0.55, 0.45]], dtype=torch.float64)
    images = images.reshape(3, 1, 1, 2)
    result = sgd_universal_perturbation(nn.Flatten(), images, xi=0.5, p=math.inf, epochs=1,
                                        batch_size=3, lr=0.05, seed=0)
    assert torch.allclose(result.perturbation, torch.tensor([[[-0.05, 0.05]]], dtype=torch.float64))
    result = sgd_universal_perturbation(nn.Flatten(), images, xi=0.5, p=2, epochs=1,
                                        batch_size=3, lr=0.05, seed=0)
    assert torch.allclose(result.perturbation,
                          0.05 / math.sqrt(2) * torch.tensor([[[-1.0, 1.0]]], dtype=torch.float64))


def test_sgd_clamped_loss_drops_images_beyond_the_cap():
    # logits 10 x: image A (class 0, near the boundary) has cross-entropy 0.598 and a large
    # gradient towards class 1; image B (class 1, far) has a tiny one towards class 0. Capped at
    # 0.5, A contributes nothing and B sets the direction of the sign step.
    model = nn.Sequential(nn.Flatten(), nn.Linear(2, 2, bias=False)).double()
    with torch.no_grad():
        model[1].weight.copy_(10 * torch.eye(2))
    images = torch.tensor([[0.52, 0.50], [0.10, 0.90]], dtype=torch.float64).reshape(2, 1, 1, 2)
    kwargs = dict(xi=0.5, p=math.inf, epochs=1, batch_size=2, lr=0.05, seed=0)
    capped = sgd_universal_perturbation(model, images, loss_clamp=0.5, **kwargs)
    uncapped = sgd_universal_perturbation(model, images, loss_clamp=10.0, **kwargs)
    step = torch.tensor([[[0.05, -0.05]]], dtype=torch.float64)
    assert torch.allclose(capped.perturbation, step)
    assert torch.allclose(uncapped.perturbation, -step)


# --------------------------------------------------------------------------- controls


@pytest.mark.parametrize("p", NORMS)
def test_random_perturbation_has_norm_xi_and_is_seeded(p):
    v = random_perturbation((3, 8, 8), xi=0.4, p=p, seed=1)
    assert v.shape == (3, 8, 8)
    assert float(lp_norm(v, p)) == pytest.approx(0.4, rel=1e-6)
    assert torch.equal(v, random_perturbation((3, 8, 8), xi=0.4, p=p, seed=1))
    assert not torch.equal(v, random_perturbation((3, 8, 8), xi=0.4, p=p, seed=2))
    if p == math.inf:
        assert torch.equal(v.abs(), torch.full_like(v, 0.4))


def test_checkerboard():
    board = checkerboard((2, 6, 6), amplitude=0.2, square=3, dtype=torch.float64)
    assert board.shape == (2, 6, 6)
    assert torch.equal(board[0], board[1])
    assert torch.all(board[:, :3, :3] == 0.2) and torch.all(board[:, :3, 3:] == -0.2)
    assert torch.all(board[:, 3:, :3] == -0.2) and torch.all(board[:, 3:, 3:] == 0.2)
    expected = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])
    assert torch.equal(checkerboard((1, 2, 2), amplitude=1.0)[0], expected)
    with pytest.raises(ValueError, match="amplitude"):
        checkerboard((1, 2, 2), amplitude=0.0)
    with pytest.raises(ValueError, match="shape"):
        checkerboard((2, 2), amplitude=0.1)


# --------------------------------------------------------------------------- contract


class ModeProbe(nn.Module):
    """Batch norm and dropout: training mode would change outputs and running statistics."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(9)
        self.body = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(),
                                  nn.Dropout(0.5), nn.Flatten(), nn.Linear(3 * 8 * 8, 3))
        with torch.no_grad():
            for param in self.parameters():
                param.copy_(torch.randn(param.shape, generator=g))
        self.double()

    def forward(self, images):
        return self.body(images)


ALGORITHMS = {
    "deepfool": lambda model, x: deepfool(model, x, max_iter=5),
    "fooling_rate": lambda model, x: fooling_rate(model, x, 0.1 * torch.ones_like(x[0])),
    "universal_perturbation": lambda model, x: universal_perturbation(
        model, x, xi=0.2, p=math.inf, max_passes=1, max_iter=5, seed=0),
    "minibatch_universal_perturbation": lambda model, x: universal_perturbation(
        model, x, xi=0.5, p=2, max_passes=1, max_iter=5, batch_size=4, seed=0),
    "sgd_universal_perturbation": lambda model, x: sgd_universal_perturbation(
        model, x, xi=0.2, p=math.inf, epochs=1, batch_size=4, seed=0),
}


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_inputs_not_mutated_and_modes_restored(name, data):
    model = ModeProbe()
    model.train()
    model.body[3].eval()  # mixed modes must come back exactly
    modes = [module.training for module in model.modules()]
    state = {key: value.clone() for key, value in model.state_dict().items()}
    images = data[:12].clone().requires_grad_(True)
    before = images.detach().clone()
    ALGORITHMS[name](model, images)
    assert [module.training for module in model.modules()] == modes
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key  # batch-norm statistics untouched
    assert all(param.grad is None for param in model.parameters())
    assert torch.equal(images.detach(), before) and images.grad is None


def test_fooling_rate_does_not_mutate_v(cnn, data):
    v = 0.1 * torch.ones(1, 8, 8, dtype=torch.float64)
    before = v.clone()
    fooling_rate(cnn, data, v)
    assert torch.equal(v, before)


def uap_call(model, images, **overrides):
    kwargs = dict(xi=0.1, p=math.inf, max_passes=1, seed=0) | overrides
    return universal_perturbation(model, images, **kwargs)


def sgd_call(model, images, **overrides):
    kwargs = dict(xi=0.1, p=math.inf, epochs=1, seed=0) | overrides
    return sgd_universal_perturbation(model, images, **kwargs)


@pytest.mark.parametrize("call", [uap_call, sgd_call])
@pytest.mark.parametrize("overrides, error, message", [
    (dict(xi=0.0), ValueError, "xi must be a finite positive number, got 0.0"),
    (dict(xi=-0.5), ValueError, "xi"),
    (dict(xi=math.inf), ValueError, "xi"),
    (dict(p=1), ValueError, "p must be 2 or math.inf, got 1"),
    (dict(p=3.0), ValueError, "p must be 2 or math.inf"),
    (dict(p="inf"), TypeError, "p must be"),
    (dict(delta=0.0), ValueError, "delta must be in \\(0, 1\\), got 0.0"),
    (dict(delta=1.0), ValueError, "delta"),
    (dict(delta=1.5), ValueError, "delta"),
    (dict(seed=1.5), TypeError, "seed"),
])
def test_bad_options_raise(cnn, data, call, overrides, error, message):
    with pytest.raises(error, match=message):
        call(cnn, data[:4], **overrides)


@pytest.mark.parametrize("images, error, message", [
    (torch.full((2, 1, 8, 8), 1.5, dtype=torch.float64), ValueError,
     "images must have values in \\[0, 1\\], got range \\[1.5, 1.5\\]"),
    (torch.full((2, 1, 8, 8), -0.1, dtype=torch.float64), ValueError, "images must have values in"),
    (torch.full((2, 1, 8, 8), math.nan, dtype=torch.float64), ValueError,
     "images must have values in"),
    (torch.zeros(1, 8, 8, dtype=torch.float64), ValueError,
     "images must have shape \\(N, C, H, W\\), got \\(1, 8, 8\\)"),
    (torch.zeros(0, 1, 8, 8, dtype=torch.float64), ValueError, "at least one image"),
    (torch.zeros(2, 1, 8, 8, dtype=torch.uint8), TypeError,
     "images must be a floating-point torch.Tensor, got torch.uint8"),
    ([[0.0]], TypeError, "images must be a floating-point torch.Tensor, got list"),
])
def test_bad_images_raise_everywhere(cnn, images, error, message):
    calls = [
        lambda: deepfool(cnn, images),
        lambda: fooling_rate(cnn, images, torch.zeros(1, 8, 8, dtype=torch.float64)),
        lambda: uap_call(cnn, images),
        lambda: sgd_call(cnn, images),
    ]
    for call in calls:
        with pytest.raises(error, match=message):
            call()


def test_other_bad_arguments(cnn, data):
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        deepfool(lambda x: x, data)
    with pytest.raises(ValueError, match="overshoot"):
        deepfool(cnn, data, overshoot=-0.1)
    with pytest.raises(ValueError, match="max_iter must be at least 1, got 0"):
        deepfool(cnn, data, max_iter=0)
    with pytest.raises(ValueError, match="max_passes"):
        uap_call(cnn, data, max_passes=0)
    with pytest.raises(ValueError, match="batch_size"):
        uap_call(cnn, data, batch_size=0)
    with pytest.raises(ValueError, match="lr"):
        sgd_call(cnn, data, lr=-1.0)
    with pytest.raises(ValueError, match="v must have shape \\(1, 8, 8\\)"):
        fooling_rate(cnn, data, torch.zeros(1, 1, 8, 8, dtype=torch.float64))


# --------------------------------------------------------------------------- targeted variant


def test_targeted_success_rate_against_hand_count():
    # logits = pixels; v adds 0.3 to pixel 1: image 0 (0.5, 0.4) goes to class 1, image 1
    # (0.9, 0.1) stays 0, image 2 (0.2, 0.3) is class 1 already and is not counted
    images = torch.tensor([[[[0.5, 0.4]]], [[[0.9, 0.1]]], [[[0.2, 0.3]]]], dtype=torch.float64)
    v = torch.tensor([[[0.0, 0.3]]], dtype=torch.float64)
    assert uap.targeted_success_rate(nn.Flatten(), images, v, target=1) == 0.5
    assert uap.targeted_success_rate(nn.Flatten(), images, v, target=0) == 0.0  # none moves to 0
    assert uap.targeted_success_rate(nn.Flatten(), images[2:], v, target=1) == 0.0  # none eligible


def test_targeted_first_step_is_a_sign_descent_step_towards_the_target():
    # clean class 0, logits = pixels: the gradient of the cross-entropy towards class 1 in v is
    # (p_0, p_1 - 1), so the l_inf descent step is lr * (-1, +1); the l_2 step is its unit vector
    images = torch.tensor([[0.6, 0.5], [0.7, 0.2], [0.55, 0.45]], dtype=torch.float64)
    images = images.reshape(3, 1, 1, 2)
    kwargs = dict(target=1, xi=0.5, epochs=1, batch_size=3, lr=0.05, seed=0)
    linf = uap.targeted_universal_perturbation(nn.Flatten(), images, p=math.inf, **kwargs)
    l2 = uap.targeted_universal_perturbation(nn.Flatten(), images, p=2, **kwargs)
    step = torch.tensor([[[-1.0, 1.0]]], dtype=torch.float64)
    assert torch.allclose(linf.perturbation, 0.05 * step)
    assert torch.allclose(l2.perturbation, 0.05 / math.sqrt(2) * step)
    assert linf.target == 1 and len(linf.history) == 1


@pytest.mark.parametrize("p, xi", [(2, 3.0), (math.inf, 0.3)])
def test_targeted_uap_stays_in_ball_beats_random_and_is_seeded(cnn, data, p, xi):
    result = uap.targeted_universal_perturbation(cnn, data, target=2, xi=xi, p=p, epochs=5,
                                                 batch_size=10, seed=3)
    assert lp_norm(result.perturbation, p) <= xi + TOL
    assert result.success_rate == uap.targeted_success_rate(cnn, data, result.perturbation, target=2)
    assert result.success_rate == result.history[-1] and len(result.history) == 5
    noise = random_perturbation((1, 8, 8), xi=xi, p=p, seed=0).double()
    assert result.success_rate > uap.targeted_success_rate(cnn, data, noise, target=2) + 0.2
    again = uap.targeted_universal_perturbation(cnn, data, target=2, xi=xi, p=p, epochs=5,
                                                batch_size=10, seed=3)
    assert torch.equal(result.perturbation, again.perturbation)


def test_targeted_bad_arguments(cnn, data):
    with pytest.raises(ValueError, match="target must be in 0..2"):
        uap.targeted_universal_perturbation(cnn, data, target=3, xi=0.1, p=2)
    with pytest.raises(TypeError, match="target must be an int"):
        uap.targeted_success_rate(cnn, data, torch.zeros(1, 8, 8, dtype=torch.float64), target=1.0)
    with pytest.raises(ValueError, match="xi"):
        uap.targeted_universal_perturbation(cnn, data, target=0, xi=0.0, p=2)
    with pytest.raises(ValueError, match="images must have values in"):
        uap.targeted_universal_perturbation(cnn, data + 2, target=0, xi=0.1, p=2)


# --------------------------------------------------------------------------- span control


def test_span_perturbation_has_norm_xi_lies_in_the_span_and_is_seeded():
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(64, 5, generator=g, dtype=torch.float64))
    basis = q.T.reshape(5, 1, 8, 8)  # 5 orthonormal vectors of R^64
    v = uap.span_perturbation(basis, xi=2.5, seed=1)
    assert v.shape == (1, 8, 8) and v.dtype == torch.float64
    assert abs(v.norm().item() - 2.5) < 1e-9
    coefficients = q.T @ v.flatten()
    assert torch.allclose(q @ coefficients, v.flatten())  # no component outside the span
    assert torch.equal(v, uap.span_perturbation(basis, xi=2.5, seed=1))
    assert not torch.equal(v, uap.span_perturbation(basis, xi=2.5, seed=2))


def test_span_perturbation_direction_is_uniform_on_the_sphere_of_the_span():
    # for an orthonormal basis the coefficients are a uniform unit vector: E[c_j^2] = 1/k
    basis = torch.eye(3, dtype=torch.float64).reshape(3, 1, 1, 3)
    squares = torch.stack([uap.span_perturbation(basis, xi=1.0, seed=s).flatten() ** 2
                           for s in range(3000)])
    assert torch.allclose(squares.mean(0), torch.full((3,), 1 / 3, dtype=torch.float64), atol=0.02)


def test_span_perturbation_bad_arguments():
    with pytest.raises(ValueError, match="basis must have shape \\(k, C, H, W\\)"):
        uap.span_perturbation(torch.zeros(4, 4), xi=1.0, seed=0)
    with pytest.raises(ValueError, match="span more than the zero vector"):
        uap.span_perturbation(torch.zeros(2, 1, 2, 2), xi=1.0, seed=0)
    with pytest.raises(TypeError, match="basis must be a floating"):
        uap.span_perturbation(torch.ones(2, 1, 2, 2, dtype=torch.long), xi=1.0, seed=0)
    with pytest.raises(ValueError, match="xi"):
        uap.span_perturbation(torch.ones(2, 1, 2, 2), xi=-1.0, seed=0)
