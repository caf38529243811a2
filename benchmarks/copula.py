"""Mutual information of a vine copula: Monte Carlo against the earlier notebook's grid average.

Run from the repository root (after ``pip install -e .``)::

    python benchmarks/copula.py

Setting. A 5-dimensional Gaussian copula with the Markov-chain correlation
``R_ij = 0.5 ** |i - j|``; its mutual information (total correlation) is exactly
``-0.5 log det R = 0.575`` nats, close to the values 0.42 to 0.54 the earlier notebook reported
for its autoencoder latents. We draw ``NUM_FIT`` = 5,000 vectors from it and fit a D-vine with
Gaussian pair copulas (``bl.copula.fit_vine(..., families="gaussian")``); both estimators
below then estimate the mutual information of that *fitted* vine, which is itself a Gaussian
copula whose exact value ``bl.copula.gaussian_vine_correlation`` gives. So each error against
the true value splits into a fit error, shared by both estimators, and the estimator's own error.

The fit sample. The 5,000 vectors are ``z = L Phi^-1(u)`` with ``L L' = R`` and ``u`` a
scrambled generalised Halton point set (``pyvinecopulib.utils.ghalton``): every vector is
distributed as the copula, and the set is spread evenly, so the fitted vine is close to the
true one (fit error at most 0.004 nats over the 11 fit seeds 0 to 10). With i.i.d. draws the
fit error has a standard deviation of about 0.016 nats (``fit_sd_predicted``), a quarter of
the equal-time grid's error: it then decides the ratio of the two estimators' errors against
the true value by the luck of the fit sample (over i.i.d. fit seeds 0 to 10 the median ratio
was 6.5, and the Monte Carlo estimate was more than 0.02 nats off twice, by the fit error
alone), although it is no error of either estimator. Both are run: ``FIT_SAMPLER`` for the headline
and ``over_fit_seeds``, i.i.d. fit samples in ``over_fit_seeds_iid``.

Estimators.

* Monte Carlo: ``bl.copula.mutual_information`` with ``NUM_MC`` = 100,000 draws from the vine,
  the mean of ``log c(U)`` with its standard error, drawn by randomised quasi-Monte Carlo
  (``sampler="rqmc"``: ``NUM_REPLICATES`` = 16 independent randomised Halton point sets, the
  standard error from the spread of their means). Plain i.i.d. draws (``sampler="iid"``) are
  reported too. Why: at 100,000 i.i.d. draws the Monte Carlo error (stderr about 0.0035) was
  half of the total error, the other half being the fit error; randomised QMC costs a little
  more per point (generating the Halton points) and shrinks the estimator's own error by more
  than an order of magnitude, so what is left is the fit error, common to both estimators.
* Grid: ``bl.copula.grid_average``, the mean of ``c log c`` over a regular grid of ``m ** 5``
  points, as in the earlier notebook. The main rows use the midpoint rule (cell centres), the
  notebook's estimator at its best; the notebook's own nodes (``k / m`` on four axes, so
  including ``u = 0`` where the Gaussian copula density is unbounded, and cell centres on the
  fifth) are reported too.

Fitting with the Gaussian family only is legitimate here: the data come from a Gaussian
copula, and the fitted vine's exact value is then known in closed form. The headline uses fit
seed 0; ``FIT_SEEDS`` further fit seeds (1 to 10) are run through the same comparison, with the
share of them meeting the 10x bar. Against the fitted vine's own exact value (what both
estimators estimate) the ratio is free of the fit error and is reported as well.

Equal time. The Monte Carlo estimate is timed (median of ``REPEATS`` runs). The grid's
throughput (points per second) is measured on a ``16 ** 5`` grid, and ``m`` is the number of
points per axis whose predicted time ``m ** 5 / throughput`` is closest to the Monte Carlo time
on a log scale; that grid is then run and timed (median of ``REPEATS`` runs).

Fifty points per axis (the notebook's grid, 312.5 M evaluations). Its time is *extrapolated*:
a grid average costs a fixed time per point, so ``t_50 = t_16 * (50 / 16) ** 5`` from the
timed ``16 ** 5`` grid. Its *value* is computed exactly but not through pyvinecopulib: the
fitted vine is the Gaussian copula of its implied matrix ``R_hat``, so ``log c`` on the grid is
``-0.5 log det R_hat - 0.5 z' (R_hat^-1 - I) z`` with ``z`` the normal quantiles of the 50 nodes
per axis, summed slice by slice. That this equals the pyvinecopulib grid average is checked on
the equal-time grid (``grid_analytic_check_abs_diff``).

The table is printed and the numbers written to ``benchmarks/results/copula.json``.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyvinecopulib as pv
import torch

import backdoorlab.copula as blc

D = 5
RHO = 0.5
NUM_FIT = 5_000
NUM_MC = 100_000
FIT_SEED = 0
FIT_SAMPLER = "halton"
MC_SEED = 1
NUM_REPLICATES = 16
FIT_SEEDS = tuple(range(1, 11))
REPEATS = 3
THROUGHPUT_POINTS_PER_AXIS = 16
NOTEBOOK_POINTS_PER_AXIS = 50
TARGET_MC_ABS_ERROR = 0.02
TARGET_MC_SECONDS = 5.0
TARGET_ERROR_RATIO = 10.0
RESULTS = Path(__file__).resolve().parent / "results" / "copula.json"


def timed(fn: Callable[[], object], repeats: int) -> tuple[object, float]:
    """The result of ``fn`` and the median wall time of ``repeats`` calls."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return result, statistics.median(times)


def analytic_midpoint_grid_average(correlation: np.ndarray, points_per_axis: int) -> float:
    """Mean of c log c over the midpoint grid for the Gaussian copula of ``correlation``.

    Uses that z_j = Phi^-1(u_j) takes only ``points_per_axis`` values per axis: the quadratic
    form is built by broadcasting, one slice of the first axis at a time (m ** (d-1) points).
    """
    d, m = correlation.shape[0], points_per_axis
    nodes = torch.tensor((np.arange(m) + 0.5) / m, dtype=torch.float64)
    z = torch.special.ndtri(nodes).numpy()  # (m,) normal scores of the nodes
    a = np.linalg.inv(correlation) - np.eye(d)
    half_log_det = 0.5 * np.linalg.slogdet(correlation)[1]
    # z_{k+1} laid along axis k of a slice (the d - 1 axes after the first)
    axes = [z.reshape([m if i == k else 1 for i in range(d - 1)]) for k in range(d - 1)]
    # the part of z' A z not involving z_0: the same for every slice of the first axis
    rest = sum(a[i + 1, j + 1] * axes[i] * axes[j] for i in range(d - 1) for j in range(d - 1))
    linear = sum(a[0, j + 1] * axes[j] for j in range(d - 1))  # (m, ..., m) coefficient of z_0
    total = 0.0
    for z0 in z:
        log_c = -half_log_det - 0.5 * (a[0, 0] * z0 * z0 + 2.0 * z0 * linear + rest)
        total += float(np.sum(np.exp(log_c) * log_c))
    return total / m**d


def fit_sample(correlation: np.ndarray, seed: int, sampler: str) -> np.ndarray:
    """``NUM_FIT`` vectors z = L Phi^-1(u) of the Gaussian copula of ``correlation``, (NUM_FIT, D).

    ``sampler="halton"``: u is a scrambled generalised Halton point set; ``"iid"``: i.i.d. normal
    vectors with covariance ``correlation``.
    """
    rng = np.random.default_rng(seed)
    if sampler == "iid":
        return rng.multivariate_normal(np.zeros(D), correlation, size=NUM_FIT)
    if sampler != "halton":
        raise ValueError(f"sampler must be 'halton' or 'iid', got {sampler!r}")
    scramble = rng.integers(0, 2**31 - 1, size=4).tolist()
    u = pv.utils.ghalton(NUM_FIT, D, seeds=scramble)  # (NUM_FIT, D) in (0, 1)
    normal = torch.special.ndtri(torch.from_numpy(np.ascontiguousarray(u))).numpy()
    return normal @ np.linalg.cholesky(correlation).T


def compare_over_fit_seeds(correlation: np.ndarray, exact: float, sampler: str,
                           estimate_mc: Callable[[blc.FittedVine], float],
                           points_per_axis: int, seeds: tuple[int, ...]) -> list[dict]:
    """The equal-time comparison, repeated for each fit seed."""
    rows = []
    for fit_seed in seeds:
        vine = blc.fit_vine(fit_sample(correlation, fit_seed, sampler), structure="dvine",
                            families="gaussian")
        vine_exact = blc.gaussian_mutual_information(blc.gaussian_vine_correlation(vine))
        mc = estimate_mc(vine)
        grid = blc.grid_average(vine, points_per_axis=points_per_axis).value
        rows.append({
            "fit_seed": fit_seed,
            "fit_abs_error": abs(vine_exact - exact),
            "mc_abs_error": abs(mc - exact),
            "grid_abs_error": abs(grid - exact),
            "error_ratio": abs(grid - exact) / abs(mc - exact),
            "error_ratio_vs_fitted_vine": abs(grid - vine_exact) / abs(mc - vine_exact),
        })
    return rows


def summary(rows: list[dict], suffix: str = "") -> dict:
    """Median ratios, the share meeting the bar and the largest errors over fit seeds."""
    ratios = np.array([row["error_ratio"] for row in rows])
    return {
        f"over_fit_seeds{suffix}_median_error_ratio": float(np.median(ratios)),
        f"over_fit_seeds{suffix}_min_error_ratio": float(ratios.min()),
        f"over_fit_seeds{suffix}_share_ratio_at_least_10": float(np.mean(ratios >= TARGET_ERROR_RATIO)),
        f"over_fit_seeds{suffix}_median_error_ratio_vs_fitted_vine": float(
            np.median([row["error_ratio_vs_fitted_vine"] for row in rows])),
        f"over_fit_seeds{suffix}_max_mc_abs_error": float(max(row["mc_abs_error"] for row in rows)),
        f"over_fit_seeds{suffix}_max_fit_abs_error": float(max(row["fit_abs_error"] for row in rows)),
    }


def main() -> None:
    torch.set_num_threads(1)
    correlation = RHO ** np.abs(np.subtract.outer(np.arange(D), np.arange(D)))
    exact = blc.gaussian_mutual_information(correlation)

    latents = fit_sample(correlation, FIT_SEED, FIT_SAMPLER)
    vine, fit_s = timed(lambda: blc.fit_vine(latents, structure="dvine", families="gaussian"), 1)
    fitted_correlation = blc.gaussian_vine_correlation(vine)
    fitted_exact = blc.gaussian_mutual_information(fitted_correlation)

    # Monte Carlo: randomised QMC (headline) and i.i.d.
    def monte_carlo(fitted: blc.FittedVine) -> blc.Estimate:
        return blc.mutual_information(fitted, num_samples=NUM_MC, seed=MC_SEED, sampler="rqmc",
                                      num_replicates=NUM_REPLICATES)

    blc.mutual_information(vine, num_samples=1_000, seed=MC_SEED, sampler="rqmc")  # warm-up
    mc, mc_s = timed(lambda: monte_carlo(vine), REPEATS)
    iid, iid_s = timed(lambda: blc.mutual_information(vine, num_samples=NUM_MC, seed=MC_SEED), REPEATS)

    # grid throughput, then the grid of about the Monte Carlo's cost
    m_ref = THROUGHPUT_POINTS_PER_AXIS
    grid_ref, ref_s = timed(lambda: blc.grid_average(vine, points_per_axis=m_ref), 1)
    throughput = m_ref**D / ref_s
    candidates = np.arange(2, NOTEBOOK_POINTS_PER_AXIS + 1)
    m_eq = int(candidates[np.argmin(np.abs(np.log(candidates**D / throughput) - np.log(mc_s)))])
    grid, grid_s = timed(lambda: blc.grid_average(vine, points_per_axis=m_eq), REPEATS)
    grid_notebook = blc.grid_average(vine, points_per_axis=m_eq, rule="notebook")
    analytic_check = abs(analytic_midpoint_grid_average(fitted_correlation, m_eq) - grid.value)

    # the notebook's 50 points per axis: value in closed form, time extrapolated from 16 per axis
    grid50_s = ref_s * (NOTEBOOK_POINTS_PER_AXIS / m_ref) ** D
    start = time.perf_counter()
    grid50 = analytic_midpoint_grid_average(fitted_correlation, NOTEBOOK_POINTS_PER_AXIS)
    grid50_analytic_s = time.perf_counter() - start

    # context: the chapter's nonparametric (TLL) D-vine on the same data
    tll_vine, tll_fit_s = timed(lambda: blc.fit_vine(latents, structure="dvine", families="tll"), 1)
    tll = blc.mutual_information(tll_vine, num_samples=NUM_MC, seed=MC_SEED)

    # the same comparison for further fit seeds: is the headline ratio typical? And with
    # i.i.d. fit samples, whose fit error is larger (seed 0 included: the earlier headline)
    def mc_value(fitted: blc.FittedVine) -> float:
        return monte_carlo(fitted).value

    over_seeds = compare_over_fit_seeds(correlation, exact, FIT_SAMPLER, mc_value, m_eq, FIT_SEEDS)
    over_seeds_iid = compare_over_fit_seeds(correlation, exact, "iid", mc_value, m_eq,
                                            (FIT_SEED, *FIT_SEEDS))

    mc_abs_error = abs(mc.value - exact)
    grid_abs_error = abs(grid.value - exact)
    results = {
        "mc_abs_error": mc_abs_error,
        "mc_s": mc_s,
        "grid_abs_error": grid_abs_error,
        "grid_s": grid_s,
        "exact_mi": exact,
        "correlation": f"R_ij = {RHO} ** |i - j|, d = {D}",
        "num_fit_samples": NUM_FIT,
        "fit_sampler": f"{FIT_SAMPLER}: z = L Phi^-1(u), u a scrambled generalised Halton set",
        "fit_s": fit_s,
        "fitted_vine_exact_mi": fitted_exact,
        "fit_abs_error": abs(fitted_exact - exact),
        "mc_estimate": mc.value,
        "mc_stderr": mc.stderr,
        "mc_num_samples": mc.num_samples,
        "mc_abs_error_vs_fitted_vine": abs(mc.value - fitted_exact),
        "mc_sampler": f"rqmc, {NUM_REPLICATES} randomised Halton point sets",
        "iid_mc_estimate": iid.value,
        "iid_mc_stderr": iid.stderr,
        "iid_mc_abs_error": abs(iid.value - exact),
        "iid_mc_s": iid_s,
        # sd of the fitted vine's exact value over i.i.d. fit samples: sd(log c) / sqrt(NUM_FIT), with
        # sd(log c) read off the i.i.d. Monte Carlo terms (see tests/test_copula.py)
        "fit_sd_predicted": iid.stderr * np.sqrt(NUM_MC / NUM_FIT),
        "grid_rule": "midpoint",
        "grid_points_per_axis": m_eq,
        "grid_num_points": grid.num_points,
        "grid_estimate": grid.value,
        "grid_abs_error_vs_fitted_vine": abs(grid.value - fitted_exact),
        "grid_notebook_rule_estimate": grid_notebook.value,
        "grid_notebook_rule_abs_error": abs(grid_notebook.value - exact),
        "grid_throughput_points_per_s": throughput,
        "grid_analytic_check_abs_diff": analytic_check,
        "grid50_points_per_axis": NOTEBOOK_POINTS_PER_AXIS,
        "grid50_estimate": grid50,
        "grid50_abs_error": abs(grid50 - exact),
        "grid50_abs_error_vs_fitted_vine": abs(grid50 - fitted_exact),
        "grid50_s_extrapolated": grid50_s,
        "grid50_extrapolation": (
            f"t_{m_ref} * ({NOTEBOOK_POINTS_PER_AXIS} / {m_ref}) ** {D}, t_{m_ref} = {ref_s:.3f} s measured"
        ),
        "grid50_value_method": (
            "closed-form Gaussian copula density of the fitted vine's implied correlation matrix"
        ),
        "grid50_closed_form_s": grid50_analytic_s,
        "tll_mc_estimate": tll.value,
        "tll_mc_stderr": tll.stderr,
        "tll_mc_abs_error": abs(tll.value - exact),
        "tll_fit_s": tll_fit_s,
        "error_ratio_grid_over_mc": grid_abs_error / mc_abs_error,
        "error_ratio_grid_over_mc_vs_fitted_vine": (
            abs(grid.value - fitted_exact) / abs(mc.value - fitted_exact)
        ),
        "over_fit_seeds": over_seeds,
        **summary(over_seeds),
        "over_fit_seeds_iid": over_seeds_iid,
        **summary(over_seeds_iid, "_iid"),
        "target_mc_within_0_02_nats": bool(mc_abs_error <= TARGET_MC_ABS_ERROR),
        "target_mc_under_5_s": bool(mc_s < TARGET_MC_SECONDS),
        "target_error_ratio_at_least_10": bool(grid_abs_error >= TARGET_ERROR_RATIO * mc_abs_error),
        "repeats": REPEATS,
        "seeds": {"fit": FIT_SEED, "mc": MC_SEED},
        "pyvinecopulib": pv.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }

    notebook_error = abs(grid_notebook.value - exact)
    rows = [
        ("exact -0.5 log det R", "", exact, 0.0, np.nan),
        ("fitted vine, exact", "", fitted_exact, abs(fitted_exact - exact), fit_s),
        (f"Monte Carlo (RQMC), n = {NUM_MC:,}", f"{NUM_MC:,}", mc.value, mc_abs_error, mc_s),
        (f"Monte Carlo (i.i.d.), n = {NUM_MC:,}", f"{NUM_MC:,}", iid.value, abs(iid.value - exact), iid_s),
        (f"grid midpoint, m = {m_eq} (equal time)", f"{grid.num_points:,}", grid.value, grid_abs_error, grid_s),
        (f"grid notebook nodes, m = {m_eq}", f"{grid.num_points:,}", grid_notebook.value, notebook_error, np.nan),
        ("grid midpoint, m = 50 (time extrapolated)", f"{50**D:,}", grid50, abs(grid50 - exact), grid50_s),
        ("Monte Carlo on TLL D-vine", f"{NUM_MC:,}", tll.value, abs(tll.value - exact), np.nan),
    ]
    print(f"Mutual information of a {D}-D Gaussian copula (R_ij = {RHO}^|i-j|), "
          f"vine fitted to {NUM_FIT:,} samples")
    print(f"{'estimator':44s} {'evaluations':>13s} {'value':>9s} {'|error|':>9s} {'time (s)':>9s}")
    for name, evaluations, value, error, seconds in rows:
        shown = "" if np.isnan(seconds) else f"{seconds:.3f}"
        print(f"{name:44s} {evaluations:>13s} {value:9.4g} {error:9.4g} {shown:>9s}")
    print(f"Monte Carlo stderr {mc.stderr:.5f} (i.i.d. {iid.stderr:.4f}); fit error {abs(fitted_exact - exact):.4f} "
          f"(with i.i.d. fit samples its predicted sd is {results['fit_sd_predicted']:.4f})")
    print(f"error vs the fitted vine's exact value: MC {abs(mc.value - fitted_exact):.4f}, "
          f"grid {abs(grid.value - fitted_exact):.4f} "
          f"(ratio {results['error_ratio_grid_over_mc_vs_fitted_vine']:.1f}); "
          f"vs the true value: ratio {results['error_ratio_grid_over_mc']:.1f}")
    for suffix, kind in (("", f"{FIT_SAMPLER}, fit seeds 1-10"), ("_iid", "i.i.d., fit seeds 0-10")):
        print(f"over fit samples ({kind}): ratio vs the true value "
              f"median {results[f'over_fit_seeds{suffix}_median_error_ratio']:.1f}, smallest "
              f"{results[f'over_fit_seeds{suffix}_min_error_ratio']:.1f}, >= {TARGET_ERROR_RATIO:g} for "
              f"{results[f'over_fit_seeds{suffix}_share_ratio_at_least_10']:.0%}; vs each fitted vine median "
              f"{results[f'over_fit_seeds{suffix}_median_error_ratio_vs_fitted_vine']:.0f}; largest "
              f"fit error {results[f'over_fit_seeds{suffix}_max_fit_abs_error']:.4f}, MC error "
              f"{results[f'over_fit_seeds{suffix}_max_mc_abs_error']:.4f}")
    print(f"targets: MC within {TARGET_MC_ABS_ERROR} nats: {results['target_mc_within_0_02_nats']}; "
          f"MC under {TARGET_MC_SECONDS} s: {results['target_mc_under_5_s']}; "
          f"grid error >= {TARGET_ERROR_RATIO:g} x MC error at equal time: "
          f"{results['target_error_ratio_at_least_10']}")

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written {RESULTS}")


if __name__ == "__main__":
    main()
