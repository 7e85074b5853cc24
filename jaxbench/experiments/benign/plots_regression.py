"""Figures of the regression sweep (`regression`), reading results files only."""

from __future__ import annotations

import numpy as np

from jaxbench import plot as plotlib
from jaxbench import store


def plot(results_dir):
    res = store.load(results_dir)
    t, meta = res.table, res.meta
    ok = ~t["diverged"]
    base = plotlib.at_mode(t, ok, ["depth", "lr", "d", "n", "centered"])
    return _mse_vs_width(t, meta, base, results_dir) + _plateau(t, meta, base, results_dir)


def _mse_vs_width(t, meta, base, out):
    sigmas = np.unique(t["sigma"][base])
    fig, axes = plotlib.figure(1, len(sigmas), width=3.3, height=3.0, sharey=True)
    axes = np.atleast_1d(axes).ravel()
    for ax, sg in zip(axes, sigmas):
        for al in np.unique(t["init_scale"][base]):
            sel = base & (t["sigma"] == sg) & (t["init_scale"] == al)
            ln = plotlib.line(ax, t, "width", "test_mse", sel, label=f"s = {al:g}")
            lim = t["ntk_limit_mse_expected"][sel]
            m, e = lim.mean(), lim.std(ddof=1) / np.sqrt(lim.size) if lim.size > 1 else 0.0
            ax.axhline(m, color=ln.get_color(), ls="--", lw=1)
            ax.axhspan(m - e, m + e, color=ln.get_color(), alpha=0.12, lw=0)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("hidden width m")
        ax.set_title(f"label noise σ = {sg:g}", fontsize=9)
    axes[0].set_ylabel("test MSE against f* (excess risk)")
    axes[0].legend(title=f"solid: network; dashed: closed form;\ns: {_init_label(t, base)}", fontsize=6.5,
                   title_fontsize=6.5)
    return plotlib.save(fig, out, "mse_vs_width", meta)


def _init_label(t, base):
    centred = bool(plotlib.mode(t["centered"], base)) if "centered" in t and base.any() else False
    if centred:
        return f"initialization noise s (f = α(h − h₀) + s h₀, α = {plotlib.mode(t['alpha'], base):g})"
    return "initialization noise s = α (f = α h)"


def _plateau(t, meta, base, out):
    fig, axes = plotlib.figure(1, 3, width=3.5, height=3.0)
    a, b, c = axes[0]
    w = np.max(t["width"][base])
    widest = base & (t["width"] == w)
    for sg in np.unique(t["sigma"][base]):
        sel = widest & (t["sigma"] == sg)
        ln = plotlib.line(a, t, "init_scale", "ntk_limit_mse_expected", sel, label=f"σ = {sg:g}", marker="")
        a.axhline(np.mean(t["ntk_limit_label_mse"][sel]), color=ln.get_color(), ls=":", lw=1)
        keys, mean, sem, _ = plotlib.aggregate(t, ["init_scale"], "test_mse", where=sel)
        a.errorbar([k[0] for k in keys], mean, yerr=sem, fmt="s", mfc="none", color=ln.get_color(), ms=5)
    a.set_xlabel(_init_label(t, base))
    a.set_ylabel("test MSE against f*")
    a.set_title(f"lines: closed form label part + s² × init part (dotted:\nlabel part only); squares: networks of width {w}",
                fontsize=7.5)
    a.legend(fontsize=6.5)
    pred = t["ntk_limit_mse_expected"][widest]
    lo, hi = np.min(pred) / 1.5, np.max(pred) * 1.5
    for sg, mk in zip(np.unique(t["sigma"][widest]), "osD^v"):
        sel = widest & (t["sigma"] == sg)
        b.plot(t["ntk_limit_mse_expected"][sel], t["test_mse"][sel], mk, ms=4, mfc="none", label=f"σ = {sg:g}")
    b.plot([lo, hi], [lo, hi], "k:", lw=1, label="y = x")
    b.set_xscale("log")
    b.set_yscale("log")
    from matplotlib.ticker import NullFormatter
    ticks = [v for v in (0.25, 0.5, 1, 2, 4, 8, 16) if lo <= v <= hi]
    for axis in (b.xaxis, b.yaxis):
        axis.set_minor_formatter(NullFormatter())  # minor labels of a short log axis collide
        axis.set_ticks(ticks, [f"{v:g}" for v in ticks])
    b.set_xlabel("closed form: label part + s² × init part")
    b.set_ylabel(f"network test MSE (width {w})")
    b.set_title("one point per variant", fontsize=8)
    b.legend(fontsize=6.5)
    sg = plotlib.mode(t["sigma"], base)
    for al in np.unique(t["init_scale"][base]):
        plotlib.line(c, t, "width", "weight_move", base & (t["sigma"] == sg) & (t["init_scale"] == al), label=f"s = {al:g}")
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
