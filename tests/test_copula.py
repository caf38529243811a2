"""Tests of backdoorlab.copula, from the math.

Oracles: the Gaussian copula with correlation matrix R, whose log density, mutual information
-0.5 log det R and KL divergences have closed forms; rank statistics computed by brute force;
pyvinecopulib's own pseudo-observations. Monte Carlo tolerances are stated in standard errors
(4 of them: a false alarm about once in 16 000 runs per check, and every seed is fixed anyway).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import pyvinecopulib as pv
import torch

from backdoorlab import copula

# ----------------------------------------------------------------------------- helpers


def ar1_correlation(d: int, rho: float) -> np.ndarray:
    """R_ij = rho^|i-j|: a Gaussian Markov chain."""
    lags = np.abs(np.subtract.outer(np.arange(d), np.arange(d)))
    return rho**lags


def random_correlation(d: int, seed: int) -> np.ndarray:
    """A dense correlation matrix with no special structure (all partial correlations non-zero)."""
    a = np.random.default_rng(seed).normal(size=(d, d))
    s = a @ a.T + 0.5 * d * np.eye(d)
    scale = np.sqrt(np.diag(s))
    r = s / np.outer(scale, scale)
    np.fill_diagonal(r, 1.0)
    return r


def gaussian_latents(r: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n draws of N(0, R) pushed through different monotone maps per coordinate.

    The copula is still the Gaussian copula of R; the marginals are deliberately not normal.
    """
    z = np.random.default_rng(seed).multivariate_normal(np.zeros(r.shape[0]), r, size=n)
    maps = [np.exp, np.tanh, lambda t: t**3, lambda t: 2.0 * t - 1.0, np.arctan]
    return np.stack([maps[j % len(maps)](z[:, j]) for j in range(r.shape[0])], axis=1)


CORRELATIONS = {
    "d2-weak": np.array([[1.0, 0.3], [0.3, 1.0]]),
    "d2-strong-negative": np.array([[1.0, -0.8], [-0.8, 1.0]]),
    "d5-ar1": ar1_correlation(5, 0.6),
    "d5-dense": random_correlation(5, seed=3),
}

# ----------------------------------------------------------------------------- pseudo-observations


def test_pseudo_observations_lie_in_open_unit_interval_and_preserve_ranks() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(150, 3))
    x[:, 1] = np.round(x[:, 1], 1)  # many ties in one column
    u = copula.pseudo_observations(x)
    assert u.shape == x.shape
    assert np.all((u > 0.0) & (u < 1.0))
    for j in range(3):
        # pairwise order of the data equals pairwise order of the pseudo-observations, ties included
        data_order = np.sign(np.subtract.outer(x[:, j], x[:, j]))
        pseudo_order = np.sign(np.subtract.outer(u[:, j], u[:, j]))
        np.testing.assert_array_equal(data_order, pseudo_order)


def test_pseudo_observations_are_ranks_over_n_plus_one() -> None:
    x = np.random.default_rng(1).normal(size=(40, 2))
    u = copula.pseudo_observations(x)
    expected = np.arange(1, 41) / 41
    np.testing.assert_array_equal(np.sort(u, axis=0), np.column_stack([expected, expected]))


def test_pseudo_observations_give_ties_their_average_rank_like_pyvinecopulib() -> None:
    ties = copula.pseudo_observations([[1.0], [2.0], [2.0], [3.0]])[:, 0]
    np.testing.assert_allclose(ties, np.array([1.0, 2.5, 2.5, 4.0]) / 5)
    x = np.round(np.random.default_rng(2).normal(size=(300, 4)), 1)
    np.testing.assert_allclose(copula.pseudo_observations(x), pv.to_pseudo_obs(x), rtol=0, atol=1e-15)


def test_pseudo_observations_accept_torch_tensors() -> None:
    x = np.random.default_rng(3).normal(size=(20, 2))
    from_tensor = copula.pseudo_observations(torch.from_numpy(x))
    np.testing.assert_array_equal(from_tensor, copula.pseudo_observations(x))


# ----------------------------------------------------------------------------- marginals


def test_quantile_back_transform_inverts_forward_transform_on_data() -> None:
    x = gaussian_latents(CORRELATIONS["d5-dense"], n=300, seed=4)
    x[:, 2] = np.round(x[:, 2], 1)  # ties must come back too
    marginals = copula.fit_marginals(x)
    u = copula.pseudo_observations(x)
    np.testing.assert_array_equal(marginals.to_uniform(x), u)
    np.testing.assert_array_equal(marginals.to_latent(u), x)


def test_marginal_maps_are_monotone_and_stay_in_range() -> None:
    x = np.random.default_rng(5).standard_t(3, size=(200, 2))
    marginals = copula.fit_marginals(x)
    levels = np.linspace(0.0, 1.0, 1001)
    latent = marginals.to_latent(np.column_stack([levels, levels]))
    assert np.all(np.diff(latent, axis=0) >= 0.0)
    np.testing.assert_array_equal(latent[0], x.min(axis=0))  # u = 0 clamps to the smallest datum
    np.testing.assert_array_equal(latent[-1], x.max(axis=0))
    far = np.array([[-1e6, -1e6], [1e6, 1e6]])
    np.testing.assert_allclose(marginals.to_uniform(far), [[1 / 201, 1 / 201], [200 / 201, 200 / 201]])


# ----------------------------------------------------------------------------- fitting


@pytest.mark.parametrize("order", [None, (3, 0, 4, 1, 2)])
def test_dvine_is_fitted_as_a_path_in_the_given_order(order) -> None:
    x = gaussian_latents(CORRELATIONS["d5-dense"], n=500, seed=6)
    vine = copula.fit_vine(x, structure="dvine", order=order, families="gaussian")
    path = tuple(range(5)) if order is None else order
    assert vine.order == path
    assert vine.structure == "dvine"
    # in a D-vine, tree t joins path[e] and path[e+t+1] given the variables in between
    for t, tree in enumerate(vine.copula.structure.get_trees()):
        for e, (a, b, conditioning) in enumerate(tree):
            assert {a - 1, b - 1} == {path[e], path[e + t + 1]}
            assert {c - 1 for c in conditioning} == set(path[e + 1 : e + t + 1])


def test_rvine_lets_pyvinecopulib_select_the_structure() -> None:
    # a one-factor model: coordinate 0 drives the others, so the best first tree is a star at 0,
    # which no path (D-vine) over 5 variables can be
    rng = np.random.default_rng(7)
    factor = rng.normal(size=(1000, 1))
    x = np.hstack([factor, factor + 0.6 * rng.normal(size=(1000, 4))])
    rvine = copula.fit_vine(x, structure="rvine", families="gaussian")
    assert all(0 in edge for edge in rvine.tree_edges(0))
    dvine = copula.fit_vine(x, structure="dvine", families="gaussian")
    assert dvine.tree_edges(0) == [(0, 1), (1, 2), (2, 3), (3, 4)]


@pytest.mark.parametrize(
    ("families", "allowed"),
    [
        ("gaussian", {"gaussian"}),
        ("TLL", {"tll"}),
        ([pv.BicopFamily.clayton, "indep"], {"clayton", "indep"}),
        ("elliptical", {"gaussian", "student"}),
    ],
)
def test_families_restrict_the_pair_copulas(families, allowed) -> None:
    x = gaussian_latents(CORRELATIONS["d5-ar1"], n=400, seed=8)[:, :3]
    vine = copula.fit_vine(x, families=families)
    assert set(vine.families) == allowed
    found = {edge["pair_copula"].family.name for tree in vine.copula.get_trees() for edge in tree}
    assert found <= allowed


# ----------------------------------------------------------------------------- sampling


def test_sampling_is_reproducible_with_a_seed_and_differs_with_another() -> None:
    x = gaussian_latents(CORRELATIONS["d5-ar1"], n=400, seed=9)
    vine = copula.fit_vine(x, families="gaussian")
    first, again, other = (copula.sample(vine, 300, seed=s) for s in (11, 11, 12))
    np.testing.assert_array_equal(first, again)
    assert not np.any(first == other)  # continuous draws: no coordinate should coincide
    np.testing.assert_array_equal(vine.sample(300, seed=11), first)
    np.testing.assert_array_equal(copula.sample(vine, 300, seed=np.random.default_rng(11)), first)
    assert first.shape == (300, 5)
    assert np.all((first >= x.min(axis=0)) & (first <= x.max(axis=0)))


def test_latent_samples_are_copula_samples_mapped_through_the_marginals() -> None:
    x = gaussian_latents(CORRELATIONS["d2-weak"], n=300, seed=10)
    vine = copula.fit_vine(x, families="tll")
    u = copula.sample(vine, 200, seed=3, scale="copula")
    assert np.all((u >= 0.0) & (u <= 1.0))
    np.testing.assert_array_equal(copula.sample(vine, 200, seed=3), vine.marginals.to_latent(u))


def test_draws_do_not_depend_on_the_chunk_size(monkeypatch) -> None:
    vine = copula.gaussian_dvine(CORRELATIONS["d5-dense"])
    whole = copula.sample(vine, 1000, seed=5, scale="copula")
    estimate = copula.mutual_information(vine, num_samples=1000, seed=5)
    monkeypatch.setattr(copula, "CHUNK_SIZE", 37)
    # the same uniforms; pyvinecopulib's vectorised arithmetic may differ in the last bit by batch
    chunked_draws = copula.sample(vine, 1000, seed=5, scale="copula")
    np.testing.assert_allclose(chunked_draws, whole, rtol=1e-12, atol=0)
    chunked = copula.mutual_information(vine, num_samples=1000, seed=5)
    assert chunked.value == pytest.approx(estimate.value, rel=1e-12, abs=1e-12)


def test_sampled_copula_has_the_fitted_dependence() -> None:
    # Kendall's tau of the Gaussian copula is (2 / pi) arcsin(rho)
    r = CORRELATIONS["d2-strong-negative"]
    u = copula.sample(copula.gaussian_dvine(r), 4000, seed=6, scale="copula")
    tau = copula.pairwise_dependence(u)[0, 1]
    assert tau == pytest.approx(2 / np.pi * np.arcsin(r[0, 1]), abs=0.03)  # sd of tau-hat ~0.006


# ----------------------------------------------------------------------------- density


@pytest.mark.parametrize("order", [None, (4, 2, 0, 1, 3)])
def test_gaussian_dvine_has_the_closed_form_gaussian_copula_density(order) -> None:
    r = CORRELATIONS["d5-dense"]
    vine = copula.gaussian_dvine(r, order=order)
    u = np.random.default_rng(12).uniform(0.001, 0.999, size=(2000, 5))
    closed_form = copula.gaussian_log_density(u, r)
    np.testing.assert_allclose(copula.log_density(vine, u), closed_form, rtol=0, atol=1e-9)
    np.testing.assert_allclose(np.exp(copula.log_density(vine, u)), vine.pdf(u), rtol=1e-12)


def test_gaussian_vine_correlation_recovers_the_matrix_of_any_gaussian_vine() -> None:
    r = CORRELATIONS["d5-dense"]
    exact_vine = copula.gaussian_dvine(r, order=(2, 4, 0, 3, 1))
    np.testing.assert_allclose(copula.gaussian_vine_correlation(exact_vine), r, atol=1e-12)
    # a selected R-vine fitted with Gaussian pair copulas is a Gaussian copula of its implied matrix
    x = gaussian_latents(r, n=1000, seed=13)
    fitted = copula.fit_vine(x, structure="rvine", families="gaussian")
    implied = copula.gaussian_vine_correlation(fitted)
    u = np.random.default_rng(14).uniform(0.01, 0.99, size=(500, 5))
    np.testing.assert_allclose(fitted.log_density(u), copula.gaussian_log_density(u, implied), atol=1e-9)
    assert np.abs(implied - r).max() < 0.1  # and close to the truth (sd of a correlation ~0.03)


def test_gaussian_vine_correlation_rejects_other_families() -> None:
    x = gaussian_latents(CORRELATIONS["d2-weak"], n=300, seed=15)
    with pytest.raises(ValueError, match="Gaussian or independence"):
        copula.gaussian_vine_correlation(copula.fit_vine(x, families="tll"))


# ----------------------------------------------------------------------------- mutual information


@pytest.mark.parametrize("name", list(CORRELATIONS))
def test_mutual_information_of_exact_gaussian_vine_matches_minus_half_log_det(name) -> None:
    # the vine is built exactly (gaussian_dvine), so the only error is Monte Carlo error
    r = CORRELATIONS[name]
    estimate = copula.mutual_information(copula.gaussian_dvine(r), num_samples=40_000, seed=16)
    exact = -0.5 * np.linalg.slogdet(r)[1]
    assert estimate.num_samples == 40_000
    assert 0.0 < estimate.stderr < 0.01  # a band this narrow makes the check below meaningful
    assert abs(estimate.value - exact) <= 4 * estimate.stderr


@pytest.mark.parametrize("name", list(CORRELATIONS))
def test_mutual_information_of_fitted_gaussian_vine_matches_minus_half_log_det(name) -> None:
    # The vine is fitted (Gaussian pair copulas, D-vine) to n_fit draws of the known copula, so
    # the estimate carries a fit error on top of the Monte Carlo error. The fitted value is a
    # smooth function of the data whose influence function is log c(U) - I, so its standard
    # deviation is sd(log c(U)) / sqrt(n_fit): the Monte Carlo stderr scaled by
    # sqrt(num_samples / n_fit). We allow 4 of the combined standard deviations.
    r, n_fit, num_samples = CORRELATIONS[name], 3000, 40_000
    vine = copula.fit_vine(gaussian_latents(r, n=n_fit, seed=17), families="gaussian")
    estimate = copula.mutual_information(vine, num_samples=num_samples, seed=18)
    fit_sd = estimate.stderr * np.sqrt(num_samples / n_fit)
    tolerance = 4 * np.hypot(estimate.stderr, fit_sd)
    assert tolerance < 0.15
    assert abs(estimate.value - copula.gaussian_mutual_information(r)) <= tolerance


def test_mutual_information_of_independence_is_zero() -> None:
    estimate = copula.mutual_information(copula.gaussian_dvine(np.eye(4)), num_samples=1000, seed=0)
    assert estimate.value == pytest.approx(0.0, abs=1e-12)
    assert estimate.stderr == pytest.approx(0.0, abs=1e-12)


def test_mutual_information_is_reproducible_with_a_seed() -> None:
    vine = copula.gaussian_dvine(CORRELATIONS["d5-ar1"])
    a, b, c = (copula.mutual_information(vine, num_samples=2000, seed=s) for s in (1, 1, 2))
    assert a == b
    assert a.value != c.value


@pytest.mark.parametrize("name", list(CORRELATIONS))
def test_rqmc_mutual_information_matches_minus_half_log_det_with_a_smaller_error(name) -> None:
    # randomised QMC: unbiased, and its stderr (spread of independent point sets) is honest
    # only if the exact value lies in its band; it should also beat i.i.d. draws at equal n
    r = CORRELATIONS[name]
    vine = copula.gaussian_dvine(r)
    rqmc = copula.mutual_information(vine, num_samples=40_000, seed=21, sampler="rqmc", num_replicates=20)
    iid = copula.mutual_information(vine, num_samples=40_000, seed=21)
    exact = copula.gaussian_mutual_information(r)
    assert rqmc.num_samples == 40_000
    assert 0.0 < rqmc.stderr < iid.stderr / 4
    assert abs(rqmc.value - exact) <= 4 * rqmc.stderr


def test_rqmc_is_reproducible_and_its_point_sets_are_independent() -> None:
    vine = copula.gaussian_dvine(CORRELATIONS["d5-ar1"])
    exact = copula.gaussian_mutual_information(CORRELATIONS["d5-ar1"])
    runs = [copula.mutual_information(vine, num_samples=8000, seed=s, sampler="rqmc") for s in (3, 3, 4)]
    assert runs[0] == runs[1]
    assert runs[0].value != runs[2].value
    # over 30 seeds, the standardised errors have about unit spread if the stderr is honest
    z = [(e.value - exact) / e.stderr for e in
         (copula.mutual_information(vine, num_samples=4000, seed=s, sampler="rqmc") for s in range(30))]
    assert 0.5 < float(np.std(z)) < 2.0
    assert abs(float(np.mean(z))) < 1.0


def test_rqmc_kl_between_gaussian_copulas_matches_closed_form() -> None:
    r_p, r_q = CORRELATIONS["d5-ar1"], np.eye(5)
    estimate = copula.kl_divergence(copula.gaussian_dvine(r_p), copula.gaussian_dvine(r_q),
                                    num_samples=20_000, seed=5, sampler="rqmc")
    assert abs(estimate.value - copula.gaussian_kl_divergence(r_p, r_q)) <= 4 * estimate.stderr


def test_rqmc_rejects_bad_options() -> None:
    vine = copula.gaussian_dvine(CORRELATIONS["d5-ar1"])
    with pytest.raises(ValueError, match="sampler"):
        copula.mutual_information(vine, num_samples=100, seed=0, sampler="sobol")
    with pytest.raises(ValueError, match="num_replicates must be at least 2"):
        copula.mutual_information(vine, num_samples=100, seed=0, sampler="rqmc", num_replicates=1)
    with pytest.raises(ValueError, match="num_replicates must be at most"):
        copula.kl_divergence(vine, vine, num_samples=10, seed=0, sampler="rqmc", num_replicates=11)


# ----------------------------------------------------------------------------- KL divergence


def test_kl_of_a_vine_with_itself_is_zero() -> None:
    vine = copula.fit_vine(gaussian_latents(CORRELATIONS["d5-dense"], n=500, seed=19), families="tll")
    estimate = copula.kl_divergence(vine, vine, num_samples=2000, seed=0)
    assert estimate.value == 0.0
    assert estimate.stderr == 0.0


def test_kl_between_two_vines_of_the_same_copula_is_zero_within_error() -> None:
    # the same Gaussian copula as two different D-vines: the densities agree but are computed
    # through different pair copulas, so the log ratio is rounding noise only
    r = CORRELATIONS["d5-dense"]
    p, q = copula.gaussian_dvine(r), copula.gaussian_dvine(r, order=(4, 2, 0, 1, 3))
    estimate = copula.kl_divergence(p, q, num_samples=20_000, seed=1)
    assert abs(estimate.value) <= 4 * estimate.stderr + 1e-9
    assert estimate.stderr < 1e-9


@pytest.mark.parametrize(
    ("name_p", "r_q"),
    [
        ("d2-weak", np.array([[1.0, -0.4], [-0.4, 1.0]])),
        ("d2-strong-negative", np.eye(2)),
        ("d5-ar1", random_correlation(5, seed=20)),
        ("d5-dense", ar1_correlation(5, 0.3)),
    ],
)
def test_kl_between_gaussian_copulas_matches_closed_form(name_p, r_q) -> None:
    r_p = CORRELATIONS[name_p]
    d = r_p.shape[0]
    log_det_p, log_det_q = np.linalg.slogdet(r_p)[1], np.linalg.slogdet(r_q)[1]
    exact = 0.5 * (np.trace(np.linalg.solve(r_q, r_p)) - d + log_det_q - log_det_p)
    assert copula.gaussian_kl_divergence(r_p, r_q) == pytest.approx(exact, rel=1e-12)
    p, q = copula.gaussian_dvine(r_p), copula.gaussian_dvine(r_q)
    estimate = copula.kl_divergence(p, q, num_samples=40_000, seed=21)
    assert 0.0 < estimate.stderr < 0.02
    assert abs(estimate.value - exact) <= 4 * estimate.stderr


# ----------------------------------------------------------------------------- grid average


def test_grid_average_approaches_the_integral_as_the_grid_refines() -> None:
    r = np.array([[1.0, 0.5], [0.5, 1.0]])
    vine, exact = copula.gaussian_dvine(r), copula.gaussian_mutual_information(r)
    errors = [abs(copula.grid_average(vine, points_per_axis=m).value - exact) for m in (25, 100, 400)]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 2e-3


def test_grid_average_matches_a_direct_sum_on_the_notebook_grid() -> None:
    # the earlier notebook's nodes: k/m on the first d-1 axes, (k + 1/2)/m on the last
    vine = copula.gaussian_dvine(CORRELATIONS["d5-ar1"][:3, :3])
    m = 4
    nodes = itertools.product(range(m), repeat=3)
    points = np.array([(a / m, b / m, (c + 0.5) / m) for a, b, c in nodes])
    density = vine.pdf(points)
    expected = np.mean(density * np.log(density))
    grid = copula.grid_average(vine, points_per_axis=m, rule="notebook")
    assert grid.value == pytest.approx(expected, rel=1e-10)
    assert (grid.num_points, grid.points_per_axis, grid.rule) == (64, 4, "notebook")


def test_grid_average_of_independence_is_zero_and_chunking_does_not_change_it(monkeypatch) -> None:
    # c = 1 everywhere (up to rounding of the pair-copula densities), so every term is ~0
    independence = copula.gaussian_dvine(np.eye(3))
    assert copula.grid_average(independence, points_per_axis=10).value == pytest.approx(0.0, abs=1e-14)
    vine = copula.gaussian_dvine(CORRELATIONS["d5-dense"][:3, :3])
    whole = copula.grid_average(vine, points_per_axis=12).value
    monkeypatch.setattr(copula, "CHUNK_SIZE", 100)
    assert copula.grid_average(vine, points_per_axis=12).value == pytest.approx(whole, rel=1e-12)


# ----------------------------------------------------------------------------- pairwise dependence


def test_pairwise_kendall_tau_matches_brute_force() -> None:
    x = gaussian_latents(CORRELATIONS["d5-dense"], n=60, seed=22)
    tau = copula.pairwise_dependence(x)
    sign = np.sign(x[:, None, :] - x[None, :, :])  # (n, n, d) pairwise orderings
    n = x.shape[0]
    brute = np.einsum("abi,abj->ij", sign, sign) / (n * (n - 1))
    np.testing.assert_allclose(tau, brute, atol=1e-12)
    np.testing.assert_array_equal(np.diag(tau), np.ones(5))


def test_pairwise_mutual_information_matches_gaussian_pairs() -> None:
    r = CORRELATIONS["d5-ar1"][:3, :3]
    n, num_samples = 4000, 20_000
    x = gaussian_latents(r, n=n, seed=23)
    options = {"measure": "mutual_information", "families": "gaussian", "num_samples": num_samples}
    mi = copula.pairwise_dependence(x, **options, seed=0)
    off = ~np.eye(3, dtype=bool)
    exact = -0.5 * np.log(1.0 - r[off] ** 2)  # bivariate Gaussian mutual information
    assert np.all(np.isnan(np.diag(mi)))
    np.testing.assert_array_equal(mi, mi.T)
    # For a bivariate Gaussian copula Var[log c(U)] = rho^2: the Monte Carlo sd is
    # |rho| / sqrt(num_samples) and the fit sd |rho| / sqrt(n) (as in the fitted-vine test above)
    tolerance = 4 * np.abs(r[off]) * np.hypot(1 / np.sqrt(num_samples), 1 / np.sqrt(n))
    assert np.all(np.abs(mi[off] - exact) <= tolerance)
    again = copula.pairwise_dependence(x, **options, seed=0)
    np.testing.assert_array_equal(mi, again)


def test_pairwise_mutual_information_with_tll_pair_copulas_is_close() -> None:
    # the default nonparametric pair copulas add a smoothing bias towards 0 (measured: about
    # -0.01 nats, sd 0.011, at rho = 0.6 and n = 2000), hence the looser tolerance
    r = CORRELATIONS["d5-ar1"][:3, :3]
    x = gaussian_latents(r, n=2000, seed=27)
    mi = copula.pairwise_dependence(x, measure="mutual_information", num_samples=5000, seed=1)
    off = ~np.eye(3, dtype=bool)
    np.testing.assert_allclose(mi[off], -0.5 * np.log(1.0 - r[off] ** 2), atol=0.06)


# ----------------------------------------------------------------------------- errors


def _valid_latents() -> np.ndarray:
    return np.random.default_rng(24).normal(size=(50, 3))


def _with(value_at: tuple[int, int], value: float) -> np.ndarray:
    x = _valid_latents()
    x[value_at] = value
    return x


@pytest.mark.parametrize(
    ("latents", "kwargs", "error", "match"),
    [
        (_with((3, 1), np.nan), {}, ValueError, r"latents must be finite, got nan at row 3, column 1"),
        (_with((0, 0), np.inf), {}, ValueError, r"latents must be finite"),
        (_valid_latents()[:3], {}, ValueError, r"at least 4 rows, got shape \(3, 3\)"),
        (np.column_stack([_valid_latents(), np.full(50, 2.0)]), {}, ValueError, r"constant columns \[3\]"),
        (np.zeros(10), {}, ValueError, r"latents must be 2-D.*shape \(10,\)"),
        (np.zeros((4, 3, 2)), {}, ValueError, r"latents must be 2-D.*shape \(4, 3, 2\)"),
        (_valid_latents()[:, :1], {}, ValueError, r"at least 2 columns.*shape \(50, 1\)"),
        (np.array([["a", "b"], ["c", "d"]]), {}, TypeError, r"latents must hold real numbers"),
        (_valid_latents() + 0j, {}, TypeError, r"latents must hold real numbers, got dtype complex128"),
        (_valid_latents(), {"structure": "cvine"}, ValueError, r"structure must be 'dvine' or 'rvine', got 'cvine'"),
        (_valid_latents(), {"families": "gausian"}, ValueError, r"unknown family 'gausian'"),
        (_valid_latents(), {"families": []}, ValueError, r"families must not be empty"),
        (_valid_latents(), {"families": 3}, TypeError, r"families must be"),
        (_valid_latents(), {"order": [0, 1, 1]}, ValueError, r"permutation of 0..2, got \[0, 1, 1\]"),
        (_valid_latents(), {"order": [1, 2, 3]}, ValueError, r"permutation of 0..2"),
        (_valid_latents(), {"order": [0.0, 1.0, 2.0]}, TypeError, r"order must be a sequence of ints"),
        (_valid_latents(), {"structure": "rvine", "order": [0, 1, 2]}, ValueError, r"order is only used"),
        (_valid_latents(), {"num_threads": 0}, ValueError, r"num_threads must be at least 1, got 0"),
    ],
)
def test_fit_vine_rejects_bad_input(latents, kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        copula.fit_vine(latents, families=kwargs.pop("families", "gaussian"), **kwargs)


def test_estimators_and_sampling_reject_bad_arguments() -> None:
    vine = copula.gaussian_dvine(ar1_correlation(3, 0.5))
    with pytest.raises(ValueError, match="num_samples must be at least 2, got 1"):
        copula.mutual_information(vine, num_samples=1, seed=0)
    with pytest.raises(TypeError, match="num_samples must be an int, got float"):
        copula.mutual_information(vine, num_samples=1e4, seed=0)
    with pytest.raises(TypeError, match="seed must be an int or a numpy.random.Generator, got NoneType"):
        copula.mutual_information(vine, num_samples=10, seed=None)
    with pytest.raises(ValueError, match="seed must be non-negative, got -1"):
        copula.sample(vine, 10, seed=-1, scale="copula")
    with pytest.raises(TypeError, match="vine must be a FittedVine or a pyvinecopulib.Vinecop, got ndarray"):
        copula.mutual_information(np.eye(3), num_samples=10, seed=0)
    with pytest.raises(ValueError, match="p and q must have the same dimension, got 3 and 2"):
        copula.kl_divergence(vine, copula.gaussian_dvine(np.eye(2)), num_samples=10, seed=0)
    with pytest.raises(ValueError, match="scale must be 'latent' or 'copula', got 'uniform'"):
        copula.sample(vine, 10, seed=0, scale="uniform")
    with pytest.raises(ValueError, match="scale='latent' needs a FittedVine"):
        copula.sample(vine, 10, seed=0)
    with pytest.raises(ValueError, match="points_per_axis must be at least 1, got 0"):
        copula.grid_average(vine, points_per_axis=0)
    with pytest.raises(ValueError, match="rule must be 'midpoint' or 'notebook', got 'trapezoid'"):
        copula.grid_average(vine, points_per_axis=3, rule="trapezoid")
    with pytest.raises(ValueError, match=r"u must lie in \[0, 1\], got values in \[-0.5, 0.5\]"):
        copula.log_density(vine, [[0.5, 0.5, -0.5]])
    with pytest.raises(ValueError, match=r"u must have 3 columns, got shape \(1, 2\)"):
        copula.log_density(vine, [[0.5, 0.5]])
    with pytest.raises(ValueError, match="u must not contain NaN"):
        copula.log_density(vine, [[0.5, np.nan, 0.5]])
    with pytest.raises(ValueError, match="measure must be 'kendall_tau' or 'mutual_information', got 'pea"):
        copula.pairwise_dependence(_valid_latents(), measure="pearson")
    with pytest.raises(ValueError, match="seed is required"):
        copula.pairwise_dependence(_valid_latents(), measure="mutual_information")
    with pytest.raises(ValueError, match="tree must be in"):
        copula.fit_vine(_valid_latents(), families="gaussian").tree_edges(2)


@pytest.mark.parametrize(
    ("correlation", "match"),
    [
        (np.array([[1.0, 0.5], [0.4, 1.0]]), "must be symmetric"),
        (np.array([[2.0, 0.5], [0.5, 1.0]]), "must have a unit diagonal"),
        (np.array([[1.0, 1.2], [1.2, 1.0]]), "must be positive definite"),
        (np.ones((2, 3)), r"must be a square matrix.*shape \(2, 3\)"),
        (np.ones((1, 1)), r"must be a square matrix of size at least 2"),
    ],
)
def test_gaussian_oracles_reject_invalid_correlation_matrices(correlation, match) -> None:
    with pytest.raises(ValueError, match=f"correlation {match}"):
        copula.gaussian_mutual_information(correlation)
    with pytest.raises(ValueError, match=f"correlation {match}"):
        copula.gaussian_dvine(correlation)


def test_marginal_maps_and_pseudo_observations_reject_bad_input() -> None:
    marginals = copula.fit_marginals(_valid_latents())
    with pytest.raises(ValueError, match=r"latents must have 3 columns, got shape \(2, 2\)"):
        marginals.to_uniform(np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"u must lie in \[0, 1\]"):
        marginals.to_latent(np.full((2, 3), 1.5))
    with pytest.raises(ValueError, match=r"at least 2 rows, got shape \(1, 3\)"):
        copula.pseudo_observations(np.zeros((1, 3)))
    with pytest.raises(ValueError, match=r"constant columns \[0\]"):
        copula.fit_marginals(np.column_stack([np.ones(5), np.arange(5.0)]))


# ----------------------------------------------------------------------------- inputs not mutated


def test_inputs_are_not_mutated() -> None:
    x = gaussian_latents(CORRELATIONS["d5-ar1"], n=300, seed=25)
    x.setflags(write=False)  # any in-place write would raise
    before = x.copy()
    order = [4, 3, 2, 1, 0]
    vine = copula.fit_vine(x, order=order, families="gaussian")
    copula.pseudo_observations(x)
    marginals = copula.fit_marginals(x)
    marginals.to_uniform(x)
    u = np.random.default_rng(26).uniform(size=(100, 5))
    u.setflags(write=False)
    u_before = u.copy()
    marginals.to_latent(u)
    copula.log_density(vine, u)
    copula.pairwise_dependence(x)
    r = ar1_correlation(5, 0.4)
    r_before = r.copy()
    copula.gaussian_log_density(u, r)
    copula.gaussian_dvine(r)
    copula.gaussian_kl_divergence(r, np.eye(5))
    np.testing.assert_array_equal(x, before)
    np.testing.assert_array_equal(u, u_before)
    np.testing.assert_array_equal(r, r_before)
    assert order == [4, 3, 2, 1, 0]
    # the fitted marginals are frozen too
    with pytest.raises(ValueError, match="read-only"):
        marginals.sorted_latents[0, 0] = 0.0
