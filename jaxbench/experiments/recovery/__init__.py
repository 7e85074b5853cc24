"""Experiment 2: geometry and local recovery of global minima of two-layer networks.

Source: L. Zhang, Y. Zhang, T. Luo, arXiv 2309.00508 (docs/experiments/local_recovery.md).
`local_recovery` (run_one of the three sweeps), `geometry` (Jacobian ranks, dimensions of the
zero-generalization set Q*, distance to Q* modulo symmetries), `dynamics` (gradient flow as an
ODE, gradient descent, Levenberg-Marquardt, rate fits), `plots`, `plots_minima`, `claims`.
"""
