"""Experiment 4: layerwise information-theoretic (KL / 1-Wasserstein) generalization bounds.

Source: He & Goldfeld, arXiv 2404.03176 (docs/experiments/info_bounds.md). `layers` (per-layer
KL / W1 bounds of noisy networks, sweep info_bounds) with its ReLU extension `relu`; `linear`
(rank / norm closed forms and SDPI contraction, sweep info_linear); `gibbs` (the exact Gibbs
posterior on quantized networks, sweep info_gibbs); `plots`, `plots_linear`, `plots_gibbs`
(figures and claim checks, from files only).
"""
