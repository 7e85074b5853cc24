"""Geometry of the zero-generalization set of two-layer tanh networks (experiment 2, `recovery`).

Model ``f(x) = sum_i a_i tanh(w_i . x)`` (no biases), parameters ``theta = (a (m,), w (d, m))``,
teacher ``f* = sum_{j<k} a*_j tanh(w*_j . x)`` with ``a*_j != 0`` and ``w*_j`` pairwise not +-
each other. The zero-generalization set is ``Q* = {theta : f_theta = f*}`` (as functions).

Characterization (ours, from the linear independence of ``tanh(v . x)`` over nonzero v pairwise
not +- each other, Sussmann 1992): theta is in Q* iff its neurons can be partitioned into
* k *teacher groups*, group j nonempty, every member with ``w_i = s_i w*_j`` (s_i = +-1, tanh is
  odd) and ``sum s_i a_i = a*_j``;
* *null groups*: members with ``w_i = s_i v`` for a common v and ``sum s_i a_i = 0`` (a single
  neuron with a_i = 0 is one), or members with ``w_i = 0`` (any a_i).
The squared distance from theta to Q* is then a minimum over such partitions of closed-form
projections (`dist_q`); Q* is invariant under neuron permutations and sign flips
``(a_i, w_i) -> (-a_i, -w_i)``, hence so is the distance. Every cost is a sum of nonnegative
terms (no cancellation), so a point of Q* has distance 0 to rounding.

Model rank (Zhang, Zhang, Luo, arXiv 2309.00508 and the optimistic-estimate line of work): the
rank of the Jacobian ``J = d f_theta(x_1..x_n) / d theta`` (n x P). At a split point of Q*
(`split_point`) with c_j copies of teacher neuron j and z zero-output neurons (a_i = 0, generic
w_i), the copies of one teacher neuron share their features, a zero-output neuron adds its
a-feature ``tanh(w_i . x)`` only, so the rank with enough samples is ``k (d + 1) + z``. The
tangent space of Q* there has dimension ``(sum_j c_j - k) + d z`` (output weights moving within
a group with their sum fixed; zero-output neurons' input weights); the kernel of J with enough
samples has ``d (sum_j c_j - k)`` more directions (copies' input weights moving apart with
first-order cancelling effect), which are second-order, not zero-loss, directions.
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np

MAX_NEURONS = 10  # the distance enumerates the 3^m ways to split a set of m neurons in two


def forward(a, w, x):
    """Two-layer tanh network. a: (m,), w: (d, m), x: (n, d) -> (n,)."""
    return jnp.tanh(x @ w) @ a


def jacobian(a, w, x):
    """d f(x_r) / d theta in closed form: (n, m (d + 1)), columns ``[a_0..a_{m-1}, w_0 (d), w_1 (d), ...]``."""
    h = jnp.tanh(x @ w)                                                     # (n, m)
    jw = (a * (1.0 - h**2))[:, :, None] * x[:, None, :]                     # (n, m, d)
    return jnp.concatenate([h, jw.reshape(x.shape[0], -1)], axis=1)


def flat(a, w):
    """theta as one vector in `jacobian`'s column order: (m (d + 1),)."""
    return jnp.concatenate([a, w.T.reshape(-1)])


def unflat(theta, d):
    """Inverse of `flat`: ``(a (m,), w (d, m))``."""
    m = theta.shape[0] // (d + 1)
    return theta[:m], theta[m:].reshape(m, d).T


def numerical_rank(mat, rtol):
    """Rank of ``mat`` (r, c): singular values above ``rtol * s_max``; and log10 of the gap
    ``s_rank / s_{rank+1}`` at the cut (inf when nothing is cut off, nan for the zero matrix)."""
    s = jnp.linalg.svd(mat, compute_uv=False)
    above = s > rtol * s[0]
    rank = above.sum()
    kept = jnp.min(jnp.where(above, s, jnp.inf))
    cut = jnp.max(jnp.where(above, 0.0, s))
    return rank, jnp.log10(kept) - jnp.log10(cut)


def teacher(g_a, g_w):
    """Teacher ``(a* (k,), w* (d, k))`` from standard normals g_a (k,), g_w (d, k), k <= d:
    ``a*_j = sign(g) (0.5 + U)`` with U uniform on [0, 1) made from |g|, and orthonormal w*_j
    (a uniformly random k-frame). Orthonormal neurons keep the Gauss-Newton matrix at Q* well
    conditioned (smallest/largest eigenvalue ~1/85 for d = 5, k = 2; i.i.d. N(0, I/d): 1/300 to
    1/1000)."""
    u = jax.scipy.special.ndtr(jnp.abs(g_a)) * 2.0 - 1.0
    q, r = jnp.linalg.qr(g_w)
    return jnp.sign(g_a) * (0.5 + u), q * jnp.where(jnp.diagonal(r) < 0, -1.0, 1.0)


def split_point(g_w, g_u, a_star, w_star, m, split):
    """A point of Q* with m active neurons (of m_max): teacher copies plus zero-output neurons.

    Args: g_w (d, m_max), g_u (m_max,) standard normals; m traced, k <= m <= m_max; split: the
    fraction of the m - k surplus neurons that copy a teacher neuron (``round(split (m - k))``
    of them, copying neuron ``i mod k``); the others get a_i = 0 and w_i = g_w / sqrt(d).
    Returns ``(a (m_max,), w (d, m_max), owner (m_max,))``: owner = teacher neuron copied, -1 for
    a zero-output neuron, -2 for an inactive one (a = 0, w = 0: tanh(0) = 0, so it never moves).
    Copies of neuron j get output weights ``a*_j p_i`` with p_i > 0 summing to one.
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


def branch_dims(owner, k, d):
    """At a split point: ``(z, copies_beyond_k, rank_formula, tangent_dim)`` with rank_formula =
    k (d + 1) + z and tangent_dim = (copies - k) + d z (module docstring)."""
    z = jnp.sum(owner == -1)
    extra = jnp.sum(owner >= 0) - k
    return z, extra, k * (d + 1) + z, extra + d * z


def separation_count(owner, k, d):
    """Our dimension count of the sample size from which Q* is locally the only zero-loss set
    at a split point: ``codim Q* - sum_j r_j (r_j - 1) / 2``, r_j = min(c_j - 1, d).

    n generic equations cut the P-dimensional parameter space to dimension P - n, so other
    global minima pass near theta_Q while P - n > dim Q*, i.e. n < codim Q* = P - tangent_dim =
    k (d + 1) + z + d (copies - k). Along the d (c_j - 1) first-order-flat directions of a group
    of c_j copies the second-order function change depends on its directions only through a PSD
    matrix of rank <= r_j, which an O(r_j) rotation leaves unchanged: r_j (r_j - 1) / 2 fewer
    effective unknowns. A heuristic (a real solution need not exist), tested against the runs.
    """
    c = jnp.sum(owner[None, :] == jnp.arange(k)[:, None], axis=1)
    r = jnp.clip(c - 1, 0, d)
    z, extra, rank, tangent = branch_dims(owner, k, d)
    return rank + d * extra - jnp.sum(r * (r - 1) // 2)


# ----------------------------------------------------------------------------- distance to Q*

@functools.lru_cache(maxsize=None)
def _tables(m: int):
    """Static index tables over subsets of m neurons (bit i = neuron i); see `dist_q`."""
    if m > MAX_NEURONS:
        raise ValueError(f"distance to Q*: m_max = {m} > {MAX_NEURONS} (3^m enumeration)")
    sub, sign = [], []
    for s in range(1, 2**m):
        members = [i for i in range(m) if s >> i & 1]
        for signs in itertools.product((1, -1), repeat=len(members)):
            row = np.zeros(m, np.int8)
            row[members] = signs
            sub.append(s)
            sign.append(row)
    sign = np.array(sign)
    pairs = list(itertools.combinations(range(m), 2))
    # pairwise term of a group's spread: sum_{i<i'} ||s_i w_i - s_i' w_i'||^2 picks the
    # "minus" distance when s_i = s_i' and the "plus" one otherwise
    same = np.array([[r[i] * r[j] == 1 for i, j in pairs] for r in sign], np.float64)
    diff = np.array([[r[i] * r[j] == -1 for i, j in pairs] for r in sign], np.float64)
    lowest_plus = np.array([r[np.flatnonzero(r)[0]] == 1 for r in sign])
    split_s, split_t = [], []
    for s in range(1, 2**m):
        t = s
        while t:
            split_s.append(s)
            split_t.append(t)
            t = (t - 1) & s
    split_s, split_t = np.array(split_s), np.array(split_t)
    low = (split_t & -split_s) != 0  # T holds the lowest neuron of S: each partition counted once
    return dict(sub=np.array(sub), sign=sign.astype(np.float64), same=same, diff=diff,
                pairs=np.array(pairs).reshape(-1, 2), lowest_plus=lowest_plus,
                split_s=split_s, split_t=split_t, split_r=split_s ^ split_t, low=low)


def dist_q(a, w, a_star, w_star):
    """Distance from ``theta = (a (m,), w (d, m))`` to Q*: ``sqrt(dist2_q)``, a scalar >= 0."""
    return jnp.sqrt(dist2_q(a, w, a_star, w_star))


def dist2_q(a, w, a_star, w_star):
    """Squared distance from ``theta = (a (m,), w (d, m))`` to Q* (module docstring), m <= `MAX_NEURONS`.

    Exact for the characterization above: the minimum over every partition of the neurons into
    k nonempty teacher groups and null groups, with every sign choice, of the squared distance
    to that piece of Q* (a sum of squares of affine functions of theta, minimized in closed
    form). Invariant under neuron permutations and sign flips; smooth where one piece is the
    nearest (its Hessian there is twice the projection onto the normal space of that piece).
    """
    m = a.shape[0]
    k = a_star.shape[0]
    tb = _tables(m)
    n_sub = 2**m
    sign, sub = jnp.asarray(tb["sign"], a.dtype), jnp.asarray(tb["sub"])
    plus, minus = jnp.asarray(tb["sign"] > 0, a.dtype), jnp.asarray(tb["sign"] < 0, a.dtype)
    size = jnp.abs(sign).sum(1)                                              # (rows,)
    signed_a = sign @ a                                                      # sum s_i a_i
    # teacher groups: sum ||s_i w_i - w*_j||^2 + (sum s_i a_i - a*_j)^2 / |S|
    e_plus = jnp.sum((w[:, :, None] - w_star[:, None, :]) ** 2, axis=0)       # (m, k)
    e_minus = jnp.sum((w[:, :, None] + w_star[:, None, :]) ** 2, axis=0)
    cost_t = plus @ e_plus + minus @ e_minus + (signed_a[:, None] - a_star[None, :]) ** 2 / size[:, None]
    # null groups: common line (spread + (sum s_i a_i)^2 / |S|) or all w_i -> 0
    i, j = tb["pairs"][:, 0], tb["pairs"][:, 1]
    d_minus = jnp.sum((w[:, i] - w[:, j]) ** 2, axis=0)
    d_plus = jnp.sum((w[:, i] + w[:, j]) ** 2, axis=0)
    spread = (jnp.asarray(tb["same"], a.dtype) @ d_minus + jnp.asarray(tb["diff"], a.dtype) @ d_plus) / size
    cost_n = jnp.minimum(spread + signed_a**2 / size, (plus + minus) @ jnp.sum(w**2, axis=0))
    cost_n = jnp.where(jnp.asarray(tb["lowest_plus"]), cost_n, jnp.inf)  # the overall sign is free
    inf = jnp.full((n_sub,), jnp.inf, a.dtype)
    null = inf.at[sub].min(cost_n).at[0].set(0.0)
    teach = [inf.at[sub].min(cost_t[:, q]) for q in range(k)]
    # best partition of every subset into null groups (relaxed m times: at most m groups)
    s_, t_, r_, low = (jnp.asarray(tb[x]) for x in ("split_s", "split_t", "split_r", "low"))
    best = null
    for _ in range(m - 1):
        cand = jnp.where(low, null[t_] + best[r_], jnp.inf)
        best = jnp.minimum(best, inf.at[s_].min(cand))
    # then one nonempty teacher group after another
    for q in range(k):
        best = inf.at[s_].min(teach[q][t_] + best[r_])
    return jnp.maximum(best[n_sub - 1], 0.0)
