"""Convergence of the empirical NTK at initialisation to the infinite-width NTK.

Claim (Jacot, Gabriel, Hongler, NeurIPS 2018, arXiv 1806.07572; the fluctuation rate from
Hanin & Nica, ICLR 2020, arXiv 1909.05989, and Arora et al., NeurIPS 2019, arXiv 1904.11955):
in the NTK parametrization the empirical NTK of a randomly initialised MLP converges to a
deterministic kernel as the widths grow, with fluctuations of order ``depth / sqrt(width)`` — so on
a log-log plot the relative error against width has slope about -1/2.

Our setting: n points uniform on the sphere S^{d-1} (redrawn per seed), a ReLU MLP of
``depth`` dense layers with all hidden widths equal to ``width`` (`jaxbench.mlp` conventions,
``w_std, b_std``), scalar output. Per variant (one seed): the relative Frobenius distance
``||Theta_emp - Theta_inf||_F / ||Theta_inf||_F`` between the exact empirical NTK at
initialisation (`jaxbench.ntk.empirical_ntk`, method ``method``) and `jaxbench.ntk.relu_ntk`
(``ntk_err``), and the same for the NNGP (``nngp_err``), where the empirical NNGP is the
conditional covariance of the output pre-activation given the last hidden layer,
``w_std^2 <x^{L-1}, x'^{L-1}> / width + b_std^2``. The same draw, rescaled to the standard
parametrization (the identical function), gives ``ntk_err_standard``: there the NTK grows with
width, so ``Theta_inf`` is its large-width equivalent at the same widths
(`relu_ntk(parametrization="standard", widths=...)`). Both parametrizations come from one
variant so they share a compilation (one per width and depth). Also recorded: the largest
entrywise error, the ratio of traces and the smallest eigenvalues of both Gram matrices.

The figure `ntk_convergence.png` plots error against width on log-log axes (mean +- s.e.m. over
seeds) and the least-squares slope of log error on log width per depth; the slopes are also
written to ``slopes.json``.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxbench import data, mlp, ntk, store
from jaxbench import plot as plotlib
from jaxbench.experiments import Param, one_of, positive

NAME = "ntk_convergence"
METRICS = {"ntk_err": "NTK, NTK parametrization", "ntk_err_standard": "NTK, standard parametrization",
           "nngp_err": "NNGP (either parametrization)"}

PARAMS = {
    "width": positive(int, 256),
    "depth": Param("static", int, 3, lambda v: v >= 2, "must be >= 2 (dense layers; 2 = one hidden layer)"),
    "n": Param("static", int, 32, lambda v: v >= 2, "must be >= 2"),
    "d": positive(int, 16),
    "method": one_of("structured", "jacobian", "jvp_vjp", default="structured"),
    "w_std": Param("static", float, math.sqrt(2.0), lambda v: v > 0, "must be > 0"),
    "b_std": Param("static", float, 0.1, lambda v: v >= 0, "must be >= 0"),
}


def spec_of(static, parametrization="ntk") -> mlp.MLPSpec:
    return mlp.MLPSpec(static.d, (static.width,) * (static.depth - 1), 1, activation="relu",
                       parametrization=parametrization, w_std=static.w_std, b_std=static.b_std)


def run_one(static, traced, key) -> dict:
    """One seed: relative distances of the empirical NTK / NNGP at init to their limits."""
    del traced  # only the seed varies, through key
    spec, std = spec_of(static), spec_of(static, "standard")
    kx, kp = jax.random.split(key)
    x = data.sphere(kx, static.n, static.d)
    params = mlp.init(spec, kp)
    emp = ntk.empirical_ntk(functools.partial(mlp.apply, spec), params, x, method=static.method)
    inf = ntk.relu_ntk(x, spec=spec)
    # the same network in the standard parametrization: fold the scales into the parameters
    params_std = [{"w": p["w"] * (spec.w_std / math.sqrt(p["w"].shape[0])), "b": p["b"] * spec.b_std}
                  for p in params]
    emp_std = ntk.empirical_ntk(functools.partial(mlp.apply, std), params_std, x, method=static.method)
    h = mlp.hidden(spec, params, x)[-1]
    emp_nngp = spec.w_std**2 * h @ h.T / static.width + spec.b_std**2
    inf_nngp = ntk.relu_nngp(x, spec=spec)
    rel = lambda a, b: jnp.linalg.norm(a - b) / jnp.linalg.norm(b)  # noqa: E731
    return {
        "ntk_err": rel(emp, inf),
        "ntk_err_standard": rel(emp_std, ntk.relu_ntk(x, spec=std)),
        "nngp_err": rel(emp_nngp, inf_nngp),
        "ntk_err_max": jnp.max(jnp.abs(emp - inf)) / jnp.max(jnp.abs(inf)),
        "trace_ratio": jnp.trace(emp) / jnp.trace(inf),
        "min_eig_emp": ntk.min_eigenvalue(emp),
        "min_eig_inf": ntk.min_eigenvalue(inf),
    }


def fit_slope(width, err):
    """Least-squares slope of log(err) on log(width) over all points, and its standard error."""
    lx, ly = np.log(np.asarray(width, float)), np.log(np.asarray(err, float))
    if len(np.unique(lx)) < 2:
        return float("nan"), float("nan")
    A = np.stack([lx, np.ones_like(lx)], 1)
    coef, *_ = np.linalg.lstsq(A, ly, rcond=None)
    resid = ly - A @ coef
    dof = max(len(ly) - 2, 1)
    cov = np.linalg.inv(A.T @ A) * (resid @ resid) / dof
    return float(coef[0]), float(np.sqrt(cov[0, 0]))


def slopes(table) -> dict:
    """``{"<metric>/L=<depth>": {"slope", "se", "points"}}`` for every metric and depth."""
    out = {}
    for metric in METRICS:
        vals = np.asarray(table[metric], float)
        for depth in np.unique(table["depth"]):
            sel = np.isfinite(vals) & (vals > 0) & (table["depth"] == depth)
            if sel.any():
                s, se = fit_slope(table["width"][sel], vals[sel])
                out[f"{metric}/L={int(depth)}"] = {"slope": s, "se": se, "points": int(sel.sum())}
    return out


def plot(results_dir) -> list[Path]:
    res = store.load(results_dir)
    t, meta = res.table, res.meta
    fits = slopes(t)
    (Path(results_dir) / "slopes.json").write_text(json.dumps(fits, indent=1) + "\n")
    fig, axes = plotlib.figure(1, len(METRICS), width=3.3, height=3.0)
    axes = np.atleast_1d(axes).ravel()
    sel = ~np.asarray(t["diverged"], bool)
    for ax, (metric, title) in zip(axes, METRICS.items()):
        for depth in np.unique(t["depth"][sel]):
            keys, mean, sem, _ = plotlib.aggregate(t, ["width"], metric, where=sel & (t["depth"] == depth))
            w = np.array([k[0] for k in keys], float)
            fit = fits.get(f"{metric}/L={int(depth)}", {})
            line = plotlib.band(ax, w, mean, sem, label=f"L={int(depth)}: slope {fit.get('slope', np.nan):.2f}")
            if np.isfinite(fit.get("slope", np.nan)) and len(w) > 1:
                sd = sel & (t["depth"] == depth)
                lx, ly = np.log(t["width"][sd].astype(float)), np.log(t[metric][sd].astype(float))
                icpt = np.mean(ly) - fit["slope"] * np.mean(lx)
                ax.plot(w, np.exp(icpt) * w ** fit["slope"], ":", color=line.get_color(), lw=1)
        if sel.any():  # reference slope -1/2 through the mean at the narrowest width
            w_all = np.unique(t["width"][sel]).astype(float)
            y0 = np.mean(t[metric][sel & (t["width"] == w_all[0])])
            ax.plot(w_all, y0 * (w_all / w_all[0]) ** -0.5, "k--", lw=0.8, label="slope -1/2")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("hidden width m")
        ax.set_ylabel("relative Frobenius error")
        ax.set_title(title)
        ax.legend(fontsize=6.5)
    return plotlib.save(fig, results_dir, "ntk_convergence", meta)


def claims(results_dir) -> list:
    """The rate claim per depth (slope of log error on log width within 2 s.e. of -1/2, or within
    0.05 of it), the NNGP's rate, and the growth of the error with depth at the widest width."""
    from jaxbench import report

    t = store.load(results_dir).table
    sel = ~np.asarray(t["diverged"], bool)
    t = {k: np.asarray(v)[sel] for k, v in t.items()}
    fits, out = slopes(t), []
    for metric, what in (("ntk_err", "empirical NTK (NTK parametrization)"), ("nngp_err", "empirical NNGP")):
        for depth in np.unique(t["depth"]):
            f = fits.get(f"{metric}/L={int(depth)}")
            if f is None:
                continue
            ok = abs(f["slope"] + 0.5) <= max(2 * f["se"], 0.05)
            out.append(report.check(
                f"{what} -> infinite-width kernel at rate width^-1/2, depth {int(depth)}",
                f"slope {f['slope']:.3f} ± {f['se']:.3f} ({f['points']} points)", "|slope + 0.5| <= max(2 s.e., 0.05)", ok))
    wide = t["width"] == t["width"].max()
    depths = np.unique(t["depth"][wide])
    if len(depths) > 1:
        errs = [float(np.mean(t["ntk_err"][wide & (t["depth"] == d)])) for d in depths]
        out.append(report.check(
            "the fluctuation grows with depth at a fixed width",
            f"width {int(t['width'].max())}: " + ", ".join(f"L={int(d)}: {e:.3f}" for d, e in zip(depths, errs)),
            "mean relative error increasing in depth", bool(np.all(np.diff(errs) > 0))))
    return out
