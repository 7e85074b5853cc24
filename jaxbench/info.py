"""Divergence and transport measures between train and test representation distributions.

Used by `jaxbench.experiments.infobound.layers` (He & Goldfeld, arXiv 2404.03176): the KL divergence
and the 1-Wasserstein distance between the law of a layer's representation of a training point
and that of a fresh test point.

Closed forms (derivations inline; each is tested against Monte Carlo in ``tests/test_info.py``):

* ``kl_gaussians``: ``KL(N(m1, C1) || N(m2, C2)) = 1/2 [tr(C2^-1 C1) + (m2-m1)^T C2^-1 (m2-m1)
  - k + log det C2 - log det C1]``.
* ``gaussian_mutual_information``: for jointly Gaussian (A, B),
  ``I(A; B) = 1/2 [log det S_AA + log det S_BB - log det S]`` (the KL between the joint and the
  product of its marginals; the means cancel).
* ``w1_gaussians_1d``: in one dimension ``W1(P, Q) = int_0^1 |F_P^-1(u) - F_Q^-1(u)| du``
  (the quantile coupling is optimal for convex costs). For ``N(a, s^2)`` and ``N(b, t^2)`` the
  quantile difference is ``(a - b) + (s - t) Z`` with Z standard normal, so
  ``W1 = E|delta + tau Z| = tau sqrt(2/pi) exp(-delta^2 / (2 tau^2)) + delta (1 - 2 Phi(-delta/tau))``
  with ``delta = a - b`` and ``tau = |s - t|`` (the mean of a folded normal).
* ``w2_gaussians`` (Gelbrich): ``W2^2 = |m1 - m2|^2 + tr(C1 + C2 - 2 (C2^1/2 C1 C2^1/2)^1/2)``.
  In d >= 2 W1 between Gaussians has no closed form; it is sandwiched as
  ``|m1 - m2| <= W1 <= W2`` (Jensen for the lower bound, ``W1 <= W2`` by Cauchy-Schwarz).

Exact optimal transport between two equal-size empirical samples (``w1_empirical``): with n
points each and uniform weights, an optimal plan may be taken to be a permutation (Birkhoff-von
Neumann), so ``W1 = min_perm (1/n) sum_i |x_i - y_perm(i)|``: a linear assignment problem. We
solve it with the Hungarian algorithm in its shortest-augmenting-path form with dual potentials
(Kuhn-Munkres; the O(n^3) formulation of Jonker & Volgenant 1987), written with ``lax`` loops
so it jits and vmaps. Why this and not Sinkhorn or an auction: both are approximate
(entropic bias, or epsilon-optimality for real-valued costs); the Hungarian algorithm is exact
for real costs and returns dual potentials u, v with ``u_i + v_j <= c_ij`` and equality on the
assignment, a certificate of optimality the tests check (besides brute force over all
permutations and scipy's ``linear_sum_assignment``). Cost: O(n^3) work in O(n^2) sequential
vector steps of length n; n <= a few hundred is cheap on CPU.

Sample-based Gaussian-approximation KL (``gaussian_fit_kl``) fits a mean and a ridge-regularised
covariance to each sample set and returns the closed-form KL; it is an estimator whose bias the
experiment measures (test-vs-test baseline), not an identity.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax


def _logdet_spd(c: jax.Array) -> jax.Array:
    """log det of a symmetric positive definite matrix via Cholesky."""
    chol = jnp.linalg.cholesky(c)
    return 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)


def kl_gaussians(m1: jax.Array, c1: jax.Array, m2: jax.Array, c2: jax.Array) -> jax.Array:
    """``KL(N(m1, c1) || N(m2, c2))`` for means ``(k,)`` and SPD covariances ``(k, k)``. Returns ``()``."""
    k = m1.shape[-1]
    chol2 = jnp.linalg.cholesky(c2)
    # tr(C2^-1 C1) = |L2^-1 L1|_F^2 and the Mahalanobis term via one triangular solve each.
    chol1 = jnp.linalg.cholesky(c1)
    a = jax.scipy.linalg.solve_triangular(chol2, chol1, lower=True)
    b = jax.scipy.linalg.solve_triangular(chol2, m2 - m1, lower=True)
    logdet2 = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol2)))
    logdet1 = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol1)))
    return 0.5 * (jnp.sum(a**2) + jnp.sum(b**2) - k + logdet2 - logdet1)


def cholesky_loop(c: jax.Array) -> jax.Array:
    """Lower Cholesky factor of SPD ``c (..., k, k)`` with plain XLA ops in a ``fori_loop``.

    Why it exists: with jaxlib 0.10 on CPU, a program holding LAPACK potrf/trsm/getrf custom
    calls ran its long ``while`` loops (the Hungarian algorithm's O(n^2) tiny iterations) ~100x
    slower on a loaded machine (measured; the loop bodies compiled identically). Programs that
    need both (`jaxbench.experiments.infobound.relu`) use this. One column per iteration (masked,
    fixed shapes, so the body compiles once); O(k^3) work.
    """
    k = c.shape[-1]
    idx = jnp.arange(k)

    def column(j, low):
        row = jnp.where(idx < j, jnp.take(low, j, axis=-2), 0.0)  # L[j, :j]
        diag = jnp.sqrt(jnp.take(jnp.take(c, j, axis=-1), j, axis=-1) - jnp.sum(row**2, -1))
        col = (jnp.take(c, j, axis=-1) - jnp.einsum("...ip,...p->...i", low, row)) / diag[..., None]
        col = jnp.where(idx >= j, col, 0.0)
        return jnp.where(idx == j, col[..., :, None], low)

    return lax.fori_loop(0, k, column, jnp.zeros_like(c))


def _solve_lower_loop(low: jax.Array, b: jax.Array) -> jax.Array:
    """``low^{-1} b`` for lower-triangular ``low (..., k, k)``, ``b (..., k, m)`` (forward substitution)."""
    k = low.shape[-1]
    idx = jnp.arange(k)

    def row(i, x):
        li = jnp.where(idx < i, jnp.take(low, i, axis=-2), 0.0)
        xi = (jnp.take(b, i, axis=-2) - jnp.einsum("...p,...pm->...m", li, x)) / jnp.take(
            jnp.take(low, i, axis=-2), i, axis=-1)[..., None]
        return jnp.where((idx == i)[:, None], xi[..., None, :], x)

    return lax.fori_loop(0, k, row, jnp.zeros_like(b))


def kl_gaussians_loop(m1, c1, m2, c2) -> jax.Array:
    """`kl_gaussians` via `cholesky_loop` (no LAPACK custom calls); batched over ``...``."""
    k = m1.shape[-1]
    l1, l2 = cholesky_loop(c1), cholesky_loop(c2)
    rhs = jnp.concatenate([l1, (m2 - m1)[..., :, None]], axis=-1)
    sol = _solve_lower_loop(l2, rhs)
    logdet = lambda low: 2.0 * jnp.sum(jnp.log(jnp.diagonal(low, axis1=-2, axis2=-1)), -1)
    return 0.5 * (jnp.sum(sol**2, (-2, -1)) - k + logdet(l2) - logdet(l1))


def kl_gaussians_1d(m1, s1, m2, s2) -> jax.Array:
    """``KL(N(m1, s1^2) || N(m2, s2^2))`` (elementwise; s are standard deviations)."""
    return jnp.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2.0 * s2**2) - 0.5


def gaussian_mutual_information(s_aa: jax.Array, s_bb: jax.Array, s_ab: jax.Array) -> jax.Array:
    """``I(A; B)`` in nats for jointly Gaussian A ``(p,)``, B ``(q,)``.

    Args:
      s_aa: ``(p, p)`` covariance of A; s_bb: ``(q, q)`` of B; s_ab: ``(p, q)`` cross-covariance.
    Returns:
      ``()``: ``1/2 [log det s_aa + log det s_bb - log det [[s_aa, s_ab], [s_ab^T, s_bb]]]``.
    """
    joint = jnp.block([[s_aa, s_ab], [s_ab.T, s_bb]])
    return 0.5 * (_logdet_spd(s_aa) + _logdet_spd(s_bb) - _logdet_spd(joint))


def w1_gaussians_1d(m1, s1, m2, s2) -> jax.Array:
    """Closed-form ``W1(N(m1, s1^2), N(m2, s2^2))`` in one dimension (elementwise; s = std devs)."""
    delta = m1 - m2
    tau = jnp.abs(s1 - s2)
    safe = jnp.where(tau > 0, tau, 1.0)
    folded = safe * math.sqrt(2.0 / math.pi) * jnp.exp(-0.5 * (delta / safe) ** 2) + delta * (
        1.0 - 2.0 * jax.scipy.stats.norm.cdf(-delta / safe)
    )
    return jnp.where(tau > 0, folded, jnp.abs(delta))


def w1_samples_1d(x: jax.Array, y: jax.Array) -> jax.Array:
    """Exact W1 between two equal-size 1-d samples ``(n,)``: the sorted (quantile) matching."""
    return jnp.mean(jnp.abs(jnp.sort(x) - jnp.sort(y)))


def sqrtm_psd(c: jax.Array) -> jax.Array:
    """Symmetric square root of a positive semi-definite matrix ``(k, k)`` (eigendecomposition)."""
    evals, evecs = jnp.linalg.eigh(0.5 * (c + c.T))
    return (evecs * jnp.sqrt(jnp.clip(evals, 0.0))) @ evecs.T


def bures_squared(c1: jax.Array, c2: jax.Array) -> jax.Array:
    """``tr(c1 + c2 - 2 (c2^1/2 c1 c2^1/2)^1/2)``: the covariance part of W2^2 between Gaussians."""
    r = sqrtm_psd(c2)
    cross = sqrtm_psd(r @ c1 @ r)
    return jnp.clip(jnp.trace(c1) + jnp.trace(c2) - 2.0 * jnp.trace(cross), 0.0)


def w2_gaussians(m1: jax.Array, c1: jax.Array, m2: jax.Array, c2: jax.Array) -> jax.Array:
    """Gelbrich closed form ``W2(N(m1, c1), N(m2, c2))`` (an upper bound on W1). Returns ``()``."""
    return jnp.sqrt(jnp.sum((m1 - m2) ** 2) + bures_squared(c1, c2))


# --------------------------------------------------------------------------------------------
# Exact assignment (Hungarian algorithm with potentials) and exact empirical W1.


def assignment(cost: jax.Array):
    """Exact minimum-cost perfect matching of a square cost matrix ``(n, n)``.

    Hungarian algorithm, shortest-augmenting-path form with dual potentials (rows are added one
    at a time; each addition runs a Dijkstra-like search over reduced costs ``c - u - v`` and
    augments along the shortest path). Index 0 of the internal arrays is a dummy column/row.

    Returns:
      ``(col, u, v)``: ``col (n,)`` int, row i is matched to column ``col[i]``; dual potentials
      ``u (n,)``, ``v (n,)`` with ``u_i + v_j <= cost_ij`` for all i, j, equality on the matching,
      so ``sum(u) + sum(v)`` equals the optimal cost (LP duality certificate).
    """
    n = cost.shape[0]
    if cost.shape != (n, n):
        raise ValueError(f"assignment needs a square cost matrix, got {cost.shape}")
    a = jnp.pad(cost, ((1, 0), (1, 0)))
    inf = jnp.asarray(jnp.inf, cost.dtype)
    zero = jnp.zeros((), cost.dtype)

    def add_row(i, state):
        u, v, p, way = state
        p = p.at[0].set(i)  # the new row sits on the dummy column until a free column is reached
        minv = jnp.full((n + 1,), inf)
        used = jnp.zeros((n + 1,), bool)

        def search_body(c):
            u, v, way, minv, used, j0 = c
            used = used.at[j0].set(True)
            i0 = p[j0]
            cur = a[i0] - u[i0] - v  # reduced costs from the row just reached
            free = ~used
            better = free & (cur < minv)
            minv = jnp.where(better, cur, minv)
            way = jnp.where(better, j0, way)
            masked = jnp.where(free, minv, inf)
            j1 = jnp.argmin(masked).astype(p.dtype)
            delta = masked[j1]
            # raise the potentials of the tree (used columns and their rows) by delta
            u = u.at[p].add(jnp.where(used, delta, zero))
            v = v - jnp.where(used, delta, zero)
            minv = jnp.where(free, minv - delta, minv)
            return u, v, way, minv, used, j1

        u, v, way, _, _, j0 = lax.while_loop(
            lambda c: p[c[-1]] != 0, search_body, (u, v, way, minv, used, jnp.zeros((), p.dtype))
        )

        def augment_body(c):
            p, j0 = c
            j1 = way[j0]
            return p.at[j0].set(p[j1]), j1

        p, _ = lax.while_loop(lambda c: c[1] != 0, augment_body, (p, j0))
        return u, v, p, way

    idx = jnp.zeros((n + 1,), jnp.int32)
    u, v, p, _ = lax.fori_loop(
        1, n + 1, add_row, (jnp.zeros((n + 1,), cost.dtype), jnp.zeros((n + 1,), cost.dtype), idx, idx)
    )
    # p[j] = row (1-based) matched to column j (1-based); invert to a row -> column map.
    col = jnp.zeros((n,), jnp.int32).at[p[1:] - 1].set(jnp.arange(n, dtype=jnp.int32))
    return col, u[1:], v[1:]


def pairwise_distances(x: jax.Array, y: jax.Array) -> jax.Array:
    """Euclidean distances ``(n, m)`` between rows of ``x (n, k)`` and ``y (m, k)`` (no cancellation)."""
    return jnp.sqrt(jnp.sum((x[:, None, :] - y[None, :, :]) ** 2, axis=-1))


def w1_empirical(x: jax.Array, y: jax.Array) -> jax.Array:
    """Exact W1 between the empirical measures of ``x (n, k)`` and ``y (n, k)`` (Euclidean cost).

    Equal sample sizes and uniform weights: the optimal plan is a permutation, found exactly by
    `assignment`. Returns ``()``. In k dimensions the plug-in estimate of W1 between the
    underlying laws is biased upwards by O(n^{-1/k}) (k >= 3); callers measure that bias
    with a same-law baseline.
    """
    if x.shape != y.shape:
        raise ValueError(f"w1_empirical needs equal-size samples, got {x.shape} and {y.shape}")
    cost = pairwise_distances(x, y)
    col, _, _ = assignment(cost)
    return jnp.mean(cost[jnp.arange(x.shape[0]), col])


def weighted_moments(x: jax.Array, w: jax.Array | None):
    """Mean ``(k,)`` and covariance ``(k, k)`` of rows of x with nonnegative weights w ``(n,)``
    (0/1 weights select a subset; the covariance uses the ``sum(w) - 1`` normalisation)."""
    w = jnp.ones(x.shape[0], x.dtype) if w is None else w.astype(x.dtype)
    total = jnp.sum(w)
    mean = jnp.sum(w[:, None] * x, 0) / total
    xc = (x - mean) * jnp.sqrt(w)[:, None]
    return mean, xc.T @ xc / jnp.maximum(total - 1.0, 1.0)


def gaussian_fit_kl(x: jax.Array, y: jax.Array, ridge: float = 1e-3, wx=None, wy=None,
                    no_lapack: bool = False) -> jax.Array:
    """Gaussian-approximation ``KL(P_x || P_y)`` from samples ``x (n, k)``, ``y (m, k)``.

    Fits ``N(mean, cov + eps I)`` to each sample with ``eps = ridge * tr(cov_pooled) / k`` (the
    ridge keeps rank-deficient covariances invertible when n <= k, e.g. dead ReLU units) and
    returns the closed-form `kl_gaussians`. Optional 0/1 (or nonnegative) weights ``wx (n,)``,
    ``wy (m,)`` fit a subset (e.g. one class) with static shapes. Biased even when both laws are
    Gaussian; the bias is measured by the caller. Returns ``()``.
    """
    k = x.shape[-1]
    mx, cx = weighted_moments(x, wx)
    my, cy = weighted_moments(y, wy)
    scale = 0.5 * (jnp.trace(cx) + jnp.trace(cy)) / k
    eps = ridge * jnp.where(scale > 0, scale, 1.0)
    eye = jnp.eye(k, dtype=x.dtype)
    kl = kl_gaussians_loop if no_lapack else kl_gaussians
    return kl(mx, cx + eps * eye, my, cy + eps * eye)
