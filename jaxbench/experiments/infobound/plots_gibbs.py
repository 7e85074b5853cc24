"""Figures and claim checks of `info_gibbs` (read only from the results directory)."""

from __future__ import annotations

import numpy as np

from jaxbench import plot as plotlib
from jaxbench import store


def _ok(t):
    return ~np.asarray(t["diverged"], bool)


def _mean_by(t, m, key):
    """Mean of ``key`` and its s.e. (from the per-variant s.e.) over seeds, per n. Returns (n, mean, se)."""
    ns = np.unique(np.asarray(t["n"], float)[m])
    mean, se = [], []
    for n in ns:
        k = m & (np.asarray(t["n"], float) == n)
        mean.append(np.mean(np.asarray(t[key], float)[k]))
        se.append(np.sqrt(np.sum(np.asarray(t[key + "_se"], float)[k] ** 2)) / k.sum() if key + "_se" in t else 0.0)
    return ns, np.array(mean), np.array(se)


def plot(results_dir):
    res = store.load(results_dir)
    t = res.table
    archs = sorted(set(np.asarray(t["arch"]).tolist()), key=lambda a: -len(a))
    gammas = sorted(set(np.asarray(t["gamma"], float).tolist()))
    fig, axes = plotlib.figure(1, 2, width=3.6, height=3.0)
    ax = axes[0, 0]
    marks = "os^Dv"
    for i, arch in enumerate(archs):
        for j, g in enumerate(gammas):
            m = _ok(t) & (np.asarray(t["arch"]) == arch) & (np.asarray(t["gamma"], float) == g)
            ns, mean, se = _mean_by(t, m, "gap")
            # small horizontal offsets keep the two architectures' error bars apart
            ax.errorbar(ns * (1 + 0.04 * (i - 0.5)), mean, 2 * se, fmt=f"-{marks[j % 5]}", ms=3.5, color=f"C{i}",
                        label=f"{arch} (depth {len(arch.split('-')) - 1}), gamma = {g:g}")
            if i == 0:
                ax.plot(ns, np.tanh(g / (2 * ns)), ["--", "-."][j % 2], color="0.4", lw=0.9,
                        label=f"bound tanh(gamma/(2n)), gamma = {g:g}")
    m = _ok(t)
    ns = np.unique(np.asarray(t["n"], float)[m])
    P = np.unique(np.asarray(t["n_params"])[m])
    ax.plot(ns, np.sqrt(P[0] * np.log(3) / (2 * ns)), ":", color="k", lw=1, label="MI bound sqrt(log 3^P / (2n))")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training-set size n")
    ax.set_ylabel("exact expected gap (Gibbs posterior), +- 2 s.e.")
    ax.set_title(f"ternary ReLU nets, P = {int(P[0])} weights each")
    ax.legend(fontsize=5.5)
    ax = axes[0, 1]
    for i, arch in enumerate(archs):
        m = _ok(t) & (np.asarray(t["arch"]) == arch) & (np.asarray(t["gamma"], float) == gammas[-1])
        ns, te, _ = _mean_by(t, m, "test")
        _, trn, _ = _mean_by(t, m, "train")
        ax.plot(ns, te, "-o", ms=3.5, color=f"C{i}", label=f"{arch}: test")
        ax.plot(ns, trn, "--s", ms=3.5, color=f"C{i}", label=f"{arch}: train")
    ax.set_xscale("log")
    ax.set_xlabel("training-set size n")
    ax.set_ylabel(f"posterior-mean 0-1 loss (gamma = {gammas[-1]:g})")
    ax.set_title("train and (exact) test loss")
    ax.legend(fontsize=6)
    return plotlib.save(fig, results_dir, "gibbs", res.meta)


def claims(results_dir) -> list:
    from jaxbench import report

    res = store.load(results_dir)
    t = res.table
    m = _ok(t)
    gap, se = np.asarray(t["gap"], float)[m], np.asarray(t["gap_se"], float)[m]
    tv, mi = np.asarray(t["bound_tv"], float)[m], np.asarray(t["bound_mi"], float)[m]
    top = gap + 2 * se
    out = [report.check("our O(1/n) Gibbs bound tanh(gamma/(2n)) is above the exact expected gap",
                        f"{int(np.sum(tv >= top))} of {gap.size} rows; min bound / (gap + 2 s.e.) {np.min(tv / top):.2f} "
                        f"(MI bound: {np.min(mi / top):.2f})", "every row", bool(np.all(tv >= top) and np.all(mi >= top)))]
    archs = sorted(set(np.asarray(t["arch"])[m].tolist()), key=lambda a: -len(a))
    slopes = []
    for arch in archs:
        for g in np.unique(np.asarray(t["gamma"], float)[m]):
            k = m & (np.asarray(t["arch"]) == arch) & (np.asarray(t["gamma"], float) == g)
            n = np.asarray(t["n"], float)[k]
            big = n >= 32
            s, _ = plotlib.loglog_slope(n[big], np.asarray(t["gap"], float)[k][big])
            slopes.append((arch, g, s))
    fin = [s for *_, s in slopes if np.isfinite(s)]
    ok = all(-1.25 <= s <= -0.75 for s in fin) if fin else None
    out.append(report.check("the Gibbs algorithm's expected gap decays as O(1/n)",
                            "; ".join(f"{a} gamma={g:g}: slope {s:.2f}" for a, g, s in slopes) + " (log gap vs log n, n >= 32)",
                            "slope in [-1.25, -0.75]", ok))
    if len(archs) == 2:
        deep, wide = archs
        rows, better, sig, te_better = 0, 0, 0, 0
        for keys in sorted({(float(n), float(g), int(s)) for n, g, s in zip(t["n"], t["gamma"], t["seed"])}):
            sel = m & (np.asarray(t["n"], float) == keys[0]) & (np.asarray(t["gamma"], float) == keys[1]) & (np.asarray(t["seed"]) == keys[2])
            a = sel & (np.asarray(t["arch"]) == deep)
            b = sel & (np.asarray(t["arch"]) == wide)
            if a.sum() != 1 or b.sum() != 1:
                continue
            rows += 1
            d = float(t["gap"][b][0] - t["gap"][a][0])
            dse = float(np.hypot(t["gap_se"][a][0], t["gap_se"][b][0]))
            better += d > 0
            sig += d > 2 * dse
            te_better += float(t["test"][a][0]) < float(t["test"][b][0])
        out.append(report.check("deeper-narrower networks generalize better (equal parameter count)",
                                f"{deep} vs {wide}: smaller exact gap in {better} of {rows} (n, gamma, seed) pairs "
                                f"({sig} by > 2 s.e.); but lower test loss in only {te_better} of {rows}",
                                "smaller gap in every pair", better == rows if rows else None, partly=better > rows / 2))
    return out
