"""Figures and claim checks of Experiment 3 on MNIST (`archbound_mnist`), from files only.

* ``mnist_error_and_bound_vs_n``: top row per-point scale (MAE and the mean bounds), bottom row
  the L2 scale (the paper's cost (1/2N) sum |f - y|^2 and (1/2N) sum bound^2); left the
  construction (one line: it is the same function for every architecture, the largest relative
  spread across architectures is printed), right the GD-trained nets, shared y per row. Nets
  that did not fit their training set (`fit`) are drawn hollow and labelled "(not fit)".
* ``mnist_tightness``: bound / error against n (solid per-point scale, dashed L2 scale), with
  references at 1 and 1.22 (the paper's "within 22%"); construction and GD side by side.
* ``mnist_looseness``: where the construction's bound loses: its Lipschitz part and label-gap
  part at the minimizing training point, the actual change of f at the same point, the error;
  the data geometry (sigma_min, |X^+ Y|_op, Chamfer distances); classification errors; the
  Lipschitz upper (product of operator norms) and lower (max Jacobian norm) estimates.

Agreement statistic (docs page): per variant ``margin = bound / error - 1`` (ratio of the means
over the 10,000 test points), averaged over n and seeds per architecture ("on average").
"""

from __future__ import annotations

import numpy as np

from jaxbench import plot as plotlib
from jaxbench import report, store

FIT_CLS, FIT_COST = 0.0, 1e-3  # fit: no training image misclassified and L2 training cost <= 1e-3
PAPER_MARGIN = 0.22


def col(t, name):
    """A column as floats (rows without it, e.g. GD columns of construction-only variants: NaN)."""
    v = np.asarray(t[name])
    if v.dtype.kind in "US":
        return np.array([float(a) if a != "" else np.nan for a in v])
    return v.astype(float)


def numeric(t):
    """The table with GD columns of construction-only rows (stored empty) read as NaN."""
    out = {}
    for k, v in t.items():
        try:
            out[k] = col(t, k) if np.asarray(v).dtype.kind in "US" else v
        except ValueError:  # a genuine text column
            out[k] = v
    return out


def _archs(t, sel):
    return sorted({(int(a), int(b)) for a, b in zip(t["hidden_layers"][sel], t["width"][sel])},
                  key=lambda p: (p[1], p[0]))


def _ok(t):
    return np.asarray(t["rank_ok"], bool) & np.isfinite(col(t, "c_train_cost"))


def _gd(t):
    return (np.asarray(t["gd_steps"]) > 0) & ~np.asarray(t["diverged"], bool)


def fit(t, sel) -> bool:
    """Whether every GD run in ``sel`` interpolated (classification and cost criteria)."""
    return bool(np.all(col(t, "g_train_cls")[sel] <= FIT_CLS) and np.all(col(t, "g_train_cost")[sel] <= FIT_COST))


def spread(t, sel, name) -> float:
    """Largest relative spread of column ``name`` across architectures at equal data (n, seed)."""
    groups = {}
    for i in np.flatnonzero(sel):
        groups.setdefault((int(t["n"][i]), int(t["seed"][i])), []).append(float(col(t, name)[i]))
    s = [(max(v) - min(v)) / abs(np.mean(v)) for v in groups.values() if len(v) > 1]
    return max(s) if s else np.nan


def margins(t, sel, prefix, scale=""):
    """Mean over the variants in ``sel`` of bound / error - 1 (scale "" per point, "_cost" L2)."""
    err = col(t, f"{prefix}_mae" if not scale else f"{prefix}_test_cost")[sel]
    bnd = col(t, f"{prefix}_bound{scale}")[sel]
    return float(np.mean(bnd / err - 1))


def _line(ax, t, sel, col, **kw):
    keys, mean, sem, _ = plotlib.aggregate(t, ["n"], col, where=sel)
    if keys:
        return plotlib.band(ax, [k[0] for k in keys], mean, sem, **kw)
    return None


def _ref(t, ok):
    a = _archs(t, ok)[0]
    return ok & (t["hidden_layers"] == a[0]) & (t["width"] == a[1])


C_CURVES = [("mae", "test error", "black", "-"), ("actual", "actual change at i*", "tab:green", "-."),
            ("bound", "bound (nearest point)", "tab:blue", "--"),
            ("chamfer_bound", "Lip x class-matched Chamfer", "tab:purple", ":"),
            ("apriori", "a priori (bias term)", "tab:red", "--")]


def plot(results_dir):
    res = store.load(results_dir)
    t, meta = numeric(res.table), res.meta
    ok = _ok(t)
    gd = ok & _gd(t)
    ref = _ref(t, ok)
    garchs = _archs(t, gd) if gd.any() else []
    cmap = plotlib.plt.get_cmap("viridis")
    gcol = {a: cmap(0.85 * i / max(len(garchs) - 1, 1)) for i, a in enumerate(garchs)}
    paths = []

    # 1. errors and bounds versus n
    fig, axes = plotlib.figure(2, 2, width=4.4, height=3.2, sharey="row")
    for r, (scale, name) in enumerate([("", "mean over test points of |f(x~) - y~|"),
                                       ("_cost", "L2 cost (1/2N) Σ |·|²")]):
        axc, axg = axes[r]
        for col, label, color, ls in C_CURVES:
            c = f"c_{('test_cost' if col == 'mae' else col + scale) if scale else col}"
            if c in t:
                _line(axc, t, ref, c, color=color, ls=ls, label=label, marker="o", ms=3)
        sp = max(spread(t, ok, "c_mae"), spread(t, ok, "c_bound"), spread(t, ok, "c_test_cost"))
        axc.set_title(f"construction ({len(_archs(t, ok))} architectures, one line)")
        axc.text(0.98, 0.02, f"largest relative spread\nacross architectures {sp:.1e}", transform=axc.transAxes,
                 fontsize=6.5, ha="right", va="bottom")
        for a in garchs:
            sel = gd & (t["hidden_layers"] == a[0]) & (t["width"] == a[1])
            good = fit(t, sel)
            lab = f"L={a[0]}, m={a[1]}" + ("" if good else " (not fit)")
            mfc = gcol[a] if good else "none"
            _line(axg, t, sel, "g_mae" if not scale else "g_test_cost", color=gcol[a], marker="o", ms=3,
                  mfc=mfc, label=f"{lab}: error")
            _line(axg, t, sel, f"g_bound{scale}", color=gcol[a], ls="--", marker="s", ms=3, mfc=mfc,
                  label=f"{lab}: bound")
        _line(axg, t, ref, "c_mae" if not scale else "c_test_cost", color="black", lw=2, label="construction: error")
        axg.set_title("trained by gradient descent (float32)")
        for ax in (axc, axg):
            ax.set_yscale("log")
            ax.set_xlabel("training images n")
            ax.set_ylabel(name)
        axc.legend(fontsize=6, loc="upper left")
        axg.legend(fontsize=6, loc="upper left")
    paths += plotlib.save(fig, results_dir, "mnist_error_and_bound_vs_n", meta)

    # 2. tightness
    fig, axes = plotlib.figure(1, 2, width=4.4, height=3.2, sharey="row")
    axc, axg = np.ravel(axes)
    _line(axc, t, ref, "c_tightness", color="black", marker="o", ms=3, label="bound / MAE")
    _line(axc, t, ref, "c_tightness_cost", color="black", ls="--", marker="s", ms=3, label="bound / L2 cost (L2 scale)")
    for a in garchs:
        sel = gd & (t["hidden_layers"] == a[0]) & (t["width"] == a[1])
        mfc = gcol[a] if fit(t, sel) else "none"
        lab = f"L={a[0]}, m={a[1]}" + ("" if fit(t, sel) else " (not fit)")
        _line(axg, t, sel, "g_tightness", color=gcol[a], marker="o", ms=3, mfc=mfc, label=f"{lab}: / MAE")
        _line(axg, t, sel, "g_tightness_cost", color=gcol[a], ls="--", marker="s", ms=3, mfc=mfc, label=f"{lab}: L2")
    for ax, title in ((axc, "construction (all architectures)"), (axg, "trained by gradient descent")):
        ax.axhline(1.0, color="0.5", lw=0.8)
        ax.axhline(1 + PAPER_MARGIN, color="tab:red", lw=0.9, ls=":", label="1.22 (paper: within 22%)")
        ax.set_yscale("log")
        ax.set_xlabel("training images n")
        ax.set_ylabel("bound / true test error")
        ax.set_title(title)
    axc.legend(fontsize=6, loc="upper left")
    axg.legend(fontsize=5.5, loc="lower center", ncols=2, bbox_to_anchor=(0.5, 0.07))
    paths += plotlib.save(fig, results_dir, "mnist_tightness", meta)

    # 3. looseness decomposition and ingredients
    fig, axes = plotlib.figure(1, 4, width=3.4, height=3.0)
    axes = axes[0]
    ax = axes[0]
    _line(ax, t, ref, "c_bound", color="tab:blue", ls="--", marker="s", ms=3, label="bound = Lip|x~-x_i*| + |y_i* - y~|")
    _line(ax, t, ref, "c_bound_lip_part", color="tab:orange", marker="^", ms=3, label="Lipschitz part Lip|x~-x_i*|")
    _line(ax, t, ref, "c_bound_gap_part", color="tab:brown", marker="v", ms=3, label="label-gap part |y_i* - y~|")
    _line(ax, t, ref, "c_actual", color="tab:green", ls="-.", marker="o", ms=3, label="actual change, same i*")
    _line(ax, t, ref, "c_mae", color="black", marker="o", ms=3, label="test error (MAE)")
    ax.set_yscale("log")
    ax.set_title("construction: where the bound loses")
    ax = axes[1]
    for col, lab in (("sigma_min", "σ_min(X)"), ("m_op", "Lip = |X⁺Y|_op"), ("chamfer", "Chamfer, class-matched"),
                     ("dist_nn", "Chamfer, test → train"), ("chamfer_back", "Chamfer, train → test")):
        _line(ax, t, ref, col, marker="o", ms=3, label=lab)
    ax.set_yscale("log")
    ax.set_title("data geometry")
    ax = axes[2]
    _line(ax, t, ref, "c_cls_err", color="black", marker="o", ms=3, label="construction")
    for a in garchs:
        sel = gd & (t["hidden_layers"] == a[0]) & (t["width"] == a[1])
        _line(ax, t, sel, "g_cls_err", color=gcol[a], marker="o", ms=3, mfc=gcol[a] if fit(t, sel) else "none",
              label=f"GD L={a[0]}, m={a[1]}" + ("" if fit(t, sel) else " (not fit)"))
    ax.set_ylim(0, 1)
    ax.set_title("classification error (10,000 test images)")
    ax = axes[3]
    _line(ax, t, ref, "c_lip", color="black", marker="o", ms=3, label="construction: upper = lower")
    for a in garchs:
        sel = gd & (t["hidden_layers"] == a[0]) & (t["width"] == a[1])
        _line(ax, t, sel, "g_lip", color=gcol[a], marker="o", ms=3, label=f"GD L={a[0]}: ∏|W_l|_op")
        _line(ax, t, sel, "g_lip_lower", color=gcol[a], ls=":", marker="v", ms=3, label=f"GD L={a[0]}: max|J|")
    ax.set_yscale("log")
    ax.set_title("Lipschitz estimates")
    for ax in axes:
        ax.set_xlabel("training images n")
        ax.legend(fontsize=5.5)
    paths += plotlib.save(fig, results_dir, "mnist_looseness", meta)
    return paths


def claims(results_dir) -> list:
    """The paper's claims on MNIST, from the table: regime, exactness, architecture independence,
    validity, and the "within 22% on average" agreement (per-point and L2 scales)."""
    t = numeric(store.load(results_dir).table)
    ok = _ok(t)
    gd = ok & _gd(t)
    n_all = len(t["n"])
    out = [report.check(
        "regime: n <= d = 784 MNIST training images of full rank",
        f"{int(ok.sum())}/{n_all} variants full rank, n = {sorted(set(t['n'][ok].tolist()))}, d = 784",
        "every variant full rank", bool(ok.all()) if n_all else None, partly=bool(ok.any()))]
    out.append(report.check(
        "explicit zero-loss minimizers on MNIST for every depth and width (float64)",
        f"max L2 training cost {np.max(t['c_train_cost'][ok]):.1e}; architectures {_archs(t, ok)}",
        "<= 1e-20", bool(np.max(t["c_train_cost"][ok]) <= 1e-20)))
    sp = max(spread(t, ok, c) for c in ("c_mae", "c_test_cost", "c_cls_err", "c_bound", "c_chamfer_bound"))
    out.append(report.check(
        "the construction's test error and bound do not depend on depth or width",
        f"largest relative spread across {len(_archs(t, ok))} architectures {sp:.1e}", "<= 1e-9", sp <= 1e-9))
    viol = int(np.nansum(col(t, "c_violations")[ok]) + (np.nansum(col(t, "g_violations")[gd]) if gd.any() else 0))
    out.append(report.check(
        "the data-geometry bound holds at every test point (construction and GD nets)",
        f"{viol} violations; smallest bound / error {np.min(t['c_ratio_min'][ok]):.2f} (construction)"
        + (f", {np.min(col(t, 'g_ratio_min')[gd]):.2f} (GD)" if gd.any() else ""), "0 violations", viol == 0))
    m1, m2 = margins(t, ok, "c"), margins(t, ok, "c", "_cost")
    per_n = ", ".join(f"n={n}: {margins(t, ok & (t['n'] == n), 'c'):.1f}" for n in sorted(set(t["n"][ok].tolist())))
    act = float(np.mean(col(t, "c_actual")[ok] / col(t, "c_mae")[ok] - 1))
    out.append(report.check(
        "on MNIST the bound agrees with the true test error within 22% on average",
        f"construction: mean margin bound/error - 1 = {m1:.2f} per point ({per_n}), {m2:.1f} on the L2 scale; "
        f"with the actual change |f(x~) - f(x_i*)| in place of Lip |x~ - x_i*| (not a norm bound): {act:.2f}",
        "mean margin <= 0.22", m1 <= PAPER_MARGIN))
    if gd.any():
        rows = []
        for a in _archs(t, gd):
            sel = gd & (t["hidden_layers"] == a[0]) & (t["width"] == a[1])
            rows.append(f"L={a[0]}, m={a[1]}: {margins(t, sel, 'g'):.1f}" + ("" if fit(t, sel) else " (not fit)"))
        out.append(report.check(
            "the same bound on GD-trained nets of these architectures is within 22% on average",
            "mean margin per point: " + "; ".join(rows), "mean margin <= 0.22",
            margins(t, gd, "g") <= PAPER_MARGIN))
    return out
