"""Local recovery of global minima of two-layer networks (L. Zhang, Y. Zhang, T. Luo, arXiv 2309.00508).

Claim (abstract): at overparameterization, the global minima with zero generalization error
become geometrically separated from the other global minima as the sample size n grows, and
gradient flow started near them converges to them: the target is locally recovered.

Our setting (a reconstruction: the paper's constants are not used). Teacher
``f*(x) = sum_{j<k} a*_j sigma(w*_j . x)`` and student ``f(x) = sum_{i<m} a_i sigma(w_i . x)``,
m >= k, no biases, x ~ N(0, I_d), sigma = tanh (analytic, as the theory needs) or relu (an
out-of-theory contrast). Teacher: orthonormal w*_j (a random k-frame, k <= d), a*_j = +-U[0.5, 1.5]
(bounded away from 0, so the teacher really has k neurons). Loss ``L = (1/2n) sum_i (f(x_i) - y_i)^2``
with y = f*(x) (no noise).

* init "local": a point theta_Q of the zero-generalization-error set Q* — student neuron i < k
  copies teacher neuron i; of the m - k surplus neurons the first ``round(split (m - k))`` copy
  teacher neuron ``i mod k`` (the copies of neuron j get output weights that are positive
  fractions of a*_j summing to a*_j), the rest get a_i = 0 and w_i ~ N(0, I_d / d) — then every
  parameter is moved by ``epsilon ||theta_Q|| xi / ||xi||``, xi ~ N(0, I) (relative perturbation).
* init "random": w_i ~ N(0, I_d / d), a_i ~ N(0, 1 / m); epsilon is unused.

Gradient descent ``theta <- theta - lr grad L`` in float64 stands in for gradient flow (time
t = steps * lr; the tests check that halving lr at equal t keeps the outcome) and stops when
the relative train loss ``mean (f - y)^2 / Var f*`` is <= loss_tol, or after ``steps`` steps.
Var f* and the test error use n_test fresh inputs. ``recovered``: relative test MSE <= rec_tol.
``interpolated``: relative train loss <= loss_tol (zero train loss up to the tolerance). k (d + 1)
is the teacher's parameter count (the optimistic sample size of the rank picture), hence the
axis n / (k (d + 1)). Rate fits use the late curve (t within a factor ``fit_window`` of the last
recorded t): slope of log L against t (exponential rate) and against log t (power law), with R^2.

Shapes: n and m are traced (swept inside one compilation): data are drawn for n_max points and
the loss masks rows >= n (the samples of different n are nested, which couples the n axis);
the student has m_max neurons of which those >= m sit at a = 0, w = 0, where sigma(0) = 0 makes
their gradient exactly zero, so they never move and never contribute.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxbench.experiments import in_range, one_of, positive, traced

NAME = "local_recovery"
X64 = True

PARAMS = {
    "d": positive(int, 5),
    "k": positive(int, 2),
    "n_max": positive(int, 64),
    "m_max": positive(int, 8),
    "n_test": positive(int, 2000),
    "steps": positive(int, 20000),
    "n_log": positive(int, 24),
    "activation": one_of("tanh", "relu", default="tanh"),
    "init": one_of("local", "random", default="local"),
    "n": positive(int, 24, kind="traced"),
    "m": positive(int, 6, kind="traced"),
    "epsilon": in_range(0.0, 10.0, default=1e-2),
    "split": in_range(0.0, 1.0, default=0.5),
    "lr": traced(float, 0.2, lambda v: v > 0, "must be > 0"),
    "loss_tol": in_range(0.0, 1.0, default=1e-9),
    "rec_tol": in_range(0.0, 1.0, default=1e-6),
    "fit_window": in_range(1.0, 1e6, default=10.0),
}

_ACT = {"tanh": jnp.tanh, "relu": jax.nn.relu}


def check(v: dict) -> None:
    """Cross-parameter checks on one variant's values (ValueError with one clear line)."""
    if v["k"] > v["d"]:
        raise ValueError(f"k = {v['k']} > d = {v['d']}: the teacher neurons are orthonormal")
    if not v["k"] <= v["m"] <= v["m_max"]:
        raise ValueError(f"m = {v['m']}: need k = {v['k']} <= m <= m_max = {v['m_max']}")
    if v["n"] > v["n_max"]:
        raise ValueError(f"n = {v['n']} > n_max = {v['n_max']}")
    if v["steps"] < 2 * v["n_log"]:
        raise ValueError(f"steps = {v['steps']} must be >= 2 n_log = {2 * v['n_log']}")


def forward(act, a, w, x):
    """Two-layer network without biases. a: (m,), w: (d, m), x: (n, d) -> (n,)."""
    return act(x @ w) @ a


def _draw(key, shapes: dict, dtype):
    """Standard normal arrays of the given shapes from ONE random call (fewer calls compile faster)."""
    sizes = [int(np.prod(s)) for s in shapes.values()]
    flat = jax.random.normal(key, (sum(sizes),), dtype)
    cuts = np.cumsum([0, *sizes])
    return {k: flat[i:j].reshape(s) for (k, s), i, j in zip(shapes.items(), cuts[:-1], cuts[1:])}


def teacher(g_a, g_w):
    """Teacher ``(a* (k,), w* (d, k))`` from standard normals g_a (k,) and g_w (d, k), k <= d.

    a*_j = sign(g) (0.5 + U), U uniform on [0, 1) made from |g|; the w*_j are orthonormal (Q of
    the QR of g_w, signs fixed: a uniformly random k-frame). Orthonormal unit-norm teacher
    neurons keep the Gauss-Newton matrix at Q* better conditioned than i.i.d. N(0, I/d) ones
    (measured for d = 5, k = 2: smallest/largest eigenvalue ~1/85 against 1/300 to 1/1000),
    which gradient descent on 2 CPU cores needs.
    """
    u = jax.scipy.special.ndtr(jnp.abs(g_a)) * 2.0 - 1.0  # |g| is half-normal -> U[0, 1)
    q, r = jnp.linalg.qr(g_w)
    return jnp.sign(g_a) * (0.5 + u), q * jnp.where(jnp.diagonal(r) < 0, -1.0, 1.0)


def split_init(g_w, g_u, a_star, w_star, m, split):
    """A point of Q* with m active neurons (of m_max): teacher copies plus zero-output neurons.

    Args:
      g_w: (d, m_max) standard normals (input weights of zero-output neurons, times 1/sqrt(d));
      g_u: (m_max,) standard normals (the split proportions); m: active neurons, k <= m <= m_max;
      split: fraction of the m - k surplus neurons that copy a teacher neuron.
    Returns ``(a (m_max,), w (d, m_max), owner (m_max,))``: owner[i] is the teacher neuron that
    neuron i copies, -1 for a zero-output neuron, -2 for an inactive one (a = 0, w = 0). Copies
    of neuron j have output weights ``a*_j p_i``, p_i > 0 summing to one: f = f* up to rounding.
    """
    d, m_max = g_w.shape
    k = a_star.shape[0]
    i = jnp.arange(m_max)
    n_split = jnp.round(split * (m - k)).astype(i.dtype)
    owner = jnp.where(i < k + n_split, i % k, jnp.where(i < m, -1, -2))
    copies = owner >= 0
    safe = jnp.where(copies, owner, 0)
    u = jnp.where(copies, 0.5 + jax.scipy.special.ndtr(g_u), 0.0)  # in (0.5, 1.5)
    group = jax.ops.segment_sum(u, safe, num_segments=k)
    a = jnp.where(copies, a_star[safe] * u / group[safe], 0.0)
    w = jnp.where(copies[None, :], w_star[:, safe], jnp.where(owner == -1, g_w / jnp.sqrt(d), 0.0))
    return a, w, owner


def log_grid(steps: int, n_log: int) -> np.ndarray:
    """n_log strictly increasing step counts from 1 to ``steps``, about geometric."""
    g = np.round(np.geomspace(1, steps, n_log)).astype(int)
    for j in range(1, n_log):
        g[j] = max(g[j], g[j - 1] + 1)
    for j in range(n_log - 1, 0, -1):  # the end stays at steps; only the first few move
        g[j - 1] = min(g[j - 1], g[j] - 1)
    return g


def masked_slope(x, y, mask):
    """Least-squares slope of y on x over the mask, and R^2 (nan with fewer than 3 points).

    Used only on points with distinct x (sxx > 0)."""
    w = mask.astype(x.dtype)
    cnt = w.sum()
    mx, my = (w * x).sum() / cnt, (w * y).sum() / cnt
    sxx, syy = (w * (x - mx) ** 2).sum(), (w * (y - my) ** 2).sum()
    sxy = (w * (x - mx) * (y - my)).sum()
    ok = cnt >= 3
    # a flat curve (syy = 0, e.g. a relu net with dead units) is fitted exactly by slope 0
    r2 = jnp.where(syy > 0, sxy**2 / (sxx * jnp.where(syy > 0, syy, 1.0)), 1.0)
    return jnp.where(ok, sxy / sxx, jnp.nan), jnp.where(ok, r2, jnp.nan)


def gradient_descent(act, a, w, x, y, row_mask, lr, scale, loss_tol, grid):
    """GD on ``L = (1/2n) sum_{rows in mask} (f - y)^2`` until ``L_rel <= loss_tol`` or grid[-1] steps.

    ``L_rel = mean_mask (f - y)^2 / scale`` (= 2 L / scale). Args: x (n_max, d), y (n_max,),
    row_mask (n_max,) bool; grid: (n_log,) static step counts where the loss is recorded.
    Returns ``(a, w, steps_done, path_length, curve_steps (n_log + 1,), curve_loss (n_log + 1,))``
    with the curves starting at step 0 and holding L_rel.
    """
    wts = row_mask.astype(x.dtype) / row_mask.sum()

    def rel_loss(p):
        return jnp.sum(wts * (forward(act, p[0], p[1], x) - y) ** 2) / scale

    value_and_grad = jax.value_and_grad(rel_loss)
    step = 0.5 * scale * lr  # grad L = (scale / 2) grad L_rel

    def segment(carry, end):
        def cond(c):
            return (c[1] < end) & (c[2] > loss_tol)

        def body(c):
            p, i, _, g, path = c
            p = jax.tree.map(lambda q, gi: q - step * gi, p, g)
            val, g_new = value_and_grad(p)  # one forward/backward per step: loss of the new p
            gnorm = jnp.sqrt(sum(jnp.sum(gi**2) for gi in g))
            return p, i + 1, val, g_new, path + step * gnorm

        carry = jax.lax.while_loop(cond, body, carry)
        return carry, (carry[1], carry[2])

    zero = jnp.zeros((), jnp.int32)
    loss0, g0 = value_and_grad((a, w))
    carry0 = ((a, w), zero, loss0, g0, jnp.zeros((), x.dtype))
    (p, i, _, _, path), (steps, loss) = jax.lax.scan(segment, carry0, jnp.asarray(grid, jnp.int32))
    return (p[0], p[1], i, path, jnp.concatenate([zero[None], steps]),
            jnp.concatenate([loss0[None], loss]))


def initial_point(static, traced, g, a_star, w_star):
    """``(a0, w0)`` of shapes (m_max,), (d, m_max) for ``static.init`` (see module docstring)."""
    m = traced["m"]
    if static.init == "random":
        active = jnp.arange(static.m_max) < m
        a0 = jnp.where(active, g["xi_a"] / jnp.sqrt(m.astype(g["xi_a"].dtype)), 0.0)
        return a0, jnp.where(active[None, :], g["xi_w"] / jnp.sqrt(static.d), 0.0)
    a0, w0, owner = split_init(g["w_free"], g["u"], a_star, w_star, m, traced["split"])
    active = owner > -2
    xa, xw = jnp.where(active, g["xi_a"], 0.0), jnp.where(active[None, :], g["xi_w"], 0.0)
    norm_q = jnp.sqrt(jnp.sum(a0**2) + jnp.sum(w0**2))
    r = traced["epsilon"] * norm_q / jnp.sqrt(jnp.sum(xa**2) + jnp.sum(xw**2))
    return a0 + r * xa, w0 + r * xw


def run_one(static, traced, key):
    """One variant: scalars (table columns) and the loss curve (``curve_t``, ``curve_loss``)."""
    if static.k > static.d:
        raise ValueError(f"k = {static.k} > d = {static.d}: the teacher neurons are orthonormal")
    act = _ACT[static.activation]
    dtype = jnp.zeros(()).dtype
    d, k, mm = static.d, static.k, static.m_max
    g = _draw(key, {"a_star": (k,), "w_star": (d, k), "x": (static.n_max, d),
                    "x_test": (static.n_test, d), "w_free": (d, mm), "u": (mm,),
                    "xi_a": (mm,), "xi_w": (d, mm)}, dtype)
    a_star, w_star = teacher(g["a_star"], g["w_star"])
    x, x_test = g["x"], g["x_test"]
    y, y_test = forward(act, a_star, w_star, x), forward(act, a_star, w_star, x_test)
    var_f = jnp.var(y_test)
    rows = jnp.arange(static.n_max) < traced["n"]
    a0, w0 = initial_point(static, traced, g, a_star, w_star)

    a, w, steps_done, path, c_steps, c_loss = gradient_descent(
        act, a0, w0, x, y, rows, traced["lr"], var_f, traced["loss_tol"],
        log_grid(static.steps, static.n_log))

    def test_rel(a_, w_):
        return jnp.mean((forward(act, a_, w_, x_test) - y_test) ** 2) / var_f

    train = jnp.sum(jnp.where(rows, (forward(act, a, w, x) - y) ** 2, 0.0)) / rows.sum() / var_f
    test = test_rel(a, w)
    # A variant outside k <= m <= m_max, n <= n_max (see `check`) gets nan metrics (diverged).
    bad = (traced["m"] < k) | (traced["m"] > mm) | (traced["n"] > static.n_max)
    train, test = jnp.where(bad, jnp.nan, train), jnp.where(bad, jnp.nan, test)
    recovered = test <= traced["rec_tol"]
    interpolated = train <= traced["loss_tol"]

    # Late-time fits on points that are new (the loop stops once the tolerance is reached).
    t = c_steps.astype(dtype) * traced["lr"]
    new = jnp.concatenate([jnp.array([True]), c_steps[1:] > c_steps[:-1]])
    late = new & (t > 0) & (t * traced["fit_window"] >= t[-1]) & (c_loss > 0)
    log_loss = jnp.log(jnp.where(late, c_loss, 1.0))
    slope_t, r2_t = masked_slope(t, log_loss, late)
    slope_logt, r2_logt = masked_slope(jnp.log(jnp.where(t > 0, t, 1.0)), log_loss, late)

    theta_star = jnp.sqrt(jnp.sum(a_star**2) + jnp.sum(w_star**2))
    displacement = jnp.sqrt(jnp.sum((a - a0) ** 2) + jnp.sum((w - w0) ** 2))
    finite = jnp.isfinite(train) & jnp.isfinite(test) & jnp.all(jnp.isfinite(w)) & jnp.all(jnp.isfinite(a))
    return {
        "diverged": ~finite,  # nan rate fits (fewer than 3 late points) are not divergence
        "n_over_kd1": traced["n"].astype(dtype) / (k * (d + 1)),
        "var_f": var_f,
        "init_train_loss": c_loss[0],
        "init_test_mse": test_rel(a0, w0),
        "train_loss": train,
        "test_mse": test,
        "recovered": recovered,
        "interpolated": interpolated,
        "generalizes": interpolated & recovered,
        "overfits": interpolated & ~recovered,
        "steps_done": steps_done,
        "time": steps_done.astype(dtype) * traced["lr"],
        "rate_exp": -slope_t,
        "r2_exp": r2_t,
        "rate_pow": -slope_logt,
        "r2_pow": r2_logt,
        "path_length": path / theta_star,
        "displacement": displacement / theta_star,
        "curve_t": t,
        "curve_loss": c_loss,
    }


def variant_bytes(static) -> int:
    """Float64 bytes one variant holds: data, activations and their gradients."""
    per_point = static.d + 3 * static.m_max + 2
    return 8 * ((static.n_max + static.n_test) * per_point + 4 * static.m_max * (static.d + 1))


def plot(results_dir):
    from jaxbench.experiments import recovery_plot  # matplotlib only when plotting

    return recovery_plot.plot(results_dir)


def claims(results_dir) -> list:
    """Local recovery above the sample size k(d+1) and its absence below, the fraction of
    zero-loss solutions from random init that generalize vs n, and what is not measured yet."""
    from jaxbench import report, store

    t = store.load(results_dir).table
    if "init" not in t or not np.any(t["init"] == "random"):  # the branches sweep: thresholds per branch
        return _branch_claims(t)
    tanh = (t["activation"] == "tanh") & ~np.asarray(t["diverged"], bool)
    kd1 = t["k"] * (t["d"] + 1)
    local = tanh & (t["init"] == "local") & (t["epsilon"] > 0) & (t["epsilon"] <= 0.03)
    above, below = local & (t["n"] >= 2 * kd1), local & (t["n"] < kd1)
    out = [
        report.check("gradient descent from an O(eps) perturbation of the zero-generalization set recovers the "
                     "target once n is well above the local parameter count",
                     f"tanh, eps <= 0.03, n >= 2 k(d+1): {int(t['recovered'][above].sum())}/{int(above.sum())} recovered",
                     ">= 95% recovered", t["recovered"][above].mean() >= 0.95),
        report.check("below n = k(d+1) the zero-loss points reached near it do not generalize",
                     f"tanh, eps <= 0.03, n < k(d+1): {int(t['overfits'][below].sum())}/{int(below.sum())} overfit "
                     f"(zero train loss, test error above tolerance)", ">= 95% overfit",
                     t["overfits"][below].mean() >= 0.95)]
    rnd = tanh & (t["init"] == "random")
    lo, hi = rnd & (t["n"] <= kd1), rnd & (t["n"] >= 2 * kd1)
    f_lo = t["generalizes"][lo].sum() / max(t["interpolated"][lo].sum(), 1)
    f_hi = t["generalizes"][hi].sum() / max(t["interpolated"][hi].sum(), 1)
    out.append(report.check(
        "from random init, the zero-loss solutions found generalize once n is large (separation of minima)",
        f"generalizing / zero-loss: {int(t['generalizes'][lo].sum())}/{int(t['interpolated'][lo].sum())} at n <= k(d+1), "
        f"{int(t['generalizes'][hi].sum())}/{int(t['interpolated'][hi].sum())} at n >= 2 k(d+1) "
        f"(of {int(hi.sum())} runs; the others had not converged)",
        "<= 10% below, >= 90% above, on >= 50% converged runs",
        (f_lo <= 0.1 and f_hi >= 0.9) if t["interpolated"][hi].sum() >= 0.5 * hi.sum() else False,
        partly=f_lo <= 0.1 and f_hi >= 0.9))
    out.append(report.check("the separation distance between zero-generalization minima and the others grows with n",
                            "not measured in this experiment yet (only its consequence, recovery, is)", "-", None))
    out.append(report.check("gradient flow converges at the paper's characterized rate",
                            "rates fitted (exponential at m = k, power law at m > k) but not compared with the paper's",
                            "-", None))
    return out


def _branch_claims(t) -> list:
    from jaxbench import report

    ok = ~np.asarray(t["diverged"], bool) & (t["epsilon"] > 0)
    out = []
    for split in np.unique(t["split"][ok]):
        s = ok & (t["split"] == split)
        zero_out = int(round((1 - split) * (t["m"][s][0] - t["k"][s][0])))
        rank = int(t["k"][s][0] * (t["d"][s][0] + 1) + zero_out)
        ns = np.unique(t["n"][s])
        full = [n for n in ns if t["recovered"][s & (t["n"] == n)].all()]
        first = min(full) if full else None
        out.append(report.check(
            f"split = {split:g}: every run recovers from a sample size near the local rank k(d+1) + zero-output neurons",
            f"all runs recovered from n = {first} (predicted rank {rank}; n grid {ns.min()}..{ns.max()})",
            "first all-recovered n within two grid steps (4) of the rank", first is not None and first <= rank + 4))
    return out
