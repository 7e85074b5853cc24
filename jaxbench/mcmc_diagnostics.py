"""Convergence diagnostics of multi-chain estimates, and the `Estimate` every estimator returns.

R-hat and ESS are blackjax's (``blackjax.diagnostics``): split R-hat is its
``potential_scale_reduction`` on chains cut in halves (Gelman et al., BDA3 sec. 11.4), ESS its
multi-chain ``effective_sample_size`` (Geyer's initial monotone sequence; Vehtari et al. 2021).
The rest is ours: the split-half check (first vs second half of the draws), a two-sided
agreement test, and the `converged` summary whose thresholds are in `THRESHOLDS`
(docs/experiments/lambda_validation.md says why these values).

All functions work on jax or numpy arrays, inside or outside jit.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax.numpy as jnp

# converged = every check below passes (see `converged`)
THRESHOLDS = {
    "rhat_max": 1.05,      # split R-hat of the loss trace
    "ess_min": 200.0,      # multi-chain ESS of the loss trace
    "z_max": 2.0,          # split-half and gamma-plateau agreement, in combined standard errors
                           # (with C chains: Student's t 97.5% quantile, 2(C - 1) dof; see z_critical)
    "var_rel_max": 0.10,   # |nbeta^2 Var[L_n] / lambda_hat - 1|
    "accept_min": 0.5,     # MALA acceptance, or SGLD's MALA acceptance probability
}


class Estimate(NamedTuple):
    """value, stderr (std over chains / sqrt(C)), per_chain (C,), trace: loss traces (C, T),
    rhat / ess of the loss trace, accept: mean acceptance, aux: estimator-specific arrays,
    diag: diagnostics (scalars; `llc` documents its keys), converged: bool scalar."""

    value: object
    stderr: object
    per_chain: object
    trace: object
    rhat: object
    ess: object
    accept: object
    aux: dict
    diag: dict | None = None
    converged: object = None


def rhat(x):
    """Split R-hat of draws ``x`` (C, T): ~1 when the chains (and their halves) agree."""
    from blackjax.diagnostics import potential_scale_reduction

    h = x.shape[1] // 2
    return potential_scale_reduction(jnp.concatenate([x[:, :h], x[:, x.shape[1] - h:]], axis=0))


def ess(x):
    """Multi-chain effective sample size of ``x`` (C, T) (blackjax)."""
    from blackjax.diagnostics import effective_sample_size

    return effective_sample_size(x)


def stderr_over_chains(per_chain):
    """Standard error of the mean of (C,) per-chain values: std(ddof=1) / sqrt(C); NaN if C = 1."""
    c = per_chain.shape[0]
    return jnp.std(per_chain, ddof=1) / math.sqrt(c) if c > 1 else jnp.full((), jnp.nan, per_chain.dtype)


def zscore(a, se_a, b, se_b):
    """|a - b| / sqrt(se_a^2 + se_b^2): the two agree when it is below ``THRESHOLDS["z_max"]``."""
    return jnp.abs(a - b) / jnp.sqrt(se_a**2 + se_b**2)


def split_half(per_draw):
    """First vs second half of the draws. per_draw (C, T): per-draw contributions to the
    estimate (its mean over T is the per-chain value). Returns (first, second, z): half means
    over all chains and their disagreement in standard errors over chains."""
    h = per_draw.shape[1] // 2
    a, b = jnp.mean(per_draw[:, :h], axis=1), jnp.mean(per_draw[:, per_draw.shape[1] - h:], axis=1)
    return jnp.mean(a), jnp.mean(b), zscore(jnp.mean(a), stderr_over_chains(a), jnp.mean(b), stderr_over_chains(b))


def z_critical(num_chains: int | None, z_max: float = THRESHOLDS["z_max"]) -> float:
    """The agreement threshold for a difference of two means whose standard errors come from
    ``num_chains`` chains each: the quantile of Student's t with 2 (C - 1) degrees of freedom at
    the normal tail probability of ``z_max`` (2.52 for 4 chains, 2.20 for 8, -> 2 for many),
    because a standard error from a few chains is itself uncertain: plain 2 s.e. flags ~9% of
    good 4-chain runs instead of ~5%."""
    if not num_chains or num_chains < 2:
        return z_max
    from scipy.special import ndtr, stdtrit

    return float(stdtrit(2 * (num_chains - 1), ndtr(z_max)))


def converged(diag: dict, thresholds: dict | None = None, num_chains: int | None = None):
    """True when every diagnostic present in ``diag`` passes (missing or NaN ones are skipped):
    rhat <= rhat_max, ess >= ess_min, split_z and plateau_z <= `z_critical`, |var_rel| <=
    var_rel_max, accept >= accept_min, wstar_ok."""
    t = dict(THRESHOLDS, **(thresholds or {}))
    z = z_critical(num_chains, t["z_max"])
    tests = {"rhat": lambda v: v <= t["rhat_max"], "ess": lambda v: v >= t["ess_min"],
             "split_z": lambda v: v <= z, "plateau_z": lambda v: v <= z,
             "var_rel": lambda v: jnp.abs(v) <= t["var_rel_max"], "accept": lambda v: v >= t["accept_min"]}
    ok = jnp.asarray(True)
    for k, test in tests.items():
        if k in diag:
            v = jnp.asarray(diag[k])
            ok = ok & (jnp.isnan(v) | test(v))
    if "wstar_ok" in diag:
        ok = ok & jnp.asarray(diag["wstar_ok"], bool)
    return ok & jnp.isfinite(jnp.asarray(diag.get("value", 0.0)))


def summary(per_chain, trace, accept, aux, diag=None) -> Estimate:
    """An `Estimate` from per-chain values (C,) and loss traces (C, T), with R-hat, ESS and the
    converged flag over ``diag`` plus those two."""
    r, e = rhat(trace), ess(trace)
    value = jnp.mean(per_chain)
    acc = jnp.mean(accept)
    d = {"rhat": r, "ess": e, "accept": acc, "value": value, **(diag or {})}
    return Estimate(value, stderr_over_chains(per_chain), per_chain, trace, r, e, acc, aux, d,
                    converged(d, num_chains=per_chain.shape[0]))
