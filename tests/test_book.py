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
    # the clean model's mean depends on the trained weights (0.054 on one machine, under 0.05 on
    # another); the claim is that it is a small fraction of the BadNets model's
    assert values["ig_trigger_mass_clean_model"] <= 0.10
    assert values["ig_trigger_mass_clean_model"] <= values["ig_trigger_mass_badnets"] / 5


def test_integrated_gradients_axioms_and_faithfulness_are_glued_and_hold():
    values = glued("integrated_gradients")
    # the axioms, measured: IG has no sensitivity violation, the gradient may
    assert values["ig_sensitivity_violations_ig"] == 0.0
    violations = values["ig_sensitivity_violations_gradient"]
    assert violations == int(violations) and 0 <= violations <= values["ig_sensitivity_changed"]
    assert values["ig_implementation_invariance_max_diff"] <= 1e-4
    assert values["ig_linearity_max_diff"] <= 1e-4 and values["ig_symmetry_max_diff"] <= 1e-4
    # faithfulness: IG's ranking deletes faster than a random one, its top pixels disarm the trigger
    assert 0.0 <= values["ig_deletion_auc_ig"] < values["ig_deletion_auc_random"] <= 1.0
    assert values["ig_asr_after_occlusion_ig"] < values["ig_asr_after_occlusion_random"]
    assert values["ig_asr_after_occlusion_ig"] <= 0.2
    # the trigger found without the mask
    assert values["ig_trigger_iou_blind"] >= 0.5
    # the default path is float32-accurate against float64 (layers behind the first ReLU still
    # run in float32, so a kink there can move an attribution: 5.7e-5 on one machine's weights)
    assert values["ig_prefix_diff_to_float64"] <= 5e-4
    assert values["ig_whole_diff_to_float64"] >= 0.0


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
    # the targeted budget is chosen on held-out training images (median success of the clean
    # model's targeted perturbations at least the rate, or the largest budget of the grid) and
    # it reaches some class on the test subset: the experiment measures something
    assert (values["uap_targeted_select_median"] >= values["uap_targeted_select_rate"]
            or values["uap_targeted_xi"] == 8.0)
    assert values["uap_targeted_select_reached"] in (0.0, 1.0)
    assert values["uap_targeted_clean_other_max"] >= 0.10
    # secondary experiments run on a fixed test subset of at least 2,000 images
    assert values["uap_test_subset_size"] >= 2000
    assert values["uap_subset_se_max"] <= 0.5 / math.sqrt(2000) + 1e-12


def test_ulp_numbers_meet_the_chapter_claims():
    values = glued("ulp")
    required = ("ulp_auc_m10_mean", "ulp_auc_m10_ci_low", "ulp_auc_m10_ci_high", "ulp_auc_m10_one_source_mean",
                "ulp_noise_auc_m10_mean", "nc_auc", "nc_auc_ci_low", "nc_seconds_per_model", "ulp_auc_transfer",
                "ulp_auc_anywhere", "ulp_auc_blended", "ulp_num_detector_seeds")
    for key in required:
        assert key in values, f"{key} is not glued"
    for key in ("ulp_auc_m1", "ulp_auc_m5", "ulp_auc_m10", "ulp_noise_auc_m10", "ulp_auc_m10_mean",
                "ulp_auc_m10_one_source_mean", "ulp_noise_auc_m10_mean", "nc_auc", "nc_auc_ci_low",
                "ulp_auc_transfer", "ulp_auc_anywhere"):
        assert 0.0 <= values[key] <= 1.0, key
    assert values["ulp_num_detector_seeds"] >= 5
    assert values["ulp_auc_m10_ci_low"] <= values["ulp_auc_m10_mean"] <= values["ulp_auc_m10_ci_high"]
    assert values["nc_auc_ci_low"] <= values["nc_auc"]
    assert values["nc_seconds_per_model"] > 0
    # bars on the means over detector seeds: the pooled AUC at M = 10 (0.932 when last built) is held
    # to 0.90, since another machine trains slightly different zoo weights, and beats noise clearly;
    # the one-source mean (0.88 when last built, on about half the models) is held to 0.80
    assert values["ulp_auc_m10_mean"] >= 0.90
    assert values["ulp_auc_m10_one_source_mean"] >= 0.80
    assert values["ulp_auc_m10_mean"] - values["ulp_noise_auc_m10_mean"] >= 0.2
    assert values["ulp_auc_anywhere"] >= 0.7
    # the blended zoo is measured, whatever it shows, with Neural Cleanse beside it
    for key in ("ulp_auc_blended", "ulp_noise_auc_blended", "nc_auc_blended"):
        assert 0.0 <= values[key] <= 1.0, key
    assert values["ulp_auc_blended_ci_low"] <= values["ulp_auc_blended_ci_high"]
    assert values["nc_auc_blended_ci_low"] <= values["nc_auc_blended"] <= values["nc_auc_blended_ci_high"]
    assert values["ulp_blended_models"] >= 40
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
    for key in ("dcae_trigger_rate_clean", "dcae_trigger_rate_poisoned_on_clean",
                "dcae_trigger_rate_independence", "dcae_trigger_rate_gaussian"):
        assert key in values, f"{key} is not glued"
        assert 0.0 <= values[key] <= 1.0
    assert values["dcae_chapter_seconds"] > 0


def test_course_outline_has_ten_to_thirteen_weeks():
    weeks = glued("course")["course_weeks"]
    assert weeks == int(weeks) and 10 <= weeks <= 13


def test_dcae_verdicts_rest_on_ten_paired_seeds_with_intervals():
    values = glued("dcae")
    assert values["dcae_num_seeds"] >= 10
    for arch in ("notebook", "mlp"):
        prefix = f"dcae_mi_change_{arch}"
        assert values[f"{prefix}_ci_low"] <= values[f"{prefix}_mean"] <= values[f"{prefix}_ci_high"]
        assert 0.0 <= values[f"{prefix}_p_value"] <= 1.0
        for effect in ("model", "data"):
            prefix = f"dcae_{effect}_effect_{arch}"
            assert values[f"{prefix}_ci_low"] <= values[f"{prefix}_mean"] <= values[f"{prefix}_ci_high"]
    # a KL divergence is >= 0; Monte Carlo may dip below only by its error
    assert values["dcae_kl_null_mean"] > -0.02
    assert values["dcae_trigger_located"] in (0.0, 1.0)
    for arch in ("notebook", "mlp"):
        assert 0 <= values[f"dcae_scan_found_pipeline_{arch}"] <= values["dcae_num_seeds"]


def test_lab_grades_its_reference_attempts():
    values = glued("ulp_lab")
    for key in ("lab_badnets_caught", "lab_reference_evasion_passed", "lab_blended_caught"):
        assert values[key] in (0.0, 1.0), f"{key} must be 0 or 1"
    # the attempts are real attacks: both keep their accuracy and their backdoor
    for name in ("badnets", "blended"):
        assert values[f"lab_{name}_accuracy"] >= 0.98 and values[f"lab_{name}_asr"] >= 0.9
    assert values["lab_grade_seconds"] > 0
    assert 0.0 <= values["lab_ulp_threshold"] <= 1.0 and values["lab_nc_threshold"] >= 0.0
    # the page's rescan of Neural Cleanse reproduces the grader's index
    assert values["lab_nc_rescan_matches"] == 1.0
    # an evasion passes every criterion, so it cannot also be caught
    assert not (values["lab_reference_evasion_passed"] and values["lab_blended_caught"])
