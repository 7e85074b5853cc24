"""Validation of the learning-coefficient estimator on models with known lambda.

Before any claim about ReLU networks (experiment "free_energy", Nagayasu & Watanabe, arXiv
2303.15739) the SGLD estimator ``lambda_hat = nbeta (E[L_n] - L_n(w*))`` (Lau et al. 2023) is
checked where the learning coefficient is known in closed form:

* "linear": regular linear regression ``y = x W + b`` — lambda = d/2 (d = (in + 1) out);
* "rrr": reduced-rank regression ``y = x A B`` with hidden width H and a rank-r truth —
  Aoyagi & Watanabe (2005);
* "dln": deep linear networks ``y = x W_1 ... W_L`` with a rank-r truth — Aoyagi (2024).

Per variant: inputs x ~ N(0, I), y = f*(x) + noise_std N(0, 1), n samples. The truth f* has
the student's architecture: its first layer's first r columns, the r x r top-left blocks of the
middle layers and the first r rows of the last layer are N(0, 1) (the rest zero), so
``rank(W_1 ... W_L) = r``. w* is found by ``descend_steps`` steps of gradient descent on L_n from
the truth (the estimator needs a local minimum of L_n, not the truth itself: at
beta = 1/log n, ``L_n(truth) - min L_n`` alone biases lambda_hat by ~ -lambda/log n). Then
SGLD (or MALA) with localization gamma around w* at nbeta = n / log n, step
``eps = {sgld,mala}_step / (nbeta h + gamma)`` with h the largest Hessian eigenvalue of L_n at w*.
Error bars: standard error over chains.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxbench import free_energy as fe
from jaxbench import mlp
from jaxbench.experiments import Param, in_range, one_of, positive, static

NAME = "lambda_validation"


def _widths(s: str) -> tuple[int, ...]:
    return tuple(int(v) for v in s.replace(" ", "").split(",") if v)


def _valid_hidden(s) -> bool:
    try:
        return all(w > 0 for w in _widths(s))
    except ValueError:
        return False


PARAMS = {
    "model": one_of("linear", "rrr", "dln", default="linear"),
    "in_dim": positive(int, 3),
    "out_dim": positive(int, 3),
    "hidden": static(str, "", _valid_hidden, "comma-separated positive widths, e.g. \"4,4\""),
    "rank": static(int, 1, lambda v: v >= 0, "must be >= 0"),
    "n": positive(int, 1000),
    "chains": static(int, 8, lambda v: v >= 2, "must be >= 2 (error bars come from chains)"),
    "draws": positive(int, 2000),
    "burnin": static(int, 0, lambda v: v >= 0, "must be >= 0"),
    "sampler": one_of("sgld", "mala", default="sgld"),
    "descend_steps": static(int, 500, lambda v: v >= 0, "must be >= 0"),
    "sgld_step": in_range(1e-5, 1.0, 0.1),
    "mala_step": in_range(1e-5, 2.0, 0.5),
    "localization": in_range(0.0, 1e4, 1.0),
    "noise_std": Param("traced", float, 1.0, lambda v: v > 0, "must be > 0"),
    "descend_lr": in_range(1e-5, 10.0, 0.1),
}


def check(s) -> None:
    """Cross-parameter checks (one clear line each)."""
    h = _widths(s.hidden)
    if s.model == "linear" and h:
        raise ValueError(f"model 'linear' takes no hidden widths, got hidden={s.hidden!r}")
    if s.model == "rrr" and len(h) != 1:
        raise ValueError(f"model 'rrr' needs exactly one hidden width, got hidden={s.hidden!r}")
    if s.model == "dln" and len(h) < 2:
        raise ValueError(f"model 'dln' needs >= 2 hidden widths, got hidden={s.hidden!r}")
    if s.model != "linear" and s.rank > min(s.in_dim, s.out_dim, *h):
        raise ValueError(f"rank={s.rank} exceeds the smallest width of {(s.in_dim, *h, s.out_dim)}")


def spec(s) -> mlp.MLPSpec:
    bias = s.model == "linear"
    return mlp.MLPSpec(s.in_dim, _widths(s.hidden), s.out_dim, activation="linear",
                       parametrization="standard", bias=bias)


def known_lambda(s) -> float:
    """The closed-form learning coefficient of the variant's model."""
    sp = spec(s)
    if s.model == "linear":
        return sp.num_params / 2
    if s.model == "rrr":
        return fe.rrr_learning_coefficient(s.in_dim, s.out_dim, sp.widths[0], s.rank)
    return fe.dln_learning_coefficient(sp.dims, s.rank)


def truth(s, key):
    """Parameters of f*: rank-r blocks (see module docstring); full for 'linear'."""
    sp = spec(s)
    params = mlp.init(sp, key)
    if s.model == "linear":
        return params
    r, out = s.rank, []
    for l, layer in enumerate(params):
        w = layer["w"]
        rows = np.arange(w.shape[0])[:, None] < (w.shape[0] if l == 0 else r)
        cols = np.arange(w.shape[1])[None, :] < (w.shape[1] if l == len(params) - 1 else r)
        out.append({"w": jnp.where(rows & cols, w, 0.0)})
    return out


def nll_fn(sp, sigma):
    def nll(params, batch):
        x, y = batch
        r = y - mlp.apply(sp, params, x)
        return jnp.sum(r**2, axis=-1) / (2 * sigma**2) + 0.5 * y.shape[-1] * jnp.log(2 * jnp.pi * sigma**2)
    return nll


def descend(nll, params, data, lr, steps):
    """Plain gradient descent on L_n (a local minimum near the start)."""
    g = jax.grad(lambda p: fe.mean_nll(nll, p, data))
    return jax.lax.fori_loop(0, steps, lambda _, p: jax.tree_util.tree_map(lambda a, b: a - lr * b, p, g(p)), params)


def run_one(s, traced, key):
    check(s)
    sp = spec(s)
    k_t, k_x, k_e, k_h, k_s = jax.random.split(key, 5)
    sigma = traced["noise_std"]
    p_true = truth(s, k_t)
    x = jax.random.normal(k_x, (s.n, s.in_dim))
    y = mlp.apply(sp, p_true, x) + sigma * jax.random.normal(k_e, (s.n, s.out_dim))
    nll, data = nll_fn(sp, sigma), (x, y)
    w_star = descend(nll, p_true, data, traced["descend_lr"], s.descend_steps)
    nbeta = s.n / np.log(s.n)
    h = fe.curvature(nll, w_star, data, k_h)
    gamma = traced["localization"]
    eps = traced[f"{s.sampler}_step"] / (nbeta * h + gamma)
    cfg = fe.SamplerConfig(s.sampler, s.chains, s.draws, s.burnin)
    est = fe.llc(nll, w_star, data, k_s, cfg, eps, nbeta=nbeta, localization=gamma)
    thin = max(1, s.draws // 100)
    return {
        "lambda_hat": est.value, "lambda_se": est.stderr,
        "lambda_true": jnp.asarray(known_lambda(s)), "d_half": jnp.asarray(sp.num_params / 2),
        "num_params": jnp.asarray(sp.num_params), "rhat": est.rhat, "ess": est.ess, "accept": est.accept,
        "loss_star": est.aux["loss_star"], "loss_truth": fe.mean_nll(nll, p_true, data),
        "curvature": h, "step_size": eps, "per_chain": est.per_chain, "trace": est.trace[:, ::thin],
    }


def variant_bytes(s) -> int:
    sp = spec(s)
    return 8 * (s.n * (s.in_dim + s.out_dim) * 4 + s.chains * (s.draws + 4 * sp.num_params))


def plot(results_dir):
    from jaxbench.experiments import _freeenergy_plots
    return _freeenergy_plots.validation(results_dir)
