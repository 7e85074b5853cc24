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
    lambda - (m-1)/log(nbeta) where the multiplicity m > 1; a sampler check outside the first-order
    regime (`validation_claims.in_regime`) is labelled as not judged."""
    from jaxbench.experiments.freeenergy import validation_claims as lc

    res = store.load(results_dir)
    cs = lc.cases(results_dir)
    labels = list(dict.fromkeys(c["label"] for c in cs))
    ns = sorted({c["n"] for c in cs})
    offsets = {n: (k - (len(ns) - 1) / 2) * 0.3 for k, n in enumerate(ns)}
    markers = dict(zip(ns, ["o", "s", "D", "^"]))
    errs = np.concatenate([c["values"] / c["lambda"] - 1 for c in cs] + [[c["corrected"] / c["lambda"] - 1 for c in cs]])
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
            if not lc.in_regime(c):
                ax.annotate(f"m = {c['m']}: outside the first-order regime, not judged", (c["rel_err"], y),
                            xytext=(6, -9), textcoords="offset points", fontsize=5, ha="left")
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


def _wls(columns, mean, sem):
    """Weighted least squares of ``mean`` on ``columns`` (k, m) over the finite rows (weights
    1 / sem^2, floored at the median sem so one tiny s.e. cannot dominate). Returns (coef (k,),
    cov (k, k)): the covariance from the sems; NaN when fewer rows than coefficients."""
    cols, mean, sem = np.atleast_2d(np.asarray(columns, float)), np.asarray(mean, float), np.asarray(sem, float)
    sel = np.all(np.isfinite(cols), 0) & np.isfinite(mean)
    k = cols.shape[0]
    if sel.sum() < k:
        return np.full(k, np.nan), np.full((k, k), np.nan)
    a, y, s = cols[:, sel].T, mean[sel], sem[sel]
    floor = np.nanmedian(s[s > 0]) if np.any(s > 0) else 1.0
    w = 1.0 / np.maximum(np.where(np.isfinite(s), s, floor), floor) ** 2
    cov = np.linalg.inv(a.T @ (w[:, None] * a))
    return cov @ (a.T @ (w * y)), cov


def fit_slope(logn, mean, sem):
    """``mean = lambda log n + c`` on seed means by `_wls`. Returns (slope, slope_se, intercept);
    NaN below 2 points."""
    logn = np.asarray(logn, float)
    (slope, icpt), cov = _wls([logn, np.ones_like(logn)], mean, sem)
    return float(slope), float(np.sqrt(cov[0, 0])), float(icpt)


def fit_slope_loglog(logn, mean, sem):
    """``mean = lambda log n - (m - 1) log log n + c`` (Watanabe's expansion of F_n - n S_n with
    its multiplicity term) on seed means by `_wls`. Returns (lambda, lambda_se, m - 1,
    (m - 1)_se); NaN below 3 points. Over one decade of n, log n and log log n are nearly
    collinear, so the standard errors are large: that is the measurement, not a defect."""
    logn = np.asarray(logn, float)
    (lam, mm1, _), cov = _wls([logn, -np.log(logn), np.ones_like(logn)], mean, sem)
    return float(lam), float(np.sqrt(cov[0, 0])), float(mm1), float(np.sqrt(cov[1, 1]))


DEPTH_COLORS = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"]
BOUND_NOTE = "our derivation, not the paper's constant"


def _style(ok_frac, color):
    """Filled when most seeds passed their diagnostics, hollow and greyed otherwise."""
    good = ok_frac >= 0.5
    return dict(color=color, mfc=color if good else "none", mec=color, alpha=1.0 if good else 0.55)


def _series(ax, t, x, value, where, color, label, dodge=1.0, ls="-"):
    """Mean +- s.e. over seeds of ``value`` against ``x`` (a line), each point drawn by `_style`
    from the share of its rows with ``t["ok"]`` (1 = passed its diagnostics); ``dodge``
    multiplies x (on a log axis: a small sideways shift, so series at the same x stay apart);
    ``ls``: the line's style."""
    keys, mean, sem, _ = plotlib.aggregate(t, [x], value, where=where)
    _, okf, _, _ = plotlib.aggregate(t, [x], "ok", where=where)
    xs = [k[0] * dodge for k in keys]
    ax.plot(xs, mean, ls, lw=0.8, color=color)
    for xi, mi, si, oi in zip(xs, mean, sem, okf):
        ax.errorbar([xi], [mi], yerr=[si], fmt="o", ms=4, capsize=2, **_style(oi, color))
    ax.plot([], [], "o" + ls, color=color, label=label)


def _rows(t, col):
    return np.asarray(t[col], float)


def global_students(t, where):
    """The global students among rows ``where`` of a free_energy table: one entry per (depth,
    width, SMC moves per rung), as ``(depth, width, suffix, mask)``. ``suffix`` names the moves
    (", 8 moves") only when the rows vary them (the `moves` preset), so estimates made with
    different moves are never pooled into one series or slope."""
    depth, width = _rows(t, "depth").astype(int), _rows(t, "width").astype(int)
    steps = _rows(t, "smc_steps").astype(int)
    keys = sorted({(d, w, s) for d, w, s in zip(depth[where], width[where], steps[where])})
    multi = len({s for _, _, s in keys}) > 1
    suffix = lambda s: (f", {s} move" + ("s" if s > 1 else "")) if multi else ""
    return [(d, w, suffix(s), where & (depth == d) & (width == w) & (steps == s)) for d, w, s in keys]


MOVES_STYLES = ["-", "--", ":", "-."]


def _not_run(ax):
    """Marks a panel whose part of the experiment this sweep did not run (local = 0 or global_fe = 0)."""
    ax.text(0.5, 0.5, "not in this sweep", ha="center", va="center", fontsize=7, transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def relu(results_dir):
    """Figures of the free_energy sweep (issue 15): (a) F_n - n S_n vs log n with fitted slopes
    and the bound; (b) slope / local lambda vs parameter count; (c) n G_n vs n; (d) diagnostics;
    (e) random-restart minima apart. Points whose diagnostics failed in most seeds are hollow."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    res = store.load(results_dir)
    t, meta = res.table, res.meta
    paths = []
    depth, width = _rows(t, "depth").astype(int), _rows(t, "width").astype(int)
    nn = _rows(t, "n_used")
    glob = _rows(t, "global_fe") == 1
    loc = _rows(t, "local") == 1
    bound = float(_rows(t, "bound")[0])
    cmap = {d: DEPTH_COLORS[(d - 1) % len(DEPTH_COLORS)] for d in np.unique(depth)}
    students_g = global_students(t, glob)
    suffixes = dict.fromkeys(g[2] for g in students_g)                   # the moves, in order
    dashes = {sfx: MOVES_STYLES[i % len(MOVES_STYLES)] for i, sfx in enumerate(suffixes)}

    # (a) F_n - n S_n vs log n: TI and normalizer of one SMC run, and AIS, per global student
    fig, axes = plotlib.figure(1, 3, width=3.9, height=3.8)
    axes = np.atleast_2d(axes)
    axes[0, 1].sharey(axes[0, 0])      # AIS keeps its own scale: it lies tens of nats above SMC
    for ax, (col, conv, name) in zip(axes[0], (("f_ti", "ti_converged", "TI over the SMC particles"),
                                               ("f_smc", "smc_converged", "SMC normalizer (same run)"),
                                               ("f_ais", "ais_converged", "AIS from the prior (upper bound)"))):
        excess = dict(t, excess=_rows(t, col) - _rows(t, "ns_n"), ok=_rows(t, conv))
        anchor = None
        for d, w, sfx, sel in students_g:
            keys, mean, sem, _ = plotlib.aggregate(excess, ["n_used"], "excess", where=sel)
            _, okf, _, _ = plotlib.aggregate(excess, ["n_used"], "ok", where=sel)
            x = np.log([k[0] for k in keys])
            slope, se, icpt = fit_slope(x, mean, sem)
            ax.plot(x, slope * x + icpt, dashes[sfx], lw=0.8, color=cmap[d])
            for xi, mi, si, oi in zip(x, mean, sem, okf):
                ax.errorbar([xi], [mi], yerr=[si], fmt="o", ms=4, capsize=2, **_style(oi, cmap[d]))
            ax.plot([], [], "o" + dashes[sfx], color=cmap[d],
                    label=f"{d} x {w}{sfx}: slope {slope:.1f} ± {1.96 * se:.1f} (95%)" if np.isfinite(slope)
                    else f"{d} x {w}{sfx} (one n: no slope)")
            anchor = (x, mean) if anchor is None else anchor
        if anchor is not None:     # the bound's slope, through the first student's first point
            x0, m0 = anchor
            ax.plot(x0, m0[0] + bound * (x0 - x0[0]), color="crimson", ls=":", lw=1.5,
                    label=f"slope {bound:g} = (H(d+1)+1)/2\n({BOUND_NOTE})")
        ax.plot([], [], "o", mfc="none", mec="0.3", color="0.3", label="hollow: diagnostics failed in most seeds")
        ax.set_xlabel("log n")
        ax.set_title(name, fontsize=8)
        ax.legend(fontsize=5.5, loc="upper left")
        if not students_g:
            _not_run(ax)
    axes[0, 0].set_ylabel("F_n - n S_n (mean over seeds ± s.e.)")
    axes[0, 2].set_ylabel("F_n - n S_n (AIS; its own scale)")
    paths += plotlib.save(fig, results_dir, "free_energy_vs_logn", meta)

    # (b) local lambda_hat and global slopes vs parameter count
    fig, ax = plotlib.figure(1, 1, width=7.0, height=3.8)
    n_loc = np.nanmax(nn[loc]) if loc.any() else np.nan
    tl = dict(t, ok=_rows(t, "converged"))
    drawn = bool(np.isfinite(_rows(t, "lambda_hat")[loc]).any())
    for d in sorted(cmap):
        sel = loc & (depth == d) & (nn == n_loc)
        if sel.any():
            _series(ax, tl, "num_params", "lambda_hat", sel, cmap[d],
                    f"local lambda_hat, {d} hidden layer{'s' if d > 1 else ''}")
        for i, (dd, w, sfx, sel) in enumerate(students_g):
            if dd != d:
                continue
            j = sum(g[:2] == (d, w) for g in students_g[:i])     # its place among this student's moves
            for col, conv, mk, shift in (("f_ti", "ti_converged", "s", 1.08), ("f_smc", "smc_converged", "^", 1.16),
                                         ("f_ais", "ais_converged", "D", 1.24)):
                ex = dict(t, excess=_rows(t, col) - _rows(t, "ns_n"))
                keys, mean, sem, _ = plotlib.aggregate(ex, ["n_used"], "excess", where=sel)
                slope, se, _ = fit_slope(np.log([k[0] for k in keys]), mean, sem)
                drawn = drawn or bool(np.isfinite(slope))
                okf = np.mean(_rows(t, conv)[sel])
                pp = float(_rows(t, "num_params")[sel][0])
                x = pp * shift * 1.3**j                    # one student at several moves: side by side
                ax.errorbar([x], [slope], yerr=[1.96 * se], fmt=mk, ms=5, capsize=2, **_style(okf, cmap[d]))
                if sfx and col == "f_ti":
                    ax.annotate(sfx.lstrip(", "), (x, slope), xytext=(0, -12), textcoords="offset points",
                                fontsize=5, ha="center", color=cmap[d])
    ax.plot([], [], "s", color="0.3", mfc="none", label="slope of F_n - n S_n in log n, TI over SMC (95% CI)")
    ax.plot([], [], "^", color="0.3", mfc="none", label="the same, SMC normalizer")
    ax.plot([], [], "D", color="0.3", mfc="none", label="the same, AIS from the prior")
    lo, hi = ax.get_ylim() if drawn else (0.0, 2.0 * bound)   # the estimates' range: d/2 runs off the top
    if not drawn:
        ax.text(0.5, 0.75, "nothing to draw: no local rows, and no student with two or more n",
                ha="center", fontsize=7, transform=ax.transAxes)
    pall = np.unique(_rows(t, "num_params"))
    ax.plot(pall, pall / 2, "k:", lw=1, label="d/2 (regular count; leaves the frame)")
    ax.axhline(bound, color="crimson", lw=1.2, label=f"(H(d+1)+1)/2 = {bound:g} ({BOUND_NOTE})")
    ax.set_ylim(min(lo, 0.9 * bound), hi)
    ax.set_xscale("log")
    shown = np.unique(_rows(t, "num_params")[loc | glob])
    if 0 < shown.size <= 6 and shown.max() / shown.min() < 10:    # no decade tick in range: label the students
        ax.set_xticks(shown)
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("student parameter count d")
    ax.set_ylabel(f"lambda (local: at n = {n_loc:g}; global: slope over n)" if loc.any() else
                  "lambda (global: slope of F_n - n S_n over n)")
    ax.set_title("learning coefficient vs student size (hollow: not converged in most seeds)", fontsize=8)
    ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5))
    paths += plotlib.save(fig, results_dir, "lambda_vs_params", meta)

    # (c) n G_n vs n
    fig, ax = plotlib.figure(1, 1, width=4.4, height=3.4)
    tg = dict(t, ng=nn * _rows(t, "gen_error"), ok=_rows(t, "gen_converged"))
    for i, (d, w, sfx, sel) in enumerate(students_g):
        _series(ax, tg, "n_used", "ng", sel, cmap[d], f"{d} x {w}{sfx}", dodge=1.04 ** (i - (len(students_g) - 1) / 2),
                ls=dashes[sfx])
    ax.axhline(bound, color="crimson", lw=1, label=f"{bound:g} ({BOUND_NOTE})")
    ax.set_xscale("log")
    if students_g:                                  # tick the sweep's n values (a narrow range has no decade)
        ax.set_xticks(np.unique(nn[glob]))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("n")
    ax.set_ylabel("n G_n (mean over seeds ± s.e.)")
    ax.set_title("Bayes generalization error (hollow: the chains from the two SMC runs disagree)", fontsize=7)
    ax.legend(fontsize=5.5)
    if not students_g:
        _not_run(ax)
    paths += plotlib.save(fig, results_dir, "gen_error_vs_n", meta)

    # (d) diagnostics of the local estimates (and TI / AIS), per row, against their thresholds
    from jaxbench.mcmc_diagnostics import THRESHOLDS, z_critical
    first = lambda c: int(np.nanmax(_rows(t, c)))                # a static column: one value per sweep
    z_llc, z_gen = z_critical(first("chains")), z_critical(first("gen_chains") // 2)
    panels = [("rhat", "split R-hat (LLC)", THRESHOLDS["rhat_max"], "linear"),
              ("ess", "ESS (LLC)", THRESHOLDS["ess_min"], "log"),
              ("accept", "acceptance (LLC sampler)", THRESHOLDS["accept_min"], "linear"),
              ("split_z", "split-half z (LLC)", z_llc, "linear"),
              ("plateau_z", "gamma-plateau z (LLC)", z_llc, "linear"),
              ("var_rel", "nbeta^2 Var / lambda_hat - 1", THRESHOLDS["var_rel_max"], "linear"),
              ("kink_grad", "|grad L_n(w*)|, kinks' slopes free", 1e-4, "log"),
              ("teacher_gap", "n (L_n(teacher) - L_n(w*))", None, "linear"),
              ("f_smc_se", "SMC s.e. over runs (nats)", 1.0, "log"),
              ("smc_ess_min", "SMC smallest weight ESS (share)", 0.3, "linear"),
              ("ais_weight_ess", "AIS weight ESS (of particles)", None, "linear"),
              ("gen_split_z", "n G_n: z between the SMC runs' chains", z_gen, "linear")]
    fig, axes = plotlib.figure(3, 4, width=2.3, height=2.0)
    pcount = _rows(t, "num_params")
    legend_ax = None
    for ax, (col, title, thr, scale) in zip(axes.ravel(), panels):
        v = _rows(t, col)
        ax.set_title(title, fontsize=7)
        ax.tick_params(labelsize=6)
        if not np.isfinite(v).any():    # that part did not run in this sweep (local = 0 or global_fe = 0)
            _not_run(ax)
            continue
        legend_ax = legend_ax or ax
        for d in sorted(cmap):
            sel = (depth == d) & np.isfinite(v)
            ax.scatter(pcount[sel] * np.exp(0.05 * np.random.default_rng(d).standard_normal(sel.sum())), v[sel],
                       s=6, color=cmap[d], alpha=0.7, label=f"{d} hidden" if ax is legend_ax else None)
        if thr is not None:
            for th in ((thr, -thr) if col == "var_rel" else (thr,)):
                ax.axhline(th, color="crimson", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        if scale == "log":
            ax.set_yscale("log")
        shown = np.unique(pcount[np.isfinite(v)])
        if 0 < shown.size <= 5 and shown.max() / shown.min() < 10:    # no decade tick in range: label the points
            ax.set_xticks(shown)
    for ax in axes[-1]:
        ax.set_xlabel("parameter count", fontsize=7)
    if legend_ax is not None:
        legend_ax.legend(fontsize=5)
    paths += plotlib.save(fig, results_dir, "diagnostics", meta)

    # (e) random-restart minima, apart: not the theorem's true parameters
    rr = np.isfinite(_rows(t, "rr_teacher_gap"))
    if rr.any():
        fig, axes = plotlib.figure(1, 2, width=3.4, height=3.0)
        for ax, (a, b, lab) in zip(axes[0], (("rr_teacher_gap", "teacher_gap", "n (L_n(teacher) - L_n(w*))"),
                                             ("rr_test_mse", "test_mse", "test MSE of w* vs f*"))):
            for d in sorted(cmap):
                sel = rr & (depth == d)
                ax.scatter(pcount[sel], _rows(t, a)[sel], s=10, marker="x", color=cmap[d],
                           label=f"random restarts, {d} hidden" if a == "rr_teacher_gap" else None)
                sel2 = sel & np.isfinite(_rows(t, b))
                ax.scatter(pcount[sel2], _rows(t, b)[sel2], s=10, marker="o", facecolors="none", edgecolors=cmap[d])
            ax.scatter([], [], s=10, marker="o", facecolors="none", edgecolors="0.3",
                       label="embedded teacher, descended" if a == "rr_teacher_gap" else None)
            ax.set_xscale("log")
            ax.set_yscale("log" if a == "rr_test_mse" else "symlog", **({} if a == "rr_test_mse" else {"linthresh": 10.0}))
            ax.set_xlabel("parameter count")
            ax.set_ylabel(lab)
        axes[0, 0].legend(fontsize=5)
        fig.suptitle("overfit minima from random restarts (not part of the claim)", fontsize=8)
        paths += plotlib.save(fig, results_dir, "overfit_minima", meta)
    return paths
