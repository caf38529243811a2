"""Universal adversarial perturbations: backdoorlab against ART's ``UniversalPerturbation``.

Run from the repository root (after ``pip install -e .`` with the ``peers`` extra)::

    BACKDOORLAB_DATA=/path/to/data python benchmarks/uap.py

Both run Algorithm 1 of Moosavi-Dezfooli et al. (2017) with DeepFool as the inner attack on the
book's clean MNIST classifier, in one process, with the same settings:

* X: 1,000 MNIST training images (a seeded sample), fooling measured against the clean
  predictions;
* l_inf budget ``XI = 0.3`` (MNIST needs large budgets), ``DELTA = 0.2``, ``PASSES = 1`` pass
  over X;
* DeepFool: overshoot 0.02, at most ``DEEPFOOL_MAX_ITER = 50`` iterations per image (the
  default of ``bl.uap.deepfool`` and the DeepFool paper's), all 10 classes;
* ART: ``PyTorchClassifier`` without ``clip_values`` (see below);
  ``UniversalPerturbation(attacker="deepfool", max_iter=PASSES, eps=XI, norm=inf,
  delta=DELTA)`` with DeepFool's ``max_iter``, ``epsilon`` (ART's name for the overshoot) and
  ``nb_grads`` set as above. Its visiting order comes from Python's global ``random`` module,
  which is seeded here for repeatability;
* ours: ``bl.uap.universal_perturbation(..., batch_size=1)``, the paper's one-image-at-a-time
  algorithm.

Held-out fooling rates of both perturbations are measured the same way, with
``bl.uap.fooling_rate`` on the 10,000 MNIST test images (perturbed images clamped to [0, 1]).
Each method is timed once (ART is too slow to repeat), after one small warm-up call of each;
the wall time of the whole run and the load average are recorded. For context, the mini-batch
variant of Algorithm 1 (one pass), the SGD variant (``SGD_EPOCHS`` epochs, which together cost
less than one pass of Algorithm 1) and a random sign perturbation of the same norm are also
measured.

Why ``clip_values`` is not given to ART. With ``clip_values=(0, 1)`` ART's DeepFool clips every
iterate to [0, 1], and ``UniversalPerturbation`` sets ``v = adv - x_i`` from that clipped
result: wherever ``x_i`` is black (most of an MNIST digit) the negative part of ``v`` is reset
to 0, and wherever it is white the positive part, at every update. The perturbation cannot
accumulate, and with DeepFool's ``max_iter=100`` it fooled 0.038 of the test images against our
0.443, in 616 s. Ours does not clip the DeepFool iterates (the paper's algorithm; see the
``bl.uap`` module docstring), and ART without ``clip_values`` does not either, so both then
compute the same update ``v <- P(v + (1 + overshoot) sum_i r_i)``. Differences that remain:

* where DeepFool starts: ours from ``clamp(x_i + v, 0, 1)``, the image the classifier will
  see; ART from ``x_i + v`` unclamped, and its "already fooled?" test and its own fooling rate
  on X are on unclamped images too. ART's ``v`` is thus partly fitted to pixel values outside
  [0, 1], which clamping removes: its fooling rate on X is far higher unclamped than clamped
  (``art_in_sample_fooling_rate`` against ``art_in_sample_fooling_rate_clamped``);
* the overshoot: ours scales every iterate, ``x_{i+1} = x_0 + (1 + overshoot) sum r_j`` with a
  margin of 1e-4 per step (the authors' code); ART steps exactly onto each linearised boundary
  and scales only the final sum by ``1 + epsilon``, so its iterates approach the boundary from
  inside and can take more steps to cross it;
* cost per DeepFool iteration: ART computes the 10 class gradients of one image with 10
  backward passes that also accumulate weight gradients, and moves every array through NumPy;
  ours needs one forward and one vmapped backward pass over the class differences, with
  respect to the input only. ART also measures its fooling rate on X one image at a time.

PyTorch runs on one thread (``THREADS``): every step here works on one image, and on the
2 shared CPU cores we measured a second thread making both ours and ART 7 to 8 times slower.

The table is printed and the numbers written to ``benchmarks/results/uap.json``.
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

import backdoorlab as bl
from backdoorlab.uap import (
    fooling_rate,
    random_perturbation,
    sgd_universal_perturbation,
    universal_perturbation,
)

NUM_TRAIN = 1000
XI = 0.3
DELTA = 0.2
PASSES = 1
OVERSHOOT = 0.02
DEEPFOOL_MAX_ITER = 50  # bl.uap.deepfool's default and the DeepFool paper's
SEED = 0
THREADS = 1
MINIBATCH_SIZE = 32
SGD_BATCH_SIZE = 50
SGD_EPOCHS = 5  # an SGD epoch costs about a tenth of a pass of Algorithm 1
RESULTS = Path(__file__).resolve().parent / "results" / "uap.json"


def ours(model: nn.Module, images: Tensor, *, batch_size: int = 1):
    return universal_perturbation(model, images, xi=XI, p=math.inf, delta=DELTA, max_passes=PASSES,
                                  overshoot=OVERSHOOT, max_iter=DEEPFOOL_MAX_ITER,
                                  batch_size=batch_size, seed=SEED)


def art_attack(model: nn.Module, image_shape: tuple[int, ...], num_classes: int):
    """ART's UniversalPerturbation with DeepFool, configured like ours (no ``clip_values``:
    see the module docstring)."""
    from art.attacks.evasion import UniversalPerturbation
    from art.estimators.classification import PyTorchClassifier

    classifier = PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=image_shape,
                                   nb_classes=num_classes)
    return UniversalPerturbation(
        classifier, attacker="deepfool",
        attacker_params={"max_iter": DEEPFOOL_MAX_ITER, "epsilon": OVERSHOOT,
                         "nb_grads": num_classes, "verbose": False},
        delta=DELTA, max_iter=PASSES, eps=XI, norm=np.inf, verbose=False,
    )


def art(model: nn.Module, images: Tensor, *, num_classes: int) -> tuple[Tensor, float, bool]:
    """Run ART on ``images``: its perturbation (C, H, W), own fooling rate and converged flag."""
    attack = art_attack(model, tuple(images.shape[1:]), num_classes)
    random.seed(SEED)  # ART draws its visiting order from the global `random` module
    attack.generate(images.numpy())
    noise = torch.from_numpy(attack.noise[0]).to(images.dtype)
    return noise, float(attack.fooling_rate), bool(attack.converged)


def run(model: nn.Module, train_images: Tensor, test_images: Tensor) -> dict:
    """Time ours and ART on the same X, measure held-out fooling rates; return the JSON record."""
    import art as art_package

    num_classes = int(model(train_images[:1]).shape[1])
    # warm-up: first calls pay for lazy initialisation in torch and ART
    universal_perturbation(model, train_images[:5], xi=XI, p=math.inf, max_passes=1, seed=SEED)
    art_attack(model, tuple(train_images.shape[1:]), num_classes).generate(train_images[:2].numpy())

    start = time.perf_counter()
    result = ours(model, train_images)
    ours_s = time.perf_counter() - start

    start = time.perf_counter()
    art_noise, art_in_sample, art_converged = art(model, train_images, num_classes=num_classes)
    art_s = time.perf_counter() - start

    start = time.perf_counter()
    minibatch = ours(model, train_images, batch_size=MINIBATCH_SIZE)
    minibatch_s = time.perf_counter() - start

    start = time.perf_counter()
    sgd = sgd_universal_perturbation(model, train_images, xi=XI, p=math.inf, epochs=SGD_EPOCHS,
                                     batch_size=SGD_BATCH_SIZE, delta=DELTA, seed=SEED)
    sgd_s = time.perf_counter() - start

    control = random_perturbation(tuple(train_images.shape[1:]), xi=XI, p=math.inf, seed=SEED)
    return {
        "ours_s": ours_s,
        "art_s": art_s,
        "ours_fooling_rate": fooling_rate(model, test_images, result.perturbation),
        "art_fooling_rate": fooling_rate(model, test_images, art_noise),
        "speedup_vs_art": art_s / ours_s,
        "ours_in_sample_fooling_rate": result.fooling_rate,
        "art_in_sample_fooling_rate": art_in_sample,
        "art_in_sample_fooling_rate_clamped": fooling_rate(model, train_images, art_noise),
        "art_in_sample_definition": "art_in_sample_fooling_rate is ART's own, on unclamped "
                                    "x + v; the _clamped one is measured like ours",
        "ours_history": list(result.history),
        "ours_converged": result.converged,
        "art_converged": art_converged,
        "ours_linf": float(result.perturbation.abs().max()),
        "art_linf": float(art_noise.abs().max()),
        "minibatch_s": minibatch_s,
        "minibatch_batch_size": MINIBATCH_SIZE,
        "minibatch_fooling_rate": fooling_rate(model, test_images, minibatch.perturbation),
        "sgd_s": sgd_s,
        "sgd_batch_size": SGD_BATCH_SIZE,
        "sgd_epochs": len(sgd.history),
        "sgd_fooling_rate": fooling_rate(model, test_images, sgd.perturbation),
        "random_sign_fooling_rate": fooling_rate(model, test_images, control),
        "fooling_rate_definition": "share of the 10,000 MNIST test images whose prediction on "
                                   "clamp(x + v, 0, 1) differs from the prediction on x",
        "xi": XI,
        "norm": "inf",
        "delta": DELTA,
        "passes": PASSES,
        "overshoot": OVERSHOOT,
        "deepfool_max_iter": DEEPFOOL_MAX_ITER,
        "num_train_images": train_images.shape[0],
        "num_test_images": test_images.shape[0],
        "seed": SEED,
        "timing": "one run each after a small warm-up",
        "art_clip_values": None,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "art": art_package.__version__,
        "python": platform.python_version(),
    }


def print_table(record: dict) -> None:
    print(f"UAP on the clean MNIST CNN: X = {record['num_train_images']} training images, l_inf "
          f"xi = {record['xi']}, delta = {record['delta']}, {record['passes']} pass(es), "
          f"{record['torch_threads']} thread(s)")
    rows = [
        ("backdoorlab (Alg. 1)", record["ours_s"], record["ours_in_sample_fooling_rate"],
         record["ours_fooling_rate"]),
        ("ART (Alg. 1)", record["art_s"], record["art_in_sample_fooling_rate"],
         record["art_fooling_rate"]),
        (f"ours, batch {record['minibatch_batch_size']}", record["minibatch_s"], math.nan,
         record["minibatch_fooling_rate"]),
        (f"ours, SGD, {record['sgd_epochs']} epochs", record["sgd_s"], math.nan,
         record["sgd_fooling_rate"]),
        ("random signs", math.nan, math.nan, record["random_sign_fooling_rate"]),
    ]
    def cell(value: float, width: int, digits: int) -> str:
        return f"{'-':>{width}}" if math.isnan(value) else f"{value:>{width}.{digits}f}"

    print(f"{'method':<22} {'seconds':>9} {'fooling on X':>13} {'fooling on test':>16}")
    for name, seconds, in_sample, held_out in rows:
        print(f"{name:<22} {cell(seconds, 9, 1)} {cell(in_sample, 13, 3)} {cell(held_out, 16, 3)}")
    print(f"ART / ours wall time: {record['speedup_vs_art']:.1f}x")
    print(f"ART's fooling rate on X: {record['art_in_sample_fooling_rate']:.3f} on unclamped "
          f"x + v, {record['art_in_sample_fooling_rate_clamped']:.3f} clamped")
    print(f"whole benchmark: {record['total_s']:.0f} s, load average {record['load_average_1min']:.2f}")


def main() -> None:
    import backdoorlab.data  # noqa: F401  (bl.data and bl.recipes whatever __init__ imports)
    import backdoorlab.recipes  # noqa: F401

    start = time.perf_counter()
    torch.set_num_threads(THREADS)
    model = bl.recipes.clean_mnist_classifier()
    train_images = bl.data.mnist(train=True).sample(NUM_TRAIN, seed=SEED).images
    test_images = bl.data.mnist(train=False).images
    record = run(model, train_images, test_images)
    record["model"] = "bl.recipes.clean_mnist_classifier()"
    record["total_s"] = time.perf_counter() - start
    record["load_average_1min"] = os.getloadavg()[0]
    print_table(record)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
