"""backdoorlab: the tested implementations behind *Backdoor Attacks, from Math to Code*.

Import it as ``import backdoorlab as bl``; each submodule owns one idea:

- :mod:`backdoorlab.data`: in-memory image datasets (MNIST, CIFAR-10);
- :mod:`backdoorlab.models`: small classifiers taking images in [0, 1];
- :mod:`backdoorlab.train`: seeded training and evaluation;
- :mod:`backdoorlab.triggers`: triggers, poisoning, attack success rate;
- :mod:`backdoorlab.cache`: the content-addressed artifact cache;
- :mod:`backdoorlab.recipes`: the cached models the chapters share;
- :mod:`backdoorlab.plot`: figures in the book's style;
- :mod:`backdoorlab.uap`: DeepFool and universal adversarial perturbations;
- :mod:`backdoorlab.zoo`: model zoos of small clean and backdoored CNNs;
- :mod:`backdoorlab.ulp`: Universal Litmus Patterns, a detector of backdoored models;
- :mod:`backdoorlab.neural_cleanse`: Neural Cleanse, trigger reverse-engineering over a model zoo;
- :mod:`backdoorlab.mntd`: a one-class meta-classifier (MNTD) trained on clean models only;
- :mod:`backdoorlab.uap_scan`: targeted universal perturbations towards every class, over a zoo;
- :mod:`backdoorlab.detectors`: one shape for every model-level detector, compared on one zoo;
- :mod:`backdoorlab.poison_detection`: which training images are poisoned (spectral signatures,
  activation clustering);
- :mod:`backdoorlab.copula`: vine copulas, mutual information and KL by Monte Carlo;
- :mod:`backdoorlab.dcae`: the D-vine copula autoencoder;
- :mod:`backdoorlab.attribution`: Integrated Gradients and gradient maps;
- :mod:`backdoorlab.stats`: intervals and tests over seeds and models (AUC, paired changes);
- :mod:`backdoorlab.lab`: the grader of the "evade the detector" lab.
"""

from . import (attribution, cache, copula, data, dcae, detectors, lab, mntd, models, neural_cleanse, plot, poison_detection,
               recipes, stats, train, triggers, uap, uap_scan, ulp, zoo)

__all__ = [
    "attribution", "cache", "copula", "data", "dcae", "detectors", "lab", "mntd", "models", "neural_cleanse", "plot",
    "poison_detection", "recipes", "stats", "train", "triggers", "uap", "uap_scan",
    "ulp", "zoo",
]
__version__ = "0.1.0"
