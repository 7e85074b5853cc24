"""Experiment 5: Bayesian free energy and learning coefficient of overparameterized deep ReLU networks.

Source: Nagayasu & Watanabe, arXiv 2303.15739 (docs/experiments/free_energy.md,
docs/experiments/lambda_validation.md). `lambda_validation` (the estimators against closed-form
learning coefficients), `free_energy` (students around a ReLU teacher), `plots`,
`validation_claims` (claim checks of the validation sweep, from files only).
"""
