"""Benign overfitting of deep ReLU networks under lazy (NTK) training: classification.

Source: Zhu, Liu, Chrysos, Locatello, Cevher, "Benign Overfitting in Deep Neural Networks under
Lazy Training", ICML 2023, arXiv 2305.19377. Claim (abstract): in the lazy regime, deep ReLU
networks trained on well-separated data with label noise interpolate the noisy training set and
still reach Bayes-optimal test error; smoother interpolators (smaller Lipschitz constant)
generalize better. The regression half of the claim is `benign_regression`.

Our setting (a reconstruction, not the paper's exact constants): x uniform on S^{d-1} with
margin ``|<e_1, x>| >= gamma``, clean label ``sign(x_1)``, training labels flipped with rate eta
(`jaxbench.data.separated_sphere`; test points have the same law). A depth-L ReLU MLP (L dense
layers, hidden width m, NTK parametrization, output ``f = alpha * h``) trained by full-batch
gradient descent on the logistic (or square) loss with step ``lr / alpha^2`` (so the
function-space dynamics do not depend on alpha, which only sets the initialization noise and the
laziness, as in Chizat, Oyallon, Bach 2019), until the training error is 0 (parameters frozen
there) or the step cap.

Per variant: training error and steps to interpolate; clean and noisy test error (the Bayes
error is eta on noisy labels and 0 on clean ones); excess risk = noisy test error - eta, and its
expectation over test-label noise given the classifier, ``(1 - 2 eta) * clean error``; laziness:
relative weight movement ``max_l |W_l(T) - W_l(0)|_F / |W_l(0)|_F`` and NTK drift
``|Theta_T - Theta_0|_F / |Theta_0|_F`` (empirical NTK of ``h`` on the training set); the
smallest eigenvalue of ``Theta_0`` and of the infinite-width NTK Gram matrix; Lipschitz
estimates of the final f (lower: max input-gradient norm over test and random sphere points;
upper: alpha * product of layer operator norms); and two infinite-width references on the same
data: ``ntk_limit_*`` runs the same gradient descent (loss, step, step cap, stopping rule) in
function space with the infinite-width NTK, from the network's own initial outputs (the lazy
limit of this very run), and ``ntk_interp_*`` is the minimum-norm NTK interpolator of the noisy
labels (zero initial function).
"""

from __future__ import annotations

import functools

import numpy as np

import jax
import jax.numpy as jnp

from jaxbench import bounds, data, mlp, ntk, store
from jaxbench import plot as plotlib
from jaxbench import train as trainlib
from jaxbench.experiments import in_range, one_of, positive, static

NAME = "benign_overfitting"

PARAMS = {
    "width": positive(int),
    "depth": positive(int, default=3),
    "n": positive(int, default=128),
    "n_test": positive(int, default=2048),
    "d": static(int, 16, lambda v: v >= 2, "must be >= 2"),
    "steps": positive(int, default=1000),
    "n_log": positive(int, default=16),
    "n_lip": positive(int, default=256),
    "loss": one_of("logistic", "square", default="logistic"),
    "parametrization": one_of("ntk", "standard", default="ntk"),
    "eta": in_range(0.0, 0.5, default=0.0),
    "gamma": in_range(0.0, 0.99, default=0.1),
    "lr": positive(float, default=2.0, kind="traced"),
    "alpha": positive(float, default=1.0, kind="traced"),
}


def spec_of(s) -> mlp.MLPSpec:
    """Depth-L MLP with L-1 hidden layers of width m, scalar output."""
    return mlp.MLPSpec(s.d, (s.width,) * (s.depth - 1), 1, parametrization=s.parametrization)


# ----------------------------------------------------------------------------- shared measures

def errors(f, y_clean, y, eta) -> dict:
    """0/1 test errors of ``sign(f)`` (f = 0 counts as an error, as in `train`).

    f, y_clean, y: ``(m,)``. The noisy-label error of any classifier is, in expectation over the
    independent flips, ``eta + (1 - 2 eta) * clean error``; so the Bayes error is eta and the
    expected excess risk given the classifier is ``(1 - 2 eta) * clean error``.
    """
    clean = jnp.mean(jnp.sign(f) != y_clean)
    noisy = jnp.mean(jnp.sign(f) != y)
    return {"clean_test_err": clean, "noisy_test_err": noisy, "excess_risk": noisy - eta,
            "excess_risk_clean": (1 - 2 * eta) * clean}


def laziness(spec, params0, params, x, dep=()) -> dict:
    """Weight movement, NTK drift and lambda_min of the initial empirical NTK of h on x (n, d)."""
    f = functools.partial(mlp.apply, spec)
    k0 = ntk.empirical_ntk(f, params0, x, method="structured")
    k1 = ntk.empirical_ntk(f, params, x, method="structured")
    return {"weight_move": mlp.relative_movement(params, params0),
            "ntk_drift": jnp.linalg.norm(k1 - k0) / jnp.linalg.norm(k0),
            "ntk_min_eig": ntk.min_eigenvalue(bounds.after(k0, dep))}


def lipschitz_upper(spec, params, alpha, dep=()):
    """``|alpha| prod_l |W_l|_op``, as `bounds.lipschitz_upper`, with one SVD per layer, run one
    after another (`bounds.after`: two batched LAPACK calls at once can deadlock XLA:CPU), and
    none for the one-column output layer (its operator norm is its Euclidean norm). Cheaper than
    `bounds.layer_op_norms`, which pads every layer to the largest shape for one batched SVD."""
    norms = []
    for w in mlp.weight_matrices(spec, params):
        if min(w.shape) == 1:
            norms.append(jnp.linalg.norm(w))
        else:
            dep = bounds.op_norm(bounds.after(w, dep))
            norms.append(dep)
    return jnp.abs(alpha) * jnp.prod(jnp.stack(norms))


def lipschitz(spec, params, alpha, points, dep=()) -> dict:
    """Lower (max gradient norm over ``points (p, d)``) and upper (norm product) Lipschitz estimates."""
    f = lambda z: mlp.apply(spec, params, z, alpha)[0]  # noqa: E731  (d,) -> scalar
    return {"lip_lower": bounds.lipschitz_lower(f, points),
            "lip_upper": lipschitz_upper(spec, params, alpha, dep)}


def kernel_gd(loss, k_train, k_test_train, f0, f0_test, y, lr, steps: int, stop: bool = True):
    """Gradient descent in function space with a fixed kernel: the infinite-width lazy limit.

    With an NTK-parametrized net ``f = alpha h`` trained by GD with step ``lr / alpha^2`` on the
    mean loss, the linearized network moves as ``f_{t+1}(.) = f_t(.) - lr K(., X) grad_f L(f_t(X))``
    with K the NTK of h (Jacot et al. 2018; Lee et al. 2019, arXiv 1902.06720). Same stopping rule
    as `train`: when the training error (``y f <= 0``) is 0 at a step, that step is not taken
    and nothing moves afterwards.

    Args:
      loss: "logistic" or "square". k_train: (n, n); k_test_train: (m, n); f0: (n,), f0_test:
      (m,) initial outputs; y: (n,) labels; lr: scalar; steps: static step cap.
    Returns:
      ``(f_train (n,), f_test (m,), steps_to_fit)`` (-1 when never interpolated or not stopping).
    """
    n = y.shape[0]

    def grad(f):
        if loss == "logistic":
            return -y * jax.nn.sigmoid(-y * f) / n
        return (f - y) / n

    def step(t, state):
        f, coef, done, fit = state
        fit_now = stop & (jnp.mean(y * f <= 0) == 0) & ~done
        done = done | fit_now
        fit = jnp.where(fit_now, t, fit)
        dc = jnp.where(done, 0.0, -lr * grad(f))
        return f + k_train @ dc, coef + dc, done, fit

    state = (f0, jnp.zeros_like(f0), jnp.zeros((), bool), jnp.full((), -1, jnp.int32))
    f, coef, _, fit = jax.lax.fori_loop(0, steps, step, state)
    return f, f0_test + k_test_train @ coef, fit


# ----------------------------------------------------------------------------- one variant

def split_sample(sample, n: int):
    """First n rows (training set) and the rest (test set) of an iid sample: one generator call
    compiles once (the margin sampler's bisection is the costliest part to compile)."""
    return (type(sample)(*(a[:n] for a in sample)), type(sample)(*(a[n:] for a in sample)))


def run_one(s, p, key):
    """One variant. s: static params; p: traced scalars (eta, gamma, lr, alpha, seed)."""
    k_data, k_init, k_sgd, k_lip = jax.random.split(key, 4)
    tr, te = split_sample(data.separated_sphere(k_data, s.n + s.n_test, s.d, p["eta"], p["gamma"]), s.n)
    spec = spec_of(s)
    alpha, lr = p["alpha"], p["lr"]
    params0 = mlp.init(spec, k_init)
    cfg = trainlib.TrainConfig(s.steps, loss=s.loss, optimizer="gd", n_log=s.n_log,
                               stop_at_interpolation=True)
    res = trainlib.train(cfg, spec, params0, trainlib.Data(tr.x, tr.y, te.x, te.y_clean),
                         lr / alpha**2, k_sgd, out_scale=alpha)
    f = mlp.apply(spec, res.params, te.x, alpha)[:, 0]
    out = {"train_err": res.final["train_err"], "train_loss": res.final["train_loss"],
           "steps_to_fit": res.final["steps_to_fit"], "diverged": res.final["diverged"]}
    out.update(errors(f, te.y_clean, te.y, p["eta"]))
    out.update(laziness(spec, params0, res.params, tr.x))
    out.update(lipschitz(spec, res.params, alpha, jnp.concatenate([te.x, data.sphere(k_lip, s.n_lip, s.d)]),
                         dep=out["ntk_min_eig"]))

    # infinite-width references on the same data; every LAPACK call (eigh, svd) of this program
    # waits for the previous one (`bounds.after`: two at once can deadlock XLA:CPU's thread pool)
    k_inf = bounds.after(ntk.relu_ntk(tr.x, None, spec=spec), out["lip_upper"])
    lam_inf = ntk.min_eigenvalue(k_inf)
    k_inf = bounds.after(k_inf, lam_inf)
    k_inf_test = ntk.relu_ntk(te.x, tr.x, spec=spec)
    f0 = mlp.apply(spec, params0, tr.x, alpha)[:, 0]
    f0_test = mlp.apply(spec, params0, te.x, alpha)[:, 0]
    f_lim_tr, f_lim, fit_lim = kernel_gd(s.loss, k_inf, k_inf_test, f0, f0_test, tr.y, lr, s.steps)
    lim = errors(f_lim, te.y_clean, te.y, p["eta"])
    interp = errors(ntk.kernel_regression(k_inf, tr.y, k_inf_test), te.y_clean, te.y, p["eta"])
    out.update({
        "ntk_inf_min_eig": lam_inf,
        "ntk_limit_train_err": jnp.mean(tr.y * f_lim_tr <= 0),
        "ntk_limit_steps_to_fit": fit_lim,
        "ntk_limit_clean_err": lim["clean_test_err"],
        "ntk_limit_noisy_err": lim["noisy_test_err"],
        "ntk_limit_disagree": jnp.mean(jnp.sign(f) != jnp.sign(f_lim)),
        "ntk_limit_dist": jnp.linalg.norm(f - f_lim) / jnp.linalg.norm(f_lim),
        "ntk_interp_clean_err": interp["clean_test_err"],
        "ntk_interp_noisy_err": interp["noisy_test_err"],
        "curve_train_err": res.curves["train_err"],
        "curve_clean_test_err": res.curves["test_err"],
        "curve_weight_move": res.curves["weight_move"],
    })
    return out


# ----------------------------------------------------------------------------- plotting helpers

def mode(col, where):
    """Most frequent value of ``col`` among rows ``where`` (ties: the smallest)."""
    vals, counts = np.unique(np.asarray(col)[where], return_counts=True)
    return vals[np.argmax(counts)]


def nearest(col, where, target):
    vals = np.unique(np.asarray(col)[where])
    return vals[np.argmin(np.abs(vals - target))]


def at_mode(t, where, keys):
    """``where`` restricted to the most frequent value of each of ``keys`` (one slice of the grid)."""
    sel = where.copy()
    for k in keys:
        if k in t:
            sel &= t[k] == mode(t[k], sel)
    return sel


def no_data(ax, why):
    ax.text(0.5, 0.5, f"no data: {why}", ha="center", va="center", transform=ax.transAxes, fontsize=8)


def slope_guide(ax, x, y0, power, label):
    """Dotted ``y0 * (x / x[0])^power`` reference line."""
    x = np.asarray(sorted(x), float)
    ax.plot(x, y0 * (x / x[0]) ** power, ":", color="0.4", lw=1, label=label)


def line(ax, t, x, y, where, label=None, **kw):
    keys, mean, sem, _ = plotlib.aggregate(t, [x], y, where=where)
    if not keys:
        return None
    return plotlib.band(ax, [k[0] for k in keys], mean, sem, label=label, **kw)


# ----------------------------------------------------------------------------- figures

def plot(results_dir):
    res = store.load(results_dir)
    t, meta = res.table, res.meta
    ok = ~t["diverged"]
    return (_phase_width_eta(t, meta, ok, results_dir) + _phase_width_depth(t, meta, ok, results_dir)
            + _lipschitz(t, meta, ok, results_dir) + _ntk_limit(t, meta, ok, results_dir)
            + _laziness(t, meta, ok, results_dir) + _error_vs_width(t, meta, ok, results_dir))


def _phase_width_eta(t, meta, ok, out):
    base = at_mode(t, ok, ["gamma", "alpha"])
    depths = [L for L in np.unique(t["depth"][base])
              if len(np.unique(t["eta"][base & (t["depth"] == L)])) > 1]
    fig, axes = plotlib.figure(1, max(len(depths), 1), width=3.9, height=3.0)
    axes = np.atleast_1d(axes).ravel()
    if not depths:
        no_data(axes[0], "needs >= 2 noise rates at one depth")
    for ax, L in zip(axes, depths):
        sel = base & (t["depth"] == L)
        xs, ys, Z = plotlib.grid_of(t, "width", "eta", "clean_test_err", where=sel)
        _, _, M = plotlib.grid_of(t, "width", "eta", "weight_move", where=sel)
        plotlib.heatmap(ax, xs, ys, Z, xlabel="hidden width m", ylabel="label-noise rate η",
                        cbar_label="clean test error (mean over seeds)", vmin=0, contour=M,
                        contour_label="relative weight movement")
        ax.set_title(f"depth L = {L}")
    return plotlib.save(fig, out, "phase_width_eta", meta)


def _phase_width_depth(t, meta, ok, out):
    base = at_mode(t, ok, ["gamma", "alpha"])
    fig, axes = plotlib.figure(1, 2, width=3.9, height=3.0)
    etas = [e for e in np.unique(t["eta"][base]) if len(np.unique(t["depth"][base & (t["eta"] == e)])) > 1]
    if not etas:
        for ax in axes[0]:
            no_data(ax, "needs >= 2 depths at one noise rate")
        return plotlib.save(fig, out, "phase_width_depth", meta)
    eta = min(etas, key=lambda e: abs(e - 0.2))
    sel = base & (t["eta"] == eta)
    # widths run at every depth (a sweep may hold more widths at one depth than at the others)
    depths = np.unique(t["depth"][sel])
    common = [m for m in np.unique(t["width"][sel]) if all((sel & (t["width"] == m) & (t["depth"] == L)).any()
                                                          for L in depths)]
    sel &= np.isin(t["width"], common)
    xs, ys, err = plotlib.grid_of(t, "width", "depth", "clean_test_err", where=sel)
    move = plotlib.grid_of(t, "width", "depth", "weight_move", where=sel)[2]
    plotlib.heatmap(axes[0, 0], xs, ys, err, xlabel="hidden width m", ylabel="depth L (dense layers)",
                    cbar_label="clean test error (mean over seeds)", vmin=0, contour=move,
                    contour_label="relative weight movement")
    plotlib.heatmap(axes[0, 1], xs, ys, move, xlabel="hidden width m", ylabel="depth L (dense layers)",
                    cbar_label="relative weight movement (mean over seeds)", cmap="magma")
    missed = [(m, L, int((sel & (t["width"] == m) & (t["depth"] == L) & (t["train_err"] > 0)).sum()),
               int((sel & (t["width"] == m) & (t["depth"] == L)).sum())) for m in xs for L in ys]
    note = "; ".join(f"m={m}, L={L}: {k}/{n} seeds did not interpolate" for m, L, k, n in missed if k)
    axes[0, 0].set_title(f"η = {eta:g}" + (f"\n({note})" if note else ""), fontsize=8 if note else 10)
    axes[0, 1].set_title(f"η = {eta:g}: laziness")
    return plotlib.save(fig, out, "phase_width_depth", meta)


def _lipschitz(t, meta, ok, out):
    from matplotlib.ticker import NullFormatter
    from scipy.stats import spearmanr

    fig, axes = plotlib.figure(1, 2, width=3.9, height=3.1)
    etas = np.unique(t["eta"][ok])
    colors = plotlib.plt.cm.viridis(np.linspace(0, 0.9, len(etas)))
    by = [k for k in ("width", "depth", "gamma", "alpha") if k in t]
    for ax, (col, what) in zip(axes[0], [("lip_lower", "lower estimate: max |∇ₓf|"),
                                         ("lip_upper", "upper estimate: α ∏ ‖W_l‖_op")]):
        for eta, c in zip(etas, colors):
            sel = ok & (t["eta"] == eta)
            _, mx, sx, _ = plotlib.aggregate(t, by, col, where=sel)
            _, my, sy, _ = plotlib.aggregate(t, by, "excess_risk_clean", where=sel)
            x, y = t[col][sel], t["excess_risk_clean"][sel]
            rho = spearmanr(x, y).statistic if len(x) > 2 and np.ptp(x) > 0 and np.ptp(y) > 0 else np.nan
            ax.errorbar(mx, my, xerr=sx, yerr=sy, fmt="o", ms=3.5, color=c, elinewidth=0.8,
                        label=f"η = {eta:g} (Spearman ρ = {rho:.2f})")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels of a short log axis collide
        ax.set_yscale("symlog", linthresh=1e-3)
        ax.set_ylim(bottom=0)
        ax.set_xlabel(f"Lipschitz constant of f, {what}")
        ax.set_ylabel("excess risk (1 − 2η)·clean error")
        ax.set_title("one point per (m, L, γ, α), bars ± s.e. over seeds;\n"
                     "ρ: Spearman rank correlation over the variants at that η", fontsize=7.5)
        ax.legend(fontsize=6.5, loc="lower right")
    return plotlib.save(fig, out, "excess_risk_vs_lipschitz", meta)


def _ntk_limit(t, meta, ok, out):
    base = at_mode(t, ok, ["depth", "gamma", "alpha"])
    fig, axes = plotlib.figure(1, 2, width=3.9, height=3.0)
    a, b = axes[0]
    for eta in np.unique(t["eta"][base]):
        sel = base & (t["eta"] == eta)
        ln = line(a, t, "width", "clean_test_err", sel, label=f"η = {eta:g}")
        line(a, t, "width", "ntk_limit_clean_err", sel, color=ln.get_color(), ls="--", marker="")
        a.axhline(np.mean(t["ntk_interp_clean_err"][sel]), color=ln.get_color(), ls=":", lw=1)
        line(b, t, "width", "ntk_limit_disagree", sel, label=f"η = {eta:g}", color=ln.get_color())
    widths = np.unique(t["width"][base])
    dis = t["ntk_limit_disagree"][base & (t["width"] == widths[0])]
    if dis.size and np.mean(dis) > 0:
        slope_guide(b, widths, np.mean(dis), -0.5, "∝ m^-1/2")
    a.set_title(f"L = {mode(t['depth'], base)}; solid: network, dashed: NTK limit,\n"
                "dotted: min-norm NTK interpolator", fontsize=8)
    a.set_ylabel("clean test error")
    b.set_ylabel("test points where sign(f) ≠ sign(f_NTK limit)")
    b.set_yscale("log")
    b.set_title("disagreement with the lazy limit", fontsize=8)
    for ax in (a, b):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("hidden width m")
    a.legend(fontsize=6.5)
    b.legend(fontsize=6.5)
    return plotlib.save(fig, out, "ntk_limit_vs_width", meta)


def laziness_axes(axes, t, base, group, fmt):
    """Weight movement, NTK drift and lambda_min panels versus width, one line per ``group`` value."""
    for g in np.unique(t[group][base]):
        sel = base & (t[group] == g)
        ln = line(axes[0], t, "width", "weight_move", sel, label=fmt(g))
        line(axes[1], t, "width", "ntk_drift", sel, label=fmt(g), color=ln.get_color())
        line(axes[2], t, "width", "ntk_min_eig", sel, label=fmt(g), color=ln.get_color())
        axes[2].axhline(np.mean(t["ntk_inf_min_eig"][sel]), color=ln.get_color(), ls="--", lw=1)
    widths = np.unique(t["width"][base])
    for ax, col in zip(axes[:2], ["weight_move", "ntk_drift"]):
        v = t[col][base & (t["width"] == widths[0])]
        if v.size and np.mean(v) > 0:
            slope_guide(ax, widths, np.mean(v), -0.5, "∝ m^-1/2")
    labels = ["max_l ‖W_l(T) − W_l(0)‖_F / ‖W_l(0)‖_F", "‖Θ_T − Θ_0‖_F / ‖Θ_0‖_F (train set)",
              "λ_min of Θ_0 (dashed: infinite width)"]
    for ax, lab in zip(axes, labels):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("hidden width m")
        ax.set_ylabel(lab, fontsize=8)
    axes[0].set_yscale("log")
    axes[1].set_yscale("log")
    axes[0].legend(fontsize=6.5)


def _laziness(t, meta, ok, out):
    base = at_mode(t, ok, ["gamma", "alpha"])
    eta = nearest(t["eta"], base, 0.2)
    fig, axes = plotlib.figure(1, 3, width=3.3, height=2.9)
    laziness_axes(axes[0], t, base & (t["eta"] == eta), "depth", lambda L: f"L = {L}")
    axes[0, 1].set_title(f"η = {eta:g}", fontsize=8)
    return plotlib.save(fig, out, "laziness_vs_width", meta)


def _error_vs_width(t, meta, ok, out):
    base = at_mode(t, ok, ["depth", "gamma", "alpha"])
    fig, axes = plotlib.figure(1, 2, width=3.6, height=2.9)
    for eta in np.unique(t["eta"][base]):
        sel = base & (t["eta"] == eta)
        line(axes[0, 0], t, "width", "clean_test_err", sel, label=f"η = {eta:g}")
        ln = line(axes[0, 1], t, "width", "noisy_test_err", sel, label=f"η = {eta:g}")
        axes[0, 1].axhline(eta, color=ln.get_color(), ls=":", lw=1)
    for ax, what in zip(axes[0], ["clean labels (Bayes error 0)", "noisy labels (dotted: Bayes error η)"]):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("hidden width m")
        ax.set_ylabel("test error")
        ax.set_title(f"L = {mode(t['depth'], base)}: {what}", fontsize=8)
    axes[0, 0].legend(ncols=2, fontsize=6.5)
    return plotlib.save(fig, out, "test_error_vs_width", meta)
