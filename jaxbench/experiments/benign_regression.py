"""Benign overfitting under lazy training, regression half: test MSE versus width in the NTK regime.

Source: Zhu, Liu, Chrysos, Locatello, Cevher, ICML 2023, arXiv 2305.19377. Claim (abstract): when
deep ReLU networks in the NTK regime interpolate a smooth ground-truth function from noisy
labels, the generalization error converges to a constant that depends only on the label noise
and the initialization noise.

Our setting (a reconstruction): x uniform on S^{d-1}; ``y = f*(x) + sigma * N(0, 1)`` with the
smooth target ``f*(x) = (sqrt(d) x_1 + sqrt(d (d + 2)) x_1 x_2) / sqrt(2)`` (a degree-1 plus a
degree-2 spherical harmonic, unit variance, in the ReLU NTK's RKHS). A depth-L ReLU MLP (NTK
parametrization, output ``f = alpha * h``: alpha is the initialization noise, ``f_0`` has
standard deviation ``alpha * sqrt(Sigma(x, x))``) trained by full-batch GD on the square loss
with step ``lr / alpha^2`` for a fixed number of steps (long enough to interpolate nearly).

Per variant: training and test MSE (test against the noiseless f*, i.e. the excess risk; the
Bayes risk on noisy test labels is sigma^2), laziness (weight movement, NTK drift, lambda_min of
``Theta_0``), Lipschitz estimates, and the infinite-width limit of the same run in closed form.
In the lazy limit GD on the square loss gives, with ``K`` the NTK, ``Sigma`` the NNGP kernel of h
and ``g(K) = K^{-1} (I - (I - lr K / n)^T)`` (Lee et al. 2019, arXiv 1902.06720),
``f_T(x) = f_0(x) + K(x, X) g(K) (y - f_0(X))``. With ``A = K(x, X) g(K)``:

* ``ntk_limit_mse``: that formula with the network's own ``f_0`` (paired with the network);
* ``ntk_limit_mse_expected = ntk_limit_label_mse + ntk_limit_init_var``: its expectation over
  ``f_0 ~ GP(0, alpha^2 Sigma)``; the label part is ``mean (A y - f*)^2`` (bias and label noise),
  the initialization part ``alpha^2 mean[Sigma(x, x) - 2 A Sigma(X, x) + A Sigma(X, X) A^T]``;
* ``ntk_interp_mse``: the minimum-norm NTK interpolator ``K(x, X) K^{-1} y`` (T = infinity, f_0 = 0).
"""

from __future__ import annotations

import math

import numpy as np

import jax
import jax.numpy as jnp

from jaxbench import bounds, data, mlp, ntk, store
from jaxbench import plot as plotlib
from jaxbench import train as trainlib
from jaxbench.experiments import benign, in_range, one_of, positive, static

NAME = "benign_regression"

PARAMS = {
    "width": positive(int),
    "depth": positive(int, default=2),
    "n": positive(int, default=128),
    "n_test": positive(int, default=1024),
    "d": static(int, 8, lambda v: v >= 2, "must be >= 2"),
    "steps": positive(int, default=2000),
    "n_log": positive(int, default=16),
    "n_lip": positive(int, default=256),
    "parametrization": one_of("ntk", "standard", default="ntk"),
    "sigma": in_range(0.0, 10.0, default=0.5),
    "alpha": positive(float, default=1.0, kind="traced"),
    "lr": positive(float, default=6.0, kind="traced"),
}


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
    """One variant. s: static params; p: traced scalars (sigma, alpha, lr, seed)."""
    k_x, k_noise, k_init, k_sgd, k_lip = jax.random.split(key, 5)
    xs = data.sphere(k_x, s.n + s.n_test, s.d)
    x, xt = xs[:s.n], xs[s.n:]
    y = target(x) + p["sigma"] * jax.random.normal(k_noise, (s.n,))
    yt = target(xt)
    spec = benign.spec_of(s)
    alpha, lr = p["alpha"], p["lr"]
    params0 = mlp.init(spec, k_init)
    cfg = trainlib.TrainConfig(s.steps, loss="square", optimizer="gd", n_log=s.n_log)
    res = trainlib.train(cfg, spec, params0, trainlib.Data(x, y[:, None], xt, yt[:, None]),
                         lr / alpha**2, k_sgd, out_scale=alpha)
    f = mlp.apply(spec, res.params, xt, alpha)[:, 0]
    out = {"train_mse": 2 * res.final["train_loss"], "test_mse": jnp.mean((f - yt) ** 2),
           "diverged": res.final["diverged"]}
    out.update(benign.laziness(spec, params0, res.params, x))
    out.update(benign.lipschitz(spec, res.params, alpha, jnp.concatenate([xt, data.sphere(k_lip, s.n_lip, s.d)]),
                                dep=out["ntk_min_eig"]))

    # infinite-width limit; LAPACK calls run one after another (`bounds.after`)
    k_inf = bounds.after(ntk.relu_ntk(x, None, spec=spec), out["lip_upper"])
    lam_inf = ntk.min_eigenvalue(k_inf)
    a = lazy_limit_map(bounds.after(k_inf, lam_inf), ntk.relu_ntk(xt, x, spec=spec), lr, s.steps)
    f0 = mlp.apply(spec, params0, x, alpha)[:, 0]
    f0t = mlp.apply(spec, params0, xt, alpha)[:, 0]
    f_lim = f0t + a @ (y - f0)
    nngp_diag = jax.vmap(lambda z: ntk.relu_nngp(z[None], None, spec=spec)[0, 0])(xt)
    init_var = alpha**2 * jnp.mean(init_variance(
        a, ntk.relu_nngp(x, None, spec=spec), ntk.relu_nngp(xt, x, spec=spec), nngp_diag))
    label_mse = jnp.mean((a @ y - yt) ** 2)
    out.update({
        "ntk_inf_min_eig": lam_inf,
        "ntk_limit_mse": jnp.mean((f_lim - yt) ** 2),
        "ntk_limit_dist": jnp.linalg.norm(f - f_lim) / jnp.linalg.norm(f_lim),
        "ntk_limit_label_mse": label_mse,
        "ntk_limit_init_var": init_var,
        "ntk_limit_mse_expected": label_mse + init_var,
        "ntk_interp_mse": jnp.mean((ntk.kernel_regression(bounds.after(k_inf, a), y,
                                                          ntk.relu_ntk(xt, x, spec=spec)) - yt) ** 2),
        "curve_train_loss": res.curves["train_loss"],
        "curve_test_loss": res.curves["test_loss"],
        "curve_weight_move": res.curves["weight_move"],
    })
    return out


# ----------------------------------------------------------------------------- figures

def plot(results_dir):
    res = store.load(results_dir)
    t, meta = res.table, res.meta
    ok = ~t["diverged"]
    base = benign.at_mode(t, ok, ["depth", "lr"])
    return _mse_vs_width(t, meta, base, results_dir) + _plateau(t, meta, base, results_dir)


def _mse_vs_width(t, meta, base, out):
    sigmas = np.unique(t["sigma"][base])
    fig, axes = plotlib.figure(1, len(sigmas), width=3.3, height=3.0, sharey=True)
    axes = np.atleast_1d(axes).ravel()
    for ax, sg in zip(axes, sigmas):
        for al in np.unique(t["alpha"][base]):
            sel = base & (t["sigma"] == sg) & (t["alpha"] == al)
            ln = benign.line(ax, t, "width", "test_mse", sel, label=f"α = {al:g}")
            lim = t["ntk_limit_mse_expected"][sel]
            m, e = lim.mean(), lim.std(ddof=1) / np.sqrt(lim.size) if lim.size > 1 else 0.0
            ax.axhline(m, color=ln.get_color(), ls="--", lw=1)
            ax.axhspan(m - e, m + e, color=ln.get_color(), alpha=0.12, lw=0)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("hidden width m")
        ax.set_title(f"label noise σ = {sg:g}", fontsize=9)
    axes[0].set_ylabel("test MSE against f* (excess risk)")
    axes[0].legend(title="solid: network; dashed: NTK limit", fontsize=6.5, title_fontsize=6.5)
    return plotlib.save(fig, out, "mse_vs_width", meta)


def _plateau(t, meta, base, out):
    fig, axes = plotlib.figure(1, 2, width=3.8, height=3.0)
    a, b = axes[0]
    widest = base & (t["width"] == np.max(t["width"][base]))
    for sg in np.unique(t["sigma"][base]):
        sel = base & (t["sigma"] == sg)
        ln = benign.line(a, t, "alpha", "ntk_limit_mse_expected", sel, label=f"σ = {sg:g}")
        benign.line(a, t, "alpha", "ntk_limit_label_mse", sel, color=ln.get_color(), ls=":", marker="")
        keys, mean, sem, _ = plotlib.aggregate(t, ["alpha"], "test_mse", where=widest & (t["sigma"] == sg))
        a.errorbar([k[0] for k in keys], mean, yerr=sem, fmt="s", mfc="none", color=ln.get_color(), ms=5)
    a.set_xscale("log", base=2)
    a.set_yscale("log")
    a.set_xlabel("output multiplier α (initialization noise)")
    a.set_ylabel("test MSE against f*")
    a.set_title(f"lines: NTK limit (dotted: label part only); squares: width {np.max(t['width'][base])}",
                fontsize=7.5)
    a.legend(fontsize=6.5)
    sg = benign.mode(t["sigma"], base)
    for al in np.unique(t["alpha"][base]):
        benign.line(b, t, "width", "weight_move", base & (t["sigma"] == sg) & (t["alpha"] == al),
                    label=f"α = {al:g}")
    widths = np.unique(t["width"][base])
    v = t["weight_move"][base & (t["sigma"] == sg) & (t["width"] == widths[0])]
    if v.size and np.mean(v) > 0:
        benign.slope_guide(b, widths, np.mean(v), -0.5, "∝ m^-1/2")
    b.set_xscale("log", base=2)
    b.set_yscale("log")
    b.set_xlabel("hidden width m")
    b.set_ylabel("max_l ‖W_l(T) − W_l(0)‖_F / ‖W_l(0)‖_F")
    b.set_title(f"laziness, σ = {sg:g}", fontsize=8)
    b.legend(fontsize=6.5)
    return plotlib.save(fig, out, "mse_plateau", meta)
