"""Stationarity of a ReLU network's empirical loss at a minimum that sits on ReLU kinks.

L_n of a ReLU network is piecewise smooth: it is not differentiable where a training input lies
on a unit's kink (pre-activation z = 0). The descended embedded teacher is such a point: in
float64 some first-layer units have |z| ~ 1e-12 at a training input, descent stalls with
``|grad L_n| ~ 1e-3`` (JAX takes relu'(0) = 0; either one-sided gradient is nonzero) and the loss
no longer decreases. There the right notion is Clarke stationarity: 0 in the convex hull of the
gradients of the smooth pieces that meet at w*. We measure its tolerance version, Goldstein's
epsilon-stationarity (Goldstein 1977; the gradient-sampling criterion of Burke, Lewis & Overton
2005): the smallest gradient norm when the slope ``t`` of every ReLU at a (input, unit) pair with
``|z| <= z_tol`` may take any value in [0, 1] (the gradients of the pieces meeting there and their
convex combinations). For one kink per input the gradient is affine in t, and
``min_t |g(t)|`` is a box-constrained least-squares problem, solved by projected gradient.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from jaxbench import mlp


def _apply_with_slopes(params, x, slopes, kinks):
    """The standard-parametrization MLP with ReLU slope ``slopes[l]`` where ``kinks[l]`` (n, width)."""
    h = x
    for layer, t, k in zip(params[:-1], slopes, kinks):
        z = h @ layer["w"] + layer["b"]
        h = jnp.where(k, t * z, jnp.maximum(z, 0.0))
    return h @ params[-1]["w"] + params[-1]["b"]


def kink_stationarity(spec: mlp.MLPSpec, params, x, y, sigma, weights, z_tol, iters: int = 300):
    """``(min_t |grad L_n(w*; t)|, number of kinks)``: Goldstein stationarity at ``params``.

    x (n, d), y (n,), weights (n,) the 0/1 mask of L_n (the Gaussian regression loss with noise
    ``sigma``); z_tol: how close to a kink a pre-activation counts as on it. t starts at 1 where
    z > 0 and 0 elsewhere (the gradient JAX reports, up to relu'(0)); ``iters`` projected-gradient
    steps of size ``1 / ||J_t||^2`` (power iteration) on ``|g(t)|^2 / 2``.
    """
    if spec.parametrization != "standard" or not spec.bias:
        raise ValueError("kink_stationarity needs a standard-parametrization MLP with biases, got "
                         f"parametrization={spec.parametrization!r}, bias={spec.bias}")
    w, unravel = ravel_pytree(params)
    zs, h = [], x
    for layer in params[:-1]:
        z = h @ layer["w"] + layer["b"]
        zs.append(z)
        h = jnp.maximum(z, 0.0)
    kinks = [jnp.abs(z) <= z_tol for z in zs]
    t0 = [jnp.where(z > 0, 1.0, 0.0).astype(w.dtype) for z in zs]
    n = jnp.sum(weights)

    def grad_at(t):
        def loss(v):
            r = y - _apply_with_slopes(unravel(v), x, t, kinks)[:, 0]
            return jnp.sum(weights * r**2) / (2 * sigma**2 * n)
        return jax.grad(loss)(w)

    obj = lambda t: 0.5 * jnp.sum(grad_at(t) ** 2)
    proj = lambda t: [jnp.where(k, jnp.clip(a, 0.0, 1.0), a0) for a, k, a0 in zip(t, kinks, t0)]
    # step 1 / L with L = ||J||^2 (J = dg/dt on the kink entries), by power iteration on J^T J
    jvp = lambda u: jax.jvp(grad_at, (t0,), ([a * k for a, k in zip(u, kinks)],))[1]
    vjp = jax.vjp(grad_at, t0)[1]

    def power(u, _):
        v = [a * k for a, k in zip(vjp(jvp(u))[0], kinks)]
        nrm = jnp.sqrt(sum(jnp.sum(a**2) for a in v)) + 1e-30
        return [a / nrm for a in v], nrm

    u0 = [k.astype(w.dtype) for k in kinks]
    _, norms = jax.lax.scan(power, u0, None, length=20)
    lr = 1.0 / jnp.maximum(norms[-1], 1e-30)

    def step(t, _):
        g = jax.grad(obj)(t)
        return proj([a - lr * b for a, b in zip(t, g)]), None

    t, _ = jax.lax.scan(step, t0, None, length=iters)
    count = sum(jnp.sum(k & (weights[:, None] > 0)) for k in kinks)
    return jnp.minimum(jnp.linalg.norm(grad_at(t)), jnp.linalg.norm(grad_at(t0))), count
