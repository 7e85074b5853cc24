"""Shared pieces of the benign-overfitting experiments: the lazy model, data, measures, limits.

The model (`outputs`): a depth-L ReLU MLP ``h_theta`` (`jaxbench.mlp`, NTK parametrization) read
at inputs of norm ``sqrt(d)`` (``inputs = "sqrt_d"``; see `input_scale`), and either

* centred (Chizat, Oyallon, Bach, NeurIPS 2019, arXiv 1812.07956):
  ``f = alpha (h_theta - h_theta0) + init_noise h_theta0``, zero at initialization when
  ``init_noise = 0``; or
* uncentred: ``f = alpha h_theta`` (the initial function ``alpha h_theta0`` is random noise of
  standard deviation ``alpha sqrt(Sigma(x, x))``).

Trained by gradient descent with step ``lr / alpha^2``, both have the same function-space
dynamics for every alpha to first order, ``f <- f - lr Theta_h grad_f L`` with ``Theta_h`` the
tangent kernel of h; alpha only sets how far the weights move (laziness, ~ 1 / alpha). Two
references follow from it: the *lazy limit* (alpha -> infinity at this width: the same kernel
GD with the empirical kernel ``Theta_h`` at initialization, `kernel_gd`) and the *NTK limit*
(also width -> infinity: the infinite-width kernel, `jaxbench.ntk.relu_ntk`).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from jaxbench import data, mlp, ntk
from jaxbench.compat import after


def spec_of(s) -> mlp.MLPSpec:
    """Depth-L MLP (L dense layers, L-1 hidden of width m), scalar output."""
    return mlp.MLPSpec(s.d, (s.width,) * (s.depth - 1), 1, parametrization=s.parametrization)


def input_scale(s) -> float:
    """Factor from the unit sphere to the network's input: ``sqrt(d)`` (``inputs = "sqrt_d"``) or 1.

    With unit-norm inputs the NTK parametrization's first-layer pre-activations have variance
    ``w_std^2 / d``, so the bias (variance ``b_std^2 = 0.01``) dominates them once d >~ 200 and
    the kernel flattens: measured at n = d = 1024, eta = 0.2, depth 3, the infinite-width NTK's GD
    then needs ~10^4 steps to interpolate and plateaus at clean error 0.012, against ~400 steps
    and 0.0002 with inputs of norm sqrt(d) (pre-activation variance w_std^2 at every d).
    """
    return math.sqrt(s.d) if s.inputs == "sqrt_d" else 1.0


def outputs(spec, params, params0, x, alpha, centered: bool, init_noise=0.0):
    """The model's outputs ``(n,)`` at network inputs ``x (n, d)`` (already scaled)."""
    h = mlp.apply(spec, params, x)[:, 0]
    if not centered:
        return alpha * h
    h0 = mlp.apply(spec, params0, x)[:, 0]
    return alpha * (h - h0) + init_noise * h0


def initial_outputs(h0, alpha, centered: bool, init_noise=0.0):
    """``f_0`` from ``h_theta0`` on some inputs: ``init_noise h0`` (centred) or ``alpha h0``."""
    return init_noise * h0 if centered else alpha * h0


def sample(key, n: int, n_test: int, d: int, eta, gamma):
    """Training and test sets of the separated-sphere task (`jaxbench.data.separated_sphere`).

    The inputs depend on the key only (not on eta: variants of one seed share them). Exactly
    ``round(eta n)`` training labels are flipped (`data.flip_labels`, exact); test labels are
    flipped i.i.d. with rate eta (the test law). Returns ``(train, test)`` `data.Classification`s.
    """
    k_x, k_tr, k_te = jax.random.split(key, 3)
    s = data.separated_sphere(k_x, n + n_test, d, 0.0, gamma)
    yc, ytc = s.y_clean[:n], s.y_clean[n:]
    train = data.Classification(s.x[:n], yc, data.flip_labels(k_tr, yc, eta, exact=True))
    test = data.Classification(s.x[n:], ytc, data.flip_labels(k_te, ytc, eta))
    return train, test


# ----------------------------------------------------------------------------- measures

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
    """Weight movement, NTK drift and lambda_min of the initial empirical NTK of h on x (n, d).

    Also returns ``theta0``, the ``(n, n)`` empirical NTK of h at initialization (for `kernel_gd`).
    """
    f = functools.partial(mlp.apply, spec)
    k0 = ntk.empirical_ntk(f, params0, x, method="structured")
    k1 = ntk.empirical_ntk(f, params, x, method="structured")
    return {"weight_move": mlp.relative_movement(params, params0),
            "ntk_drift": jnp.linalg.norm(k1 - k0) / jnp.linalg.norm(k0),
            "ntk_min_eig": ntk.min_eigenvalue(after(k0, dep)), "theta0": k0}


def smoothness(fn, points, f_test, margins) -> dict:
    """Lipschitz measures of ``fn: (p, d) -> (p,)`` (rows independent) on sphere ``points (p, d)``.

    Two lower estimates of Lip(f): ``lip_grad``, the largest input-gradient norm over the points
    (local: it sees every kink of a ReLU network; a centred network ``alpha (h - h0)`` has kinks
    displaced by ~1/alpha whose slopes grow ~alpha, so this one grows with alpha even as f
    converges to a smooth limit), and ``lip_pair``, the largest difference quotient
    ``|f(p_i) - f(p_j)| / |p_i - p_j|`` over pairs of points (at the data's own scale, pairs
    ~1 apart). ``grad_rms``: RMS gradient norm. Output scale does not set smoothness, so each is
    also given relative to ``f_rms``, the RMS output on the test set (``*_rel``: the inverse
    length over which f changes by its typical size), and ``margin_rel`` is the smallest
    training margin ``min_i y_i f(x_i)`` over ``f_rms`` (the normalized margin).
    """
    vals, vjp = jax.vjp(fn, points)
    (g,) = vjp(jnp.ones_like(vals))  # (p, d): row i is grad f(points_i), rows being independent
    norms = jnp.linalg.norm(g, axis=1)
    diff = jnp.abs(vals[:, None] - vals[None, :])
    dist = jnp.sqrt(jnp.maximum(jnp.sum((points[:, None] - points[None, :]) ** 2, -1), 0.0))
    off = ~jnp.eye(points.shape[0], dtype=bool)
    lip_pair = jnp.max(jnp.where(off, diff / jnp.where(off, jnp.maximum(dist, 1e-6), 1.0), 0.0))
    f_rms = jnp.sqrt(jnp.mean(f_test**2))
    lip, rms = jnp.max(norms), jnp.sqrt(jnp.mean(norms**2))
    return {"lip_grad": lip, "lip_pair": lip_pair, "grad_rms": rms, "f_rms": f_rms,
            "lip_grad_rel": lip / f_rms, "lip_pair_rel": lip_pair / f_rms, "grad_rel": rms / f_rms,
            "margin_rel": jnp.min(margins) / f_rms}


def kernel_gd(loss, k_train, k_test_train, f0, f0_test, y, lr, steps: int, stop: bool = True):
    """Gradient descent in function space with a fixed kernel: the lazy / NTK limit of a run.

    With ``f = alpha (h - h0) (+ f0)`` or ``f = alpha h`` trained by GD with step ``lr / alpha^2``
    on the mean loss, the linearized model moves as ``f_{t+1}(.) = f_t(.) - lr K(., X)
    grad_f L(f_t(X))`` with K the tangent kernel of h (Jacot et al. 2018; Lee et al. 2019, arXiv
    1902.06720). Same stopping rule as `jaxbench.train`: when the training error (``y f <= 0``)
    is 0 at a step, that step is not taken and nothing moves afterwards.

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


def agreement(f, g) -> dict:
    """Gap between two predictors on the same test points ``(m,)``: sign disagreement and
    relative L2 distance ``|f - g| / |g|``."""
    return {"disagree": jnp.mean(jnp.sign(f) != jnp.sign(g)),
            "dist": jnp.linalg.norm(f - g) / jnp.linalg.norm(g)}
