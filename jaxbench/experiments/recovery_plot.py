"""Figures of the local-recovery experiment (`jaxbench.experiments.recovery`), read from files.

* ``recovery_n_eps``: recovered fraction over n / (k (d + 1)) x log10 epsilon, one panel per m
  (tanh, local init; the denominator of each cell is its number of seeds).
* ``recovery_n_m``: recovered fraction over n / (k (d + 1)) x m at one epsilon, tanh and relu.
* ``test_error``: median relative test MSE against n / (k (d + 1)), one line per epsilon, with
  the recovery tolerance; and the distance travelled.
* ``convergence``: median loss curves for several n, and the fitted rates against n.
* ``random_init``: from random initialisation, fraction of zero-train-loss solutions that
  generalize, and the split of all runs into generalizing / overfitting / not interpolated.
"""

from __future__ import annotations

import numpy as np

from jaxbench import plot as plotlib
from jaxbench import store


def _ratio(t, meta):
    fixed = meta["config"]["fixed"]
    k, d = fixed.get("k", 2), fixed.get("d", 5)
    return np.asarray(t["n"]) / (k * (d + 1)), f"n / (k(d+1)),  k(d+1) = {k * (d + 1)}"


def _pick_eps(eps_values):
    """The epsilon used where one is needed: 0.03 if swept, else the median one."""
    eps = sorted(eps_values)
    return 0.03 if any(np.isclose(eps, 0.03)) else eps[len(eps) // 2]


def _median_by(x, v, sel):
    xs = np.unique(x[sel])
    med = [np.nanmedian(v[sel & (x == xv)]) for xv in xs]
    q = [np.nanquantile(v[sel & (x == xv)], [0.25, 0.75]) for xv in xs]
    return xs, np.array(med), np.array(q)


def plot(results_dir):
    res = store.load(results_dir)
    t, meta, arrays = dict(res.table), res.meta, res.arrays
    t["ratio"], ratio_label = _ratio(t, meta)
    t["log10_eps"] = np.round(np.log10(np.maximum(np.asarray(t["epsilon"], float), 1e-300)), 1)
    ok = ~np.asarray(t["diverged"])
    tanh, relu = ok & (t["activation"] == "tanh"), ok & (t["activation"] == "relu")
    local, rand = t["init"] == "local", t["init"] == "random"
    rec = np.asarray(t["recovered"], float)
    t["recovered_f"] = rec
    paths = []
    fixed = meta["config"]["fixed"]
    tol = f"test MSE/Var f* <= {fixed.get('rec_tol', 1e-6):g}"
    if len(np.unique(t["split"])) > 1:  # the "branches" preset: one question, one figure
        return _plot_branches(t, meta, results_dir, ratio_label, tol)

    # 1. recovered / zero-train-loss-but-not-recovered fractions over n x log10 epsilon, per m
    ms = np.unique(t["m"][tanh & local]) if (tanh & local).any() else []
    t["overfits_f"] = np.asarray(t["overfits"], float)
    if len(ms):
        fig, axes = plotlib.figure(2, len(ms), width=3.3, height=2.6)
        axes = np.asarray(axes).reshape(2, len(ms))
        for col, m in enumerate(ms):
            sel = tanh & local & (t["m"] == m)
            for row, (value, label) in enumerate((("recovered_f", "recovered fraction"),
                                                  ("overfits_f", "zero train loss, not recovered"))):
                xs, ys, Z = plotlib.grid_of(t, "ratio", "log10_eps", value, where=sel)
                plotlib.heatmap(axes[row, col], xs, ys, Z, xlabel=ratio_label, ylabel="log10 epsilon",
                                cbar_label=label, vmin=0, vmax=1, cmap="viridis" if row == 0 else "magma")
            axes[0, col].set_title(f"tanh, m = {m}, local init: recovered", fontsize=8)
            axes[1, col].set_title(f"m = {m}: reached train loss <= tol, test not", fontsize=8)
        fig.suptitle(f"recovered: {tol}; the rest of each cell had not reached the train tolerance "
                     f"by t = {_horizon(fixed)}", fontsize=8)
        paths += plotlib.save(fig, results_dir, "recovery_n_eps", meta)

    # 2. recovered fraction over n x m at one epsilon: tanh (theory) and relu (out of theory)
    acts = [(a, s) for a, s in (("tanh", tanh), ("relu (out of theory)", relu)) if (s & local).any()]
    if acts:
        fig, axes = plotlib.figure(1, len(acts), width=3.6, height=2.8)
        for ax, (name, s) in zip(np.atleast_1d(axes).ravel(), acts):
            eps = _pick_eps(np.unique(t["epsilon"][s & local]))
            sel = s & local & np.isclose(t["epsilon"], eps)
            xs, ys, Z = plotlib.grid_of(t, "ratio", "m", "recovered_f", where=sel)
            plotlib.heatmap(ax, xs, ys, Z, xlabel=ratio_label, ylabel="student width m",
                            cbar_label="recovered fraction", vmin=0, vmax=1)
            ax.set_title(f"{name}, epsilon = {eps:g}, local init", fontsize=8)
        paths += plotlib.save(fig, results_dir, "recovery_n_m", meta)

    # 3. the continuous quantity behind the flag, and the distance travelled
    if (tanh & local).any():
        m_show = ms[len(ms) // 2]
        fig, axes = plotlib.figure(1, 2, width=3.6, height=2.9)
        for eps in np.unique(t["epsilon"][tanh & local]):
            sel = tanh & local & (t["m"] == m_show) & np.isclose(t["epsilon"], eps)
            xs, med, q = _median_by(t["ratio"], np.asarray(t["test_mse"], float), sel)
            line, = axes[0, 0].plot(xs, med, marker="o", label=f"ε = {eps:g}")
            axes[0, 0].fill_between(xs, q[:, 0], q[:, 1], color=line.get_color(), alpha=0.15, lw=0)
            xs, med, q = _median_by(t["ratio"], np.asarray(t["path_length"], float), sel)
            axes[0, 1].plot(xs, med, marker="o", color=line.get_color(), label=f"ε = {eps:g}")
        axes[0, 0].axhline(fixed.get("rec_tol", 1e-6), color="k", ls=":", lw=1, label="rec_tol")
        axes[0, 0].set_ylabel("test MSE / Var f*  (median, IQR)")
        axes[0, 1].set_ylabel("path length / ||θ*||  (median)")
        for ax in axes[0]:
            ax.set_yscale("log")
            ax.set_xscale("log", base=2)
            ax.axvline(1.0, color="0.5", ls="--", lw=0.8)
            ax.set_xlabel(ratio_label)
        axes[0, 0].set_title(f"tanh, m = {m_show}, local init, t = {_horizon(fixed)}", fontsize=8)
        axes[0, 1].set_title("distance travelled by gradient descent", fontsize=8)
        axes[0, 0].legend(fontsize=6)
        paths += plotlib.save(fig, results_dir, "test_error", meta)

        # 4. convergence: median curves for several n; fitted rates against n
        eps = _pick_eps(np.unique(t["epsilon"][tanh & local]))
        base = tanh & local & np.isclose(t["epsilon"], eps)
        fig, axes = plotlib.figure(1, 3, width=3.2, height=2.8)
        ct, cl = arrays["curve_t"], arrays["curve_loss"]
        ns = np.unique(t["n"][base])
        kd1 = t["n"][0] / t["ratio"][0]
        shown = sorted({ns[0], ns[np.argmin(np.abs(ns - kd1))], ns[-1]})  # smallest, ~k(d+1), largest
        for n, color in zip(shown, ("tab:red", "tab:purple", "tab:blue")):
            for j, i in enumerate(np.flatnonzero(base & (t["m"] == m_show) & (t["n"] == n))):
                new = np.concatenate([[False], np.diff(ct[i]) > 0])  # drop t = 0 and repeats after the stop
                axes[0, 0].plot(ct[i][new], cl[i][new], color=color, lw=0.7, alpha=0.7,
                                label=f"n = {n}" if j == 0 else None)
        axes[0, 0].set(xscale="log", yscale="log", xlabel="time t = steps · lr",
                       ylabel="train loss / Var f*  (each seed)")
        axes[0, 0].set_title(f"tanh, m = {m_show}, ε = {eps:g}", fontsize=8)
        axes[0, 0].legend(fontsize=6)
        for m in ms:
            sel = base & (t["m"] == m)
            for ax, col in ((axes[0, 1], "rate_pow"), (axes[0, 2], "rate_exp")):
                keys, mean, sem, _ = plotlib.aggregate(t, ["ratio"], col, where=sel)
                plotlib.band(ax, [kk[0] for kk in keys], mean, sem, label=f"m = {m}")
        axes[0, 1].set_ylabel("p in  loss ~ t^(-p)  (late-time fit)")
        axes[0, 2].set_ylabel("r in  loss ~ exp(-r t)  (late-time fit)")
        for ax in axes[0, 1:]:
            ax.set_xscale("log", base=2)
            ax.set_xlabel(ratio_label)
            ax.axvline(1.0, color="0.5", ls="--", lw=0.8)
        axes[0, 2].set_yscale("log")
        axes[0, 1].legend(fontsize=6)
        axes[0, 1].set_title("power-law exponent (mean ± s.e.)", fontsize=8)
        axes[0, 2].set_title("exponential rate (mean ± s.e.)", fontsize=8)
        paths += plotlib.save(fig, results_dir, "convergence", meta)

    # 5. random initialisation: do zero-train-loss solutions generalize?
    acts = [(a, s) for a, s in (("tanh", tanh), ("relu (out of theory)", relu)) if (s & rand).any()]
    if acts:
        fig, axes = plotlib.figure(1, 1 + len(acts), width=3.3, height=2.8)
        for name, s in acts:
            sel = s & rand  # pooled over m: seeds per m are few
            xs = np.unique(t["ratio"][sel])
            interp = np.array([t["interpolated"][sel & (t["ratio"] == x)].sum() for x in xs])
            gen = np.array([t["generalizes"][sel & (t["ratio"] == x)].sum() for x in xs])
            frac = np.where(interp > 0, gen / np.maximum(interp, 1), np.nan)
            line, = axes[0, 0].plot(xs, frac, marker="o", ls="-" if name == "tanh" else ":", label=name)
            for x, f, g_, i_ in zip(xs, frac, gen, interp):
                if i_:
                    axes[0, 0].annotate(f"{g_}/{i_}", (x, f), fontsize=5, color=line.get_color(),
                                        xytext=(2, 4 if name == "tanh" else -8), textcoords="offset points")
        axes[0, 0].set(xlabel=ratio_label, ylim=(-0.05, 1.1), ylabel="P(recovered | zero train loss)")
        axes[0, 0].set_xscale("log", base=2)
        axes[0, 0].axvline(1.0, color="0.5", ls="--", lw=0.8)
        axes[0, 0].set_title("random init: zero-train-loss runs that generalize\n(all m pooled; labels: "
                             "generalizing / zero train loss)", fontsize=7)
        axes[0, 0].legend(fontsize=6)
        for ax, (name, s) in zip(axes[0, 1:], acts):
            sel = s & rand
            xs = np.unique(t["ratio"][sel])
            parts = [("generalizes", "tab:green", "zero train loss, recovered"),
                     ("overfits", "tab:red", "zero train loss, not recovered")]
            bottom = np.zeros(len(xs))
            pos = np.arange(len(xs))
            for col, color, label in parts:
                f = np.array([np.mean(t[col][sel & (t["ratio"] == x)]) for x in xs])
                ax.bar(pos, f, bottom=bottom, color=color, label=label)
                bottom += f
            ax.bar(pos, 1 - bottom, bottom=bottom, color="0.8", label="no zero train loss by t_max")
            ax.set_xticks(pos, [f"{x:.2g}" for x in xs])
            ax.set(xlabel=ratio_label, ylabel="fraction of runs (all m, seeds)", ylim=(0, 1))
            ax.set_title(f"{name}, random init, t = {_horizon(fixed)}", fontsize=8)
            ax.legend(fontsize=5, loc="upper left")
        paths += plotlib.save(fig, results_dir, "random_init", meta)
    return paths


def _plot_branches(t, meta, results_dir, ratio_label, tol):
    """Recovered fraction against n for each branch of Q* (split), with its local model rank.

    At a split point the Jacobian's rank (tanh, generic w) is k (d + 1) plus one per zero-output
    neuron (its a-derivative sigma(w_i . x) is a new feature; its w-derivative vanishes with a_i
    = 0): ``k (d + 1) + (m - k - round(split (m - k)))``.
    """
    fixed = meta["config"]["fixed"]
    k, d = fixed.get("k", 2), fixed.get("d", 5)
    fig, ax = plotlib.figure(1, 1, width=4.6, height=3.2)
    sel0 = ~np.asarray(t["diverged"]) & (t["init"] == "local")
    colors = ["tab:red", "tab:purple", "tab:blue", "tab:green", "tab:orange"]
    for color, sp in zip(colors, np.unique(t["split"][sel0])):
        m = np.unique(t["m"][sel0 & (t["split"] == sp)])
        if len(m) != 1:
            raise ValueError("the branches figure needs a single m")
        zero_out = int(m[0] - k - np.round(sp * (m[0] - k)))
        rank = k * (d + 1) + zero_out
        for ls, eps in zip(("-", "--", ":"), np.unique(t["epsilon"][sel0])):
            sel = sel0 & (t["split"] == sp) & np.isclose(t["epsilon"], eps)
            keys, mean, sem, _ = plotlib.aggregate(t, ["ratio"], "recovered_f", where=sel)
            ax.plot([kk[0] for kk in keys], mean, marker="o", ls=ls, color=color,
                    label=f"split {sp:g} ({zero_out} zero-output), ε = {eps:g}")
        ax.axvline(rank / (k * (d + 1)), color=color, lw=0.8, alpha=0.6)
    ax.set(xlabel=ratio_label, ylabel="recovered fraction", ylim=(-0.05, 1.05))
    ax.set_title(f"tanh, m = {int(m[0])}: branches of Q* (vertical: local rank k(d+1) + #zero-output)\n"
                 f"{tol}", fontsize=7)
    ax.legend(fontsize=5.5)
    return plotlib.save(fig, results_dir, "recovery_branches", meta)


def _horizon(fixed):
    return f"{fixed.get('steps', 20000) * fixed.get('lr', 0.2):g}"
