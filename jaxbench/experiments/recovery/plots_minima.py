"""Figures of experiment 2 about the zero-loss points reached: separation from Q* (perturbed
starts) and random initialisation. Called by `plots.plot`; read from files only."""

from __future__ import annotations

import numpy as np

from jaxbench import plot as plotlib
from jaxbench.experiments.recovery.plots import REL, branch_marks, fraction_by_n, mark_thresholds, median_by_n, n_axis, one

EPS_COLORS = ("tab:blue", "tab:cyan", "tab:green", "tab:orange", "tab:red", "tab:brown")


def _combos(t, ok):
    return sorted({(int(m), float(s)) for m, s in zip(t["m"][ok], t["split"][ok])})


def separation_figures(t, ok, meta, out):
    """``separation``: distance to Q* of the non-Q* zero-loss end points, per branch and epsilon;
    ``endpoints``: fraction of end points in Q*, and end/start distance against our count."""
    combos = _combos(t, ok)
    eps_values = np.unique(t["epsilon"][ok])
    norm = np.asarray(t["theta_star_norm"], float)
    dist = np.asarray(t["dist_end"], float) / norm
    other = ok & np.asarray(t["other_min"], bool)
    paths = []
    ncol = 3
    nrow = (len(combos) + ncol) // ncol  # one more panel: the summary
    fig, axes = plotlib.figure(nrow, ncol, width=3.4, height=3.0)
    axes = np.atleast_1d(axes).ravel()
    summary = axes[len(combos)]
    for ax in axes[len(combos) + 1:]:
        ax.set_visible(False)
    for ax, (m, sp), color_b in zip(axes, combos, EPS_COLORS[::-1]):
        b = ok & (t["m"] == m) & (t["split"] == sp)
        ns = np.unique(t["n"][b])
        for eps, color in zip(eps_values, EPS_COLORS):
            s = other & b & (t["epsilon"] == eps)
            ax.scatter(t["n"][s], dist[s], s=4, color=color, alpha=0.35, lw=0)
            nn = np.unique(t["n"][s])
            ax.plot(nn, [dist[s & (t["n"] == n)].min() for n in nn], "-o", ms=2.5, lw=1, color=color,
                    label=f"eps = {eps:g}")
        nearest = np.array([dist[other & b & (t["n"] == n)].min() if np.any(other & b & (t["n"] == n)) else np.nan
                            for n in ns])
        ax.plot(ns, nearest, "k-", lw=2, alpha=0.35, label="nearest found (all eps)")
        none = ns[~np.isfinite(nearest)]
        if len(none):
            ax.scatter(none, np.full(len(none), 2.0), marker="v", color="k", s=10, label="none found")
        mark_thresholds(ax, branch_marks(t, b), y=0.12)
        n_axis(ax, ns)
        ax.set(yscale="log", ylim=(1e-4, 3), ylabel="distance to Q* / ||theta*||")
        ax.set_title(f"m = {m}, split {sp:g}", fontsize=8)
        count = one(t["sep_count"], b)
        summary.plot(ns - count, nearest, "-o", ms=2.5, lw=1, color=color_b, label=f"m = {m}, split {sp:g}")
    axes[0].legend(fontsize=5, loc="lower left")
    summary.axvline(0, color="k", ls=":", lw=0.9)
    summary.set(yscale="log", ylim=(1e-4, 3), xlabel="n - our separation count",
                ylabel="nearest non-Q* zero-loss point / ||theta*||")
    summary.set_title("separation: nearest found over all eps, per branch", fontsize=8)
    summary.legend(fontsize=5, loc="lower right")
    fig.suptitle("zero-loss points not in Q* (train <= 1e-24, test > 1e-16) reached by Levenberg-Marquardt from "
                 "theta_Q + eps ||theta_Q|| xi;\ndistance to Q* modulo permutations and sign flips; "
                 "dots: each run, lines: nearest per n", fontsize=8)
    paths += plotlib.save(fig, out, "separation", meta)

    fig, axes = plotlib.figure(2, len(combos), width=3.0 if len(combos) >= 3 else 5.5, height=2.7)
    for j, (m, sp) in enumerate(combos):
        b = ok & (t["m"] == m) & (t["split"] == sp)
        ns = np.unique(t["n"][b])
        ax = axes[0, j]
        for eps, color in zip(eps_values, EPS_COLORS):
            nn, frac, _ = fraction_by_n(t, b & (t["epsilon"] == eps), "in_q")
            ax.plot(nn, frac, "-o", ms=2.5, lw=1, color=color, label=f"eps = {eps:g}")
        mark_thresholds(ax, branch_marks(t, b))
        n_axis(ax, ns)
        ax.set(ylim=(-0.03, 1.03), ylabel="fraction of end points in Q*")
        ax.set_title(f"m = {m}, split {sp:g}", fontsize=8)
        ax = axes[1, j]
        eps0 = eps_values.min()
        s = b & (t["epsilon"] == eps0) & np.asarray(t["converged"], bool)
        ratio = np.asarray(t["dist_end"], float) / np.asarray(t["dist_start"], float)
        ax.scatter(t["n"][s], ratio[s], s=4, color="tab:blue", alpha=0.5, lw=0, label=f"each run, eps = {eps0:g}")
        ax.plot(*median_by_n(t, s, ratio), "-", color="tab:blue", lw=1, label="median")
        p, codim = one(t["params_active"], b), one(t["codim"], b)
        ax.plot(ns, np.sqrt(np.maximum(codim - ns, 0) / p), "k--", lw=1, label="sqrt((P - n - dim T Q*)_+ / P)")
        mark_thresholds(ax, branch_marks(t, b), y=0.15)
        n_axis(ax, ns)
        ax.set(yscale="log", ylim=(1e-5, 2), ylabel="distance end / start")
    axes[0, 0].legend(fontsize=5, loc="center right")
    axes[1, 0].legend(fontsize=5, loc="lower right")
    fig.suptitle("top: end points in Q* (train <= 1e-24 and test <= 1e-16); bottom: distance to Q* of the end "
                 "point over that of the start at the smallest eps\n(a zero-loss set of dimension P - n keeps an "
                 "isotropic perturbation's share (P - n - dim T Q*) / P, first order)", fontsize=8)
    paths += plotlib.save(fig, out, "endpoints", meta)
    return paths


def random_figures(t, ok, meta, out):
    """``random_init``: outcome fractions vs n (generalizing among converged), and the distance
    to Q* of the non-Q* zero-loss points found."""
    fixed = meta["config"]["fixed"]
    conv = ok & np.asarray(t["converged"], bool)
    ns = np.unique(t["n"][ok])
    fig, axes = plotlib.figure(1, 2, width=4.2, height=3.2)
    ax = axes[0, 0]
    nn, f_conv, runs = fraction_by_n(t, ok, "converged")
    ax.plot(nn, f_conv, "-", color="0.6", lw=1, label="converged (train <= loss_tol) / all runs")
    nn, f_gen, n_conv = fraction_by_n(t, conv, "generalizes")
    ax.plot(nn, f_gen, "-o", ms=3, color="tab:green", label="generalizes (relative) / converged")
    nn2, f_q, _ = fraction_by_n(t, conv, "in_q")
    ax.plot(nn2, f_q, ":", color="k", lw=1.2, label="in Q* (test <= q_tol) / converged")
    for n, f, c in list(zip(nn, f_gen, n_conv))[::4]:
        ax.annotate(f"{int(round(f * c))}/{c}", (n, f), fontsize=5, xytext=(3, -8), textcoords="offset points",
                    bbox=dict(boxstyle="round,pad=0.1", fc="white", ec="none", alpha=0.8))
    k, d = fixed.get("k", 2), fixed.get("d", 5)
    p = one(t["params_active"], ok)
    marks = [(k * (d + 1), f"k(d+1) = {k * (d + 1)}", "--"), (p, f"P = {p}", "-")]
    mark_thresholds(ax, marks)
    n_axis(ax, ns)
    ax.set(ylim=(-0.03, 1.05), ylabel="fraction")
    ax.set_title(f"m = {one(t['m'], ok)}, {runs.min()} runs per n; labels: generalizing / converged;\n"
                 f"k(d+1): the lowest model rank on Q*, P: the parameter count", fontsize=7)
    ax.legend(fontsize=5.5, loc="upper left")
    ax = axes[0, 1]
    other = conv & np.asarray(t["other_min"], bool)
    dist = np.asarray(t["dist_end"], float) / np.asarray(t["theta_star_norm"], float)
    ax.scatter(t["n"][other], dist[other], s=4, alpha=0.3, lw=0, color="tab:red", label="each non-Q* zero-loss point")
    nn, med = median_by_n(t, other, dist)
    ax.plot(nn, med, "-", color="tab:red", label="median")
    ax.plot(nn, [dist[other & (t["n"] == n)].min() for n in nn], "-", color="k", lw=1, label="nearest")
    mark_thresholds(ax, marks, y=0.6)
    n_axis(ax, ns)
    ax.set(yscale="log", ylabel="distance to Q* / ||theta*||")
    ax.set_title("random starts: how far the non-generalizing minima are", fontsize=7)
    ax.legend(fontsize=5.5, loc="lower left")
    fig.suptitle("random init (w ~ N(0, I/d), a ~ N(0, 1/m)), Levenberg-Marquardt to zero train loss; "
                 + REL.format(fixed.get("rec_rel", 1e-3)), fontsize=7)
    return plotlib.save(fig, out, "random_init", meta)
