"""Benign overfitting under lazy training: Bayes-optimality as the sample size grows with d.

Bayes-optimality (Zhu et al., ICML 2023, arXiv 2305.19377) is an asymptotic statement: the test
error of the interpolating lazy network tends to the Bayes error as n grows, in a high-dimensional
setting. At fixed d our NTK limit did not improve with n (clean error 0.023 / 0.046 / 0.034 at
n = 128 / 512 / 2048, d = 128), so this experiment grows d with n (a sweep sets ``n = d`` in a
[zip]). Same model, data, training and measures as `classification` (its PARAMS and run_one);
its own figures and claim checks: clean test error and excess risk versus n for the lazy
networks, their lazy limit and the NTK limit, side by side.
"""

from __future__ import annotations

from jaxbench.experiments.benign.classification import PARAMS, check, run_one  # noqa: F401

NAME = "benign_n_growth"


def plot(results_dir):
    from jaxbench.experiments.benign import plots
    return plots.n_growth(results_dir)


def claims(results_dir):
    from jaxbench.experiments.benign import claims as claimlib
    return claimlib.n_growth(results_dir)
