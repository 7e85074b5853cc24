"""Figures of the classification sweeps (`classification`, `n_growth`), reading results files only."""

from __future__ import annotations

import numpy as np

from jaxbench import plot as plotlib
from jaxbench import store
from jaxbench.experiments.benign import stats

ALPHA_COLORS = "viridis"


def _colors(n, cmap=ALPHA_COLORS):
    return plotlib.plt.get_cmap(cmap)(np.linspace(0.0, 0.85, max(n, 1)))


def plane(results_dir):
    """Every figure of a `classification` sweep."""
    res = store.load(results_dir)
    t, meta = res.table, res.meta
    ok = ~t["diverged"]
    base = ok & (t["optimizer"] == "gd") & (t["init_noise"] == 0)
    return (_gap_phase(t, meta, base, results_dir) + _approach(t, meta, base, results_dir)
            + _laziness(t, meta, base, results_dir) + _sgd(t, meta, ok, results_dir)
            + _smoothness(t, meta, ok, results_dir))


def _gap_phase(t, meta, base, out):
    etas = [e for e in np.unique(t["eta"][base]) if len(np.unique(t["alpha"][base & (t["eta"] == e)])) > 1]
    fig, axes = plotlib.figure(1, max(len(etas), 1), width=3.6, height=3.0)
    axes = np.atleast_1d(axes).ravel()
    if not etas:
        plotlib.no_data(axes[0], "needs >= 2 alphas at one noise rate")
        return plotlib.save(fig, out, "gap_phase", meta)
    vmax = max(100 * np.nanmax(plotlib.grid_of(t, "width", "alpha", "ntk_limit_disagree", where=base & (t["eta"] == e))[2])
               for e in etas)
    for ax, eta in zip(axes, etas):
        sel = base & (t["eta"] == eta)
        xs, ys, dis = plotlib.grid_of(t, "width", "alpha", "ntk_limit_disagree", where=sel)
        gap = plotlib.grid_of(t, "width", "alpha", "gap_clean_err", where=sel)[2]
        move = plotlib.grid_of(t, "width", "alpha", "weight_move", where=sel)[2]
        text = [[f"{100 * d:.1f}%\nΔ{g:+.3f}" for d, g in zip(rd, rg)] for rd, rg in zip(dis, gap)]
        inside = (move <= stats.BAR_MOVE) & (dis <= stats.BAR_DISAGREE) & (np.abs(gap) <= stats.BAR_ERR)
        plotlib.heatmap(ax, xs, ys, 100 * dis, xlabel="hidden width m", ylabel="output scale α",
                        cbar_label="test points where sign f ≠ sign f_NTK (%)", vmin=0, vmax=max(vmax, 1e-9),
                        cmap="magma_r", text=text, outline=inside)
        ax.set_title(f"η = {eta:g}  (cells: disagreement, Δ = clean error − limit's)", fontsize=7.5)
    handle = plotlib.plt.Line2D([], [], color="red", lw=2)
    fig.legend([handle], [f"outlined: the issue's bars hold (mean weight movement ≤ {stats.BAR_MOVE}, sign disagreement"
                          f" ≤ {100 * stats.BAR_DISAGREE:g}%, |Δ| ≤ {stats.BAR_ERR}); mean over "
                          f"{len(np.unique(t['seed'][base]))} seeds"],
               loc="lower center", bbox_to_anchor=(0.5, 1.0), fontsize=7.5, frameon=False)
    return plotlib.save(fig, out, "gap_phase", meta)


def _approach(t, meta, base, out):
    """Gap to the NTK limit vs width (per eta, most lazy alpha) and to the lazy limit vs alpha."""
    fig, axes = plotlib.figure(1, 3, width=3.5, height=3.0)
    a, b, c = axes[0]
    top = np.max(t["alpha"][base]) if base.any() else np.nan
    etas = np.unique(t["eta"][base])
    for eta, col in zip(etas, _colors(len(etas), "plasma")):
        sel = base & (t["eta"] == eta) & (t["alpha"] == top)
        for ax, y, kern in [(a, "ntk_limit_disagree", "kernel_disagree"), (b, "ntk_limit_dist", "kernel_dist")]:
            slope = plotlib.loglog_slope(t["width"][sel], t[y][sel])[0]
            plotlib.line(ax, t, "width", y, sel, color=col, label=f"η = {eta:g}: slope {slope:.2f}")
            plotlib.line(ax, t, "width", kern, sel, color=col, ls=":", marker="")
    for ax, what in [(a, "test points where sign f ≠ sign f_NTK"), (b, "|f − f_NTK| / |f_NTK| on the test set")]:
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("hidden width m")
        ax.set_ylabel(what, fontsize=8)
        ax.set_title(f"α = {top:g}; solid: network vs NTK limit, dotted: its\nlazy limit vs NTK limit (kernel part); zeros not drawn",
                     fontsize=7.5)
        ax.legend(fontsize=6.5, title="slope in m (fit)", title_fontsize=6.5)
    widths = np.unique(t["width"][base])
    eta = stats.hardest_eta(t, base)
    for w, col in zip(widths, _colors(len(widths))):
        sel = base & (t["width"] == w) & (t["eta"] == eta)
        slope = plotlib.loglog_slope(t["alpha"][sel], t["lazy_limit_dist"][sel])[0]
        plotlib.line(c, t, "alpha", "lazy_limit_dist", sel, color=col, label=f"m = {w}: slope {slope:.2f}")
    keys, mean, _, _ = plotlib.aggregate(t, ["alpha"], "lazy_limit_dist", where=base & (t["eta"] == eta))
    if keys:
        plotlib.slope_guide(c, [k[0] for k in keys], mean[0], -1.0, "∝ 1/α")
    c.set_xscale("log", base=2)
    c.set_yscale("log")
    c.set_xlabel("output scale α")
    c.set_ylabel("|f − f_lazy| / |f_lazy| (lazy limit: Θ₀ fixed)", fontsize=8)
    c.set_title(f"η = {eta:g}: network vs its own α → ∞ limit", fontsize=7.5)
    c.legend(fontsize=6, title="slope in α (fit)", title_fontsize=6)
    return plotlib.save(fig, out, "approach_to_limit", meta)


def _laziness(t, meta, base, out):
    fig, axes = plotlib.figure(1, 3, width=3.4, height=3.0)
    a, b, c = axes[0]
    alphas, widths = np.unique(t["alpha"][base]), np.unique(t["width"][base])
    fit = stats.movement_fit(t, base)
    for al, col in zip(alphas, _colors(len(alphas))):
        sel = base & (t["alpha"] == al)
        t2 = dict(t, scaled=t["weight_move"] * t["alpha"])
        plotlib.line(a, t2, "width", "scaled", sel, color=col, label=f"α = {al:g}")
        drift = plotlib.loglog_slope(t["width"][sel], t["ntk_drift"][sel])[0]
        plotlib.line(c, t, "width", "ntk_drift", sel, color=col, label=f"α = {al:g}: slope {drift:.2f}")
    if base.any():
        m = np.asarray(widths, float)
        slope, icpt = plotlib.loglog_slope(t["width"][base], (t["weight_move"] * t["alpha"])[base])
        a.plot(m, np.exp(icpt) * m**slope, "k:", lw=1,
               label=f"fit over all: movement ∝ α^{fit['slope_alpha']:.2f} m^{fit['slope_m']:.2f}")
    for w, col in zip(widths, _colors(len(widths), "plasma")):
        plotlib.line(b, t, "alpha", "weight_move", base & (t["width"] == w), color=col, label=f"m = {w}")
    for ax, xl in [(a, "hidden width m"), (b, "output scale α"), (c, "hidden width m")]:
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(xl)
    a.set_ylabel("α × max_l ‖W_l(T) − W_l(0)‖_F / ‖W_l(0)‖_F", fontsize=8)
    b.set_ylabel("relative weight movement", fontsize=8)
    c.set_ylabel("‖Θ_T − Θ_0‖_F / ‖Θ_0‖_F (train set)", fontsize=8)
    a.set_title("weight movement × α: one curve if ∝ 1/α", fontsize=8)
    b.set_title("all noise rates pooled (mean ± s.e.)", fontsize=8)
    c.set_title("NTK drift (legend: fitted slope in m)", fontsize=8)
    a.set_ylim(a.get_ylim()[0] / 2.5, a.get_ylim()[1])  # room for the legend below the curves
    a.legend(fontsize=6.5, loc="lower left")
    for ax in (b, c):
        ax.legend(fontsize=6.5)
    return plotlib.save(fig, out, "laziness", meta)


def _sgd(t, meta, ok, out):
    fig, axes = plotlib.figure(1, 3, width=3.3, height=3.0)
    sgd = ok & (t["optimizer"] == "sgd")
    if not sgd.any():
        for ax in axes[0]:
            plotlib.no_data(ax, "no SGD variants")
        return plotlib.save(fig, out, "sgd_vs_gd", meta)
    w, eta = plotlib.mode(t["width"], sgd), plotlib.mode(t["eta"], sgd)
    same = ok & (t["width"] == w) & (t["eta"] == eta) & (t["init_noise"] == 0)
    gd = same & (t["optimizer"] == "gd")
    sgd &= same
    for ax, col, lim in [(axes[0, 0], "clean_test_err", "ntk_limit_clean_err"), (axes[0, 1], "ntk_limit_disagree", None),
                         (axes[0, 2], "weight_move", None)]:
        plotlib.line(ax, t, "alpha", col, gd, label="full-batch GD", marker="o")
        plotlib.line(ax, t, "alpha", col, sgd, label=f"SGD, batch {plotlib.mode(t['batch'], sgd)}", marker="s")
        if lim:
            plotlib.line(ax, t, "alpha", lim, gd, label="NTK limit (GD)", color="0.3", ls="--", marker="")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("output scale α")
        ax.legend(fontsize=6.5)
    axes[0, 2].set_yscale("log")
    axes[0, 0].set_ylabel("clean test error")
    axes[0, 1].set_ylabel("sign disagreement with the NTK limit")
    axes[0, 2].set_ylabel("relative weight movement")
    axes[0, 1].set_title(f"width {w}, η = {eta:g}, same data and initialization per seed", fontsize=8)
    return plotlib.save(fig, out, "sgd_vs_gd", meta)


def _smoothness(t, meta, ok, out):
    fig, axes = plotlib.figure(1, 3, width=3.5, height=3.1)
    a, b, c = axes[0]
    base = ok & (t["optimizer"] == "gd") & (t["init_noise"] == 0)
    rho = stats.per_seed_spearman(t, base, "lip_pair_rel", "excess_risk_clean")
    rho_g = stats.per_seed_spearman(t, base, "lip_grad_rel", "excess_risk_clean")
    etas = sorted({k[0] for k in rho})
    for i, (name, r, mk) in enumerate([("Lip_pair / f_rms", rho, "o"), ("Lip_grad / f_rms", rho_g, "^")]):
        for j, eta in enumerate(etas):
            v = [val for (e, _), val in r.items() if e == eta]
            x = j + (i - 0.5) * 0.3
            a.plot(np.full(len(v), x), v, mk, ms=4, color=f"C{i}", alpha=0.7, label=name if j == 0 else None)
            if v:
                a.errorbar(x + 0.08, np.nanmean(v), yerr=np.nanstd(v, ddof=1) / np.sqrt(len(v)) if len(v) > 1 else 0,
                           fmt="_", ms=12, color="k", elinewidth=1)
    a.axhline(0, color="0.5", lw=0.8)
    a.set_xticks(range(len(etas)), [f"η = {e:g}" for e in etas])
    a.set_ylim(-1.05, 1.05)
    a.set_ylabel("Spearman ρ(smoothness measure, excess risk)", fontsize=8)
    a.set_title("one dot per seed (ρ over its (m, α) variants);\nbar: mean over seeds", fontsize=7.5)
    a.legend(fontsize=6.5, loc="lower left")
    eta = stats.hardest_eta(t, base)
    sel = base & (t["eta"] == eta)
    for sd, col in zip(np.unique(t["seed"][sel]), _colors(len(np.unique(t["seed"][sel])), "tab10")):
        s = sel & (t["seed"] == sd)
        order = np.argsort(t["lip_pair_rel"][s])
        b.plot(t["lip_pair_rel"][s][order], t["excess_risk_clean"][s][order], "-o", ms=3, lw=0.8, color=col,
               label=f"seed {sd}")
    b.set_xlabel("Lip_pair / f_rms (difference quotients over pairs)", fontsize=8)
    b.set_ylabel("excess risk (1 − 2η) × clean error", fontsize=8)
    b.set_title(f"η = {eta:g}: the variants of each seed joined (same data)", fontsize=7.5)
    b.legend(fontsize=6.5)
    iv = ok & (t["optimizer"] == "gd") & stats.intervention_mask(t, ok)
    if iv.any():
        c2 = c.twinx()
        for sd in np.unique(t["seed"][iv]):
            s = iv & (t["seed"] == sd)
            order = np.argsort(t["init_noise"][s])
            c.plot(t["init_noise"][s][order], t["excess_risk_clean"][s][order], "-o", ms=3, lw=0.8, color="C3")
            c2.plot(t["init_noise"][s][order], t["lip_pair_rel"][s][order], "--s", ms=3, lw=0.8, color="C0")
        c.set_xlabel("init_noise s (f = α(h − h₀) + s h₀)")
        c.set_ylabel("excess risk (solid, red)", fontsize=8)
        c2.set_ylabel("Lip_pair / f_rms (dashed, blue)", fontsize=8)
        c2.grid(False)
        c.set_title(f"intervention at m = {plotlib.mode(t['width'], iv)}, α = {plotlib.mode(t['alpha'], iv):g}, "
                    f"η = {plotlib.mode(t['eta'], iv):g}\n(one line per seed)", fontsize=7.5)
    else:
        plotlib.no_data(c, "no init_noise intervention")
    return plotlib.save(fig, out, "smoothness", meta)


# ----------------------------------------------------------------------------- n_growth

def n_growth(results_dir):
    res = store.load(results_dir)
    t, meta = res.table, res.meta
    ok = ~t["diverged"]
    fig, axes = plotlib.figure(1, 3, width=3.5, height=3.1)
    a, b, c = axes[0]
    rate = f"realized training flip rate {np.min(t['flip_rate'][ok]):.3f}–{np.max(t['flip_rate'][ok]):.3f}"
    for col, lab, kw in [("clean_test_err", "network", {"marker": "o"}),
                         ("lazy_limit_clean_err", "its lazy limit (Θ₀)", {"ls": ":", "marker": "^"}),
                         ("ntk_limit_clean_err", "NTK limit (m → ∞)", {"ls": "--", "marker": "s", "color": "k"}),
                         ("ntk_interp_clean_err", "min-norm NTK interpolator", {"ls": "-.", "marker": "", "color": "0.5"})]:
        plotlib.line(a, t, "n", col, ok, label=lab, **kw)
    a.set_ylabel("clean test error (Bayes: 0)")
    t2 = dict(t, lim_excess=t["ntk_limit_noisy_err"] - t["eta"])
    plotlib.line(b, t, "n", "excess_risk", ok, label="network: noisy error − η", marker="o")
    plotlib.line(b, t2, "n", "lim_excess", ok, label="NTK limit: noisy error − η", ls="--", marker="s", color="k")
    plotlib.line(b, t, "n", "excess_risk_clean", ok, label="network: (1 − 2η) × clean error", ls="", marker="x")
    b.axhline(0, color="0.5", lw=0.8)
    b.set_ylabel("excess risk over the Bayes error η")
    for col, lab, kw in [("ntk_limit_disagree", "sign disagreement, network vs NTK limit", {"marker": "o"}),
                         ("kernel_disagree", "… lazy limit vs NTK limit", {"ls": ":", "marker": "^"}),
                         ("weight_move", "relative weight movement", {"marker": "s", "color": "C3"})]:
        plotlib.line(c, t, "n", col, ok, label=lab, **kw)
    c.set_yscale("log")
    c.set_ylabel("regime measures")
    for ax in (a, b, c):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("n = d (training points = input dimension)" if stats.n_equals_d(t) else "n")
        ax.legend(fontsize=6.5)
    m, al, eta = plotlib.mode(t["width"], ok), plotlib.mode(t["alpha"], ok), plotlib.mode(t["eta"], ok)
    a.set_title(f"width {m}, α = {al:g}, η = {eta:g}, mean ± s.e. over {len(np.unique(t['seed']))} seeds", fontsize=7.5)
    b.set_title(rate, fontsize=7.5)
    c.set_title("is the network at its limit?", fontsize=7.5)
    return plotlib.save(fig, results_dir, "bayes_vs_n", meta)
