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
(`relu_ntk(parametrization="standard", widths=...)`). Also recorded: the largest entrywise
error, the ratio of traces and the smallest eigenvalues of both Gram matrices.

One compilation per depth: the width is traced. Every network is built at the static ``pad``
width with the units beyond ``width`` zero (weights in and out, biases), and the NTK scaling
uses the live width as fan-in, so each variant computes exactly the width-``width`` network's
kernels (tested in float64 against `jaxbench.ntk.empirical_ntk` on the unpadded MLP). The
narrow widths pay the padded width's FLOPs, which at these sizes cost less than the
compilations they save (`benchmarks/RESULTS.md`, compilation share).

The figure `ntk_convergence.png` plots error against width on log-log axes (mean +- s.e.m. over
seeds) and the least-squares slope of log error on log width per depth; the slopes are also
written to ``slopes.json``.
"""

from __future__ import annotations

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
CPU_FUSION_EMITTERS = False  # compile-bound: share 32-38% -> 24-28% side by side, wall equal (benchmarks/RESULTS.md)
METRICS = {"ntk_err": "NTK, NTK parametrization", "ntk_err_standard": "NTK, standard parametrization",
           "nngp_err": "NNGP (either parametrization)"}

PARAMS = {
    "width": positive(int, 256, kind="traced"),
    "pad": positive(int, 2048),
    "depth": Param("static", int, 3, lambda v: v >= 2, "must be >= 2 (dense layers; 2 = one hidden layer)"),
    "n": Param("static", int, 32, lambda v: v >= 2, "must be >= 2"),
    "d": positive(int, 16),
    "method": one_of("structured", "jacobian", "jvp_vjp", default="structured"),
    "w_std": Param("static", float, math.sqrt(2.0), lambda v: v > 0, "must be > 0"),
    "b_std": Param("static", float, 0.1, lambda v: v >= 0, "must be >= 0"),
}


def check(v):
    if v.width > v.pad:
        raise ValueError(f"width {v.width} exceeds pad={v.pad}: set pad >= the widest width")


def init_padded(key, s, width):
    """`jaxbench.mlp.init`'s N(0, 1) weights and biases at the padded shape ``d -> pad x (depth-1)
    -> 1``, zero outside the leading ``width`` hidden units: ``[{"w": (n_l, n_{l+1}), "b": (n_{l+1},)}]``."""
    dims = (s.d,) + (s.pad,) * (s.depth - 1) + (1,)
    params = mlp.init(mlp.MLPSpec(s.d, dims[1:-1], 1, activation="relu", w_std=s.w_std, b_std=s.b_std), key)
    live = jnp.arange(s.pad) < width
    out = []
    for l, p in enumerate(params):
        rows = live if l > 0 else jnp.ones(dims[l], bool)
        cols = live if l < s.depth - 1 else jnp.ones(1, bool)
        out.append({"w": p["w"] * (rows[:, None] & cols[None, :]), "b": p["b"] * cols})
    return out


def fan_ins(s, width, dtype):
    """Fan-in ``n_l`` of each dense layer: d, then the (traced) hidden width."""
    return [jnp.asarray(s.d, dtype)] + [width.astype(dtype)] * (s.depth - 1)


def apply_padded(s, width, params, x, parametrization="ntk", last_hidden=False):
    """`jaxbench.mlp.apply` for a padded network (`init_padded`): the fan-in in the NTK scaling is
    the live width, not the padded one, so the function is that of the width-``width`` MLP.
    ``parametrization="standard"``: ``params`` already hold the scales (``h = x W + b``).
    ``last_hidden``: the last hidden layer's activations ``(n, pad)`` instead of the output."""
    h = x
    layers = list(zip(params, fan_ins(s, width, x.dtype)))
    for l, (p, n_l) in enumerate(layers[:-1] if last_hidden else layers):
        if parametrization == "ntk":
            h = (s.w_std / jnp.sqrt(n_l)) * h @ p["w"] + s.b_std * p["b"]
        else:
            h = h @ p["w"] + p["b"]
        h = jax.nn.relu(h) if l < s.depth - 1 else h
    return h


def structured_kernels(s, width, params, x):
    """Exact empirical NTKs of the padded network in both parametrizations and its empirical NNGP,
    each ``(n, n)``, from per-layer features (the "structured" method of `jaxbench.ntk`, written
    here with the live fan-in): ``Theta = sum_l (c_l^2 <x^l, x'^l> + b_std^2) <g_l, g_l'>`` with
    ``c_l = w_std / sqrt(n_l)`` and ``g_l = df/dh^{l+1}``; the standard parametrization's
    parameters are ``c_l W^l, b_std b^l``, so its kernel is ``sum_l (<x^l, x'^l> + 1) <g_l, g_l'>``.
    Padded units have zero weights in and out, hence zero features: they add nothing."""
    fans = fan_ins(s, width, x.dtype)

    def forward(eps):  # eps_l is added to the hidden pre-activation h^{l+1}: d f / d eps_l = g_l
        inputs, h = [], x
        for l, (p, n_l) in enumerate(zip(params, fans)):
            inputs.append(h)
            z = (s.w_std / jnp.sqrt(n_l)) * h @ p["w"] + s.b_std * p["b"]
            h = jax.nn.relu(z + eps[l]) if l < s.depth - 1 else z
        return h[:, 0], inputs

    eps = [jnp.zeros((x.shape[0], s.pad), x.dtype) for _ in range(s.depth - 1)]
    out, vjp, inputs = jax.vjp(forward, eps, has_aux=True)
    (sens,) = vjp(jnp.ones_like(out))
    sens = list(sens) + [jnp.ones((x.shape[0], 1), x.dtype)]  # output layer: g = 1
    ntk_k = ntk_std = 0.0
    for h, g, n_l in zip(inputs, sens, fans):
        gram_x, gram_g = h @ h.T, g @ g.T
        ntk_k = ntk_k + (s.w_std**2 / n_l * gram_x + s.b_std**2) * gram_g
        ntk_std = ntk_std + (gram_x + 1.0) * gram_g
    nngp = s.w_std**2 * inputs[-1] @ inputs[-1].T / fans[-1] + s.b_std**2
    return ntk_k, ntk_std, nngp


def empirical_kernels(s, width, params, x):
    """``(ntk, ntk_standard, nngp)`` by ``s.method``: "structured" (`structured_kernels`) or an
    `jaxbench.ntk.empirical_ntk` method applied to `apply_padded` (an independent computation)."""
    if s.method == "structured":
        return structured_kernels(s, width, params, x)
    params_std = [{"w": p["w"] * (s.w_std / jnp.sqrt(n_l)), "b": p["b"] * s.b_std}
                  for p, n_l in zip(params, fan_ins(s, width, x.dtype))]
    emp = ntk.empirical_ntk(lambda p, z: apply_padded(s, width, p, z), params, x, method=s.method)
    emp_std = ntk.empirical_ntk(lambda p, z: apply_padded(s, width, p, z, "standard"), params_std, x, method=s.method)
    h = apply_padded(s, width, params, x, last_hidden=True)
    return emp, emp_std, s.w_std**2 * h @ h.T / width.astype(x.dtype) + s.b_std**2


def run_one(static, traced, key) -> dict:
    """One seed at one width: relative distances of the empirical NTK / NNGP at init to their limits."""
    s, width = static, traced["width"]
    kx, kp = jax.random.split(key)
    x = data.sphere(kx, s.n, s.d)  # the same points for every width of a seed
    params = init_padded(jax.random.fold_in(kp, width), s, width)  # independent weights per width
    emp, emp_std, emp_nngp = empirical_kernels(s, width, params, x)
    conv = dict(depth=s.depth, w_std=s.w_std, b_std=s.b_std)
    inf = ntk.relu_ntk(x, **conv)
    inf_std = ntk.relu_ntk(x, parametrization="standard", widths=(width.astype(x.dtype),) * (s.depth - 1), **conv)
    rel = lambda a, b: jnp.linalg.norm(a - b) / jnp.linalg.norm(b)  # noqa: E731
    return {
        "ntk_err": rel(emp, inf),
        "ntk_err_standard": rel(emp_std, inf_std),
        "nngp_err": rel(emp_nngp, ntk.relu_nngp(x, **conv)),
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
