"""Integrated Gradients: backdoorlab against Captum and against a naive loop.

Run from the repository root (after ``pip install -e .`` with the ``peers`` extra)::

    BACKDOORLAB_DATA=/path/to/data python benchmarks/ig.py

All three compute IG of the true class's logit for the first 64 MNIST test images under the
book's clean MNIST classifier, with the black baseline, the Gauss-Legendre rule and 50 steps:

* ours: ``bl.attribution.integrated_gradients`` with its default ``batch_size``;
* Captum: ``IntegratedGradients(model).attribute`` with ``internal_batch_size`` equal to our
  ``batch_size`` (without it Captum runs all 3200 path points at once);
* naive: one forward and one backward pass per path point per image, the same nodes and weights.

Wall times: each method is run once to warm up; ours and Captum are then timed as the best of
``REPEATS`` runs, taking turns (so that load from other processes on a shared machine hits both
alike), the naive loop once; the load average at the end is recorded with the numbers.
The difference to Captum is, per image, ``max_i |a_i - c_i| / max_i |c_i|`` (a relative error
that does not blow up at pixels with a tiny attribution); the maximum over the images is
reported. The table is printed and the numbers are written to ``benchmarks/results/ig.json``.

Where the time goes (profiled on the 2 CPU cores, blocks of 256 path points of the book's CNN).
Evaluated as written, every path point costs the whole network: the two convolutions' input
gradients took about 40 % of a block, the first convolution's (1 input channel, 28 x 28) the
larger part; max pooling with indices about 20 %, the forward convolutions about 20 %. That is
the work the naive loop does too, so batching alone gained only the per-call overhead (6.9x).
Two changes, both exact, took the rest:

* the affine prefix (``bl.attribution.affine_split``): the standardisation and the first
  convolution are affine, so the path points are formed behind them and the sum over the steps
  is pulled back through them once per image, not once per path point (the chapter's equation
  ``eq-ig-affine``); the pooling then receives its input in channels-last layout, in which
  PyTorch's CPU max-pooling and its backward pass ran about twice as fast;
* the CNN pools before its ReLUs (same function and gradients), a quarter of the ReLU work.

Rounding: a path point within float32 rounding of a ReLU's kink can be seen on the other side
of it, and the gradient jumps there, so any float32 computation can be off by about 1e-4 to
1e-3 of an image's largest attribution at a few pixels. The affine prefix runs in float64 (only
at x and x' and in the pull-back) and forms the path points in float64 before rounding them,
so the first nonlinearity behind it sees every point on its float64 side. The script records
the difference of ours, of ``affine_prefix=False`` and of Captum to a float64 computation of
the same sum, and the difference of ours to Captum.
Measured and not kept: channels-last for the whole model (conversions cost what pooling
gained), oneDNN switched off (NNPACK's input gradients were 0.4 relative away from the
reference, the im2col fallback 1.7 times slower).
"""

from __future__ import annotations

import copy
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

import backdoorlab as bl
from backdoorlab.attribution import DEFAULT_BATCH_SIZE, integrated_gradients, quadrature_rule

NUM_IMAGES = 64
NUM_STEPS = 50
METHOD = "gausslegendre"
REPEATS = 7
SWEEP_BATCH_SIZES = (128, 256, 512, 1024, 3200)
RESULTS = Path(__file__).resolve().parent / "results" / "ig.json"


def naive_integrated_gradients(
    model: nn.Module, images: Tensor, target: Tensor, *, num_steps: int, method: str
) -> Tensor:
    """IG with one forward/backward pass per path point per image: the loop to beat."""
    rule = quadrature_rule(method, num_steps)
    attributions = torch.zeros_like(images)
    for n in range(images.shape[0]):
        x = images[n : n + 1]  # (1, C, H, W); the baseline is black
        total = torch.zeros_like(x)
        for alpha, weight in zip(rule.nodes.tolist(), rule.weights.tolist()):
            point = (alpha * x).requires_grad_(True)
            score = model(point)[0, target[n]]
            (grad,) = torch.autograd.grad(score, point)
            total += weight * grad
        attributions[n] = (x * total)[0]
    return attributions


def max_relative_difference(values: Tensor, reference: Tensor) -> float:
    """max over images of max_i |a_i - b_i| / max_i |b_i|."""
    diff = (values - reference).flatten(1).abs().amax(dim=1)
    scale = reference.flatten(1).abs().amax(dim=1).clamp_min(torch.finfo(reference.dtype).tiny)
    return float((diff / scale).max())


def best_times(functions: dict[str, Callable[[], Tensor]], *, repeats: int
               ) -> tuple[dict[str, float], dict[str, Tensor]]:
    """Best wall time of each function over ``repeats`` rounds, after one warm-up call each.

    The functions take turns within a round, so a burst of load from other processes on a
    shared machine hits them alike.
    """
    outputs = {name: fn() for name, fn in functions.items()}
    best = dict.fromkeys(functions, float("inf"))
    for _ in range(repeats):
        for name, fn in functions.items():
            start = time.perf_counter()
            outputs[name] = fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best, outputs


def run(model: nn.Module, images: Tensor, target: Tensor, *, batch_size: int = DEFAULT_BATCH_SIZE,
        repeats: int = REPEATS, sweep: tuple[int, ...] = SWEEP_BATCH_SIZES) -> dict:
    """Time ours, Captum and the naive loop on the same inputs; return the JSON record."""
    import captum
    from captum.attr import IntegratedGradients

    def ours(size: int = batch_size) -> Tensor:
        return integrated_gradients(model, images, target=target, num_steps=NUM_STEPS,
                                    method=METHOD, batch_size=size).attributions

    def whole() -> Tensor:
        return integrated_gradients(model, images, target=target, num_steps=NUM_STEPS,
                                    method=METHOD, batch_size=batch_size,
                                    affine_prefix=False).attributions

    def peer() -> Tensor:
        return IntegratedGradients(model).attribute(
            images, baselines=torch.zeros_like(images), target=target, n_steps=NUM_STEPS,
            method=METHOD, internal_batch_size=batch_size)

    # the batch-size sweep takes turns with the two, so all see the same load
    others = {f"ours@{size}": (lambda size=size: ours(size)) for size in sweep
              if size != batch_size}
    times, outputs = best_times({"ours": ours, "captum": peer, "whole": whole, **others},
                                repeats=repeats)
    naive_integrated_gradients(model, images[:1], target[:1], num_steps=2, method=METHOD)
    start = time.perf_counter()
    naive_attr = naive_integrated_gradients(model, images, target, num_steps=NUM_STEPS,
                                            method=METHOD)
    naive_s = time.perf_counter() - start
    sweep_s = {str(size): times["ours" if size == batch_size else f"ours@{size}"]
               for size in sweep}
    gap = integrated_gradients(model, images, target=target, num_steps=NUM_STEPS,
                               method=METHOD, batch_size=batch_size).relative_gap
    # the same sum in float64 (whole model at every point): the reference for all three
    reference = integrated_gradients(copy.deepcopy(model).double(), images.double(),
                                     target=target, num_steps=NUM_STEPS, method=METHOD,
                                     batch_size=batch_size, affine_prefix=False).attributions
    to_reference = {name: max_relative_difference(outputs[name].double(), reference)
                    for name in ("ours", "captum", "whole")}
    return {
        "ours_s": times["ours"],
        "captum_s": times["captum"],
        "naive_s": naive_s,
        "max_rel_diff": max_relative_difference(outputs["ours"], outputs["captum"]),
        "max_rel_diff_definition": "max over images of max|ours - captum| / max|captum|",
        "naive_max_rel_diff": max_relative_difference(naive_attr, outputs["captum"]),
        "ours_without_affine_prefix_s": times["whole"],
        "max_rel_diff_without_affine_prefix": max_relative_difference(outputs["whole"],
                                                                      outputs["captum"]),
        "max_rel_diff_to_float64": to_reference["ours"],
        "captum_max_rel_diff_to_float64": to_reference["captum"],
        "max_rel_diff_to_float64_without_affine_prefix": to_reference["whole"],
        "speedup_vs_captum": times["captum"] / times["ours"],
        "speedup_vs_naive": naive_s / times["ours"],
        "median_relative_completeness_gap": float(gap.median()),
        "batch_size": batch_size,
        "batch_size_sweep_s": sweep_s,
        "num_images": images.shape[0],
        "num_steps": NUM_STEPS,
        "method": METHOD,
        "baseline": "black",
        "repeats": repeats,
        "timing": "ours, captum and the batch-size sweep: best of repeats, taking turns, "
                  "after one warm-up each; naive: one run",
        "dtype": str(images.dtype).removeprefix("torch."),
        "torch": torch.__version__,
        "captum": captum.__version__,
        "num_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
        "python": platform.python_version(),
    }


def print_table(record: dict) -> None:
    rows = [("backdoorlab", record["ours_s"], record["max_rel_diff"]),
            ("  no prefix", record["ours_without_affine_prefix_s"],
             record["max_rel_diff_without_affine_prefix"]),
            ("captum", record["captum_s"], 0.0),
            ("naive loop", record["naive_s"], record["naive_max_rel_diff"])]
    print(f"IG of {record['num_images']} MNIST test images, {record['method']}, "
          f"{record['num_steps']} steps, batch_size {record['batch_size']}, "
          f"{record['num_threads']} threads")
    print(f"{'method':<12} {'seconds':>9} {'x ours':>8} {'rel. diff to captum':>20}")
    for name, seconds, diff in rows:
        print(f"{name:<12} {seconds:>9.3f} {seconds / record['ours_s']:>8.1f} {diff:>20.2e}")
    sweep = ", ".join(f"{k}: {v:.3f} s" for k, v in record["batch_size_sweep_s"].items())
    print(f"ours by batch_size: {sweep}")


def main() -> None:

    model = bl.recipes.clean_mnist_classifier()
    test = bl.data.mnist(train=False)
    images = test.images[:NUM_IMAGES]
    target = test.labels[:NUM_IMAGES]
    record = run(model, images, target)
    record["model"] = "bl.recipes.clean_mnist_classifier()"
    print_table(record)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
