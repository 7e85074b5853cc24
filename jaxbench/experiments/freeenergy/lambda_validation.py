"""Validation of the learning-coefficient estimator on models with known lambda.

Before any claim about ReLU networks (experiment "free_energy", Nagayasu & Watanabe, arXiv
2303.15739) the estimator ``lambda_hat = nbeta (E[L_n] - L_n(w*))`` (Lau et al. 2023;
`jaxbench.free_energy.llc`) is checked where the learning coefficient is known in closed form:

* "linear": regular linear regression ``y = x W`` — lambda = d/2 (d = in out);
* "rrr": reduced-rank regression ``y = x A B`` with hidden width H and a rank-r truth —
  Aoyagi & Watanabe (2005);
* "dln": deep linear networks ``y = x W_1 ... W_L`` with a rank-r truth — Aoyagi (2024).

Per variant: inputs x ~ N(0, I), y = f*(x) + noise_std N(0, 1), n samples; the model's noise
is sigma = 1 whatever noise_std. The truth f* has the student's architecture: its first layer's
first r columns, the r x r top-left blocks of the middle layers and the first r rows of the last
layer are N(0, 1) (the rest zero), so ``rank(W_1 ... W_L) = r``.

One compilation per (model family, depth, n): every layer is a (pad x pad) matrix times a 0/1
mask of the entries the variant's widths use, and the widths and the rank are traced numbers
(the closed form of lambda is computed in the graph by `dln_learning_coefficient_jnp`). Entries
outside the masks do not touch the loss; the sampler moves them under the localization prior
alone, which changes neither L_n nor lambda_hat.

Two checks (docs/experiments/lambda_validation.md):

* the sampler check (``noise_std = 0``): y = f*(x) exactly, w* = f*, a
  global minimum of L_n. Then ``L_n - L_n(w*)`` is the exact K_n whose learning coefficient is
  lambda, and ``lambda_hat`` must approach ``lambda - (m - 1) / log(nbeta)`` (m: multiplicity);
* the statistical check (``noise_std = 1``): w* = `find_minimum` from the truth jittered by
  ``jitter`` N(0, 1), compared with the closed-form global minimum of L_n (reduced-rank
  regression: the best rank-k fit, k the narrowest width); ``wstar_ok`` also requires the
  relative gap to be <= ``gap_tol``. Descent stops at ``|grad L_n| <= grad_tol`` = 2e-5
  (`find_minimum`'s float32 default 1e-4 left rrr 2-2-6 / 6-2-2 at n = 10^4 1.0e-5..1.7e-5
  (relative) above the closed-form minimum in 5 of 16 runs; 2e-5 reached it within 4e-6 in all 16). Every local minimum of these models is global, so any
  descent that converges reaches it; a jitter of 0.3 leaves the deep linear truth (a saddle flat
  to third order, where the gradient is ~jitter^2 and descent from 1e-2 stalls 1e-3 above the
  minimum) within a few hundred steps.

MALA or HMC (step adapted in burn-in) or SGLD at nbeta = n / log n, gamma = localization, with the
gamma / 10 plateau rerun, R-hat, ESS, split halves and ``nbeta^2 Var[L_n]`` (all from
`free_energy.llc`).

Every model here is linear in x, so L_n depends on the data only through ``X^T X``, ``X^T Y``
and ``|Y|^2``: the estimators see L_n through these sufficient statistics (`stats_nll_fn`, the
same function of the parameters as `nll_fn` up to float rounding), and a step costs the same
at n = 10^4 as at n = 10^3.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxbench import free_energy as fe
from jaxbench.experiments import Param, in_range, one_of, positive, static

NAME = "lambda_validation"


MODEL_DEPTH = {"linear": (1,), "rrr": (2,), "dln": (3, 4, 5, 6)}
HIDDEN = ("h1", "h2", "h3", "h4", "h5")

PARAMS = {
    "model": one_of("linear", "rrr", "dln", default="rrr"),
    "depth": static(int, 2, lambda v: 1 <= v <= 6, "must lie in [1, 6] (weight matrices)"),
    "pad": static(int, 6, lambda v: v >= 1, "must be >= 1"),
    "in_dim": positive(int, 3, kind="traced"),
    "out_dim": positive(int, 3, kind="traced"),
    **{h: Param("traced", int, 0, lambda v: v >= 0, "must be >= 0 (0: no such layer)") for h in HIDDEN},
    "rank": Param("traced", int, 1, lambda v: v >= 0, "must be >= 0"),
    "n": Param("static", int, 1000, lambda v: v >= 10, "must be >= 10"),
    "chains": static(int, 4, lambda v: v >= 2, "must be >= 2 (error bars come from chains)"),
    "draws": positive(int, 2000),
    "burnin": static(int, 2000, lambda v: v >= 0, "must be >= 0"),
    "sampler": one_of("sgld", "mala", "hmc", default="mala"),
    "leapfrog": static(int, 16, lambda v: v >= 1, "must be >= 1 (HMC's leapfrog steps per transition)"),
    "target_accept": static(float, 0.8, lambda v: 0 < v < 1, "must lie in (0, 1)"),
    "precondition": static(bool, False),
    "descend_steps": static(int, 5000, lambda v: v >= 0, "must be >= 0"),
    "jitter": in_range(0.0, 10.0, 0.3),
    "gap_tol": in_range(0.0, 1.0, 1e-5),
    "grad_tol": in_range(1e-9, 1.0, 2e-5),
    "step_scale": in_range(1e-5, 2.0, 1.0),
    "localization": in_range(1e-4, 1e4, fe.DEFAULT_LOCALIZATION),
    "noise_std": Param("traced", float, 1.0, lambda v: v >= 0, "must be >= 0 (0: the centred sampler check)"),
}


def dims_of(v) -> tuple[int, ...]:
    """(input, hidden..., output) of a variant (a dict or an object with the parameters)."""
    get = (lambda k: v[k]) if isinstance(v, dict) else (lambda k: getattr(v, k))
    return (int(get("in_dim")), *[int(get(h)) for h in HIDDEN if int(get(h)) > 0], int(get("out_dim")))


def check(s) -> None:
    """Cross-parameter checks (one clear line each)."""
    dims = dims_of(s)
    if s.depth not in MODEL_DEPTH[s.model]:
        raise ValueError(f"model {s.model!r} has depth {', '.join(map(str, MODEL_DEPTH[s.model]))}, got depth={s.depth}")
    hs = [int(getattr(s, h)) for h in HIDDEN]
    if any(h == 0 for h in hs[: s.depth - 1]) or any(h > 0 for h in hs[s.depth - 1:]):
        raise ValueError(f"depth={s.depth} needs {s.depth - 1} hidden widths (h1..h{s.depth - 1} > 0, the rest 0), "
                         f"got {dict(zip(HIDDEN, hs))}")
    if max(dims) > s.pad:
        raise ValueError(f"widths {dims} exceed pad={s.pad}")
    if s.model != "linear" and s.rank > min(dims):
        raise ValueError(f"rank={s.rank} exceeds the smallest width of {dims}")


def known_lambda(dims, rank) -> tuple[float, int]:
    """(lambda, multiplicity m) in closed form (Python; `run_one` uses the jnp twin)."""
    if len(dims) == 2:
        return dims[0] * dims[1] / 2, 1
    return fe.dln_learning_coefficient(dims, rank), fe.dln_multiplicity(dims, rank)


def _masks(s, dims):
    """Per layer (pad x pad) 0/1 masks of the entries the variant's model uses."""
    idx = jnp.arange(s.pad)
    return [((idx[:, None] < dims[l]) & (idx[None, :] < dims[l + 1])).astype(jnp.zeros(()).dtype)
            for l in range(s.depth)]


def truth(s, dims, rank, key):
    """f*: rank-r blocks (module docstring), as (pad x pad) layers; a full matrix at depth 1."""
    idx = jnp.arange(s.pad)
    out = []
    for l, m in enumerate(_masks(s, dims)):
        rows = idx[:, None] < (dims[0] if l == 0 else rank)
        cols = idx[None, :] < (dims[-1] if l == s.depth - 1 else rank)
        out.append(jnp.where(rows & cols, jax.random.normal(jax.random.fold_in(key, l), (s.pad, s.pad)), 0.0) * m)
    return out


def nll_fn(masks, pad):
    """Gaussian regression with sigma = 1 on padded (n, pad) data: ``|y - f(x)|^2 / 2 +
    (pad/2) log(2 pi)``; f(x) = x (W_1 * M_1) ... (W_L * M_L)."""
    def nll(params, batch):
        x, y = batch
        x = nll_apply(params, masks, x)
        return 0.5 * jnp.sum((y - x) ** 2, axis=-1) + 0.5 * pad * math.log(2 * math.pi)
    return nll


def stats_nll_fn(masks):
    """The same loss from sufficient statistics: f is linear in x, so with P = the product of
    the masked layers and W_ls the least-squares coefficients (``X^T (Y - X W_ls) = 0``),

        L_n(P) = L_n(W_ls) + tr((P - W_ls)^T (X^T X / n) (P - W_ls)) / 2

    exactly. ``batch = (sxx, w_ls, l_ls)`` with a leading axis of one row standing for the n
    examples (pass ``weights = [n]``): a step costs O(pad^3) whatever n, and the difference form
    keeps float32 from cancelling ``L_n(P) - L_n(w*)`` against the constant."""
    def nll(params, batch):
        sxx, w_ls, l_ls = batch
        d = nll_apply(params, masks, jnp.eye(w_ls.shape[-1], dtype=w_ls.dtype))[None] - w_ls
        return l_ls + 0.5 * jnp.sum(d * (sxx @ d), axis=(-2, -1))
    return nll


def sufficient_stats(x, y, in_mask, pad):
    """``(sxx (1, pad, pad), w_ls (1, pad, pad), l_ls (1,))`` for `stats_nll_fn`: padded input
    columns are pinned to zero in W_ls (they are zero in x, so they do not move the fit)."""
    n = x.shape[0]
    sxx = x.T @ x / n
    w_ls = jnp.linalg.solve(sxx + jnp.diag(1.0 - in_mask), x.T @ y / n)
    l_ls = jnp.sum((y - x @ w_ls) ** 2) / (2 * n) + 0.5 * pad * math.log(2 * math.pi)
    return sxx[None], w_ls[None], l_ls[None]


def closed_form_min_loss(x, y, in_mask, k, pad):
    """min L_n over the model in closed form: least squares (padded inputs' columns pinned to 0),
    restricted to rank <= k (k the narrowest width) by the reduced-rank regression solution:
    the least-squares residual plus the smallest ``pad - k`` eigenvalues of ``Yhat^T Yhat``
    (padded outputs contribute zero eigenvalues)."""
    coef = jnp.linalg.solve(x.T @ x + jnp.diag(1.0 - in_mask), x.T @ y)
    fit = x @ coef
    ev = jnp.linalg.eigvalsh(fit.T @ fit)                    # ascending
    resid = jnp.sum((y - fit) ** 2) + jnp.sum(jnp.where(jnp.arange(pad) < pad - k, ev, 0.0))
    return resid / (2 * x.shape[0]) + 0.5 * pad * math.log(2 * math.pi)


def run_one(s, traced, key):
    hid = [traced[h] for h in HIDDEN[: s.depth - 1]]
    dims = jnp.stack([traced["in_dim"], *hid, traced["out_dim"]])
    rank = jnp.where(s.depth == 1, jnp.min(dims), traced["rank"])
    k_t, k_x, k_e, k_m, k_c, k_s = jax.random.split(key, 6)
    idx = jnp.arange(s.pad)
    in_mask = (idx < dims[0]).astype(jnp.zeros(()).dtype)
    out_mask = (idx < dims[-1]).astype(in_mask.dtype)
    masks = _masks(s, dims)
    p_true = truth(s, dims, rank, k_t)
    x = jax.random.normal(k_x, (s.n, s.pad)) * in_mask
    y = nll_apply(p_true, masks, x) + traced["noise_std"] * jax.random.normal(k_e, (s.n, s.pad)) * out_mask
    # every step sees L_n through its sufficient statistics (`stats_nll_fn`): one row, weight n
    nll = stats_nll_fn(masks)
    data = sufficient_stats(x, y, in_mask, s.pad)
    wts = jnp.full((1,), s.n, x.dtype)
    # the sampler check (noise-free) is centred at the truth; the statistical check at a minimum
    centred = traced["noise_std"] == 0
    # (no descent for the centred check: the truth is its minimum; a traced bound stops it at once)
    found = fe.find_minimum(nll, p_true, data, k_m, max_steps=jnp.where(centred, 0, s.descend_steps),
                            jitter=traced["jitter"], weights=wts, grad_tol=traced["grad_tol"])
    at_truth = fe.check_minimum(nll, p_true, data, k_c, weights=wts)
    w_star = jax.tree_util.tree_map(lambda a, b: jnp.where(centred, a, b), at_truth, found)
    nbeta = s.n / math.log(s.n)
    cfg = fe.SamplerConfig(s.sampler, s.chains, s.draws, s.burnin, target_accept=s.target_accept,
                          precondition=s.precondition, num_integration_steps=s.leapfrog)
    est = fe.llc(nll, p_true, data, k_s, cfg, wstar=w_star, nbeta=nbeta, localization=traced["localization"],
                 step_scale=traced["step_scale"], weights=wts)
    lam, m = fe.dln_learning_coefficient_jnp(dims, rank)
    loss_cf = closed_form_min_loss(x, y, in_mask, jnp.min(dims), s.pad)
    gap = (w_star.loss - loss_cf) / jnp.abs(loss_cf)
    # w* is verified against the closed-form minimum too: a flat higher-order saddle (a deep
    # linear truth) passes the gradient, Hessian and probe checks while sitting above it
    wstar_ok = est.diag["wstar_ok"] & (gap <= traced["gap_tol"])
    num_params = jnp.sum(jnp.stack([jnp.sum(mk) for mk in masks]))
    # the truth's smallest nonzero singular value: where sqrt(nbeta) s_r is not large, the
    # posterior at this n still reaches the rank-(r-1) region, whose lambda is lower
    sv = jnp.linalg.svd(nll_apply(p_true, masks, jnp.eye(s.pad)), compute_uv=False)
    truth_sv = jnp.where(rank > 0, sv[jnp.maximum(rank - 1, 0)], 0.0)
    d = est.diag
    thin = max(1, s.draws // 200)
    return {
        "lambda_hat": est.value, "lambda_se": est.stderr, "lambda_true": lam, "multiplicity": m,
        "lambda_corrected": lam - (m - 1) / math.log(nbeta), "nbeta": jnp.asarray(nbeta),
        "d_half": num_params / 2, "num_params": num_params,
        "rhat": est.rhat, "ess": est.ess, "accept": est.accept, "step_size": est.aux["step_size"],
        "split_first": d["split_first"], "split_second": d["split_second"], "split_z": d["split_z"],
        "lambda_var": d["lambda_var"], "lambda_var_se": d["lambda_var_se"], "var_rel": d["var_rel"],
        "lambda_plateau": d["lambda_plateau"], "lambda_plateau_se": d["lambda_plateau_se"], "plateau_z": d["plateau_z"],
        "wstar_ok": wstar_ok, "wstar_checks_ok": d["wstar_ok"], "grad_norm": d["grad_norm"], "hess_min": d["hess_min"], "hess_max": d["hess_max"],
        "probe_drop": d["probe_drop"], "descent_steps": w_star.steps, "converged": est.converged & wstar_ok,
        "loss_star": w_star.loss, "loss_closed_form": loss_cf, "wstar_gap": gap,
        "loss_truth": fe.mean_nll(nll, p_true, data, wts), "truth_sv": truth_sv, "diverged": ~jnp.isfinite(est.value),
        "per_chain": est.per_chain, "trace": est.trace[:, ::thin],
    }


def nll_apply(params, masks, x):
    for w, m in zip(params, masks):
        x = x @ (w * m)
    return x


def variant_bytes(s) -> int:
    p = s.depth * s.pad * s.pad
    return 8 * (s.n * s.pad * (s.depth + 4) * 2 + 2 * s.chains * (s.draws + 8 * p) + 40 * p)


def plot(results_dir):
    from jaxbench.experiments.freeenergy import plots as _freeenergy_plots
    return _freeenergy_plots.validation(results_dir)


def claims(results_dir):
    from jaxbench.experiments.freeenergy.validation_claims import claims as _claims
    return _claims(results_dir)
