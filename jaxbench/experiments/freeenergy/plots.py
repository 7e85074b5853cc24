"""Figures of the experiments "lambda_validation" and "free_energy" (read only results files)."""

from __future__ import annotations

import numpy as np

from jaxbench import plot as plotlib
from jaxbench import store

MODEL_COLORS = {"linear": "tab:blue", "rrr": "tab:orange", "dln": "tab:green"}


def validation(results_dir):
    """Relative error of lambda_hat per case: sampler check (left) and statistical check (right).

    Big markers: mean over seeds ± s.e.; hollow grey when any seed was flagged (not converged
    or wstar_ok false). Small dots: the seeds. Shaded: the ±10% band; '|' marks the target
    lambda - (m-1)/log(nbeta) where the multiplicity m > 1."""
    from jaxbench.experiments.freeenergy import validation_claims as lc

    res = store.load(results_dir)
    cs = lc.cases(results_dir)
    labels = list(dict.fromkeys(c["label"] for c in cs))
    ns = sorted({c["n"] for c in cs})
    offsets = {n: (k - (len(ns) - 1) / 2) * 0.3 for k, n in enumerate(ns)}
    markers = dict(zip(ns, ["o", "s", "D", "^"]))
    errs = np.concatenate([c["values"] / c["lambda"] - 1 for c in cs])
    lim = float(np.clip(1.08 * np.nanmax(np.abs(errs)), 0.2, 1.0))
    fig, axes = plotlib.figure(1, 2, width=4.3, height=0.28 * len(labels) + 1.6, sharey=True)
    for ax, check, title in ((axes[0, 0], "sampler", "sampler check: noise-free, w* = truth"),
                             (axes[0, 1], "statistical", "statistical check: noisy, w* = find_minimum")):
        if check == "statistical":
            ax.axvspan(-0.15, 0.15, color="0.95", zorder=0, label="±15% (statistical band)")
        ax.axvspan(-0.10, 0.10, color="0.88", zorder=0, label="±10%")
        ax.axvline(0, color="k", lw=0.8)
        for c in (c for c in cs if c["check"] == check):
            y = labels.index(c["label"]) + offsets[c["n"]]
            model = c["label"].split()[0]
            color = MODEL_COLORS[model]
            ax.scatter(c["values"] / c["lambda"] - 1, np.full(c["values"].shape, y), s=4, color=color, alpha=0.35,
                       lw=0)
            flagged = c["flagged"] > 0
            ax.errorbar(c["rel_err"], y, xerr=c["se"] / c["lambda"], fmt=markers[c["n"]], ms=4.5, capsize=2,
                        color="0.55" if flagged else color, mfc="none" if flagged else color, zorder=3)
            if c["m"] > 1:
                ax.plot([c["corrected"] / c["lambda"] - 1] * 2, [y - 0.22, y + 0.22], color="k", lw=1)
        for n in ns:
            ax.errorbar([], [], fmt=markers[n], color="k", ms=4, label=f"n = {n}")
        ax.errorbar([], [], fmt="o", color="0.55", mfc="none", ms=4, label="a seed flagged")
        ax.plot([], [], color="k", lw=1, label="lambda - (m-1)/log(nbeta)")
        ax.set_xlabel("lambda_hat / lambda - 1 (mean over seeds ± s.e.)")
        ax.set_title(title, fontsize=8)
        ax.set_xlim(-lim, lim)
    axes[0, 0].set_yticks(range(len(labels)), labels, fontsize=6)
    axes[0, 0].set_ylim(len(labels) - 0.5, -0.5)
    axes[0, 1].legend(fontsize=5.5, loc="lower right")
    return plotlib.save(fig, results_dir, "lambda_validation", res.meta)


def _fit_slope(x, y):
    sel = np.isfinite(x) & np.isfinite(y)
    if sel.sum() < 2:
        return np.nan, np.nan
    a, b = np.polyfit(x[sel], y[sel], 1)
    return a, b


INIT_NAMES = {0.0: "w* from random restarts", 1.0: "w* next to the embedded teacher"}


def relu(results_dir):
    """lambda_hat vs parameter count; F_n - n S_n vs log n; n G_n vs lambda_hat."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    res = store.load(results_dir)
    t, meta = res.table, res.meta
    ok = ~np.asarray(t["diverged"], bool)
    paths = []
    depths = sorted(np.unique(t["depth"]))
    inits = sorted(np.unique(np.asarray(t["init_teacher"], float)))
    cmap = {d: c for d, c in zip(depths, ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"])}
    bound = float(np.asarray(t["bound"], float)[0])
    n_all = np.asarray(t["n_used"], float)
    n_top = np.nanmax(n_all)
    init = np.asarray(t["init_teacher"], float)

    # 1. lambda_hat versus the student's parameter count at the largest n
    fig, ax = plotlib.figure(1, 1, width=4.6, height=3.6)
    for it in inits:
        for d in depths:
            sel = ok & (t["depth"] == d) & (n_all == n_top) & (init == it)
            keys, mean, sem, _ = plotlib.aggregate(t, ["num_params"], "lambda_hat", where=sel)
            ax.errorbar([k[0] for k in keys], mean, yerr=sem, fmt="o-" if it == 0 else "s--", color=cmap[d],
                        capsize=2, mfc=cmap[d] if it == 0 else "none",
                        label=f"{d} hidden layer{'s' if d > 1 else ''}, {INIT_NAMES[it]}")
    p = np.unique(np.asarray(t["num_params"], float))
    ax.plot(p, p / 2, "k:", lw=1, label="d/2 (regular count)")
    ax.axhline(bound, color="crimson", lw=1.2, label=f"teacher bound (H*(d+1)+1)/2 = {bound:g}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(ScalarFormatter())
        axis.set_minor_formatter(NullFormatter())  # minor labels on a 1-2 decade axis collide
    ax.set_xticks([v for v in (10, 20, 50, 100, 200, 500) if p.min() / 1.5 <= v <= p.max() * 1.5])
    ax.set_xlabel("student parameter count d (widths 3, 6, 12)")
    ax.set_ylabel(f"lambda_hat at n = {n_top:g} (± s.e. over seeds)")
    ax.set_title("local learning coefficient of ReLU students")
    ax.legend(fontsize=5.5)
    paths += plotlib.save(fig, results_dir, "lambda_vs_params", meta)

    # 2. F_n - n S_n versus log n: WBIC for every student, TI where computed; one panel per w* choice
    fig, axes = plotlib.figure(1, len(inits), width=4.4, height=3.8, sharey=True)
    axes = np.atleast_2d(axes)
    archs = sorted({(int(t["depth"][i]), int(t["width"][i])) for i in np.flatnonzero(ok)})
    xs = np.log(np.unique(n_all))
    for ax, it in zip(axes[0], inits):
        for d, w in archs:
            sel = ok & (t["depth"] == d) & (t["width"] == w) & (init == it)
            for col, fmt, lw in (("wbic", "o-", 0.9), ("f_ti", "s-", 2.2)):
                vals = np.asarray(t[col], float) - np.asarray(t["ns_n"], float)
                if not np.isfinite(vals[sel]).any():
                    continue
                keys, mean, sem, _ = plotlib.aggregate(dict(t, excess=vals), ["n_used"], "excess", where=sel)
                x = np.log([k[0] for k in keys])
                slope, _ = _fit_slope(x, mean)
                name = "WBIC" if col == "wbic" else "TI"
                ax.errorbar(x, mean, yerr=sem, fmt=fmt, ms=3, lw=lw, color=cmap[d],
                            alpha=1.0 if col == "f_ti" else 0.3 + 0.7 * (w == archs[0][1]),
                            label=f"{name} L={d} w={w}: slope {slope:.1f}")
        ax.plot(xs, bound * xs, color="crimson", lw=1, ls=":", label=f"{bound:g} log n (bound)")
        ax.set_xlabel("log n")
        ax.set_title(INIT_NAMES[it], fontsize=8)
        ax.legend(fontsize=4.5, ncols=2)
    axes[0, 0].set_ylabel("F_n - n S_n (± s.e. over seeds)")
    paths += plotlib.save(fig, results_dir, "free_energy_vs_logn", meta)

    # 3. n E[G_n] versus lambda_hat, one point per (student, n, w* choice), mean over seeds
    fig, ax = plotlib.figure(1, 1, width=4.4, height=3.6)
    t4 = dict(t, ng=n_all * np.asarray(t["gen_error"], float))
    for it in inits:
        for d in depths:
            sel = ok & (t["depth"] == d) & (init == it)
            k1, lam, lam_se, _ = plotlib.aggregate(t4, ["width", "n_used"], "lambda_hat", where=sel)
            _, ng, ng_se, _ = plotlib.aggregate(t4, ["width", "n_used"], "ng", where=sel)
            sizes = 6 + 14 * np.log2(np.array([k[1] for k in k1]) / np.min(n_all))
            ax.errorbar(lam, ng, xerr=lam_se, yerr=ng_se, fmt="none", ecolor=cmap[d], alpha=0.4, lw=0.7)
            ax.scatter(lam, ng, s=sizes, color=cmap[d] if it == 0 else "none", edgecolors=cmap[d],
                       marker="o" if it == 0 else "s", label=f"depth {d}, {INIT_NAMES[it]}", alpha=0.85)
    lim = np.nanmax(np.asarray(t["lambda_hat"], float)[ok]) * 1.1
    ax.plot([0, lim], [0, lim], "k--", lw=1, label="n E[G_n] = lambda_hat")
    ax.axhline(bound, color="crimson", lw=1, label="teacher bound")
    ax.set_xlabel("lambda_hat (± s.e. over seeds)")
    ax.set_ylabel("n E[G_n] (mean over seeds ± s.e.)")
    ax.set_title("Bayes generalization error (marker size: n)")
    ax.legend(fontsize=5)
    paths += plotlib.save(fig, results_dir, "gen_error_vs_lambda", meta)
    return paths
