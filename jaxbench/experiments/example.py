"""A minimal experiment: the template for writing your own, and the engine's test workload.

Each variant trains a ReLU MLP (`jaxbench.train`) on separated-sphere data with label noise and
reports its training and clean test error. Copy this file anywhere, change PARAMS / run_one /
plot (optionally add ``claims``), and name it in a sweep file by path (``experiment =
"my_experiment.py"``, relative to the sweep file) or by module (``experiment = "mylab.my_exp"``,
on PYTHONPATH): nothing in jaxbench is edited.
"""

from __future__ import annotations

import jax
import numpy as np

from jaxbench import data, mlp, store
from jaxbench import plot as plotlib
from jaxbench import train as trainlib
from jaxbench.experiments import in_range, positive

NAME = "example"

PARAMS = {
    # static: fix shapes or loop lengths (one compilation per distinct combination)
    "width": positive(int),
    "depth": positive(int, default=2),
    "n": positive(int, default=64),
    "n_test": positive(int, default=256),
    "d": positive(int, default=8),
    "steps": positive(int, default=200),
    "n_log": positive(int, default=8),
    # traced: swept inside one compiled call
    "eta": in_range(0.0, 0.5, default=0.0),
    "gamma": in_range(0.0, 0.99, default=0.1),
    "lr": positive(float, default=1.0, kind="traced"),
    "alpha": positive(float, default=1.0, kind="traced"),
}


def check(v) -> None:
    if v["d"] < 2:
        raise ValueError(f"d = {v['d']}: the sphere task needs d >= 2")


def run_one(s, p, key):
    """One variant: s static params (attributes), p traced scalars, key from the seed."""
    k_data, k_init, k_sgd = jax.random.split(key, 3)
    # one draw of n + n_test points (one sampler in the program: it is the costliest part to
    # compile); the first n train on noisy labels, the rest test against clean labels
    xy = data.separated_sphere(k_data, s.n + s.n_test, s.d, p["eta"], p["gamma"])
    spec = mlp.MLPSpec(s.d, (s.width,) * (s.depth - 1), 1)
    cfg = trainlib.TrainConfig(s.steps, loss="logistic", n_log=s.n_log, stop_at_interpolation=True)
    res = trainlib.train(cfg, spec, mlp.init(spec, k_init),
                         trainlib.Data(xy.x[:s.n], xy.y[:s.n], xy.x[s.n:], xy.y_clean[s.n:]),
                         p["lr"], k_sgd, out_scale=p["alpha"])
    return {
        "train_err": res.final["train_err"], "train_loss": res.final["train_loss"],
        "clean_test_err": res.final["test_err"], "weight_move": res.final["weight_move"],
        "steps_to_fit": res.final["steps_to_fit"], "diverged": res.final["diverged"],
        "curve_test_err": res.curves["test_err"],
    }


def plot(results_dir):
    res = store.load(results_dir)
    t = res.table
    fig, ax = plotlib.figure()
    for eta in np.unique(t["eta"]):
        keys, mean, sem, _ = plotlib.aggregate(t, ["width"], "clean_test_err", where=(t["eta"] == eta) & ~t["diverged"])
        plotlib.band(ax, [k[0] for k in keys], mean, sem, label=f"η = {eta:g}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("hidden width m")
    ax.set_ylabel("clean test error")
    ax.legend()
    return plotlib.save(fig, results_dir, "test_error_vs_width", res.meta)
