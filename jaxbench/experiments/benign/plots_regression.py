"""Figures of the regression sweep (`regression`), reading results files only."""

from __future__ import annotations

import numpy as np

from jaxbench import plot as plotlib
from jaxbench import store


def plot(results_dir):
    res = store.load(results_dir)
    t, meta = res.table, res.meta
    ok = ~t["diverged"]
    base = plotlib.at_mode(t, ok, ["depth", "lr", "d", "n"])
    if "init_noise" in t:
        base &= t["init_noise"] == 0
    return _mse_vs_width(t, meta, base, results_dir) + _plateau(t, meta, base, results_dir)


def _mse_vs_width(t, meta, base, out):
    sigmas = np.unique(t["sigma"][base])
    fig, axes = plotlib.figure(1, len(sigmas), width=3.3, height=3.0, sharey=True)
    axes = np.atleast_1d(axes).ravel()
    for ax, sg in zip(axes, sigmas):
        for al in np.unique(t["alpha"][base]):
            sel = base & (t["sigma"] == sg) & (t["alpha"] == al)
            ln = plotlib.line(ax, t, "width", "test_mse", sel, label=f"α = {al:g}")
            lim = t["ntk_limit_mse_expected"][sel]
            m, e = lim.mean(), lim.std(ddof=1) / np.sqrt(lim.size) if lim.size > 1 else 0.0
            ax.axhline(m, color=ln.get_color(), ls="--", lw=1)
            ax.axhspan(m - e, m + e, color=ln.get_color(), alpha=0.12, lw=0)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("hidden width m")
        ax.set_title(f"label noise σ = {sg:g}", fontsize=9)
    axes[0].set_ylabel("test MSE against f* (excess risk)")
    axes[0].legend(title="solid: network; dashed: closed form", fontsize=6.5, title_fontsize=6.5)
    return plotlib.save(fig, out, "mse_vs_width", meta)


def _plateau(t, meta, base, out):
    fig, axes = plotlib.figure(1, 3, width=3.5, height=3.0)
    a, b, c = axes[0]
    w = np.max(t["width"][base])
    widest = base & (t["width"] == w)
    for sg in np.unique(t["sigma"][base]):
        sel = widest & (t["sigma"] == sg)
        ln = plotlib.line(a, t, "alpha", "ntk_limit_mse_expected", sel, label=f"σ = {sg:g}", marker="")
        plotlib.line(a, t, "alpha", "ntk_limit_label_mse", sel, color=ln.get_color(), ls=":", marker="")
        keys, mean, sem, _ = plotlib.aggregate(t, ["alpha"], "test_mse", where=sel)
        a.errorbar([k[0] for k in keys], mean, yerr=sem, fmt="s", mfc="none", color=ln.get_color(), ms=5)
    a.set_xscale("log", base=2)
    a.set_yscale("log")
    a.set_xlabel("output scale α (initialization noise)")
    a.set_ylabel("test MSE against f*")
    a.set_title(f"lines: closed form (dotted: label part only);\nsquares: networks of width {w}", fontsize=7.5)
    a.legend(fontsize=6.5)
    pred = t["ntk_limit_mse_expected"][widest]
    lo, hi = np.min(pred) / 1.5, np.max(pred) * 1.5
    for sg, mk in zip(np.unique(t["sigma"][widest]), "osD^v"):
        sel = widest & (t["sigma"] == sg)
        b.plot(t["ntk_limit_mse_expected"][sel], t["test_mse"][sel], mk, ms=4, mfc="none", label=f"σ = {sg:g}")
    b.plot([lo, hi], [lo, hi], "k:", lw=1, label="y = x")
    b.set_xscale("log")
    b.set_yscale("log")
    b.set_xlabel("closed form: label part + α² × init part")
    b.set_ylabel(f"network test MSE (width {w})")
    b.set_title("one point per variant", fontsize=8)
    b.legend(fontsize=6.5)
    sg = plotlib.mode(t["sigma"], base)
    for al in np.unique(t["alpha"][base]):
        plotlib.line(c, t, "width", "weight_move", base & (t["sigma"] == sg) & (t["alpha"] == al), label=f"α = {al:g}")
    widths = np.unique(t["width"][base])
    v = t["weight_move"][base & (t["sigma"] == sg) & (t["width"] == widths[0])]
    if v.size and np.mean(v) > 0:
        plotlib.slope_guide(c, widths, np.mean(v), -0.5, "∝ m^-1/2")
    c.set_xscale("log", base=2)
    c.set_yscale("log")
    c.set_xlabel("hidden width m")
    c.set_ylabel("max_l ‖W_l(T) − W_l(0)‖_F / ‖W_l(0)‖_F")
    c.set_title(f"laziness, σ = {sg:g}", fontsize=8)
    c.legend(fontsize=6.5)
    return plotlib.save(fig, out, "mse_plateau", meta)
