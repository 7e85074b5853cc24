"""Experiment 1: benign overfitting of deep ReLU networks under lazy training (Zhu, Liu, Chrysos,
Locatello, Cevher, ICML 2023, arXiv 2305.19377). Docs: docs/experiments/benign_overfitting.md.

* `classification` (``benign_overfitting``): the alpha x width plane: gap to the lazy and NTK
  limits, laziness, SGD beside GD, smoothness;
* `n_growth` (``benign_n_growth``): Bayes-optimality as n grows with d (n = d);
* `regression` (``benign_regression``): the NTK-regime regression plateau vs its closed form;
* `mnist` (``benign_mnist``): the data assumption (separation) measured on MNIST.
"""

from jaxbench.experiments.benign import classification, mnist, n_growth, regression  # noqa: F401
