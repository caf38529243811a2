"""Neural Cleanse over a model zoo: a per-model, per-label loop against the batched solver.

Run from the repository root (after ``pip install -e .``)::

    BACKDOORLAB_DATA=/path/to/data python benchmarks/neural_cleanse.py [--models 20]

The first ``--models`` models (default 20, one training group) of the ULP chapter's training
zoo (``bl.recipes.mnist_zoos``, read from the artifact cache when the chapter has run) are
scanned for all ten labels with the chapter's Neural Cleanse settings (the library defaults), on the
same clean MNIST images, twice: ``method="loop"`` solves each (model, label) problem alone,
``method="batched"`` solves the problems of 20 models and all labels at once as one
grouped-convolution network. Both draw the same initial masks and patterns and the same image
batches and follow the same lambda schedule, so they take the same number of steps per problem
(the benchmark checks this) and differ only by floating-point rounding. We report the time per
model of each, measured once each as process CPU time and as wall time, and the largest
difference of the anomaly indices. The numbers are written to
``benchmarks/results/neural_cleanse.json``; time them on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

import backdoorlab as bl

#: The Neural Cleanse settings of the ULP chapter (the library's defaults).
SETTINGS = dict(seed=0)
NUM_IMAGES = 1000
RESULTS = Path(__file__).resolve().parent / "results" / "neural_cleanse.json"


def run(method: str, stack, images) -> tuple[bl.neural_cleanse.NeuralCleanseResult, float, float]:
    """Neural Cleanse with ``method``; returns the result, CPU seconds and wall seconds."""
    cpu, wall = time.process_time(), time.perf_counter()
    result = bl.neural_cleanse.neural_cleanse(stack, images, method=method, **SETTINGS)
    return result, time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=20, help="number of zoo models (default 20)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    # The first group of the ULP chapter's training zoo (cached once the chapter has run), unfiltered.
    spec = bl.zoo.zoo_spec(num_clean=165, num_poisoned=165, triggers=bl.recipes.ZOO_TRIGGERS[:40], seed=1)
    zoo = bl.zoo.train_zoo(spec[:args.models], bl.data.mnist(train=True), bl.data.mnist(train=False).sample(2000, seed=0),
                           min_accuracy=0.0, min_attack_success=0.0, cache=bl.cache.ArtifactCache(), progress=False)
    stack = zoo.stack
    images = bl.data.mnist(train=False).sample(NUM_IMAGES, seed=1).images
    results, cpu, wall = {}, {}, {}
    for method in ("batched", "loop"):
        results[method], cpu[method], wall[method] = run(method, stack, images)
    if not torch.equal(results["loop"].epochs, results["batched"].epochs):
        print("warning: the two methods ran different numbers of epochs on some problems")
    difference = float((results["loop"].anomaly_index - results["batched"].anomaly_index).abs().max())
    record = {
        "loop_s_per_model": cpu["loop"] / args.models,
        "batched_s_per_model": cpu["batched"] / args.models,
        "speedup": cpu["loop"] / cpu["batched"],
        "loop_wall_s_per_model": wall["loop"] / args.models,
        "batched_wall_s_per_model": wall["batched"] / args.models,
        "max_anomaly_index_diff": difference,
        "max_norm_diff": float((results["loop"].norms - results["batched"].norms).abs().max()),
        "same_epochs": bool(torch.equal(results["loop"].epochs, results["batched"].epochs)),
        "mean_epochs": float(results["batched"].epochs.float().mean()),
        "num_models": args.models,
        "num_labels": 10,
        "num_images": NUM_IMAGES,
        "settings": SETTINGS,
        "timing": "one run of each method; *_s_per_model is process CPU time, *_wall_s_per_model wall time",
        "num_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    print(f"{'method':<8} {'CPU s/model':>12} {'wall s/model':>13}")
    for method in ("loop", "batched"):
        print(f"{method:<8} {cpu[method] / args.models:>12.2f} {wall[method] / args.models:>13.2f}")
    print(f"speedup (CPU) {record['speedup']:.2f}; max anomaly-index difference {difference:.4f}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
