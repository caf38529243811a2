"""Checks of the executed book, run by `make check-site` after `make book`.

The chapters glue the numbers their prose quotes; the executed values are recorded in
`_build/jupyter_execute/<chapter>.glue.json`. These tests hold the numbers to the bars
the book promises.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

pytestmark = pytest.mark.book

EXECUTED = Path(__file__).resolve().parents[1] / "_build" / "jupyter_execute" / "book"


def glued(chapter: str) -> dict[str, float]:
    path = EXECUTED / f"{chapter}.glue.json"
    assert path.exists(), f"{path} is missing: run `make book` first"
    values = {}
    for key, entry in json.loads(path.read_text()).items():
        text = entry["data"].get("text/plain")
        try:
            values[key] = float(text)
        except (TypeError, ValueError):
            continue  # figures
    return values


def test_primer_numbers_are_glued_floats_in_the_unit_interval():
    values = glued("backdoors")
    for key in ("primer_clean_acc", "primer_badnets_clean_acc", "primer_badnets_asr"):
        assert key in values, f"{key} is not glued"
        assert 0.0 <= values[key] <= 1.0


def test_primer_models_reach_the_promised_accuracy():
    values = glued("backdoors")
    assert values["primer_clean_acc"] >= 0.990
    assert values["primer_badnets_clean_acc"] >= 0.988
    assert values["primer_badnets_asr"] >= 0.995


def test_integrated_gradients_numbers_meet_the_chapter_claims():
    values = glued("integrated_gradients")
    assert values["ig_within_1pct_share"] >= 0.95
    assert values["ig_trigger_mass_badnets"] >= 0.6
    assert values["ig_trigger_mass_clean_model"] <= 0.05


def test_universal_perturbation_numbers_meet_the_chapter_claims():
    values = glued("uap")
    required = ("uap_alg1_fooling_rate_test_mean", "uap_alg1_fooling_rate_test_sd",
                "uap_sgd_fooling_rate_test_mean", "uap_sgd_fooling_rate_test_sd",
                "uap_random_fooling_rate_test_mean", "uap_num_seeds", "uap_alg1_passes_used",
                "uap_subspace_fooling_rate", "uap_subspace_random_fooling_rate")
    for key in required:
        assert key in values, f"{key} is not glued"
    assert values["uap_num_seeds"] >= 3
    assert values["uap_xi"] <= 0.4
    assert 1 <= values["uap_alg1_passes_used"] <= values["uap_alg1_max_passes"]
    for key in ("uap_alg1_fooling_rate_test", "uap_sgd_fooling_rate_test"):
        assert 0.0 <= values[f"{key}_min"] <= values[f"{key}_mean"] <= 1.0
        assert values[f"{key}_sd"] >= 0.0
    # the headline: some algorithm fools most test digits on average, far above the controls
    assert values["uap_fooling_rate_test"] >= 0.70
    assert values["uap_random_fooling_rate_test_mean"] <= 0.20
    assert values["uap_max_control"] < values["uap_fooling_rate_test"]
    # the per-pass history of Algorithm 1 is a fooling rate after each pass
    for i in range(1, int(values["uap_alg1_max_passes"]) + 1):
        assert 0.0 <= values[f"uap_alg1_history_pass{i}"] <= 1.0


def test_universal_perturbation_subspace_and_targeted_numbers_are_consistent():
    values = glued("uap")
    assert 1 <= values["uap_subspace_k"] <= 784
    for key in ("uap_subspace_fooling_rate", "uap_subspace_random_fooling_rate",
                "uap_subspace_images_fooling_rate_mean"):
        assert 0.0 <= values[key] <= 1.0, key
    # the chapter's text says the subspace test is decided only by non-overlapping draws
    assert values["uap_subspace_fooling_rate_min"] <= values["uap_subspace_fooling_rate"]
    assert values["uap_deepfool_norm_median"] <= values["uap_deepfool_norm_q90"]
    for model in ("clean", "badnets"):
        assert 0.0 <= values[f"uap_targeted_{model}_to_target_mean"] <= 1.0
        assert 0.0 <= values[f"uap_targeted_{model}_other_max"] <= 1.0


def test_ulp_numbers_meet_the_chapter_claims():
    values = glued("ulp")
    for key in ("ulp_auc_m1", "ulp_auc_m5", "ulp_auc_m10", "ulp_noise_auc_m10"):
        assert 0.0 <= values[key] <= 1.0, key
    assert values["ulp_auc_m10"] >= 0.90
    assert values["ulp_auc_m10"] - values["ulp_noise_auc_m10"] >= 0.08
    assert values["ulp_zoo_minutes"] > 0  # a build time is recorded (its budget is not a test)
    assert values["ulp_zoo_models"] >= 400
    assert values["ulp_train_models"] >= 300 and values["ulp_test_models"] >= 100


def test_universal_perturbation_l2_numbers_meet_the_chapter_claims():
    values = glued("uap")
    assert values["uap_l2_fooling_rate_test"] >= 0.50
    assert values["uap_l2_random_fooling_rate_test_mean"] <= 0.20
    assert values["uap_l2_checkerboard_fooling_rate_test"] <= 0.20
    assert values["uap_l2_max_control"] < values["uap_l2_fooling_rate_test"]
    assert 1 <= values["uap_l2_alg1_passes_used"] <= values["uap_alg1_max_passes"]


def test_dcae_numbers_are_glued():
    values = glued("dcae")
    for key in ("dcae_mi_clean", "dcae_mi_poisoned", "dcae_mi_poisoned_on_clean"):
        assert key in values, f"{key} is not glued"
        # mutual information is >= 0; a Monte Carlo estimate may dip below only by its error
        assert math.isfinite(values[key]) and values[key] > -0.05
    for key in ("dcae_trigger_rate_clean", "dcae_trigger_rate_poisoned_on_clean"):
        assert key in values, f"{key} is not glued"
        assert 0.0 <= values[key] <= 1.0
    assert values["dcae_chapter_seconds"] > 0
