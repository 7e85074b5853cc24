"""Figure of the MNIST separation sweep (`mnist`), reading results files only."""

from __future__ import annotations

import numpy as np

from jaxbench import plot as plotlib
from jaxbench import store


def plot(results_dir):
    res = store.load(results_dir)
    t, a, meta = res.table, res.arrays, res.meta
    fig, axes = plotlib.figure(1, 3, width=3.6, height=3.1)
    h, s, c = axes[0]
    big = np.max(t["n"])
    rows = np.flatnonzero(t["n"] == big)
    diff = np.concatenate([a["nn_diff"][i][: big] for i in rows])
    same = np.concatenate([a["nn_same"][i][: big] for i in rows])
    bins = np.linspace(0, max(diff.max(), same.max()) * 1.02, 60)
    c1, _, _ = h.hist(same, bins, alpha=0.6, label="to the nearest same-label image")
    c2, _, _ = h.hist(diff, bins, alpha=0.6, label="to the nearest other-label image")
    h.set_ylim(0, 1.55 * max(c1.max(), c2.max()))  # room for the legend above the bars
    h.axvline(np.min(t["sep_min"][rows]), color="k", ls=":", lw=1, label="δ (smallest other-label distance)")
    h.axvline(np.mean(t["median_dist"][rows]), color="0.5", ls="--", lw=1, label="median pairwise distance")
    h.set_xlabel(f"distance (unit-norm pixel vectors), n = {big}")
    h.set_ylabel(f"images ({len(rows)} subsets pooled)")
    h.legend(fontsize=6.5)
    for col, lab, kw in [("sep_min", "δ: smallest other-label distance", {"marker": "o"}),
                         ("nn_diff_q01", "1% quantile of nn_diff", {"marker": "s"}),
                         ("nn_diff_med", "median nn_diff", {"marker": "^"}),
                         ("nn_same_med", "median nn_same", {"marker": "v", "ls": "--"}),
                         ("margin_med", "median 1-NN margin", {"marker": "D", "ls": ":"})]:
        plotlib.line(s, t, "n", col, np.ones(len(t["n"]), bool), label=lab, **kw)
    s.set_xscale("log", base=2)
    s.set_xlabel("subset size n (random, per seed)")
    s.set_ylabel("distance (unit-norm pixel vectors)")
    s.set_title(f"mean ± s.e. over {len(np.unique(t['seed']))} subsets per n;\nmedian pairwise "
                f"distance {np.mean(t['median_dist']):.2f}", fontsize=7.5)
    s.legend(fontsize=6.5)
    cm = np.nanmean(np.stack([a["class_min"][i] for i in rows]), axis=0)
    plotlib.heatmap(c, np.arange(10), np.arange(10), cm, xlabel="digit", ylabel="digit",
                    cbar_label="smallest distance between the two digits", cmap="viridis", fmt="{:.2f}")
    c.set_title(f"n = {big}, mean over subsets (diagonal: same digit)", fontsize=8)
    return plotlib.save(fig, results_dir, "mnist_separation", meta)
