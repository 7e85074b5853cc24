"""The empirical NTK against its infinite-width limit (Jacot, Gabriel, Hongler 2018; Hanin & Nica
2020): `convergence` (``ntk_convergence``). Docs: docs/experiments/ntk_convergence.md."""
