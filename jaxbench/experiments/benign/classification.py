"""Benign overfitting of deep ReLU networks under lazy (NTK) training: classification.

Source: Zhu, Liu, Chrysos, Locatello, Cevher, "Benign Overfitting in Deep Neural Networks under
Lazy Training", ICML 2023, arXiv 2305.19377. Claim (abstract): in the lazy regime, deep ReLU
networks trained on well-separated data with label noise interpolate the noisy training set and
still reach Bayes-optimal test error; smoother interpolators (smaller Lipschitz constant)
generalize better. The regression half of the claim is `benign.regression`.

Our setting (a reconstruction, not the paper's constants): x uniform on S^{d-1} with margin
``|x_1| >= gamma``, clean label ``sign(x_1)``; exactly ``round(eta n)`` training labels flipped,
test labels flipped i.i.d. with rate eta (`common.sample`). The model is `common.outputs`:
centred ``f = alpha (h_theta - h_theta0) (+ init_noise h_theta0)`` or uncentred ``alpha h_theta``,
trained by full-batch GD (or minibatch SGD, ``optimizer = "sgd"``, the paper's Algorithm 1 as we
read it) on the logistic loss with step ``lr / alpha^2`` until the training error is 0 (then
frozen) or the step cap.

Per variant: training error, steps to interpolate, the realized flip rate; clean and noisy test
error, excess risk (noisy error - eta) and its expectation ``(1 - 2 eta) clean error``; laziness
(relative weight movement, NTK drift, lambda_min of ``Theta_0``); smoothness (`common.smoothness`:
Lipschitz estimates relative to the output scale); and three references on the same data and
initial function: ``lazy_limit_*`` (kernel GD with this network's initial empirical NTK: the
alpha -> infinity limit at this width), ``ntk_limit_*`` (kernel GD with the infinite-width NTK:
also width -> infinity) and ``ntk_interp_*`` (the minimum-norm NTK interpolator). Gaps to the
limits: sign disagreement on the test set and relative distance of the test outputs.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxbench import data, mlp, ntk
from jaxbench import train as trainlib
from jaxbench.compat import after
from jaxbench.experiments import in_range, one_of, positive, static
from jaxbench.experiments.benign import common

NAME = "benign_overfitting"

PARAMS = {
    "width": positive(int),
    "depth": positive(int, default=3),
    "n": positive(int, default=128),
    "n_test": positive(int, default=1024),
    "d": static(int, 128, lambda v: v >= 2, "must be >= 2"),
    "steps": positive(int, default=1000),
    "n_log": positive(int, default=4),
    "n_lip": positive(int, default=256),
    "loss": one_of("logistic", "square", default="logistic"),
    "parametrization": one_of("ntk", "standard", default="ntk"),
    "inputs": one_of("sqrt_d", "unit", default="sqrt_d"),
    "centered": static(bool, True),
    "optimizer": one_of("gd", "sgd", default="gd"),
    "batch": positive(int, default=32),
    "eta": in_range(0.0, 0.5, default=0.0),
    "gamma": in_range(0.0, 0.99, default=0.3),
    "lr": positive(float, default=4.0, kind="traced"),
    "alpha": positive(float, default=16.0, kind="traced"),
    "init_noise": in_range(0.0, 1e3, default=0.0),
}


def check(v) -> None:
    """One-line errors for combinations PARAMS alone cannot rule out."""
    if not v["centered"] and v["init_noise"] != 0:
        raise ValueError(f"init_noise = {v['init_noise']}: applies to centred networks (centered = true); "
                         "an uncentred network's initial function is alpha h_0")
    if v["optimizer"] == "sgd" and v["batch"] >= v["n"]:
        raise ValueError(f"batch = {v['batch']}: SGD needs a minibatch smaller than n = {v['n']}")


def run_one(s, p, key):
    """One variant. s: static params; p: traced scalars (eta, gamma, lr, alpha, init_noise, seed)."""
    k_data, k_init, k_sgd, k_lip = jax.random.split(key, 4)
    tr, te = common.sample(k_data, s.n, s.n_test, s.d, p["eta"], p["gamma"])
    c = common.input_scale(s)
    x, xt = c * tr.x, c * te.x
    spec = common.spec_of(s)
    alpha, lr, s0 = p["alpha"], p["lr"], p["init_noise"]
    params0 = mlp.init(spec, k_init)
    h0, h0t = mlp.apply(spec, params0, x), mlp.apply(spec, params0, xt)
    sgd = s.optimizer == "sgd"
    cfg = trainlib.TrainConfig(s.steps, loss=s.loss, optimizer=s.optimizer, batch_size=s.batch if sgd else None,
                               n_log=s.n_log, stop_at_interpolation=True)
    res = trainlib.train(cfg, spec, params0, trainlib.Data(x, tr.y, xt, te.y_clean), lr / alpha**2, k_sgd,
                         out_scale=alpha, center=(h0, h0t) if s.centered else None, init_noise=s0)
    model = functools.partial(common.outputs, spec, res.params, params0, alpha=alpha, centered=s.centered,
                              init_noise=s0)
    f, f_tr = model(x=xt), model(x=x)
    out = {"train_err": res.final["train_err"], "train_loss": res.final["train_loss"],
           "steps_to_fit": res.final["steps_to_fit"], "diverged": res.final["diverged"],
           "flip_rate": jnp.mean(tr.y != tr.y_clean)}
    out.update(common.errors(f, te.y_clean, te.y, p["eta"]))
    lz = common.laziness(spec, params0, res.params, x)
    theta0 = lz.pop("theta0")
    out.update(lz)
    points = jnp.concatenate([te.x[:s.n_lip], data.sphere(k_lip, s.n_lip, s.d)])
    out.update(common.smoothness(lambda z: model(x=c * z), points, f, tr.y * f_tr))

    # references on the same data and initial function; each LAPACK call waits for the previous
    # one (`after`: two at once can deadlock XLA:CPU; the sweep engine also orders them)
    f0 = common.initial_outputs(h0[:, 0], alpha, s.centered, s0)
    f0t = common.initial_outputs(h0t[:, 0], alpha, s.centered, s0)
    theta0_t = ntk.empirical_ntk(functools.partial(mlp.apply, spec), params0, xt, x, method="structured")
    lazy_tr, lazy, lazy_fit = common.kernel_gd(s.loss, theta0, theta0_t, f0, f0t, tr.y, lr, s.steps)
    k_inf = after(ntk.relu_ntk(x, None, spec=spec), out["ntk_min_eig"])
    lam_inf = ntk.min_eigenvalue(k_inf)
    k_inf_t = ntk.relu_ntk(xt, x, spec=spec)
    lim_tr, lim, lim_fit = common.kernel_gd(s.loss, k_inf, k_inf_t, f0, f0t, tr.y, lr, s.steps)
    lim_err = common.errors(lim, te.y_clean, te.y, p["eta"])
    interp = ntk.kernel_regression(after(k_inf, lam_inf), tr.y, k_inf_t)
    gap, lazy_gap, kernel_gap = (common.agreement(*fg) for fg in [(f, lim), (f, lazy), (lazy, lim)])
    out.update({
        "lazy_limit_clean_err": jnp.mean(jnp.sign(lazy) != te.y_clean),
        "lazy_limit_train_err": jnp.mean(tr.y * lazy_tr <= 0),
        "lazy_limit_steps_to_fit": lazy_fit,
        "lazy_limit_disagree": lazy_gap["disagree"], "lazy_limit_dist": lazy_gap["dist"],
        "ntk_inf_min_eig": lam_inf,
        "ntk_limit_train_err": jnp.mean(tr.y * lim_tr <= 0),
        "ntk_limit_steps_to_fit": lim_fit,
        "ntk_limit_clean_err": lim_err["clean_test_err"],
        "ntk_limit_noisy_err": lim_err["noisy_test_err"],
        "ntk_limit_excess_risk_clean": lim_err["excess_risk_clean"],
        "ntk_limit_disagree": gap["disagree"], "ntk_limit_dist": gap["dist"],
        "gap_clean_err": out["clean_test_err"] - lim_err["clean_test_err"],
        "kernel_disagree": kernel_gap["disagree"], "kernel_dist": kernel_gap["dist"],
        "ntk_interp_clean_err": jnp.mean(jnp.sign(interp) != te.y_clean),
        "curve_train_err": res.curves["train_err"],
        "curve_clean_test_err": res.curves["test_err"],
        "curve_weight_move": res.curves["weight_move"],
    })
    return out


def plot(results_dir):
    from jaxbench.experiments.benign import plots
    return plots.plane(results_dir)


def claims(results_dir):
    from jaxbench.experiments.benign import claims as claimlib
    return claimlib.plane(results_dir)
