"""Closed-form learning coefficients (real log canonical thresholds) and their multiplicities.

For a model whose true parameter set is singular, the free energy is
``F_n = n S_n + lambda log n - (m - 1) log log n + O_p(1)`` (Watanabe 2009): lambda the learning
coefficient, m its multiplicity (order). At finite ``nbeta`` the localized estimator
``nbeta (E[L_n] - L_n(w*))`` tends to ``lambda - (m - 1) / log(nbeta)`` (differentiate
``lambda log t - (m - 1) log log t`` in t = nbeta), which is why m is reported beside lambda.
"""

from __future__ import annotations

import itertools
import numbers


def rrr_learning_coefficient(m: int, n: int, h: int, r: int) -> float:
    """Learning coefficient of reduced-rank regression ``y = B A x`` (Aoyagi & Watanabe 2005).

    m: input dim, n: output dim, h: hidden (inner) dim, r <= min(m, n, h): true rank.
    """
    _check_rrr(m, n, h, r)
    if m + h < n + r:
        return (h * m - h * r + n * r) / 2
    if n + h < m + r:
        return (h * n - h * r + m * r) / 2
    if m + n < h + r:
        return m * n / 2
    lam = 2 * (h + r) * (m + n) - (m - n) ** 2 - (h + r) ** 2
    return (lam + (m + h + n + r) % 2) / 8


def rrr_multiplicity(m: int, n: int, h: int, r: int) -> int:
    """Order of the pole (Aoyagi & Watanabe 2005): 2 in the generic case when m + n + h + r is
    odd, else 1."""
    _check_rrr(m, n, h, r)
    generic = not (m + h < n + r or n + h < m + r or m + n < h + r)
    return 2 if generic and (m + h + n + r) % 2 else 1


def _check_rrr(m, n, h, r):
    if min(m, n, h) < 1 or not 0 <= r <= min(m, n, h):
        raise ValueError(f"need positive dims and 0 <= r <= min(m, n, h), got m={m} n={n} h={h} r={r}")


def _dln_subset(dims, r):
    """(S values, l, s) of Aoyagi's theorem for ``dims`` and rank r (see `dln_learning_coefficient`)."""
    M = [v - r for v in dims]
    for size in range(2, len(M) + 1):
        for S in itertools.combinations(range(len(M)), size):
            sub = [M[i] for i in S]
            rest = [M[i] for i in range(len(M)) if i not in S]
            l, s = size - 1, sum(sub)
            if rest and not (max(sub) < min(rest) and s < l * min(rest)):
                continue
            if s < l * max(sub):
                continue
            return sub, l, s
    raise ValueError(f"no admissible subset for dims={dims}, r={r}")


def _check_dln(dims, r):
    dims = tuple(int(v) for v in dims)
    if len(dims) < 2 or min(dims) < 1 or not 0 <= r <= min(dims):
        raise ValueError(f"need >= 2 positive dims and 0 <= r <= min(dims), got dims={dims} r={r}")
    return dims


def dln_learning_coefficient(dims, r: int) -> float:
    """Learning coefficient of a deep linear network ``x -> x W_1 ... W_L`` (Aoyagi 2024,
    Neural Networks 172, Thm. 1). dims = (input, hidden_1, ..., output), r = true rank.

    With ``M_j = dims_j - r`` find the subset S (|S| = l + 1) whose members are all smaller than
    the rest and with ``l max_S M <= sum_S M < l min_{not S} M``; then, with
    ``s = sum_S M``, ``c = ceil(s / l)``, ``a = s - (c - 1) l``:
    ``lambda = (r (dims_0 + dims_L) - r^2)/2 + a (l - a)/(4 l) - (l - 1) s^2/(4 l)
    + (1/2) sum_{i<j in S} M_i M_j``.
    """
    dims = _check_dln(dims, r)
    if len(dims) == 2:
        return dims[0] * dims[1] / 2
    sub, l, s = _dln_subset(dims, r)
    c = -(-s // l)
    a = s - (c - 1) * l
    pairs = sum(sub[i] * sub[j] for i in range(len(sub)) for j in range(i + 1, len(sub)))
    return (r * (dims[0] + dims[-1]) - r * r) / 2 + a * (l - a) / (4 * l) - (l - 1) * s * s / (4 * l) + pairs / 2


def dln_multiplicity(dims, r: int) -> int:
    """Order of the largest pole in Aoyagi's theorem (Aoyagi 2024, Thm. 1): ``theta = a (l - a) + 1``
    with l, a as in `dln_learning_coefficient`, so 1 exactly when ``a = l`` (l divides s). For one
    hidden layer (l <= 2) it is `rrr_multiplicity` (Aoyagi & Watanabe 2005); for a chain of
    scalars (every width 1, r = 0, L layers) it is L, the order of ``(w_1 ... w_L)^2`` at 0, a
    normal crossing of L coordinates. A regular model: 1."""
    dims = _check_dln(dims, r)
    if len(dims) == 2:
        return 1
    _, l, s = _dln_subset(dims, r)
    c = -(-s // l)
    a = s - (c - 1) * l
    return a * (l - a) + 1


def dln_learning_coefficient_jnp(dims, r):
    """`dln_learning_coefficient` and `dln_multiplicity` of integer arrays (traced ok): a second,
    vectorised implementation of the same theorem (every subset S at once, the first admissible
    one in the order of `itertools.combinations` by size). dims (L+1,), static length; r ().
    Returns (lambda, m) as float arrays."""
    import jax.numpy as jnp
    import numpy as np

    k = dims.shape[0]
    d = jnp.asarray(dims).astype(jnp.float32 if jnp.zeros(()).dtype == jnp.float32 else jnp.float64)
    r = jnp.asarray(r).astype(d.dtype)
    if k == 2:
        return d[0] * d[1] / 2, jnp.ones((), d.dtype)
    subsets = [S for size in range(2, k + 1) for S in itertools.combinations(range(k), size)]
    mask = np.array([[i in S for i in range(k)] for S in subsets])          # (Q, k)
    m = d - r
    big = 1e9
    l = jnp.asarray(mask.sum(1) - 1.0, d.dtype)
    mask = jnp.asarray(mask)
    s = jnp.sum(jnp.where(mask, m, 0.0), axis=1)
    max_s = jnp.max(jnp.where(mask, m, -big), axis=1)
    min_rest = jnp.min(jnp.where(mask, big, m), axis=1)
    has_rest = jnp.any(~mask, axis=1)
    ok = jnp.where(has_rest, (max_s < min_rest) & (s < l * min_rest), True) & (s >= l * max_s)
    q = jnp.argmax(ok)
    l, s = l[q], s[q]
    pairs = (s**2 - jnp.sum(jnp.where(mask[q], m**2, 0.0))) / 2
    c = jnp.ceil(s / l)
    a = s - (c - 1) * l
    lam = (r * (d[0] + d[-1]) - r * r) / 2 + a * (l - a) / (4 * l) - (l - 1) * s * s / (4 * l) + pairs / 2
    return lam, a * (l - a) + 1


def chain_llc_exact(depth: int, t: float, grid: int = 9001) -> float:
    """The localized estimator's exact value for a chain of scalars, at finite t.

    Model: ``K(w) = (w_1 ... w_L)^2`` (L = depth), sampled from ``exp(-t K(w) - |w|^2 / 2)``;
    returns ``E[t K]``: what `free_energy.llc` estimates for a loss ``c (w_1 ... w_L)^2`` at w* = 0
    with ``t = nbeta c / gamma^L`` (substitute ``w = u / sqrt(gamma)``). lambda = 1/2 with a pole
    of order L, so ``E[t K] -> 1/2 - (L - 1) / log t`` only for ``log t >> L``: a reference with
    many orders at finite t, where the first-order correction does not hold.
    Computed from the density of ``log|w_1 ... w_L|`` under the N(0, 1) prior (an L-fold
    convolution of the density of ``log|N(0, 1)|`` on a grid), then two 1-D integrals.
    """
    import numpy as np

    if not (isinstance(depth, numbers.Integral) and not isinstance(depth, bool) and depth >= 1) or not 0 < t < np.inf:
        raise ValueError(f"need an integer depth >= 1 and a finite t > 0, got depth={depth!r} t={t!r}")
    depth = int(depth)
    y = np.linspace(-80.0, 10.0, grid)
    dy = y[1] - y[0]
    p1 = 2.0 * np.exp(-0.5 * np.exp(2 * y)) / np.sqrt(2 * np.pi) * np.exp(y)   # density of log|u|
    p = p1
    for _ in range(depth - 1):
        p = np.convolve(p, p1) * dy
    e = t * np.exp(2 * (depth * y[0] + np.arange(p.size) * dy))                  # t z^2 on the grid
    w = p * np.exp(-np.minimum(e, 700.0))
    return float(np.sum(w * e) / np.sum(w))
