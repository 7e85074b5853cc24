"""Benign overfitting of deep ReLU networks under lazy (NTK) training.

Source: Zhu, Liu, Chrysos, Locatello, Cevher, "Benign Overfitting in Deep Neural Networks under
Lazy Training", ICML 2023, arXiv 2305.19377. Claim (abstract): in the lazy regime, deep ReLU
networks trained on well-separated data with label noise interpolate the noisy training set and
still reach Bayes-optimal test error.

Our setting (a reconstruction, not the paper's exact constants): x uniform on S^{d-1} with
margin ``|<e_1, x>| >= gamma``, clean label ``sign(x_1)``, training labels flipped with rate eta
(`jaxbench.data.separated_sphere`). A depth-L ReLU MLP (L dense layers, hidden width m, NTK
parametrization, output multiplier alpha) trained by full-batch gradient descent on the
logistic loss until the training error is 0 (parameters frozen there) or a step cap.

Per variant: training error and steps to interpolate; clean and noisy test error (the Bayes
error is eta on noisy labels and 0 on clean ones); excess risk = noisy test error - eta;
relative weight movement (laziness); curves on a log step grid.
"""

from __future__ import annotations

import numpy as np

import jax
import jax.numpy as jnp

from jaxbench import data, mlp, store
from jaxbench import plot as plotlib
from jaxbench import train as trainlib
from jaxbench.experiments import in_range, one_of, positive

NAME = "benign_overfitting"

PARAMS = {
    "width": positive(int),
    "depth": positive(int, default=3),
    "n": positive(int, default=128),
    "n_test": positive(int, default=2048),
    "d": positive(int, default=16),
    "steps": positive(int, default=2000),
    "n_log": positive(int, default=16),
    "parametrization": one_of("ntk", "standard", default="ntk"),
    "eta": in_range(0.0, 0.5, default=0.0),
    "gamma": in_range(0.0, 0.99, default=0.1),
    "lr": positive(float, default=1.0, kind="traced"),
    "alpha": positive(float, default=1.0, kind="traced"),
}


def spec_of(s) -> mlp.MLPSpec:
    if s.d < 2:
        raise ValueError("d must be >= 2")
    return mlp.MLPSpec(s.d, (s.width,) * (s.depth - 1), 1, parametrization=s.parametrization)


def run_one(s, p, key):
    """One variant. s: static params; p: traced scalars (eta, gamma, lr, alpha, seed)."""
    k_train, k_test, k_init, k_sgd = jax.random.split(key, 4)
    tr = data.separated_sphere(k_train, s.n, s.d, p["eta"], p["gamma"])
    te = data.separated_sphere(k_test, s.n_test, s.d, p["eta"], p["gamma"])
    spec = spec_of(s)
    params0 = mlp.init(spec, k_init)
    cfg = trainlib.TrainConfig(s.steps, loss="logistic", optimizer="gd", n_log=s.n_log,
                               stop_at_interpolation=True)
    res = trainlib.train(cfg, spec, params0, trainlib.Data(tr.x, tr.y, te.x, te.y_clean),
                         p["lr"], k_sgd, out_scale=p["alpha"])
    f = mlp.apply(spec, res.params, te.x, p["alpha"])[:, 0]
    clean_err = jnp.mean(jnp.sign(f) != te.y_clean)
    noisy_err = jnp.mean(jnp.sign(f) != te.y)
    return {
        "train_err": res.final["train_err"],
        "train_loss": res.final["train_loss"],
        "steps_to_fit": res.final["steps_to_fit"],
        "clean_test_err": clean_err,
        "noisy_test_err": noisy_err,
        "excess_risk": noisy_err - p["eta"],
        "weight_move": res.final["weight_move"],
        "diverged": res.final["diverged"],
        "curve_train_err": res.curves["train_err"],
        "curve_clean_test_err": res.curves["test_err"],
        "curve_weight_move": res.curves["weight_move"],
    }


def variant_bytes(s) -> int:
    """Rough per-variant memory: activations of train+test sets and a few copies of the weights."""
    acts = (s.n + s.n_test) * s.width * max(s.depth - 1, 1) * 4 * 3
    weights = (s.d * s.width + (s.depth - 2) * s.width**2 + s.width) * 4 * 6
    return acts + weights


def plot(results_dir):
    res = store.load(results_dir)
    t, meta = res.table, res.meta
    paths = []
    ok = ~t["diverged"]
    # 1. phase diagram width x eta
    depths = np.unique(t["depth"])
    fig, axes = plotlib.figure(1, len(depths), width=3.8, height=3.0)
    axes = np.atleast_1d(axes).ravel()
    for ax, L in zip(axes, depths):
        sel = ok & (t["depth"] == L)
        xs, ys, Z = plotlib.grid_of(t, "width", "eta", "clean_test_err", where=sel)
        _, _, M = plotlib.grid_of(t, "width", "eta", "weight_move", where=sel)
        plotlib.heatmap(ax, xs, ys, Z, xlabel="hidden width m", ylabel="label-noise rate η",
                     cbar_label="clean test error", vmin=0, contour=M,
                     contour_label="relative weight movement")
        ax.set_title(f"depth L = {L}: clean test error (mean over seeds)")
    paths += plotlib.save(fig, results_dir, "phase_width_eta", meta)
    # 2. test error versus width, one line per eta
    fig, axes = plotlib.figure(1, 2, width=3.6, height=2.9)
    for eta in np.unique(t["eta"]):
        sel = ok & (t["eta"] == eta)
        keys, mean, sem, _ = plotlib.aggregate(t, ["width"], "clean_test_err", where=sel)
        plotlib.band(axes[0, 0], [k[0] for k in keys], mean, sem, label=f"η = {eta:g}")
        keys, mean, sem, _ = plotlib.aggregate(t, ["width"], "noisy_test_err", where=sel)
        line = plotlib.band(axes[0, 1], [k[0] for k in keys], mean, sem, label=f"η = {eta:g}")
        axes[0, 1].axhline(eta, color=line.get_color(), ls=":", lw=1)
    for ax, what in zip(axes[0], ["clean labels (Bayes error 0)", "noisy labels (dotted: Bayes error η)"]):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("hidden width m")
        ax.set_ylabel("test error")
        ax.set_title(what)
    axes[0, 0].legend(ncols=2)
    paths += plotlib.save(fig, results_dir, "test_error_vs_width", meta)
    return paths
