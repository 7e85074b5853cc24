"""A verified local minimum w* of the empirical loss L_n, where learning coefficients are measured.

The local learning coefficient ``nbeta (E[L_n] - L_n(w*))`` is biased by ``nbeta (L_n(w*) - min
L_n)`` when w* is not a minimum (a saddle, or gradient descent stuck at the edge of stability),
and a chain started there drifts downhill. `find_minimum` descends from a jittered start with
Nesterov-accelerated gradient steps of size ``1 / (1.2 h)``, h the top Hessian eigenvalue
re-estimated every ``refresh`` steps (power iteration), restarting the momentum whenever it
points uphill (O'Donoghue & Candes 2015), until ``|grad L_n| <= grad_tol``; a block of steps
that raised the loss is undone and its step quartered (near a rank-0 truth the curvature
grows from ~0 faster than it is re-estimated). `check_minimum`
then verifies the point:

* gradient norm ``|grad L_n(w*)|`` below ``grad_tol`` (`default_grad_tol`);
* the lowest Hessian eigenvalue (Lanczos with full reorthogonalisation) not below
  ``-eig_rtol * max(h_max, 1)`` (`default_eig_rtol`);
* a descent probe: ``probe_steps`` of unadjusted Langevin from w* at ``nbeta = n / log n`` (the
  temperature of the estimators' chains: where they could go) must not find a point whose
  ``n L_n`` is lower by more than ``probe_tol``.

``ok`` is the conjunction; estimators report it as ``wstar_ok``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from jaxbench.samplers import mean_nll, validate


class Minimum(NamedTuple):
    """params: w* (the input pytree's structure); loss: L_n(w*); grad_norm: |grad L_n(w*)|;
    hess_min / hess_max: lowest / highest Hessian eigenvalue of L_n at w* (Lanczos); probe_drop:
    ``n (L_n(w*) - min_t L_n(w_t))`` over the probe chain; steps: descent steps taken; ok: bool."""

    params: Any
    loss: jax.Array
    grad_norm: jax.Array
    hess_min: jax.Array
    hess_max: jax.Array
    probe_drop: jax.Array
    steps: jax.Array
    ok: jax.Array


def default_grad_tol(dtype) -> float:
    """1e-9 in float64; 1e-4 in float32, where descent toward a degenerate minimum (a set of
    minima that is not a smooth manifold, as in reduced-rank models wider than the rank) stalls
    near 1e-5 after thousands of steps though the loss is already within float32 rounding of the
    closed-form minimum; the loss it leaves, ~|g|^2 / (2 h_small), moves lambda_hat by < 1e-3."""
    return 1e-9 if jnp.dtype(dtype) == jnp.float64 else 1e-4


def default_eig_rtol(dtype) -> float:
    """Tolerated negative Hessian eigenvalue relative to max(h_max, 1): 1e-6 in float64, 1e-3 in
    float32 (Hessian-vector products in float32 near a not-quite-reached degenerate minimum give
    spurious negative eigenvalues of ~1e-4 h_max)."""
    return 1e-6 if jnp.dtype(dtype) == jnp.float64 else 1e-3


def _flat_loss(nll_fn, params, data, weights):
    w, unravel = ravel_pytree(params)
    return w, unravel, lambda v: mean_nll(nll_fn, unravel(v), data, weights)


def _hvp(loss, w):
    g = jax.grad(loss)
    return lambda v: jax.jvp(g, (w,), (v,))[1]


def _power(hvp, v, iters):
    """``iters`` power iterations from v: (|top eigenvalue| estimate, last unit vector)."""
    def body(_, v):
        hv = hvp(v)
        return hv / (jnp.linalg.norm(hv) + 1e-30)

    v = jax.lax.fori_loop(0, iters, body, v / (jnp.linalg.norm(v) + 1e-30))
    return jnp.abs(jnp.vdot(v, hvp(v))), v


def curvature(nll_fn, params, data, key, iters: int = 30, weights=None):
    """Largest |eigenvalue| of the Hessian of L_n at ``params`` (power iteration on HVPs).

    Used to set step sizes: ``eps = step_scale / (nbeta * curvature + gamma + alpha)`` keeps
    ``eps`` times the stiffest curvature of ``pi`` at ``step_scale``, whatever the model.
    """
    w, _, loss = _flat_loss(nll_fn, params, data, weights)
    return _power(_hvp(loss, w), jax.random.normal(key, w.shape, w.dtype), iters)[0]


def hessian_extremes(nll_fn, params, data, key, iters: int = 40, weights=None):
    """(lowest, highest) eigenvalue of the Hessian of L_n at ``params``: Ritz values of
    ``min(iters, P)`` Lanczos steps with full reorthogonalisation (exact when iters >= P)."""
    w, _, loss = _flat_loss(nll_fn, params, data, weights)
    return _lanczos(_hvp(loss, w), jax.random.normal(key, w.shape, w.dtype), iters)


def _lanczos(hvp, v0, iters):
    p = v0.shape[0]
    k = min(iters, p)
    basis = jnp.zeros((k + 1, p), v0.dtype).at[0].set(v0 / jnp.linalg.norm(v0))

    def body(j, carry):
        basis, alpha, beta = carry
        v = basis[j]
        u = hvp(v)
        a = jnp.vdot(v, u)
        for _ in range(2):  # full reorthogonalisation, twice ("twice is enough")
            u = u - basis.T @ (basis @ u)
        b = jnp.linalg.norm(u)
        # when the Krylov space is exhausted, b is rounding noise and u / b is no longer
        # orthogonal to the basis: orthogonalise the normalised vector again (a restart)
        q = u / jnp.where(b > 0, b, 1.0)
        for _ in range(2):
            q = q - basis.T @ (basis @ q)
        q = q / jnp.maximum(jnp.linalg.norm(q), 1e-30)
        basis = basis.at[j + 1].set(jnp.where(b > 0, q, 0.0))
        return basis, alpha.at[j].set(a), beta.at[j].set(b)

    zeros = jnp.zeros((k,), v0.dtype)
    _, alpha, beta = jax.lax.fori_loop(0, k, body, (basis, zeros, zeros))
    off = beta[: k - 1]
    tri = jnp.diag(alpha) + jnp.diag(off, 1) + jnp.diag(off, -1)
    ev = jnp.linalg.eigvalsh(tri)
    return ev[0], ev[-1]


def check_minimum(nll_fn, params, data, key, *, weights=None, grad_tol=None, eig_rtol=None,
                  lanczos_iters: int = 40, probe_steps: int = 500, probe_tol: float = 0.1,
                  steps=0) -> Minimum:
    """The checks of the module docstring at ``params`` (no descent). Returns a `Minimum`."""
    validate(data=data, weights=weights)
    w, unravel, loss = _flat_loss(nll_fn, params, data, weights)
    tol = default_grad_tol(w.dtype) if grad_tol is None else grad_tol
    eig_rtol = default_eig_rtol(w.dtype) if eig_rtol is None else eig_rtol
    k_l, k_p = jax.random.split(key)
    l_star, g = jax.value_and_grad(loss)(w)
    gnorm = jnp.linalg.norm(g)
    lo, hi = _lanczos(_hvp(loss, w), jax.random.normal(k_l, w.shape, w.dtype), lanczos_iters)
    drop = _descent_probe(loss, w, l_star, hi, data, weights, k_p, probe_steps)[0]
    ok = (gnorm <= tol) & (lo >= -eig_rtol * jnp.maximum(hi, 1.0)) & (drop <= probe_tol) & jnp.isfinite(l_star)
    return Minimum(params, l_star, gnorm, lo, hi, drop, jnp.asarray(steps), ok)


def _descent_probe(loss, w, l_star, h, data, weights, key, steps):
    """``(n (L* - min_t L_n(w_t)), argmin_t w_t)`` over ``steps`` unadjusted Langevin steps from
    w at the estimators' temperature ``nbeta = n / log n``: where `llc`'s chains could go."""
    if steps == 0:
        return jnp.zeros((), w.dtype), w
    n = jax.tree_util.tree_leaves(data)[0].shape[0] if weights is None else jnp.sum(weights)
    nbeta = n / jnp.log(n)
    eps = 0.5 / (nbeta * jnp.maximum(h, 1.0))   # floor: a flat (e.g. quartic) w* must not blow the probe up
    vg = jax.value_and_grad(loss)

    def body(carry, k):
        v, lo, best = carry
        l, g = vg(v)
        better = l < lo
        lo, best = jnp.where(better, l, lo), jnp.where(better, v, best)
        v = v - 0.5 * eps * nbeta * g + jnp.sqrt(eps) * jax.random.normal(k, v.shape, v.dtype)
        return (v, lo, best), None

    (_, lo, best), _ = jax.lax.scan(body, (w, l_star, w), jax.random.split(key, steps))
    return n * (l_star - lo), best


def find_minimum(nll_fn, params0, data, key, *, weights=None, jitter: float = 1e-2, max_steps: int = 5000,
                 grad_tol=None, refresh: int = 25, rounds: int = 4, probe_steps: int = 500,
                 probe_tol: float = 0.1, **check_kw) -> Minimum:
    """Descends L_n from ``params0 + jitter N(0, I)`` (module docstring) and verifies the result.

    The jitter moves the start off saddles where the gradient vanishes exactly (a true rank-r
    parameter of a wider reduced-rank model is one). Each of ``rounds`` rounds descends for at
    most ``max_steps`` steps (rounded up to a multiple of ``refresh``; may be traced) or until
    ``|grad L_n| <= grad_tol``, then runs the descent probe; if the probe lowered ``n L_n`` by
    more than ``probe_tol``, the next round starts from the lowest point it visited (a deep
    linear network's truth is a saddle of order >= 3, flat to first and second order, where
    descent stops at once). ``check_kw`` go to `check_minimum`. Returns a `Minimum` (``steps``:
    descent steps taken over all rounds).
    """
    validate(data=data, weights=weights)
    if (not isinstance(max_steps, jax.core.Tracer) and max_steps < 0) or refresh < 1:
        raise ValueError(f"find_minimum needs max_steps >= 0 and refresh >= 1, got {max_steps}, {refresh}")
    w0, unravel, loss = _flat_loss(nll_fn, params0, data, weights)
    tol = default_grad_tol(w0.dtype) if grad_tol is None else grad_tol
    k_j, k_h, k_c, k_p = jax.random.split(key, 4)
    vg = jax.value_and_grad(loss)
    x0 = w0 + jitter * jax.random.normal(k_j, w0.shape, w0.dtype)

    def fista(carry, _):
        x, y, t, step = carry
        _, g = vg(y)
        x_new = y - step * g
        restart = jnp.vdot(g, x_new - x) > 0          # momentum points uphill: drop it
        t_new = (1 + jnp.sqrt(1 + 4 * t * t)) / 2
        y_new = jnp.where(restart, x_new, x_new + (t - 1) / t_new * (x_new - x))
        return (x_new, y_new, jnp.where(restart, 1.0, t_new), step), None

    def block(state):
        i, x, y, t, u, _, mult = state
        h, u = _power(_hvp(loss, x), u, 8)
        step = mult / (1.2 * jnp.maximum(h, 1e-12))
        (x_new, y_new, t_new, _), _ = jax.lax.scan(fista, (x, y, t, step), None, length=refresh)
        # safeguard: a block that raised the loss (the curvature grew faster than the refresh)
        # is undone and the step quartered; a good block lets the step recover toward 1 / h
        worse = ~(loss(x_new) <= loss(x))
        keep = lambda a, b: jnp.where(worse, b, a)
        x, y, t = keep(x_new, x), keep(y_new, x), keep(t_new, 1.0)
        mult = jnp.where(worse, mult / 4, jnp.minimum(1.0, 2 * mult))
        return i + refresh, x, y, t, u, jnp.where(worse, jnp.inf, jnp.linalg.norm(vg(x)[1])), mult

    one = jnp.ones((), w0.dtype)
    u0 = jax.random.normal(k_h, w0.shape, w0.dtype)

    def descend(x, limit):
        init = (jnp.zeros((), jnp.int32), x, x, one, u0, jnp.linalg.norm(vg(x)[1]), one)
        steps, x, *_ = jax.lax.while_loop(lambda st: (st[0] < limit) & (st[5] > tol), block, init)
        return x, steps

    def round_(r, carry):
        # descend, then probe: a gradient below tol also holds on a flat higher-order saddle (a
        # deep linear truth), which the probe's chain leaves; descend again from its best point
        x, steps, go = carry
        x_new, s_r = descend(x, jnp.where(go, max_steps, 0))
        l_new = loss(x_new)
        h, _ = _power(_hvp(loss, x_new), u0, 8)
        drop, best = _descent_probe(loss, x_new, l_new, h, data, weights, jax.random.fold_in(k_p, r), probe_steps)
        more = go & (drop > probe_tol)
        return jnp.where(more, best, x_new), steps + s_r, more

    x, steps, _ = jax.lax.fori_loop(0, rounds, round_, (x0, jnp.zeros((), jnp.int32), jnp.asarray(True)))
    return check_minimum(nll_fn, unravel(x), data, k_c, weights=weights, grad_tol=tol, steps=steps,
                         probe_steps=probe_steps, probe_tol=probe_tol, **check_kw)
