"""Benign overfitting under lazy training, regression half: test MSE versus width in the NTK regime.

Source: Zhu, Liu, Chrysos, Locatello, Cevher, ICML 2023, arXiv 2305.19377. Claim (abstract): when
deep ReLU networks in the NTK regime interpolate a smooth ground-truth function from noisy
labels, the generalization error converges to a constant that depends only on the label noise
and the initialization noise.

Our setting (a reconstruction): x uniform on S^{d-1} (network inputs of norm sqrt(d), as in
`common.input_scale`); ``y = f*(x) + sigma * N(0, 1)`` with the smooth target
``f*(x) = (sqrt(d) x_1 + sqrt(d (d + 2)) x_1 x_2) / sqrt(2)`` (a degree-1 plus a degree-2
spherical harmonic, unit variance, in the ReLU NTK's RKHS). A depth-L ReLU MLP (NTK
parametrization), uncentred ``f = alpha h`` (alpha is the initialization noise: ``f_0`` has
standard deviation ``alpha sqrt(Sigma(x, x))``) or centred ``f = alpha (h - h_0) + init_noise h_0``
(`common.outputs`; the initialization noise is then init_noise), trained by full-batch GD on the
square loss with step ``lr / alpha^2`` for a fixed number of steps (long enough to nearly
interpolate).

Per variant: training and test MSE (test against the noiseless f*, i.e. the excess risk; the
Bayes risk on noisy test labels is sigma^2), laziness (weight movement, NTK drift, lambda_min of
``Theta_0``), ``init_scale`` (the initialization noise s: alpha uncentred, init_noise centred),
and the infinite-width limit of the same run in closed form.
In the lazy limit GD on the square loss gives, with ``K`` the NTK, ``Sigma`` the NNGP kernel of h
and ``g(K) = K^{-1} (I - (I - lr K / n)^T)`` (Lee et al. 2019, arXiv 1902.06720),
``f_T(x) = f_0(x) + K(x, X) g(K) (y - f_0(X))``. With ``A = K(x, X) g(K)``:

* ``ntk_limit_mse``: that formula with the network's own ``f_0`` (paired with the network);
* ``ntk_limit_mse_expected = ntk_limit_label_mse + ntk_limit_init_var``: its expectation over
  ``f_0 ~ GP(0, s^2 Sigma)`` with s the initialization noise (alpha uncentred, init_noise
  centred); the label part is ``mean (A y - f*)^2`` (bias and label noise), the
  initialization part ``s^2 mean[Sigma(x, x) - 2 A Sigma(X, x) + A Sigma(X, X) A^T]``;
* ``ntk_interp_mse``: the minimum-norm NTK interpolator ``K(x, X) K^{-1} y`` (T = infinity, f_0 = 0).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxbench import data, mlp, ntk
from jaxbench import train as trainlib
from jaxbench.compat import after
from jaxbench.experiments import in_range, one_of, positive, static
from jaxbench.experiments.benign import common

NAME = "benign_regression"

PARAMS = {
    "width": positive(int),
    "depth": positive(int, default=2),
    "n": positive(int, default=256),
    "n_test": positive(int, default=1024),
    "d": static(int, 64, lambda v: v >= 2, "must be >= 2"),
    "steps": positive(int, default=1000),
    "n_log": positive(int, default=8),
    "parametrization": one_of("ntk", "standard", default="ntk"),
    "inputs": one_of("sqrt_d", "unit", default="sqrt_d"),
    "centered": static(bool, True),
    "sigma": in_range(0.0, 10.0, default=0.5),
    "alpha": positive(float, default=16.0, kind="traced"),
    "init_noise": in_range(0.0, 1e3, default=0.0),
    "lr": positive(float, default=2.0, kind="traced"),
}


def check(v) -> None:
    if not v["centered"] and v["init_noise"] != 0:
        raise ValueError(f"init_noise = {v['init_noise']}: applies to centred networks (centered = true); "
                         "an uncentred network's initialization noise is alpha")


def target(x):
    """Smooth ground truth ``f*(x)`` for ``x (n, d)`` on the sphere: ``(n,)``, mean 0, variance 1."""
    d = x.shape[-1]
    return (math.sqrt(d) * x[:, 0] + math.sqrt(d * (d + 2)) * x[:, 0] * x[:, 1]) / math.sqrt(2)


def lazy_limit_map(k_train, k_test_train, lr, steps: int):
    """``A = K(x, X) K^{-1} (I - (I - lr K / n)^T)`` of shape ``(m, n)`` (module docstring).

    Through ``K = U diag(s) U^T``: ``g(s) = (1 - (1 - lr s / n)^T) / s``; where ``0 <= lr s / n < 1``
    it is written with expm1/log1p, so small eigenvalues give ``g -> lr T / n`` without
    cancellation; where ``1 < lr s / n < 2`` (GD still stable, oscillating) the power is signed.
    """
    n = k_train.shape[0]
    s, u = jnp.linalg.eigh((k_train + k_train.T) / 2)
    s = jnp.maximum(s, 0.0)
    q = 1.0 - lr * s / n
    safe = jnp.where(s > 0, s, 1.0)
    small = -jnp.expm1(steps * jnp.log1p(-jnp.minimum(lr * s / n, 0.5)))  # valid where q >= 0.5
    big = 1.0 - jnp.where(q < 0, (-1.0) ** (steps % 2), 1.0) * jnp.abs(q) ** steps  # q < 0.5
    g = jnp.where(s > 0, jnp.where(q >= 0.5, small, big) / safe, lr * steps / n)
    return k_test_train @ (u * g) @ u.T


def init_variance(a, nngp_train, nngp_test_train, nngp_test_diag):
    """Per test point ``Sigma(x,x) - 2 A Sigma(X,x) + A Sigma(X,X) A^T``: ``(m,)`` (times alpha^2:
    the variance that the random initial function leaves in the lazy-limit prediction)."""
    return (nngp_test_diag - 2 * jnp.sum(a * nngp_test_train, axis=1)
            + jnp.sum((a @ nngp_train) * a, axis=1))


def run_one(s, p, key):
    """One variant. s: static params; p: traced scalars (sigma, alpha, init_noise, lr, seed)."""
    k_x, k_noise, k_init, k_sgd = jax.random.split(key, 4)
    xs = data.sphere(k_x, s.n + s.n_test, s.d)
    y = target(xs[:s.n]) + p["sigma"] * jax.random.normal(k_noise, (s.n,))
    yt = target(xs[s.n:])
    c = common.input_scale(s)
    x, xt = c * xs[:s.n], c * xs[s.n:]
    spec = common.spec_of(s)
    alpha, lr, s0 = p["alpha"], p["lr"], p["init_noise"]
    params0 = mlp.init(spec, k_init)
    h0, h0t = mlp.apply(spec, params0, x), mlp.apply(spec, params0, xt)
    cfg = trainlib.TrainConfig(s.steps, loss="square", optimizer="gd", n_log=s.n_log)
    res = trainlib.train(cfg, spec, params0, trainlib.Data(x, y[:, None], xt, yt[:, None]), lr / alpha**2, k_sgd,
                         out_scale=alpha, center=(h0, h0t) if s.centered else None, init_noise=s0)
    f = common.outputs(spec, res.params, params0, xt, alpha, s.centered, s0)
    out = {"train_mse": 2 * res.final["train_loss"], "test_mse": jnp.mean((f - yt) ** 2),
           "diverged": res.final["diverged"]}
    lz = common.laziness(spec, params0, res.params, x)
    lz.pop("theta0")
    out.update(lz)

    # infinite-width limit; LAPACK calls run one after another (`after`)
    k_inf = after(ntk.relu_ntk(x, None, spec=spec), out["ntk_min_eig"])
    lam_inf = ntk.min_eigenvalue(k_inf)
    k_inf_t = ntk.relu_ntk(xt, x, spec=spec)
    a = lazy_limit_map(after(k_inf, lam_inf), k_inf_t, lr, s.steps)
    f0 = common.initial_outputs(h0[:, 0], alpha, s.centered, s0)
    f0t = common.initial_outputs(h0t[:, 0], alpha, s.centered, s0)
    f_lim = f0t + a @ (y - f0)
    nngp_diag = jax.vmap(lambda z: ntk.relu_nngp(z[None], None, spec=spec)[0, 0])(xt)
    init_scale = s0 if s.centered else alpha
    init_var = init_scale**2 * jnp.mean(init_variance(
        a, ntk.relu_nngp(x, None, spec=spec), ntk.relu_nngp(xt, x, spec=spec), nngp_diag))
    label_mse = jnp.mean((a @ y - yt) ** 2)
    out.update({
        "init_scale": jnp.asarray(init_scale, f.dtype),
        "ntk_inf_min_eig": lam_inf,
        "ntk_limit_mse": jnp.mean((f_lim - yt) ** 2),
        "ntk_limit_dist": jnp.linalg.norm(f - f_lim) / jnp.linalg.norm(f_lim),
        "ntk_limit_label_mse": label_mse,
        "ntk_limit_init_var": init_var,
        "ntk_limit_mse_expected": label_mse + init_var,
        "ntk_interp_mse": jnp.mean((ntk.kernel_regression(after(k_inf, a), y, k_inf_t) - yt) ** 2),
        "curve_train_loss": res.curves["train_loss"],
        "curve_test_loss": res.curves["test_loss"],
        "curve_weight_move": res.curves["weight_move"],
    })
    return out


def plot(results_dir):
    from jaxbench.experiments.benign import plots_regression
    return plots_regression.plot(results_dir)


def claims(results_dir):
    from jaxbench.experiments.benign import claims as claimlib
    return claimlib.regression(results_dir)
