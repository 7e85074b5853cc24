"""Figures of experiment 2 (`jaxbench.experiments.recovery`), read from files only.

One results directory is one of three sweeps; `plot` draws the figures its rows allow:

* gradient flow + Levenberg-Marquardt from near each branch of Q* (``local_recovery``):
  ``recovery_n`` (recovered fraction vs n, relative criterion, thresholds marked),
  ``geometry`` (ranks and dimensions vs n), ``rates`` (exponential vs power law per regime),
  ``flow_vs_lm`` (the two descents from the same starts);
* Levenberg-Marquardt from perturbed points of Q* (``local_recovery_separation``):
  ``separation`` and ``endpoints`` (`plots_minima`);
* random initialisation (``local_recovery_random``): ``random_init`` (`plots_minima`).
"""

from __future__ import annotations

import numpy as np

from jaxbench import plot as plotlib
from jaxbench import store

REL = "recovered: test error / initial test error <= {:g} (relative criterion)"
REGIMES = ("below model rank", "at model rank", "rank < n < count", "n >= count, no copies", "n >= count, copies")
REGIME_COLORS = ("tab:red", "tab:orange", "tab:purple", "tab:green", "tab:blue")


def plot(results_dir):
    res = store.load(results_dir)
    t = dict(res.table)
    ok = ~np.asarray(t["diverged"], bool)
    from jaxbench.experiments.recovery import plots_minima as minima

    if np.all(t["init"][ok] == "random"):
        return minima.random_figures(t, ok, res.meta, results_dir)
    if np.any(t["method"][ok] == "gf"):
        return flow_figures(t, res.arrays, ok, res.meta, results_dir)
    return minima.separation_figures(t, ok, res.meta, results_dir)


# ----------------------------------------------------------------------------- helpers

def fraction_by_n(t, sel, col):
    """``(ns, fraction of rows with col true, rows)`` per n over the mask sel."""
    ns = np.unique(t["n"][sel])
    cnt = np.array([np.sum(sel & (t["n"] == n)) for n in ns])
    frac = np.array([np.mean(np.asarray(t[col][sel & (t["n"] == n)], float)) for n in ns])
    return ns, frac, cnt


def median_by_n(t, sel, values):
    ns = np.unique(t["n"][sel])
    med = np.array([np.nanmedian(values[sel & (t["n"] == n)]) if np.any(sel & (t["n"] == n)) else np.nan
                    for n in ns])
    return ns, med


def one(values, sel):
    """The single value of a column over sel (thresholds are per branch); nan if none."""
    v = np.unique(np.asarray(values)[sel])
    return v[0] if len(v) else np.nan


def mark_thresholds(ax, marks, y=0.5, va="center"):
    """Vertical lines ``[(n, label, style)]`` on an n axis, each labelled at height y (axes fraction;
    ``va="bottom"``: the label starts there and runs up)."""
    for x, label, style in marks:
        if np.isfinite(x):
            ax.axvline(x, color="k", lw=0.9, ls=style, alpha=0.7)
            ax.text(x, y, label, transform=ax.get_xaxis_transform(), rotation=90, fontsize=6, ha="center",
                    va=va, bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.85))


def n_axis(ax, ns):
    ax.set_xlim(min(ns) - 0.5, max(ns) + 0.5)
    ax.set_xticks(np.arange(min(ns) + (min(ns) % 2), max(ns) + 1, 2))
    ax.set_xlabel("n (train samples)")


def branch_marks(t, sel):
    rank, count = one(t["threshold"], sel), one(t["sep_count"], sel)
    marks = [(rank, f"model rank {rank}", "--")]
    if count != rank:
        marks.append((count, f"count {count}", ":"))
    else:
        marks[0] = (rank, f"model rank = count = {rank}", "--")
    return marks


def regime(t):
    """Rate regime of each row: index into REGIMES (copies: extra copies of a teacher neuron, whose
    first-order-flat directions make Q* degenerate)."""
    n, rank, count = t["n"], t["threshold"], t["sep_count"]
    above = np.where(np.asarray(t["extra_copies"]) > 0, 4, 3)
    return np.where(n < rank, 0, np.where(n == rank, 1, np.where(n < count, 2, above)))


# ----------------------------------------------------------------------------- gradient flow sweep

def flow_figures(t, arrays, ok, meta, out):
    fixed = meta["config"]["fixed"]
    rec_rel = fixed.get("rec_rel", 1e-3)
    gf, lm = ok & (t["method"] == "gf"), ok & (t["method"] == "lm")
    t["unconverged"] = ~np.asarray(t["converged"], bool)
    splits = np.unique(t["split"][ok])
    paths = []

    # recovered fraction vs n, per branch
    fig, axes = plotlib.figure(1, len(splits), width=3.5, height=2.9)
    for ax, sp in zip(np.atleast_1d(axes).ravel(), splits):
        b = t["split"] == sp
        for sel, col, style, label in ((gf & b, "recovered_rel", "-o", "GF: recovered (relative)"),
                                       (gf & b, "recovered_abs", "--s", "GF: test <= 1e-6 Var f* (absolute)"),
                                       (gf & b, "other_min", "-x", "GF: zero loss, not in Q*"),
                                       (gf & b, "unconverged", "-", "GF: train loss > 1e-24 at t_max"),
                                       (lm & b, "in_q", ":^", "LM, same starts: end point in Q*")):
            ns, frac, _ = fraction_by_n(t, sel, col)
            ax.plot(ns, frac, style, ms=3, lw=1.1, label=label)
        ns = np.unique(t["n"][b & ok])
        mark_thresholds(ax, branch_marks(t, b & ok))
        n_axis(ax, ns)
        ax.set(ylim=(-0.03, 1.03), ylabel="fraction of runs")
        z, c = one(t["zero_output"], b & ok), one(t["extra_copies"], b & ok)
        ax.set_title(f"split {sp:g}: {z} zero-output, {c} extra copies", fontsize=8)
    np.atleast_1d(axes).ravel()[0].legend(fontsize=5.5, loc="center right")
    fig.suptitle(f"m = {one(t['m'], ok)}, epsilon = {one(t['epsilon'], ok):g}, t = {one(t['t_end'], gf):.0e}; "
                 + REL.format(rec_rel), fontsize=8)
    paths += plotlib.save(fig, out, "recovery_n", meta)

    # ranks and dimensions vs n
    fig, axes = plotlib.figure(1, len(splits), width=3.5, height=2.9)
    for ax, sp in zip(np.atleast_1d(axes).ravel(), splits):
        b = ok & (t["split"] == sp) & gf
        ns = np.unique(t["n"][b])
        p, tangent, count = one(t["params_active"], b), one(t["tangent_dim"], b), one(t["sep_count"], b)
        ax.plot(*median_by_n(t, b, np.asarray(t["rank_n"], float)), "-o", ms=3, label="rank J_n at theta_Q")
        ax.plot(*median_by_n(t, b, np.asarray(t["excess_dim"], float)), "-s", ms=3,
                label="dim ker J_n - dim T Q* (first order)")
        ax.plot(ns, np.maximum(p - ns - tangent, 0), "--", color="0.3", label="P - n - dim T Q* (generic count)")
        om = ok & (t["split"] == sp) & lm & np.asarray(t["other_min"], bool)
        dim_other = np.asarray(t["params_active"], float) - np.asarray(t["rank_end"], float) - tangent
        nn, med = median_by_n(t, om, dim_other)
        ax.plot(nn, med, "x", color="tab:red", label="at the non-Q* zero-loss end points (LM): P - rank J_n - dim T Q*")
        mark_thresholds(ax, branch_marks(t, b))
        n_axis(ax, ns)
        ax.set(ylabel="dimension / rank")
        ax.set_title(f"split {sp:g}: P = {p}, dim T Q* = {tangent}", fontsize=8)
    np.atleast_1d(axes).ravel()[0].legend(fontsize=5.5, loc="center right", bbox_to_anchor=(1.0, 0.33))
    fig.suptitle("geometry at the split point theta_Q of each branch (rank tolerance 1e-9 of the largest "
                 "singular value) and at the zero-loss points reached near it", fontsize=8)
    paths += plotlib.save(fig, out, "geometry", meta)

    paths += _rates_figure(t, arrays, gf, meta, out)
    paths += _flow_vs_lm_figure(t, gf, lm, meta, out)
    return paths


def _rates_figure(t, arrays, gf, meta, out):
    reg = regime(t)
    r2e, r2p = np.asarray(t["r2_exp"], float), np.asarray(t["r2_pow"], float)
    exp_wins = r2e >= r2p
    fig, axes = plotlib.figure(1, 4, width=3.3, height=3.1)
    ax = axes[0, 0]
    for r, (name, color) in enumerate(zip(REGIMES, REGIME_COLORS)):
        s = gf & (reg == r) & exp_wins
        ax.scatter(t["pred_rate"][s], t["rate_exp"][s], s=7, color=color, label=f"{name} ({s.sum()})")
    v = np.asarray(t["pred_rate"], float)[gf & exp_wins]
    v = v[np.isfinite(v) & (v > 0)]
    if v.size:
        ax.plot([v.min(), v.max()], [v.min(), v.max()], "k--", lw=0.8, label="fitted = predicted")
    ax.set(xscale="log", yscale="log", xlabel="predicted 2 mu_min(J_n J_n^T / n), end point",
           ylabel="fitted r in loss ~ exp(-r t)")
    ax.set_title("runs where the exponential fits better", fontsize=8)
    ax.legend(fontsize=5)
    ax = axes[0, 1]
    for r, (name, color) in enumerate(zip(REGIMES, REGIME_COLORS)):
        s = gf & (reg == r)
        ax.scatter(np.maximum(1 - r2p[s], 1e-6), np.maximum(1 - r2e[s], 1e-6), s=6, color=color, label=name)
    ax.plot([1e-6, 1], [1e-6, 1], "k--", lw=0.8)
    ax.text(0.03, 0.97, "power law fits better", fontsize=6, va="top", transform=ax.transAxes)
    ax.text(0.62, 0.03, "exponential fits better", fontsize=6, ha="center", transform=ax.transAxes)  # left of the runs
    ax.set(xscale="log", yscale="log", xlim=(1e-6, 1), ylim=(1e-6, 1), xlabel="1 - R^2, power-law fit",
           ylabel="1 - R^2, exponential fit")
    ax.set_title("goodness of fit, each run (floored at 1e-6)", fontsize=8)
    ax.legend(fontsize=5, loc="lower left")
    ax = axes[0, 2]
    for sp, color in zip(np.unique(t["split"][gf]), ("tab:green", "tab:purple", "tab:blue")):
        s = gf & ~exp_wins & (t["split"] == sp)
        ax.scatter(t["n"][s], t["rate_pow"][s], s=7, color=color, label=f"split {sp:g} ({s.sum()} runs)")
    ax.axhline(2.0, color="k", ls=":", lw=0.8, label="2: one quartic direction (our derivation)")
    ax.set(xlabel="n (train samples)", ylabel="fitted p in loss ~ t^(-p)", ylim=(0, 3))
    ax.set_title("runs where the power law fits better", fontsize=8)
    ax.legend(fontsize=5, loc="lower left")
    ax = axes[0, 3]
    ct, cl, stop = arrays["curve_t"], arrays["curve_loss"], np.asarray(t["t_stop"], float)
    for r, (name, color) in enumerate(zip(REGIMES, REGIME_COLORS)):
        idx = np.flatnonzero(gf & (reg == r) & (t["split"] == (0.0 if r == 3 else 0.5)))[:3]
        for j, i in enumerate(idx):
            keep = np.isfinite(cl[i]) & (cl[i] > 0) & (ct[i] <= stop[i])
            ax.plot(ct[i][keep], cl[i][keep], color=color, lw=0.8,
                    label=f"{name} (n = {t['n'][i]}, split {t['split'][i]:g})" if j == 0 else None)
    ax.set(xscale="log", yscale="log", xlabel="gradient-flow time t", ylabel="train loss / Var f*")
    ax.set_title("loss curves, 3 seeds per regime (to the stop)", fontsize=8)
    ax.legend(fontsize=4.5, loc="lower left")
    fig.suptitle("gradient flow (ODE, t <= 1e10) from eps = 0.01 perturbations; regimes: n against the model rank "
                 "(threshold column) and our separation count; fits on t within a factor 100 of the last time with "
                 "loss > 1e-22", fontsize=7)
    return plotlib.save(fig, out, "rates", meta)


def _flow_vs_lm_figure(t, gf, lm, meta, out):
    """GF and LM end points from the same starts (rows matched by split, n, seed)."""
    key = lambda s: {(sp, n, sd): i for i, (sp, n, sd) in enumerate(zip(t["split"], t["n"], t["seed"])) if s[i]}  # noqa: E731
    kg, kl = key(gf), key(lm)
    pairs = np.array([(kg[k], kl[k]) for k in kg if k in kl])
    fig, axes = plotlib.figure(1, 2, width=3.4, height=3.0)
    if len(pairs):
        g, l_ = pairs[:, 0], pairs[:, 1]
        for ax, col, label in ((axes[0, 0], "test", "test error / Var f*"), (axes[0, 1], "dist_end", "distance to Q*")):
            for sp, color in zip(np.unique(t["split"][g]), ("tab:blue", "tab:purple", "tab:green")):
                s = t["split"][g] == sp
                conv = np.asarray(t["converged"][g], bool) & s
                ax.scatter(t[col][l_][conv], t[col][g][conv], s=8, color=color, label=f"split {sp:g}, GF converged")
                ax.scatter(t[col][l_][s & ~conv], t[col][g][s & ~conv], s=10, color=color, marker="x",
                           label=f"split {sp:g}, GF not converged by t_max")
            v = np.concatenate([t[col][g], t[col][l_]]).astype(float)
            v = v[np.isfinite(v) & (v > 0)]
            if v.size:
                ax.plot([v.min(), v.max()], [v.min(), v.max()], "k--", lw=0.8)
            ax.set(xscale="log", yscale="log", xlabel=f"LM end point: {label}", ylabel=f"GF end point: {label}")
        axes[0, 0].legend(fontsize=5)
    fig.suptitle("gradient flow (ODE) and Levenberg-Marquardt from the same starts", fontsize=8)
    return plotlib.save(fig, out, "flow_vs_lm", meta)
