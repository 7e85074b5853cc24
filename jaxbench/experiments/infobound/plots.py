"""Figures of the `info_bounds` experiment (read only from the results directory)."""

from __future__ import annotations

import numpy as np

from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from jaxbench import plot as plotlib
from jaxbench import store


def _levels(t, col, sel) -> list:
    """The sorted distinct values of column ``col`` in the rows ``sel``."""
    return sorted(set(np.asarray(t[col])[sel].tolist()))


def _rows(t, **eq):
    mask = np.ones(len(t["variant"]), bool)
    for k, v in eq.items():
        mask &= np.asarray(t[k]) == v
    return mask & ~np.asarray(t["diverged"], bool)


def _layer_stats(arrays, key, mask, depth):
    """Mean and standard error over the selected variants of a per-layer array (length depth+1)."""
    a = np.asarray(arrays[key][mask, : depth + 1], float)
    n = max(a.shape[0], 1)
    se = a.std(0, ddof=1) / np.sqrt(n) if a.shape[0] > 1 else np.zeros(a.shape[1])
    return a.mean(0), se


def _gap(t, mask):
    g = np.asarray(t["gap"], float)[mask]
    se = np.sqrt(np.mean(np.asarray(t["gap_se"], float)[mask] ** 2) / max(g.size, 1))
    return g.mean(), se


def _log(ax, axis="y"):
    """Log scale with ticks at 1, 2, 5 x 10^k in plain numbers (no overlapping minor labels)."""
    (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
    a = ax.yaxis if axis == "y" else ax.xaxis
    lo, hi = ax.get_ylim() if axis == "y" else ax.get_xlim()
    wide = lo > 0 and hi / lo > 10**2.5  # over ~3 decades 1-2-5 labels crowd: decades only
    a.set_major_locator(LogLocator(base=10, subs=(1.0,) if wide else (1.0, 2.0, 5.0)))
    a.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    a.set_minor_formatter(NullFormatter())


def _grid(n, ncols=3, **kw):
    """Panels for n items on a grid of at most ncols columns; returns (fig, flat axes)."""
    rows = -(-n // ncols)
    fig, axes = plotlib.figure(rows, min(n, ncols), **kw)
    axes = np.atleast_1d(axes).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes


def _layer_ticks(ax, depth):
    ax.set_xticks(range(depth + 1), [*map(str, range(depth)), "out"])
    ax.set_xlabel("layer l  (out = output margin)")


def _bounds_vs_layer(res, results_dir, noise_ref):
    t, a = res.table, res.arrays
    depths = _levels(t, "depth", _rows(t, model="linear"))
    fig, axes = _grid(len(depths), width=3.0, height=2.6, sharey=True)
    for ax, L in zip(axes, depths):
        m = _rows(t, model="linear", depth=L, noise=noise_ref)
        x = np.arange(L + 1)
        for key, label, c in (("kl_bound", "KL bound", "C0"), ("w1_bound", "W1 bound", "C1")):
            mean, se = _layer_stats(a, key, m, L)
            plotlib.band(ax, x, mean, se, label=label, color=c)
        g, gse = _gap(t, m)
        ax.axhline(g, color="k", lw=1.2, label="MC gap")
        ax.axhspan(g - 2 * gse, g + 2 * gse, color="k", alpha=0.12, lw=0)
        f = np.round(np.asarray(t["funnel"])[m]).astype(int)
        if f.size:
            fl = np.bincount(f).argmax()
            mean, _ = _layer_stats(a, "w1_bound", m, L)
            ax.plot(fl, mean[fl], "*", color="C3", ms=11, label="funnel (internal argmin)")
        _log(ax)
        _layer_ticks(ax, L)
        ax.set_title(f"depth L = {L}")
        ax.set_ylabel(f"bound on E[gap]  (s = {noise_ref:g})")
    axes[0].legend(fontsize=6.5)
    return plotlib.save(fig, results_dir, "bounds_vs_layer", res.meta)


def _terms_vs_layer(res, results_dir):
    t, a = res.table, res.arrays
    lin = _rows(t, model="linear")
    depths = _levels(t, "depth", lin)
    noises = _levels(t, "noise", lin)
    rows = (("kl_term", "KL term  I(w; T_l, Y_i)  [nats]"), ("w1_term", "W1 term  E_w W1(P_{U_l|w}, P_U)"),
            ("lip", "Lipschitz factor  E|G_l^T w|"))
    fig, axes = plotlib.figure(3, len(depths), width=2.6, height=2.2, sharex="col")
    axes = np.asarray(axes).reshape(3, len(depths))
    for j, L in enumerate(depths):
        for i, (key, label) in enumerate(rows):
            ax = axes[i, j]
            for c, s in enumerate(noises):
                m = _rows(t, model="linear", depth=L, noise=s)
                mean, se = _layer_stats(a, key, m, L)
                plotlib.band(ax, np.arange(L + 1), mean, se, label=f"s = {s:g}", color=f"C{c}")
            _log(ax)
            if j == 0:
                ax.set_ylabel(label, fontsize=7)
            if i == 0:
                ax.set_title(f"depth L = {L}")
            if i == 2:
                _layer_ticks(ax, L)
    axes[0, 0].legend(fontsize=6)
    return plotlib.save(fig, results_dir, "terms_vs_layer", res.meta)


def _funnel(res, results_dir):
    t = res.table
    models = [m for m in ("linear", "relu") if _rows(t, model=m).any()]
    fig, axes = plotlib.figure(1, 1 + len(models), width=3.3, height=2.8)
    axes = np.atleast_1d(axes).ravel()
    for ax, model in zip([axes[0], axes[-1]] if len(models) == 2 else axes[:1], models):
        m = _rows(t, model=model)
        noises = _levels(t, "noise", m)
        for c, s in enumerate(noises):
            keys, mean, sem, _ = plotlib.aggregate(t, ["depth"], "funnel", where=_rows(t, model=model, noise=s))
            off = 0.08 * (c - (len(noises) - 1) / 2)  # series that coincide stay visible side by side
            plotlib.band(ax, [k[0] + off for k in keys], mean, sem, color=f"C{c}", label=f"s = {s:g}",
                         marker="os^Dv"[c % 5], ms=4)
        d_all = np.unique(np.asarray(t["depth"])[m])
        ax.plot(d_all, d_all - 1, ":", color="0.4", label="last hidden layer L-1")
        ax.set_xticks(d_all, [str(v) for v in d_all])
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("depth L")
        ax.set_ylabel("funnel layer (argmin over l < L)")
        ax.set_title(f"{model} networks: funnel vs depth")
        ax.legend(fontsize=6)
    if "linear" in models:
        ax = axes[1]
        m = _rows(t, model="linear")
        noises = _levels(t, "noise", m)
        Ls = _levels(t, "depth", m)
        for c, L in enumerate(Ls):
            keys, mean, sem, _ = plotlib.aggregate(t, ["noise"], "funnel", where=_rows(t, model="linear", depth=L))
            off = 10 ** (0.015 * (c - (len(Ls) - 1) / 2))
            plotlib.band(ax, [k[0] * off for k in keys], mean, sem, color=f"C{c}", label=f"L = {L}",
                         marker="os^Dv"[c % 5], ms=4)
        _log(ax, "x")
        ax.set_xticks(noises, [f"{v:g}" for v in noises])
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("injected noise s")
        ax.set_ylabel("funnel layer")
        ax.set_title("linear networks: funnel vs noise")
        ax.legend(fontsize=6, ncols=2)
    return plotlib.save(fig, results_dir, "funnel", res.meta)


def _bounds_vs_gap(res, results_dir):
    """One panel per bound; colour encodes the injected noise s, the marker the depth L."""
    t = res.table
    m = _rows(t, model="linear")
    fig, axes = plotlib.figure(1, 3, width=3.0, height=2.9, sharex=True, sharey=True)
    axes = np.atleast_1d(axes).ravel()
    gap = np.asarray(t["gap"], float)
    noises = _levels(t, "noise", m)
    depths = _levels(t, "depth", m)
    marks = "os^Dv<>p"
    lo = np.nanmin(gap[m][gap[m] > 0]) if (gap[m] > 0).any() else 1e-3
    hi = np.nanmax(np.asarray(t["kl_bound_min"], float)[m])
    for ax, (key, label) in zip(axes, (("kl_bound_min", "min over layers of the KL bound"),
                                       ("w1_bound_min", "min over internal layers of the W1 bound"),
                                       ("w1_bound_out", "W1 bound at the output margin"))):
        for c, sv in enumerate(noises):
            for j, L in enumerate(depths):
                k = _rows(t, model="linear", noise=sv, depth=L)
                ax.scatter(gap[k], np.asarray(t[key], float)[k], s=16, color=f"C{c}", marker=marks[j % len(marks)],
                           alpha=0.8, label=f"s = {sv:g}" if j == 0 else None)
        ax.plot([lo, hi], [lo, hi], "k:", lw=1)
        _log(ax, "x")
        _log(ax)
        ax.set_xlabel("Monte Carlo expected gap")
        ax.set_title(label, fontsize=8)
    axes[0].set_ylabel("bound (dotted: bound = gap)")
    # legends in the empty corner below the diagonal (no bound lies below the gap); the depth
    # handles are free-standing artists, not empty scatters added to the first panel
    h1 = [Line2D([], [], ls="", color="0.3", marker=marks[j % len(marks)], ms=4, label=f"L = {L}")
          for j, L in enumerate(depths)]
    axes[0].legend(fontsize=6, loc="lower right", title="colour: noise", title_fontsize=6)
    axes[1].legend(handles=h1, fontsize=6, loc="lower right", title="marker: depth", title_fontsize=6)
    return plotlib.save(fig, results_dir, "bounds_vs_gap", res.meta)


def _relu(res, results_dir):
    t, a = res.table, res.arrays
    rel = _rows(t, model="relu")
    depths = _levels(t, "depth", rel)
    noises = _levels(t, "noise", rel)
    fig, axes = plotlib.figure(4, len(depths), width=2.9, height=2.1, sharex="col")
    axes = np.asarray(axes).reshape(4, len(depths))
    for j, L in enumerate(depths):
        for c, s in enumerate(noises):
            m = _rows(t, model="relu", depth=L, noise=s)
            kw = {"color": f"C{c}", "label": f"s = {s:g}", "marker": "os^D"[c % 4]}
            x = np.arange(L + 1) + 0.08 * (c - (len(noises) - 1) / 2)  # offsets keep every series visible
            mean, se = _layer_stats(a, "w1_term", m, L)
            plotlib.band(axes[0, j], x, mean, se, **kw)
            axes[0, j].plot(x, _layer_stats(a, "w1_null", m, L)[0], ls="--", color=f"C{c}", lw=1)
            mean, se = _layer_stats(a, "w1_excess", m, L)
            plotlib.band(axes[1, j], x, mean, se, **kw)
            mean, se = _layer_stats(a, "w1_bound", m, L)
            plotlib.band(axes[2, j], x, mean, se, **kw)
            if "w1_bound_debiased" in a:
                deb = _layer_stats(a, "w1_bound_debiased", m, L)[0]
                axes[2, j].plot(x, np.where(deb > 0, deb, np.nan), ls="--", color=f"C{c}", lw=1)
            axes[2, j].axhline(_gap(t, m)[0], color=f"C{c}", lw=0.8, ls=":")
            kl, kse = _layer_stats(a, "kl_term", m, L)
            plotlib.band(axes[3, j], x, kl - _layer_stats(a, "kl_null", m, L)[0], kse, **kw)
        axes[0, j].set_title(f"ReLU, depth L = {L}")
        for i in (0, 2):
            _log(axes[i, j])
        for i in (1, 3):
            axes[i, j].axhline(0.0, color="k", lw=0.8)
        _layer_ticks(axes[3, j], L)
    axes[0, 0].set_ylabel("W1(train, test), exact OT\n(dashed: test vs test)", fontsize=7)
    axes[1, 0].set_ylabel("W1 excess over\ntest-vs-test baseline", fontsize=7)
    axes[2, 0].set_ylabel("Lip x W1 (plug-in; dashed: debiased)\n(dotted: MC gap)", fontsize=7)
    axes[3, 0].set_ylabel("Gaussian-fit KL excess\nover test-vs-test", fontsize=7)
    axes[0, 0].legend(fontsize=6)
    return plotlib.save(fig, results_dir, "relu_w1", res.meta)


def plot(results_dir):
    res = store.load(results_dir)
    t = res.table
    paths = []
    if _rows(t, model="linear").any():
        noises = _levels(t, "noise", _rows(t, model="linear"))
        paths += _bounds_vs_layer(res, results_dir, noises[len(noises) // 2])
        paths += _terms_vs_layer(res, results_dir)
        paths += _bounds_vs_gap(res, results_dir)
    paths += _funnel(res, results_dir)
    if _rows(t, model="relu").any():
        paths += _relu(res, results_dir)
    return paths
