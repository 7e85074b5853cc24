"""Geometry and local recovery of global minima of two-layer networks (L. Zhang, Y. Zhang,
T. Luo, arXiv 2309.00508); docs/experiments/local_recovery.md.

Claim (abstract): at overparameterization, the global minima with zero generalization error
become geometrically separated from the other global minima as the sample size n grows, and
gradient flow near them converges at a characterized rate: the target is locally recovered.

Setting (our reconstruction; the paper's constants are not used): teacher
``f* = sum_{j<k} a*_j tanh(w*_j . x)``, student ``f = sum_{i<m} a_i tanh(w_i . x)``, no biases,
x ~ N(0, I_d), noise-free labels, float64. ``theta_Q``: a split point of the zero-generalization
set Q* (`geometry.split_point`: teacher copies and zero-output neurons, the branch set
by ``split``). Per variant:

* geometry at theta_Q: ``threshold`` = rank of the Jacobian on n_rank fresh inputs (the model
  rank: the n at which the samples pin theta down to first order), ``rank_n`` = rank of the
  n x P train Jacobian, ``tangent_dim`` of Q* at theta_Q and ``excess_dim = dim ker J_n -
  tangent_dim`` (directions of ker J_n not tangent to Q*);
* a start: ``init = "local"``: theta_Q moved by ``epsilon ||theta_Q|| xi / ||xi||`` (xi ~ N(0, I)
  on the active neurons); ``"random"``: w ~ N(0, I/d), a ~ N(0, 1/m);
* a descent (``method``): gradient flow as an ODE (``gf``), gradient descent (``gd``) or
  Levenberg-Marquardt (``lm``), `dynamics`;
* outcomes: relative train loss, test error ``test = E (f - f*)^2 / Var f*`` at the end and its
  ratio to the start (``recovered_rel``: ratio <= rec_rel; ``recovered_abs``: test <= rec_abs),
  ``converged`` (train loss <= loss_tol: a global minimum reached), ``generalizes`` /
  ``overfits`` (converged and recovered_rel / not), ``in_q`` / ``other_min`` (converged with
  test <= q_tol / not: the end point is in Q* / another global minimum), the distance of start
  and end to Q* modulo permutations and sign flips (`geometry.dist_q`), the rank of
  J_n at the end point, rate fits of the loss curve and the exponential rate predicted at the
  end point, ``2 mu_min`` (mu_min: smallest nonzero eigenvalue of J_n J_n^T / n); ``codim``
  (P - tangent_dim) and ``sep_count`` (`geometry.separation_count`).

Shapes: n and m are traced. Data are drawn for n_max points and rows >= n are masked (samples of
different n are nested); the student has m_max neurons, those >= m at a = w = 0 (tanh(0) = 0
freezes them). Everything but the loop lengths is traced: one compilation per (init, method).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxbench import data
from jaxbench.experiments import in_range, one_of, positive, traced
from jaxbench.experiments.recovery import dynamics as D
from jaxbench.experiments.recovery import geometry as G

NAME = "local_recovery"
X64 = True
# lax.map over single variants on CPU: ODE solves take 100-2000 adaptive steps and descents
# 5-300 iterations, and a vmapped loop runs until its slowest variant is done (measured: 30
# gradient-flow variants, 2.0 s + 4.8 s compile against 23.6 s + 26 s as one vmap)
CPU_INNER_BATCH = 1

PARAMS = {
    "d": positive(int, 5),
    "k": positive(int, 2),
    "n_max": positive(int, 24),
    "m_max": positive(int, 8),
    "n_test": positive(int, 1000),
    "n_rank": positive(int, 200),
    "n_save": positive(int, 56),
    "steps": positive(int, 2000),
    "init": one_of("local", "random", default="local"),
    "method": one_of("gf", "gd", "lm", default="gf"),
    "n": positive(int, 16, kind="traced"),
    "m": positive(int, 6, kind="traced"),
    "split": in_range(0.0, 1.0, default=0.5),
    "epsilon": in_range(0.0, 10.0, default=0.01),
    "t_max": traced(float, 1e10, lambda v: v > 0, "must be > 0"),
    "decades": in_range(1.0, 14.0, default=11.0),
    "rtol": in_range(1e-13, 1e-3, default=1e-8),
    "lr": traced(float, 0.2, lambda v: v > 0, "must be > 0"),
    "loss_tol": in_range(0.0, 1.0, default=1e-24),
    "q_tol": in_range(0.0, 1.0, default=1e-16),
    "rec_rel": in_range(0.0, 1.0, default=1e-3),
    "rec_abs": in_range(0.0, 1.0, default=1e-6),
    "rank_rtol": in_range(1e-15, 1e-2, default=1e-9),
    "fit_floor": in_range(0.0, 1.0, default=1e-22),
    "fit_window": in_range(1.0, 1e6, default=100.0),
}


def check(v: dict) -> None:
    """Cross-parameter checks on one variant (ValueError with one clear line)."""
    if v["k"] > v["d"]:
        raise ValueError(f"k = {v['k']} > d = {v['d']}: the teacher neurons are orthonormal")
    if not v["k"] <= v["m"] <= v["m_max"]:
        raise ValueError(f"m = {v['m']}: need k = {v['k']} <= m <= m_max = {v['m_max']}")
    if v["m_max"] > G.MAX_NEURONS:
        raise ValueError(f"m_max = {v['m_max']} > {G.MAX_NEURONS}: the distance to Q* enumerates 3^m_max splits")
    if v["n"] > v["n_max"]:
        raise ValueError(f"n = {v['n']} > n_max = {v['n_max']}")
    if v["n_rank"] > v["n_test"]:
        raise ValueError(f"n_rank = {v['n_rank']} > n_test = {v['n_test']}: the rank rows are test inputs")
    if v["n_save"] < 4:
        raise ValueError(f"n_save = {v['n_save']}: need >= 4 saved points")
    if v["method"] != "gf" and v["steps"] < v["n_save"]:
        raise ValueError(f"steps = {v['steps']} < n_save = {v['n_save']}: the curve records distinct iterations")


def _draw(key, shapes: dict, dtype):
    """Standard normal arrays of the given shapes (a dict name -> shape) from ONE draw."""
    return dict(zip(shapes, data.normals(key, list(shapes.values()), dtype)))


def start(static, tr, g, a_q, w_q, active):
    """The start theta0 (P,) for ``static.init``: theta_Q + relative perturbation, or random."""
    xi = jnp.where(active, 1.0, 0.0)
    if static.init == "random":
        m = tr["m"].astype(a_q.dtype)
        return G.flat(xi * g["xi_a"] / jnp.sqrt(m), xi[None, :] * g["xi_w"] / jnp.sqrt(static.d))
    theta_q = G.flat(a_q, w_q)
    direction = G.flat(xi * g["xi_a"], xi[None, :] * g["xi_w"])
    return theta_q + tr["epsilon"] * jnp.linalg.norm(theta_q) * direction / jnp.linalg.norm(direction)


def descend(static, tr, theta0, x, y, rows, scale):
    """Runs ``static.method``; returns (times (n_save,), thetas (n_save, P), t_stop, work, ok):
    time is gradient-flow time for gf and gd (steps * lr), the iteration count for lm."""
    d = static.d
    if static.method == "gf":
        ts = D.save_times(tr["t_max"], static.n_save, tr["decades"])
        thetas, t_stop, work, ok = D.gradient_flow(theta0, x, y, rows, scale, ts, rtol=tr["rtol"],
                                                   stop_loss=1e-2 * tr["loss_tol"], max_steps=static.steps, d=d)
        return ts, thetas, t_stop, work, ok
    grid = D.log_grid(static.steps, static.n_save)
    if static.method == "gd":
        counts, _, thetas = D.gradient_descent(theta0, x, y, rows, scale, tr["lr"], tr["loss_tol"], grid, d=d)
        times = counts.astype(x.dtype) * tr["lr"]
    else:
        counts, _, thetas = D.levenberg_marquardt(theta0, x, y, rows, scale, tr["loss_tol"], grid, d=d)
        times = counts.astype(x.dtype)
    return times, thetas, times[-1], counts[-1], jnp.ones((), bool)


def run_one(static, tr, key):
    """One variant: scalar outputs (table columns) and curves (``curve_t``, ``curve_loss``,
    ``curve_test``, each (n_save,)); see the module docstring."""
    dtype = jnp.zeros(()).dtype
    d, k, mm = static.d, static.k, static.m_max
    g = _draw(key, {"a_star": (k,), "w_star": (d, k), "x": (static.n_max, d), "x_test": (static.n_test, d),
                    "w_free": (d, mm), "u": (mm,), "xi_a": (mm,), "xi_w": (d, mm)}, dtype)
    a_star, w_star = G.teacher(g["a_star"], g["w_star"])
    x, x_test = g["x"], g["x_test"]
    y, y_test = G.forward(a_star, w_star, x), G.forward(a_star, w_star, x_test)
    scale = jnp.var(y_test)
    n, m = tr["n"], tr["m"]
    rows = jnp.arange(static.n_max) < n
    a_q, w_q, owner = G.split_point(g["w_free"], g["u"], a_star, w_star, m, tr["split"])
    active = owner > -2
    p_active = m * (d + 1)

    # geometry at theta_Q
    threshold, gap = G.numerical_rank(G.jacobian(a_q, w_q, x_test[:static.n_rank]), tr["rank_rtol"])
    rank_n, _ = G.numerical_rank(rows[:, None] * G.jacobian(a_q, w_q, x), tr["rank_rtol"])
    zero_out, extra_copies, rank_formula, tangent_dim = G.branch_dims(owner, k, d)

    theta0 = start(static, tr, g, a_q, w_q, active)
    times, thetas, t_stop, work, ok = descend(static, tr, theta0, x, y, rows, scale)

    def train_test(theta):
        a, w = G.unflat(theta, d)
        train = jnp.sum(jnp.where(rows, (G.forward(a, w, x) - y) ** 2, 0.0)) / n / scale
        return train, jnp.mean((G.forward(a, w, x_test) - y_test) ** 2) / scale

    curve_loss, curve_test = jax.vmap(train_test)(thetas)
    train0, test0 = train_test(theta0)
    theta = thetas[-1]
    train, test = curve_loss[-1], curve_test[-1]
    a_end, w_end = G.unflat(theta, d)
    finite = jnp.all(jnp.isfinite(theta)) & jnp.isfinite(train) & jnp.isfinite(test)
    bad = (m < k) | (m > mm) | (n > static.n_max)  # outside `check`: flagged, never crashes a batch
    train, test = jnp.where(bad, jnp.nan, train), jnp.where(bad, jnp.nan, test)
    converged = train <= tr["loss_tol"]
    recovered_rel = test <= tr["rec_rel"] * test0
    # exponential rate predicted by the linearization at the end point: L ~ exp(-2 mu_min t)
    s_end = jnp.linalg.svd(rows[:, None] * G.jacobian(a_end, w_end, x), compute_uv=False)
    kept = s_end > tr["rank_rtol"] * s_end[0]
    s_min = jnp.min(jnp.where(kept, s_end, jnp.inf))
    in_q = converged & (test <= tr["q_tol"])
    fits = D.rate_fits(times, curve_loss, tr["fit_floor"], tr["fit_window"])
    theta_star_norm = jnp.sqrt(jnp.sum(a_star**2) + jnp.sum(w_star**2))
    return {
        "diverged": ~finite | bad,
        "threshold": threshold,
        "rank_gap_log10": gap,
        "rank_formula": rank_formula,
        "zero_output": zero_out,
        "extra_copies": extra_copies,
        "rank_n": rank_n,
        "params_active": p_active,
        "tangent_dim": tangent_dim,
        "excess_dim": p_active - rank_n - tangent_dim,
        "codim": p_active - tangent_dim,
        "sep_count": G.separation_count(owner, k, d),
        "rank_end": kept.sum(),
        "theta_star_norm": theta_star_norm,
        "dist_start": G.dist_q(*G.unflat(theta0, d), a_star, w_star),
        "dist_end": G.dist_q(a_end, w_end, a_star, w_star),
        "init_train": train0,
        "init_test": test0,
        "train": train,
        "test": test,
        "test_ratio": test / test0,
        "recovered_rel": recovered_rel,
        "recovered_abs": test <= tr["rec_abs"],
        "converged": converged,
        "generalizes": converged & recovered_rel,
        "overfits": converged & ~recovered_rel,
        "in_q": in_q,
        "other_min": converged & ~in_q,
        "solver_ok": ok & finite,
        "work": work,
        "t_end": times[-1],
        "t_stop": t_stop,
        "pred_rate": 2.0 * s_min**2 / n,
        **fits,
        "curve_t": times,
        "curve_loss": curve_loss,
        "curve_test": curve_test,
        "theta_end": theta,
    }


def plot(results_dir):
    from jaxbench.experiments.recovery import plots  # matplotlib only when plotting

    return plots.plot(results_dir)


def claims(results_dir) -> list:
    from jaxbench.experiments.recovery import claims

    return claims.claims(results_dir)
