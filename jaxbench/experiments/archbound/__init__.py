"""Experiment 3: architecture-independent generalization bounds for deep ReLU networks.

Source: Chen, Chien, Munoz Ewald, Moore, arXiv 2504.05695 (docs/experiments/arch_bounds.md).
`synthetic` (the construction and bounds on synthetic teachers, sweep arch_bounds), `mnist`
(the paper's setting: n <= 784 MNIST images, sweep arch_bounds_mnist), `plots`, `plots_mnist`
(figures and claim checks, from files only).
"""
