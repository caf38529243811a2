"""Model zoos and the ULP step: a plain loop against grouped convolutions, in one run.

Run from the repository root (after ``pip install -e .``)::

    BACKDOORLAB_DATA=/path/to/data python benchmarks/zoo.py

(a) Training. The same ``NUM_MODELS`` zoo models (half clean, half backdoored, configs from
``bl.zoo.zoo_spec``) are trained the way ``bl.recipes.mnist_zoos`` trains them: one epoch on
12,000 MNIST training images each, Adam with a one-cycle schedule, batch 32 per model. The
loop trains one ``ZooCNN`` after the other (``method="loop"``); the vectorised method trains
``GROUP_SIZE`` models at a time as one grouped-convolution network (``method="grouped"``).
Both see the same batches and take the same steps; rounding differences grow over an epoch,
so we report the largest parameter difference beside the models per minute. The library keeps
the grouped method for training unless the loop is faster.

(b) One ULP training step (``bl.ulp.ulp_objective``, backward pass, Adam step) over a batch of
``NUM_MODELS`` frozen models and ``NUM_PATTERNS`` patterns: the models evaluated one by one
against all at once as one grouped-convolution network. Each is timed ``STEP_REPEATS`` times,
taking turns, and the median is reported; the pattern gradients of the two are compared.

PyTorch uses its default number of threads. The table is printed and the numbers written to
``benchmarks/results/zoo.json``.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

import backdoorlab as bl
from backdoorlab.ulp import LitmusDetector, ulp_objective
from backdoorlab.zoo import ModelStack, random_patch_triggers, train_stack, zoo_spec

NUM_MODELS = 40
GROUP_SIZE = 20
SUBSET_SIZE = 12_000
BATCH_SIZE = 32
NUM_PATTERNS = 10
STEP_REPEATS = 15
RESULTS = Path(__file__).resolve().parent / "results" / "zoo.json"


def train_all(configs, data, method: str) -> tuple[ModelStack, float]:
    """Train ``configs`` in groups of ``GROUP_SIZE`` with ``method``; return the stack and seconds."""
    start = time.perf_counter()
    stacks = [train_stack(configs[i:i + GROUP_SIZE], data, subset_size=SUBSET_SIZE, batch_size=BATCH_SIZE,
                          method=method) for i in range(0, len(configs), GROUP_SIZE)]
    return ModelStack.concatenate(stacks), time.perf_counter() - start


def time_ulp_steps(stack: ModelStack, labels: torch.Tensor) -> tuple[dict[str, float], float]:
    """Median seconds of one ULP step, looped and batched, and the max pattern-gradient difference."""
    detectors = {method: LitmusDetector(num_patterns=NUM_PATTERNS, seed=0) for method in ("loop", "batched")}
    optimizers = {m: torch.optim.Adam(d.parameters(), lr=1e-3) for m, d in detectors.items()}
    gradients = {}

    def step(method: str) -> None:
        detector = detectors[method]
        loss = ulp_objective(detector, stack, labels, tv_weight=1e-4, method=method)
        optimizers[method].zero_grad(set_to_none=True)
        loss.backward()
        gradients.setdefault(method, detector.patterns.grad.clone())
        optimizers[method].step()

    times: dict[str, list[float]] = {"loop": [], "batched": []}
    for method in times:  # warm-up, and the first step's gradients for the comparison
        step(method)
    for _ in range(STEP_REPEATS):
        for method in times:
            start = time.perf_counter()
            step(method)
            times[method].append(time.perf_counter() - start)
    difference = float((gradients["loop"] - gradients["batched"]).abs().max())
    return {m: statistics.median(t) for m, t in times.items()}, difference


def main() -> None:
    data = bl.data.mnist(train=True)
    configs = zoo_spec(num_clean=NUM_MODELS // 2, num_poisoned=NUM_MODELS - NUM_MODELS // 2,
                       triggers=random_patch_triggers(10, seed=7), seed=99)
    train_stack(configs[:2], data, subset_size=320, batch_size=BATCH_SIZE, method="grouped")  # warm-up
    grouped, grouped_s = train_all(configs, data, "grouped")
    looped, loop_s = train_all(configs, data, "loop")
    parameter_difference = max(
        float((grouped.parameter_dict()[n] - looped.parameter_dict()[n]).abs().max().detach())
        for n in grouped.parameter_dict()
    )
    labels = torch.tensor([int(c.poisoned) for c in configs])
    step_s, gradient_difference = time_ulp_steps(grouped, labels)
    record = {
        "loop_models_per_min": 60 * NUM_MODELS / loop_s,
        "vectorised_models_per_min": 60 * NUM_MODELS / grouped_s,
        "ulp_step_loop_s": step_s["loop"],
        "ulp_step_batched_s": step_s["batched"],
        "training_speedup": loop_s / grouped_s,
        "ulp_step_speedup": step_s["loop"] / step_s["batched"],
        "vectorised_method": f"grouped convolutions, {GROUP_SIZE} models per group",
        "loop_s": loop_s,
        "vectorised_s": grouped_s,
        "max_parameter_difference": parameter_difference,
        "max_pattern_gradient_difference": gradient_difference,
        "num_models": NUM_MODELS,
        "subset_size": SUBSET_SIZE,
        "batch_size": BATCH_SIZE,
        "epochs": 1,
        "num_patterns": NUM_PATTERNS,
        "step_repeats": STEP_REPEATS,
        "timing": "training: one run of each; ULP step: median of repeats, taking turns, after a warm-up",
        "num_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    print(f"(a) training {NUM_MODELS} zoo models, one epoch on {SUBSET_SIZE} images, batch {BATCH_SIZE}, "
          f"{record['num_threads']} threads")
    print(f"{'method':<28} {'seconds':>9} {'models/min':>11}")
    print(f"{'plain loop':<28} {loop_s:>9.1f} {record['loop_models_per_min']:>11.1f}")
    print(f"{'grouped, ' + str(GROUP_SIZE) + ' per group':<28} {grouped_s:>9.1f} "
          f"{record['vectorised_models_per_min']:>11.1f}")
    print(f"largest parameter difference between the two: {parameter_difference:.2e}")
    print(f"(b) one ULP step over {NUM_MODELS} frozen models, M = {NUM_PATTERNS}")
    print(f"{'method':<28} {'seconds':>9}")
    print(f"{'loop over models':<28} {step_s['loop']:>9.4f}")
    print(f"{'batched (grouped)':<28} {step_s['batched']:>9.4f}")
    print(f"speed-up {record['ulp_step_speedup']:.1f}x; largest pattern-gradient difference {gradient_difference:.2e}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
