"""Thread policies for torch on a small CPU, quiet and beside a competing busy process.

Run from the repository root (after ``pip install -e .``), on an otherwise idle machine::

    python benchmarks/threads.py            # all policies, 3 repeats
    python benchmarks/threads.py --quick    # one repeat of smaller workloads (a smoke test)

Each chapter's representative work is timed under several OpenMP/torch thread policies:

- ``default``: torch's defaults (one thread per core, libgomp's spinning waits);
- ``passive``: ``OMP_WAIT_POLICY=PASSIVE`` (idle workers sleep instead of spinning);
- ``spin10k``: ``GOMP_SPINCOUNT=10000`` (workers spin briefly, then sleep);
- ``one``: ``OMP_NUM_THREADS=1``;
- ``free``: as many threads as cores that are idle when the process starts (read from
  ``/proc/stat`` over 0.3 s), at least one.

OpenMP reads its environment once, when the runtime starts, so every (policy, condition) runs
in a fresh Python process with the policy's environment. Each condition is run ``quiet`` and
``loaded``: for ``loaded`` the benchmark itself starts one busy process (a pure-Python loop,
one core) before the worker and stops it afterwards. Inside a worker every workload is run
once as a warm-up and then ``REPEATS`` times; the median is reported. All conditions are
measured in one run, so the ratios (loaded/quiet, policy/default) are what to compare across
machines. The JSON goes to ``benchmarks/results/threads.json`` with keys
``<workload>_<policy>_<quiet|loaded>_s``.

The workloads use synthetic tensors of the chapters' shapes (the work does not depend on the
pixel values), so no dataset is needed:

- ``train_epoch``: one epoch of ``train.fit`` of ``MnistCNN`` on 12,000 28x28 images (primer);
- ``deepfool``: batched DeepFool on 400 images through a briefly trained ``MnistCNN`` (UAP);
- ``ig_batch``: Integrated Gradients of 64 images, 50 Gauss-Legendre steps (IG);
- ``zoo_group``: one grouped-convolution group of 20 zoo CNNs, one epoch on 2,000 images (ULP);
- ``vine_fit``: a TLL D-vine on 5 x 2,000 latent codes (DCAE).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "threads.json"
POLICIES = {
    "default": {},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "spin10k": {"GOMP_SPINCOUNT": "10000"},
    "one": {"OMP_NUM_THREADS": "1"},
    "free": {"BACKDOORLAB_BENCH_FREE_CORES": "1"},
}
WORKLOADS = ("train_epoch", "deepfool", "ig_batch", "zoo_group", "vine_fit")
BUSY_LOOP = "while True:\n    pass\n"


def idle_cores(interval: float = 0.3) -> float:
    """Cores idle over ``interval`` seconds, from the aggregate line of ``/proc/stat``."""
    def snapshot() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        return sum(fields), fields[3] + fields[4]  # total, idle + iowait
    total0, idle0 = snapshot()
    time.sleep(interval)
    total1, idle1 = snapshot()
    return (idle1 - idle0) / max(total1 - total0, 1) * os.cpu_count()


def build_workloads(quick: bool):
    """Closures running each workload once; the setting-up is not timed."""
    import numpy as np
    import torch

    import backdoorlab as bl

    generator = torch.Generator().manual_seed(0)
    size = 3000 if quick else 12_000
    images = torch.rand(size, 1, 28, 28, generator=generator)
    labels = torch.randint(0, 10, (size,), generator=generator)
    data = bl.data.ImageSet(images, labels, tuple(str(k) for k in range(10)))
    trained = bl.models.MnistCNN()
    bl.train.fit(trained, data.subset(range(2000)), epochs=1, seed=0, progress=False)
    trained.eval()
    probe = images[:100 if quick else 400]
    zoo_data = data.subset(range(2000))
    configs = bl.zoo.zoo_spec(num_clean=10, num_poisoned=10, seed=0,
                              triggers=bl.zoo.random_patch_triggers(4, seed=0, placement="corners", sizes=(4, 5)))
    latents = np.random.default_rng(0).multivariate_normal(np.zeros(5), 0.5 * np.eye(5) + 0.5, size=2000)

    def train_epoch() -> None:
        bl.train.fit(bl.models.MnistCNN(), data, epochs=1, seed=1, progress=False)

    def deepfool() -> None:
        bl.uap.deepfool(trained, probe)

    def ig_batch() -> None:
        bl.attribution.integrated_gradients(trained, probe[:16 if quick else 64], target=0, num_steps=50)

    def zoo_group() -> None:
        bl.zoo.train_stack(configs[:10] if quick else configs, zoo_data, subset_size=1000 if quick else 2000)

    def vine_fit() -> None:
        bl.copula.fit_vine(latents)

    return {name: fn for name, fn in zip(WORKLOADS, (train_epoch, deepfool, ig_batch, zoo_group, vine_fit))}


def worker(repeats: int, quick: bool) -> None:
    """Run in a fresh process: set threads for the policy, time every workload, print JSON."""
    import torch

    if os.environ.get("BACKDOORLAB_BENCH_FREE_CORES"):
        torch.set_num_threads(max(1, round(idle_cores())))
    workloads = build_workloads(quick)
    times: dict[str, list[float]] = {name: [] for name in workloads}
    for name, fn in workloads.items():
        fn()  # warm-up
    for _ in range(repeats):
        for name, fn in workloads.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    print(json.dumps({"threads": torch.get_num_threads(),
                      "median_s": {k: statistics.median(v) for k, v in times.items()},
                      "all_s": times}))


def run_condition(policy: str, loaded: bool, repeats: int, quick: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(POLICIES[policy])
    busy = subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) if loaded else None
    try:
        if busy is not None:
            time.sleep(1.0)  # let the busy process take its core
        args = [sys.executable, __file__, "--worker", "--repeats", str(repeats)] + (["--quick"] if quick else [])
        finished = subprocess.run(args, env=env, capture_output=True, text=True)
        if finished.returncode != 0:
            raise RuntimeError(f"the {policy} worker failed:\n{finished.stderr}")
        output = finished.stdout
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one repeat of smaller workloads")
    parser.add_argument("--policies", nargs="+", default=list(POLICIES), choices=list(POLICIES))
    args = parser.parse_args()
    if args.quick:
        args.repeats = 1
    if args.worker:
        worker(args.repeats, args.quick)
        return

    results: dict[str, object] = {}
    threads: dict[str, dict[str, int]] = {}
    start = time.perf_counter()
    for policy in args.policies:
        for condition in ("quiet", "loaded"):
            measured = run_condition(policy, condition == "loaded", args.repeats, args.quick)
            threads.setdefault(policy, {})[condition] = measured["threads"]
            for workload, seconds in measured["median_s"].items():
                results[f"{workload}_{policy}_{condition}_s"] = seconds
            print(f"{policy:8s} {condition:6s} threads={measured['threads']} "
                  + " ".join(f"{w}={s:.2f}" for w, s in measured["median_s"].items()), flush=True)

    print(f"\n{'workload':12s} {'policy':8s} {'quiet s':>8s} {'loaded s':>9s} {'loaded/quiet':>13s} {'quiet/default':>14s}")
    for workload in WORKLOADS:
        base = results.get(f"{workload}_default_quiet_s")
        for policy in args.policies:
            quiet, loaded = results[f"{workload}_{policy}_quiet_s"], results[f"{workload}_{policy}_loaded_s"]
            relative = f"{quiet / base:14.2f}" if base else f"{'':14s}"
            print(f"{workload:12s} {policy:8s} {quiet:8.2f} {loaded:9.2f} {loaded / quiet:13.2f} {relative}")

    if args.quick:
        print("\n--quick: smoke test only, nothing written")
        return
    import torch
    results.update({
        "workloads": list(WORKLOADS),
        "policies": {name: POLICIES[name] for name in args.policies},
        "threads_used": threads,
        "repeats": args.repeats,
        "timing": "median of repeats after a warm-up, each (policy, condition) in a fresh process",
        "load": "one pure-Python busy loop started and stopped by the benchmark",
        "cpu_count": os.cpu_count(),
        "load_average_1min_at_end": os.getloadavg()[0],
        "total_s": time.perf_counter() - start,
        "torch": torch.__version__,
        "python": platform.python_version(),
    })
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
