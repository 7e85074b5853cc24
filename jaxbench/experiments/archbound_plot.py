"""Figures of the architecture-bound experiment (`jaxbench.experiments.archbound`), from files.

* ``error_and_bound_vs_n``: one row per data set. Left: the construction's mean per-point test
  error (solid) and data-geometry bound (dashed) against n, one curve per architecture (they
  coincide; the title gives the largest relative spread across architectures). Right: networks
  of the same architectures trained by gradient descent, test error on the same y axis (the
  construction's error in black for reference).
* ``tightness_vs_n``: bound / true error (ratio of the means over test points) against n, for
  the construction and for the trained networks (whose bound uses the product of their layer
  operator norms).
* ``ingredients``: sigma_min(X) and |X^+ Y|_op against n; mean distance of a test point to its
  nearest training point; trained networks' Lipschitz upper (product of operator norms) and
  lower (max Jacobian norm) estimates against depth; their final training loss against n
  (median over seeds). Trained architectures whose median final loss exceeds ``FIT_TOL`` are
  drawn with hollow markers and labelled "(not fit)" in the first figure.
"""

from __future__ import annotations

import numpy as np

from jaxbench import plot as plotlib
from jaxbench import store

FIT_TOL = 1e-6  # median final GD training loss above this: the net did not interpolate
DATA_TITLES = {"linear": "linear teacher + noise", "relu": "ReLU teacher + noise"}


def _archs(t, sel):
    pairs = {(int(a), int(b)) for a, b in zip(t["hidden_layers"][sel], t["width"][sel])}
    return sorted(pairs, key=lambda p: (p[1], p[0]))


def _style(arch, archs):
    depths = sorted({a for a, _ in archs})
    widths = sorted({w for _, w in archs})
    cmap = plotlib.plt.get_cmap("viridis")
    color = cmap(0.9 * depths.index(arch[0]) / max(len(depths) - 1, 1))
    ls = ["-", "--", ":", "-."][widths.index(arch[1]) % 4]
    return {"color": color, "ls": ls, "label": f"L={arch[0]}, m={arch[1]}"}


def _curve(ax, t, sel, value, **kw):
    keys, mean, sem, _ = plotlib.aggregate(t, ["n"], value, where=sel)
    if keys:
        x = [k[0] for k in keys]
        line = plotlib.band(ax, x, mean, sem, **kw)
        return line
    return None


def _spread(t, sel, value):
    """Largest relative spread of ``value`` across architectures at equal data (n, seed, noise)."""
    groups = {}
    for i in np.flatnonzero(sel & np.isfinite(np.asarray(t[value], float))):
        key = (t["n_frac"][i], t["seed"][i], t["noise"][i])
        groups.setdefault(key, []).append(float(t[value][i]))
    spreads = [(max(v) - min(v)) / abs(np.mean(v)) for v in groups.values() if len(v) > 1]
    return max(spreads) if spreads else np.nan


def _masks(t):
    return np.asarray(t["rank_ok"], bool), ~np.asarray(t["diverged"], bool)


def plot(results_dir):
    res = store.load(results_dir)
    t, meta = res.table, res.meta
    c_ok, g_ok = _masks(t)
    datas = [d for d in ("linear", "relu") if np.any((t["data"] == d) & (c_ok | g_ok))]
    has_gd = "g_test_err" in t
    paths = []

    # 1. test error and bound versus n, per architecture
    fig, axes = plotlib.figure(len(datas), 2, width=4.0, height=3.0, sharey="row")
    axes = np.asarray(axes).reshape(len(datas), 2)
    for r, dname in enumerate(datas):
        in_d = t["data"] == dname
        archs = _archs(t, in_d)
        axc, axg = axes[r]
        for arch in archs:
            sel = in_d & (t["hidden_layers"] == arch[0]) & (t["width"] == arch[1])
            st = _style(arch, archs)
            _curve(axc, t, sel & c_ok, "c_test_err", **st)
            _curve(axc, t, sel & c_ok, "c_bound", **{**st, "ls": "--", "label": None, "marker": "s"})
            if has_gd:
                fit = np.nanmedian(np.asarray(t["g_train_loss"], float)[sel & g_ok]) <= FIT_TOL
                gst = st if fit else {**st, "label": st["label"] + " (not fit)", "mfc": "none",
                                      "alpha": 0.6}
                _curve(axg, t, sel & g_ok, "g_test_err", **gst)
        ref = in_d & c_ok & (t["hidden_layers"] == archs[0][0]) & (t["width"] == archs[0][1])
        _curve(axg, t, ref, "c_test_err", color="black", lw=2.2, label="construction (all archs)")
        spread = max(_spread(t, in_d & c_ok, "c_test_err"), _spread(t, in_d & c_ok, "c_bound"))
        axc.set_title(f"{DATA_TITLES[dname]}: zero-loss construction")
        axc.text(0.02, 0.98, f"solid: test error, dashed: bound\nlargest relative spread over "
                 f"architectures: {spread:.1e}", transform=axc.transAxes, fontsize=6.5, va="top")
        axg.set_title(f"{DATA_TITLES[dname]}: trained by GD")
        for ax in (axc, axg):
            ax.set_yscale("log")
            ax.set_xlabel("training points n")
            ax.set_ylabel("mean |f(x~) - y~| over test points")
        axg.legend(ncols=2, fontsize=6)
    paths += plotlib.save(fig, results_dir, "error_and_bound_vs_n", meta)

    # 2. tightness: bound / true error
    fig, axes = plotlib.figure(1, len(datas), width=3.6, height=3.0)
    axes = np.atleast_1d(np.asarray(axes)).ravel()
    for ax, dname in zip(axes, datas):
        in_d = t["data"] == dname
        archs = _archs(t, in_d)
        for arch in archs:
            sel = in_d & (t["hidden_layers"] == arch[0]) & (t["width"] == arch[1])
            st = _style(arch, archs)
            if has_gd:
                _curve(ax, t, sel & g_ok, "g_tightness", **st)
        ref = in_d & c_ok & (t["hidden_layers"] == archs[0][0]) & (t["width"] == archs[0][1])
        _curve(ax, t, ref, "c_tightness", color="black", lw=2.2, label="construction (all archs)")
        ax.axhline(1.0, color="0.5", lw=0.8)
        ax.set_yscale("log")
        ax.set_xlabel("training points n")
        ax.set_ylabel("bound / true test error")
        ax.set_title(DATA_TITLES[dname])
    axes[0].legend(ncols=2, fontsize=6)
    paths += plotlib.save(fig, results_dir, "tightness_vs_n", meta)

    # 3. ingredients of the bound
    ncol = 4 if has_gd else 2
    fig, axes = plotlib.figure(len(datas), ncol, width=3.2, height=2.7)
    axes = np.asarray(axes).reshape(len(datas), ncol)
    for r, dname in enumerate(datas):
        in_d = t["data"] == dname
        archs = _archs(t, in_d)
        ref = in_d & c_ok & (t["hidden_layers"] == archs[0][0]) & (t["width"] == archs[0][1])
        ax = axes[r, 0]
        _curve(ax, t, ref, "sigma_min", label="σ_min(X)")
        _curve(ax, t, ref, "m_op", label="|X⁺Y|_op = Lip(f)")
        _curve(ax, t, ref, "y_op", label="|Y|_op")
        ax.set_yscale("log")
        ax.set_title(f"{DATA_TITLES[dname]}: data geometry")
        ax = axes[r, 1]
        _curve(ax, t, ref, "dist_nn", label="test → nearest train |x~ - x_i|")
        _curve(ax, t, ref, "label_gap_nn", label="its label gap |y~ - y_i|")
        ax.set_title("distances (mean over test points)")
        for ax in axes[r, :2]:
            ax.set_xlabel("training points n")
            ax.legend(fontsize=6)
        if not has_gd:
            continue
        ax = axes[r, 2]
        for w in sorted({a[1] for a in archs}):
            sel = in_d & g_ok & (t["width"] == w)
            for value, mk, name in (("g_lip_upper", "o", "upper ∏|W_l|"), ("g_lip_lower", "v", "lower max|J|")):
                keys, mean, sem, _ = plotlib.aggregate(t, ["hidden_layers"], value, where=sel)
                plotlib.band(ax, [k[0] for k in keys], mean, sem, marker=mk, label=f"m={w}: {name}")
        keys, mean, sem, _ = plotlib.aggregate(t, ["hidden_layers"], "m_op", where=in_d & c_ok)
        plotlib.band(ax, [k[0] for k in keys], mean, sem, color="black", label="construction")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("hidden layers L")
        ax.set_title("Lipschitz estimates (mean over n)")
        ax.legend(fontsize=5.5)
        ax = axes[r, 3]
        for arch in archs:  # medians: the losses span 30 decades, a mean +- sem band misleads
            sel = in_d & g_ok & (t["hidden_layers"] == arch[0]) & (t["width"] == arch[1])
            ns = np.unique(t["n"][sel])
            med = [np.nanmedian(np.asarray(t["g_train_loss"], float)[sel & (t["n"] == n)]) for n in ns]
            ax.plot(ns, med, marker="o", **_style(arch, archs))
        ax.axhline(FIT_TOL, color="0.5", lw=0.8, ls=":")
        ax.set_yscale("log")
        ax.set_xlabel("training points n")
        ax.set_title(f"GD: final training loss (median; dotted {FIT_TOL:g})")
    paths += plotlib.save(fig, results_dir, "ingredients", meta)
    return paths
