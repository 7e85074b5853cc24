"""Synthetic tasks: seeded, pure, jit-able (sizes are static Python ints, rates may be traced).

Labels of classification tasks are in {-1, +1} with shape ``(n,)``; regression targets have
shape ``(n, k)``. Every generator takes an explicit PRNG key and is a pure function of it.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxbench import compat, mlp


class Classification(NamedTuple):
    """x: (n, d) inputs; y_clean: (n,) true labels; y: (n,) observed (possibly flipped) labels."""

    x: jax.Array
    y_clean: jax.Array
    y: jax.Array


def normals(key: jax.Array, shapes, dtype=None) -> list[jax.Array]:
    """Standard normal arrays of the given ``shapes`` (a list of tuples), from ONE draw.

    Every ``jax.random.normal`` call adds compile time (about 0.3 s each on CPU in float64), so
    the pieces are cut from one draw; the draw is `compat.materialize`-d, or XLA would compile
    the whole generator again inside every piece's consumer (measured: the local_recovery_random
    bucket's optimized program 15,939 -> 6,950 HLO lines; arch_bounds's compile seconds per
    bucket, median 7.2 -> 5.4 s, benchmarks/RESULTS.md).
    """
    sizes = [int(np.prod(s)) for s in shapes]
    flat = compat.materialize(jax.random.normal(key, (sum(sizes),), dtype))
    cuts = np.cumsum([0, *sizes])
    return [flat[i:j].reshape(s) for s, i, j in zip(shapes, cuts[:-1], cuts[1:])]


def sphere(key: jax.Array, n: int, d: int) -> jax.Array:
    """``(n, d)`` points uniform on the unit sphere S^{d-1}."""
    g = jax.random.normal(key, (n, d))
    return g / jnp.linalg.norm(g, axis=-1, keepdims=True)


def _beta_tail_quantile(u, a, b, lo, iters=60):
    """Solves ``I_t(a, b) = u`` for t in [lo, 1] by bisection (I the regularised incomplete beta)."""

    def body(_, bounds):
        left, right = bounds
        mid = 0.5 * (left + right)
        below = jax.scipy.special.betainc(a, b, mid) < u
        return jnp.where(below, mid, left), jnp.where(below, right, mid)

    left, right = jax.lax.fori_loop(0, iters, body, (jnp.full_like(u, lo), jnp.ones_like(u)))
    return 0.5 * (left + right)


def flip_labels(key, y, eta, exact: bool = False):
    """Labels ``y (n,)`` in {-1, +1} with noise rate eta (may be traced).

    exact=False: each label flipped independently with probability eta (the realized rate is
    Binomial(n, eta) / n). exact=True: exactly ``round(eta * n)`` labels flipped (rounded in the
    working precision, half to even), chosen uniformly at random: the realized rate is the
    nominal one up to rounding, so a sweep over eta does not also sweep the sampling noise of
    the flip count. Flip sets of one key are nested: a larger eta flips a superset.
    """
    n = y.shape[0]
    if exact:
        rank = jnp.argsort(jnp.argsort(jax.random.uniform(key, (n,))))  # a uniform random permutation
        flip = rank < jnp.round(jnp.asarray(eta) * n)
    else:
        flip = jax.random.bernoulli(key, eta, (n,))
    return jnp.where(flip, -y, y)


def separated_sphere(key, n: int, d: int, eta=0.0, gamma=0.0, exact_flips: bool = False) -> Classification:
    """Uniform points on S^{d-1} conditioned on margin ``|<u, x>| >= gamma``; labels flipped w.p. eta.

    The direction u is ``e_1`` (the networks' initialisation is rotation invariant, so this
    loses no generality). The margin condition is sampled exactly, without rejection: for x
    uniform on the sphere, ``t^2 = <u, x>^2 ~ Beta(1/2, (d-1)/2)``; we draw t^2 from that law
    restricted to ``[gamma^2, 1]`` by inverting its CDF, a random sign, and the orthogonal part
    uniform on the sphere of the complement scaled by ``sqrt(1 - t^2)``.

    Args:
      n, d: sample size and dimension (static, d >= 2).
      eta: label-noise rate in [0, 0.5] (may be traced); the Bayes error on noisy labels is eta.
      gamma: margin in [0, 1) (may be traced).
      exact_flips: flip exactly ``round(eta n)`` labels instead of each with probability eta
        (`flip_labels`); the default keeps the i.i.d. flips (and the draws) of earlier versions.
    """
    if d < 2:
        raise ValueError(f"separated_sphere needs d >= 2, got {d}")
    k_t, k_sign, k_perp, k_flip = jax.random.split(key, 4)
    a, b = 0.5, 0.5 * (d - 1)
    lo = jax.scipy.special.betainc(a, b, jnp.asarray(gamma, jnp.float32) ** 2)
    u = lo + (1.0 - lo) * jax.random.uniform(k_t, (n,))
    t = jnp.sqrt(_beta_tail_quantile(u, a, b, jnp.asarray(gamma) ** 2))
    sign = jnp.where(jax.random.bernoulli(k_sign, 0.5, (n,)), 1.0, -1.0)
    perp = sphere(k_perp, n, d - 1) * jnp.sqrt(jnp.clip(1.0 - t**2, 0.0))[:, None]
    x = jnp.concatenate([(sign * t)[:, None], perp], axis=1)
    y_clean = sign
    return Classification(x, y_clean, flip_labels(k_flip, y_clean, eta, exact_flips))


def teacher_student(key, n: int, teacher: mlp.MLPSpec, teacher_params, noise_std=0.0,
                    inputs: str = "gaussian"):
    """Regression data from a teacher network: ``y = f*(x) + noise_std * N(0, 1)``.

    Args:
      teacher, teacher_params: the teacher f* (any `mlp.MLPSpec`).
      inputs: "gaussian" (x ~ N(0, I_d)), "cube" (uniform on [-1, 1]^d) or "sphere".
    Returns:
      ``(x (n, d), y (n, out_dim))``.
    """
    kx, ke = jax.random.split(key)
    d = teacher.in_dim
    if inputs == "gaussian":
        x = jax.random.normal(kx, (n, d))
    elif inputs == "cube":
        x = jax.random.uniform(kx, (n, d), minval=-1.0, maxval=1.0)
    elif inputs == "sphere":
        x = sphere(kx, n, d)
    else:
        raise ValueError(f"unknown input distribution {inputs!r}")
    y = mlp.apply(teacher, teacher_params, x)
    return x, y + noise_std * jax.random.normal(ke, y.shape)


def linear_regression(key, n: int, d: int, k: int = 1, noise_std=0.0, n_test: int = 0):
    """Linear teacher ``y = x B + noise`` with x ~ N(0, I_d) and B ~ N(0, 1/d) of shape (d, k).

    Used for the ``n <= d`` (interpolation) regime: with n <= d the training inputs are linearly
    independent with probability one. Returns ``(x (n, d), y (n, k), x_test, y_test, B)`` with
    test sets of size n_test (noise-free targets on the test set are ``x_test B``; the returned
    y_test includes noise).
    """
    kb, kx, ke, kxt, ket = jax.random.split(key, 5)
    B = jax.random.normal(kb, (d, k)) / jnp.sqrt(d)
    x = jax.random.normal(kx, (n, d))
    y = x @ B + noise_std * jax.random.normal(ke, (n, k))
    xt = jax.random.normal(kxt, (n_test, d))
    yt = xt @ B + noise_std * jax.random.normal(ket, (n_test, k))
    return x, y, xt, yt, B


def gaussian_binary(key, n: int, mu, sigma=1.0):
    """Binary Gaussian mixture: Y = +-1 equiprobable, ``X | Y ~ N(Y mu, sigma^2 I)``.

    Args:
      mu: (d,) mean direction. Returns ``(x (n, d), y (n,))``.
    """
    ky, kx = jax.random.split(key)
    y = jnp.where(jax.random.bernoulli(ky, 0.5, (n,)), 1.0, -1.0)
    x = y[:, None] * mu[None, :] + sigma * jax.random.normal(kx, (n, mu.shape[0]))
    return x, y
