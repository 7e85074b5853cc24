"""Descent on the empirical loss of a two-layer tanh network (experiment 2, `recovery`).

Loss ``L(theta) = (1/2n) sum_{r < n} (f_theta(x_r) - y_r)^2`` over the rows of a mask (n of
n_max). Curves hold the *relative* train loss ``L_rel = mean_r (f - y)^2 / scale = 2 L / scale``.

* `gradient_flow`: ``theta' = -grad L`` solved as an ODE (diffrax, Kvaerno5: an implicit,
  L-stable 5th-order Runge-Kutta method with adaptive steps). Near a minimum the flow is stiff
  (Hessian eigenvalues from O(1) down to 0) and slow (power laws along degenerate directions),
  so an implicit solver takes steps that grow with t: ~250 steps reach t = 1e6 where explicit
  Euler (gradient descent) needs millions.
* `gradient_descent`: ``theta <- theta - lr grad L`` (explicit Euler for the same ODE; the tests
  check that the two agree on a short horizon and that halving lr does not change the curve).
* `levenberg_marquardt`: damped Gauss-Newton, ``theta <- theta - (J^T J + lam I)^{-1} J^T r``
  with lam adapted (accepted step: lam / 3, rejected: lam * 2). Not gradient flow: it descends
  to zero train loss in tens to hundreds of iterations where gradient flow from a random start
  needs t ~ 1e6 (measured: ~1.5 s per run), and is what the random-init runs use.
"""

from __future__ import annotations

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from jaxbench.experiments.recovery import geometry as G


def rel_loss_fn(x, y, row_mask, scale, d):
    """``theta (P,) -> L_rel``; x (n_max, d), y (n_max,), row_mask (n_max,) bool, scale > 0."""
    wts = row_mask.astype(x.dtype) / row_mask.sum()

    def rel_loss(theta):
        a, w = G.unflat(theta, d)
        return jnp.sum(wts * (G.forward(a, w, x) - y) ** 2) / scale

    return rel_loss


def save_times(t_max, n_save: int, decades: float):
    """n_save log-spaced times from ``t_max 10^-decades`` to t_max: (n_save,)."""
    return t_max * jnp.logspace(-decades, 0.0, n_save)


def loss_hessian(theta, x, y, row_mask, scale, d):
    """Hessian of `rel_loss_fn` in closed form: (P, P). ``(2 / (n scale)) (J^T J + sum_r r_r
    d^2 f(x_r))``, where d^2 f is block-diagonal over neurons (a_i-w_i: tanh'(h) x, w_i-w_i:
    a_i tanh''(h) x x^T). Five to ten times fewer FLOPs than ``jax.hessian`` (tests compare)."""
    a, w = G.unflat(theta, d)
    m = a.shape[0]
    rows = row_mask.astype(x.dtype)
    t = jnp.tanh(x @ w)                                                     # (n, m)
    s1, s2 = 1.0 - t**2, -2.0 * t * (1.0 - t**2)
    r = rows * (t @ a - y)
    jac = rows[:, None] * G.jacobian(a, w, x)
    aw = jnp.einsum("r,ri,rl->il", r, s1, x)                                # (m, d)
    ww = a[:, None, None] * jnp.einsum("r,ri,rl,rq->ilq", r, s2, x, x)      # (m, d, d)
    iw = m + jnp.arange(m)[:, None] * d + jnp.arange(d)[None, :]            # w_i's columns (m, d)
    ia = jnp.arange(m)[:, None]
    second = jnp.zeros((m * (d + 1),) * 2, x.dtype)
    second = second.at[ia, iw].set(aw).at[iw, ia].set(aw).at[iw[:, :, None], iw[:, None, :]].set(ww)
    return 2.0 / (row_mask.sum() * scale) * (jac.T @ jac + second)


def flow_field(x, y, row_mask, scale, d):
    """``theta -> -grad L`` (L = scale L_rel / 2) whose JVP is the closed-form Hessian product:
    the implicit solver's Newton matrix then costs one `loss_hessian` instead of P JVPs of grad."""
    grad = jax.grad(rel_loss_fn(x, y, row_mask, scale, d))
    half = 0.5 * scale

    @jax.custom_jvp
    def field(theta):
        return -half * grad(theta)

    @field.defjvp
    def _(primals, tangents):
        (theta,), (v,) = primals, tangents
        return field(theta), -half * (loss_hessian(theta, x, y, row_mask, scale, d) @ v)

    return field


def gradient_flow(theta0, x, y, row_mask, scale, ts, *, rtol, stop_loss, max_steps: int, d: int):
    """Solves ``theta' = -grad L`` from t = 0, saving theta at times ts (n_save,), until ts[-1]
    or until L_rel <= stop_loss (an event: near the float64 floor of the loss, ~1e-31, the
    implicit solver's Newton iterations see rounding noise and its steps can collapse).

    Returns ``(thetas (n_save, P), t_stop, num_steps, ok)``: saved points after a stop hold the
    state at t_stop (the loss only decreases along the flow); ok is False when the solver
    failed (step budget ``max_steps`` spent or a failed step); its later points are then inf.
    """
    field = flow_field(x, y, row_mask, scale, d)
    rel_loss = rel_loss_fn(x, y, row_mask, scale, d)
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(lambda t, theta, args: field(theta)), diffrax.Kvaerno5(), 0.0, ts[-1], 1e-3, theta0,
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=rtol * 1e-4),
        saveat=diffrax.SaveAt(ts=ts, t1=True), max_steps=max_steps, throw=False,
        event=diffrax.Event(lambda t, theta, args, **kw: rel_loss(theta) <= stop_loss))
    stopped = jnp.asarray(sol.event_mask)
    ok = (sol.result == diffrax.RESULTS.successful) | stopped
    # saved rows: the ts before the stop, then the state at t_stop (SaveAt t1), then inf
    n_valid = jnp.sum(jnp.isfinite(sol.ts)) - 1
    last = sol.ys[n_valid]
    thetas = jnp.where((jnp.arange(ts.shape[0]) < n_valid)[:, None] | ~ok, sol.ys[:-1], last[None, :])
    return thetas, sol.ts[n_valid], sol.stats["num_steps"], ok


def log_grid(steps: int, n_log: int) -> np.ndarray:
    """n_log strictly increasing counts from 1 to ``steps``, about geometric (static)."""
    g = np.round(np.geomspace(1, steps, n_log)).astype(int)
    for j in range(1, n_log):
        g[j] = max(g[j], g[j - 1] + 1)
    for j in range(n_log - 1, 0, -1):
        g[j - 1] = min(g[j - 1], g[j] - 1)
    return g


def _iterate(update, state0, value0, tol, grid):
    """Runs ``state, value = update(state)`` until value <= tol or grid[-1] updates, recording
    (count, value, state) at the counts in grid (n_save,). Returns (counts, values, states)."""
    def segment(carry, end):
        def cond(c):
            return (c[1] < end) & (c[2] > tol)

        def body(c):
            state, i, _ = c
            state, value = update(state)
            return state, i + 1, value

        carry = jax.lax.while_loop(cond, body, carry)
        return carry, (carry[1], carry[2], carry[0])

    carry0 = (state0, jnp.zeros((), jnp.int32), value0)
    _, (counts, values, states) = jax.lax.scan(segment, carry0, jnp.asarray(grid, jnp.int32))
    return counts, values, states


def gradient_descent(theta0, x, y, row_mask, scale, lr, loss_tol, grid, *, d: int):
    """GD ``theta <- theta - lr grad L`` until L_rel <= loss_tol or grid[-1] steps.

    Returns ``(steps (n_save,), L_rel (n_save,), thetas (n_save, P))`` at the step counts of
    grid (repeated once the tolerance stopped the loop); t = steps * lr.
    """
    value_and_grad = jax.value_and_grad(rel_loss_fn(x, y, row_mask, scale, d))
    step = 0.5 * scale * lr

    def update(state):
        theta, g = state
        theta = theta - step * g
        value, g = value_and_grad(theta)
        return (theta, g), value

    v0, g0 = value_and_grad(theta0)
    counts, values, states = _iterate(update, (theta0, g0), v0, loss_tol, grid)
    return counts, values, states[0]


def levenberg_marquardt(theta0, x, y, row_mask, scale, loss_tol, grid, *, d: int):
    """Damped Gauss-Newton until L_rel <= loss_tol or grid[-1] iterations (module docstring).

    Returns ``(iterations (n_save,), L_rel (n_save,), thetas (n_save, P))`` like
    `gradient_descent`. Inactive neurons (a = w = 0) have zero Jacobian columns and stay put.
    """
    rows = row_mask.astype(x.dtype)
    rel_loss = rel_loss_fn(x, y, row_mask, scale, d)

    def resid_jac(theta):
        a, w = G.unflat(theta, d)
        return rows * (G.forward(a, w, x) - y), rows[:, None] * G.jacobian(a, w, x)

    def update(state):
        theta, lam, value = state
        r, jac = resid_jac(theta)
        gram = jac.T @ jac
        floor = 1e-12 * jnp.trace(gram) / gram.shape[0]
        chol = jnp.linalg.cholesky(gram + jnp.maximum(lam, floor) * jnp.eye(gram.shape[0], dtype=gram.dtype))
        delta = jax.scipy.linalg.cho_solve((chol, True), jac.T @ r)
        trial = theta - delta
        v_trial = rel_loss(trial)
        accept = jnp.isfinite(v_trial) & (v_trial < value)
        theta = jnp.where(accept, trial, theta)
        value = jnp.where(accept, v_trial, value)
        lam = jnp.where(accept, lam / 3.0, lam * 2.0)
        return (theta, lam, value), value

    v0 = rel_loss(theta0)
    _, jac0 = resid_jac(theta0)
    lam0 = 1e-3 * jnp.sum(jac0**2) / jac0.shape[1]
    counts, values, states = _iterate(update, (theta0, lam0, v0), v0, loss_tol, grid)
    return counts, values, states[0]


# ----------------------------------------------------------------------------- rate fits

def masked_fit(x, y, mask):
    """Least-squares slope of y on x over the mask, and R^2 (nan with fewer than 3 points)."""
    w = mask.astype(x.dtype)
    cnt = w.sum()
    safe = jnp.maximum(cnt, 1.0)
    mx, my = (w * x).sum() / safe, (w * y).sum() / safe
    sxx, syy = (w * (x - mx) ** 2).sum(), (w * (y - my) ** 2).sum()
    sxy = (w * (x - mx) * (y - my)).sum()
    ok = (cnt >= 3) & (sxx > 0)
    r2 = jnp.where(syy > 0, sxy**2 / (jnp.where(sxx > 0, sxx, 1.0) * jnp.where(syy > 0, syy, 1.0)), 1.0)
    return jnp.where(ok, sxy / jnp.where(sxx > 0, sxx, 1.0), jnp.nan), jnp.where(ok, r2, jnp.nan)


def rate_fits(t, loss, floor, window):
    """Late-time fits of a loss curve: exponential ``loss ~ exp(-r t)`` and power law
    ``loss ~ t^-p``, each with its R^2, on the saved points with loss > floor and t within a
    factor ``window`` of the last such time. t, loss: (n_save,) with t > 0.

    Returns dict rate_exp, r2_exp, rate_pow, r2_pow, fit_points, t_fit_end.
    """
    good = jnp.isfinite(loss) & (loss > floor) & (t > 0)
    t_end = jnp.max(jnp.where(good, t, 0.0))
    late = good & (t * window >= t_end)
    log_l = jnp.log(jnp.where(good, loss, 1.0))
    s_exp, r2_exp = masked_fit(t, log_l, late)
    s_pow, r2_pow = masked_fit(jnp.log(jnp.where(t > 0, t, 1.0)), log_l, late)
    return {"rate_exp": -s_exp, "r2_exp": r2_exp, "rate_pow": -s_pow, "r2_pow": r2_pow,
            "fit_points": late.sum(), "t_fit_end": t_end}
