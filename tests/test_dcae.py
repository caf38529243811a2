"""Tests of backdoorlab.dcae on small synthetic images (never the real MNIST)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import backdoorlab.copula as blc
from backdoorlab import dcae
from backdoorlab.data import ImageSet
from backdoorlab.triggers import patch_trigger

SHAPE = (1, 6, 6)


def low_rank_images(n: int, seed: int, rank: int = 3) -> ImageSet:
    """Images in [0, 1] that are an affine function of ``rank`` hidden factors, plus a little noise."""
    generator = torch.Generator().manual_seed(seed)
    basis = torch.rand(rank, 36, generator=torch.Generator().manual_seed(99)) - 0.5
    factors = torch.randn(n, rank, generator=generator)
    pixels = 0.5 + 0.15 * factors @ basis + 0.01 * torch.randn(n, 36, generator=generator)
    labels = torch.arange(n) % 3
    return ImageSet(pixels.clamp(0, 1).view(n, *SHAPE).float(), labels, ("a", "b", "c"))


def identity_autoencoder(d: int) -> dcae.NotebookAutoencoder:
    """A notebook autoencoder on (1, 1, d) images whose code is the image itself."""
    model = dcae.NotebookAutoencoder(image_shape=(1, 1, d), hidden=d, latent_dim=d)
    with torch.no_grad():
        for layer in (*model.encoder, model.decoder[0], model.decoder[1]):
            layer.weight.copy_(torch.eye(d))
            layer.bias.zero_()
    return model


# --------------------------------------------------------------------------- architectures


def test_notebook_autoencoder_has_the_notebook_layers() -> None:
    model = dcae.NotebookAutoencoder()
    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [(784, 64), (64, 5), (5, 64), (64, 784)]
    assert [type(m) for m in model.decoder][-1] is torch.nn.ReLU
    assert not any(isinstance(m, torch.nn.ReLU) for m in model.encoder)


def test_notebook_encoder_is_affine() -> None:
    # no activation before the code: E((x + y) / 2) = (E(x) + E(y)) / 2
    model = dcae.NotebookAutoencoder(image_shape=SHAPE, hidden=8, latent_dim=3)
    x, y = torch.rand(4, *SHAPE), torch.rand(4, *SHAPE)
    midpoint = dcae.encode(model, (x + y) / 2)
    torch.testing.assert_close(midpoint, (dcae.encode(model, x) + dcae.encode(model, y)) / 2)


@pytest.mark.parametrize("name", sorted(dcae.AUTOENCODERS))
def test_decoded_images_are_images_of_the_right_shape(name) -> None:
    model = dcae.AUTOENCODERS[name](image_shape=SHAPE, latent_dim=3)
    images = dcae.decode(model, 10 * torch.randn(7, 3))
    assert images.shape == (7, *SHAPE) and images.dtype == torch.float32
    assert images.min() >= 0 and images.max() <= 1


def test_encode_and_decode_restore_the_training_mode_and_batch_consistently() -> None:
    model = dcae.MLPAutoencoder(image_shape=SHAPE, hidden=(16,), latent_dim=2)
    model.train()
    images = torch.rand(9, *SHAPE)
    torch.testing.assert_close(dcae.encode(model, images, batch_size=4), dcae.encode(model, images))
    assert model.training


# --------------------------------------------------------------------------- training


def test_training_beats_the_mean_image_and_is_reproducible() -> None:
    # three hidden factors, three latent coordinates: a trained model must do far better than
    # the best constant reconstruction, the mean image
    data = low_rank_images(512, seed=0)
    mean_image_error = float((data.images - data.images.mean(0)).pow(2).mean())
    models = [dcae.MLPAutoencoder(image_shape=SHAPE, hidden=(32,), latent_dim=3) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    results = [dcae.train_autoencoder(m, data, epochs=40, seed=3, batch_size=32, max_lr=1e-2) for m in models]
    assert dcae.reconstruction_error(models[0], data.images) < 0.3 * mean_image_error
    assert results[0].losses == results[1].losses
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        assert torch.equal(a, b)


# --------------------------------------------------------------------------- the pipeline


def test_generate_is_reproducible_with_a_seed_and_composes_the_steps() -> None:
    data = low_rank_images(120, seed=1)
    model = dcae.NotebookAutoencoder(image_shape=SHAPE, hidden=8, latent_dim=3)
    first = dcae.generate(model, data.images, num_samples=30, seed=5, families="gaussian")
    again = dcae.generate(model, data.images, num_samples=30, seed=5, families="gaussian")
    other = dcae.generate(model, data.images, num_samples=30, seed=6, families="gaussian")
    assert torch.equal(first.images, again.images)
    assert not torch.equal(first.images, other.images)
    torch.testing.assert_close(first.latents, dcae.encode(model, data.images))
    draws = blc.sample(first.vine, 30, seed=5)
    torch.testing.assert_close(first.sampled_latents, torch.from_numpy(draws).float())
    torch.testing.assert_close(first.images, dcae.decode(model, first.sampled_latents))


def test_sampled_codes_stay_within_the_range_of_the_data_codes() -> None:
    data = low_rank_images(80, seed=2)
    model = dcae.MLPAutoencoder(image_shape=SHAPE, hidden=(16,), latent_dim=3)
    result = dcae.generate(model, data.images, num_samples=500, seed=0, families="gaussian")
    assert (result.sampled_latents >= result.latents.min(0).values - 1e-6).all()
    assert (result.sampled_latents <= result.latents.max(0).values + 1e-6).all()


def test_generate_fits_a_dvine_in_the_given_order() -> None:
    data = low_rank_images(80, seed=3)
    model = dcae.NotebookAutoencoder(image_shape=SHAPE, hidden=8, latent_dim=4)
    result = dcae.generate(model, data.images, num_samples=5, seed=0, order=[2, 0, 3, 1], families="gaussian")
    assert result.vine.structure == "dvine"
    assert result.vine.tree_edges(0) == [(2, 0), (0, 3), (3, 1)]


@pytest.mark.parametrize("rho", [0.3, 0.7])
def test_pipeline_recovers_the_mutual_information_of_gaussian_codes(rho) -> None:
    # codes = images = Phi(Gaussian with correlation R): the copula is Gaussian with R whatever
    # the marginal transform, so the fitted vine's information is -0.5 log det R
    d, n = 4, 4000
    r = rho ** np.abs(np.subtract.outer(np.arange(d), np.arange(d)))
    gaussian = np.random.default_rng(7).multivariate_normal(np.zeros(d), r, size=n)
    images = torch.special.ndtr(torch.from_numpy(gaussian)).float().view(n, 1, 1, d)
    result = dcae.generate(identity_autoencoder(d), images, num_samples=10, seed=0, families="gaussian")
    estimate = blc.mutual_information(result.vine, num_samples=40_000, seed=1)
    exact = blc.gaussian_mutual_information(r)
    # Monte Carlo error plus the fit's: sd about sqrt(Var log c / n) (see test_copula.py)
    fit_sd = estimate.stderr * np.sqrt(estimate.num_samples / n)
    assert abs(estimate.value - exact) < 4 * np.hypot(estimate.stderr, fit_sd)


def test_generate_rejects_too_few_images_and_a_dead_latent_unit() -> None:
    model = dcae.NotebookAutoencoder(image_shape=SHAPE, hidden=8, latent_dim=3)
    with pytest.raises(ValueError, match="at least 4 rows"):
        dcae.generate(model, torch.rand(3, *SHAPE), num_samples=5, seed=0)
    with torch.no_grad():
        model.encoder[1].weight[1].zero_()  # coordinate 1 no longer depends on the image
    with pytest.raises(ValueError, match=r"constant columns \[1\]"):
        dcae.generate(model, torch.rand(20, *SHAPE), num_samples=5, seed=0)
    with pytest.raises(ValueError, match="num_samples"):
        dcae.generate(dcae.NotebookAutoencoder(image_shape=SHAPE), torch.rand(20, *SHAPE), num_samples=0, seed=0)


def test_bad_input_raises_errors_naming_the_argument() -> None:
    model = dcae.NotebookAutoencoder(image_shape=SHAPE, hidden=8, latent_dim=3)
    with pytest.raises(ValueError, match="latents must be finite"):
        dcae.decode(model, torch.tensor([[0.0, float("nan"), 1.0]]))
    with pytest.raises(ValueError, match=r"latents must have shape \(N, 3\)"):
        dcae.decode(model, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="images must have values in"):
        dcae.encode(model, 2 * torch.ones(1, *SHAPE))
    with pytest.raises(ValueError, match="batch_size"):
        dcae.encode(model, torch.rand(2, *SHAPE), batch_size=0)
    with pytest.raises(TypeError, match="autoencoder"):
        dcae.encode(torch.nn.Linear(2, 2), torch.rand(2, *SHAPE))
    with pytest.raises(ValueError, match="latent_dim"):
        dcae.NotebookAutoencoder(latent_dim=0)
    with pytest.raises(ValueError, match="image_shape"):
        dcae.MLPAutoencoder(image_shape=(28, 28))


# --------------------------------------------------------------------------- data and the trigger measure


def test_stamp_class_stamps_exactly_the_source_class_and_mutates_nothing() -> None:
    data = low_rank_images(30, seed=4)
    before = data.images.clone()
    trigger = patch_trigger(image_shape=SHAPE, size=2, position=(4, 4))
    stamped = dcae.stamp_class(data, trigger, source=1)
    assert torch.equal(data.images, before)
    assert torch.equal(stamped.labels, data.labels)
    chosen = data.labels == 1
    assert torch.equal(stamped.images[chosen], trigger.apply(data.images[chosen]))
    assert torch.equal(stamped.images[~chosen], data.images[~chosen])
    with pytest.raises(ValueError, match="source"):
        dcae.stamp_class(data, trigger, source=3)


def test_class_balanced_sample_takes_per_class_images_of_each_class_reproducibly() -> None:
    data = low_rank_images(60, seed=5)
    sample = dcae.class_balanced_sample(data, 7, seed=0)
    assert torch.bincount(sample.labels).tolist() == [7, 7, 7]
    assert torch.equal(sample.images, dcae.class_balanced_sample(data, 7, seed=0).images)
    assert not torch.equal(sample.images, dcae.class_balanced_sample(data, 7, seed=1).images)
    with pytest.raises(ValueError, match="class 0 has only 20"):
        dcae.class_balanced_sample(data, 21, seed=0)


def test_trigger_rate_counts_images_whose_patch_is_bright() -> None:
    trigger = patch_trigger(image_shape=SHAPE, size=2, position=(4, 4))
    images = torch.zeros(8, *SHAPE)
    images[:3] = trigger.apply(images[:3])  # fully stamped: brightness 1
    images[3, :, 4:, 4:] = 0.5  # exactly at the threshold: counts
    images[4, :, 4:, 4:] = 0.49  # just below
    images[5, :, :4, :4] = 1.0  # bright, but outside the patch
    torch.testing.assert_close(dcae.trigger_brightness(images, trigger.mask)[:5],
                               torch.tensor([1.0, 1.0, 1.0, 0.5, 0.49]))
    assert dcae.trigger_rate(images, trigger.mask) == 4 / 8
    assert dcae.trigger_rate(images, trigger.mask, threshold=0.9) == 3 / 8
    with pytest.raises(ValueError, match="threshold"):
        dcae.trigger_rate(images, trigger.mask, threshold=0.0)
    with pytest.raises(ValueError, match="mask"):
        dcae.trigger_rate(images, torch.zeros(1, 5, 5))
    with pytest.raises(ValueError, match="mask must not be all zero"):
        dcae.trigger_brightness(images, torch.zeros(1, 6, 6))


# --------------------------------------------------------------------------- scan, quality, verdicts


def test_locate_trigger_finds_a_bright_square_among_noise_and_ignores_dark_changes() -> None:
    generator = torch.Generator().manual_seed(0)
    reference = torch.rand(200, 1, 12, 12, generator=generator) * 0.5
    images = torch.rand(300, 1, 12, 12, generator=generator) * 0.5
    images[:, :, 7:10, 2:5] = (images[:, :, 7:10, 2:5] + 0.3).clamp(max=1)  # the hidden square
    images[:, :, 0:3, 0:3] = 0.0  # a darker region must not win
    scan = dcae.locate_trigger(images, reference, size=3)
    assert (scan.row, scan.col) == (7, 2)
    assert scan.window_means.shape == (10, 10)
    assert scan.score == pytest.approx(float(scan.difference[7:10, 2:5].mean()))
    mask = torch.zeros(1, 12, 12)
    mask[:, 7:10, 2:5] = 1
    assert scan.overlap(mask) == 1.0
    mask[:, 7:10, 2:5], mask[:, 8:11, 3:6] = 0, 1
    assert scan.overlap(mask) == pytest.approx(4 / 9)


def test_locate_trigger_checks_its_input() -> None:
    images = torch.zeros(2, 1, 4, 4)
    with pytest.raises(ValueError, match="size"):
        dcae.locate_trigger(images, images, size=5)
    with pytest.raises(ValueError, match="reference"):
        dcae.locate_trigger(images, torch.zeros(2, 1, 5, 5), size=2)
    with pytest.raises(ValueError, match="empty"):
        dcae.locate_trigger(images, images[:0], size=2)


def test_nearest_neighbour_distance_is_the_brute_force_minimum() -> None:
    generator = torch.Generator().manual_seed(1)
    images, reference = torch.rand(7, 1, 3, 3, generator=generator), torch.rand(11, 1, 3, 3, generator=generator)
    expected = ((images[:, None] - reference[None]) ** 2).flatten(2).mean(2).amin(1)
    got = dcae.nearest_neighbour_distance(images, reference, batch_size=3)
    assert torch.allclose(got, expected, atol=1e-6)
    assert dcae.nearest_neighbour_distance(reference[:4], reference).abs().max() < 1e-6  # members are at 0


def test_compare_runs_matches_the_t_interval_and_gives_each_verdict() -> None:
    before = np.array([1.0, 2.0, 1.5, 1.2, 0.8])
    changes = np.array([0.25, 0.30, 0.20, 0.35, 0.28])
    result = dcae.compare_runs(before * (1 + changes), before, claimed=0.27)
    assert np.allclose(result.changes, changes)
    half = 2.7764451051977987 * changes.std(ddof=1) / np.sqrt(5)  # t_{4, 0.975}
    assert result.ci_low == pytest.approx(changes.mean() - half) and result.ci_high == pytest.approx(changes.mean() + half)
    assert result.verdict == "reproduces" and result.num_positive == 5
    assert result.sign_p == pytest.approx(2 / 32) and result.p_value == pytest.approx(2 / 32)
    assert dcae.compare_runs(before * 1.05 + [0, 0.01, -0.01, 0.005, 0], before, claimed=0.27).verdict == "does not reproduce"
    noisy = before * (1 + np.array([0.5, -0.4, 0.6, -0.3, 0.45]))
    assert dcae.compare_runs(noisy, before, claimed=0.27).verdict == "is undecided at this sample size"
    assert dcae.compare_runs(noisy, before).verdict == "does not change measurably"
    assert dcae.compare_runs(before * 0.9 + [0, 0.01, -0.01, 0.005, 0], before).verdict == "falls"
    with pytest.raises(ValueError, match="before"):
        dcae.compare_runs([1.0, 2.0], [0.0, 1.0])
    with pytest.raises(ValueError, match="same length"):
        dcae.compare_runs([1.0, 2.0], [1.0])
