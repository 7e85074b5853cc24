"""jaxbench.minimum: verified minima against the closed-form reduced-rank minimum (float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbench import free_energy as fe


def _rrr_problem(n=500, m=3, h=3, k=3, r=1, noise=1.0, seed=0):
    """y = x W1 W2 + noise with a rank-r truth whose other blocks are exactly zero (a saddle of
    L_n on noisy data: the zero blocks have zero gradient)."""
    k1, k2, k3, k4 = jax.random.split(jax.random.key(seed), 4)
    w1 = jnp.zeros((m, h)).at[:, :r].set(jax.random.normal(k1, (m, r)))
    w2 = jnp.zeros((h, k)).at[:r, :].set(jax.random.normal(k2, (r, k)))
    x = jax.random.normal(k3, (n, m))
    y = x @ w1 @ w2 + noise * jax.random.normal(k4, (n, k))
    nll = lambda p, b: 0.5 * jnp.sum((b[1] - b[0] @ p[0] @ p[1]) ** 2, axis=-1)
    return nll, [w1, w2], (x, y)


def _reduced_rank_min(x, y, rank):
    """min over rank(C) <= rank of mean 0.5 |y - x C|^2 (reduced-rank regression, closed form)."""
    fit = x @ np.linalg.lstsq(x, y, rcond=None)[0]
    ev = np.linalg.eigvalsh(fit.T @ fit)
    return (np.sum((y - fit) ** 2) + np.sum(ev[: y.shape[1] - rank])) / (2 * x.shape[0])


def _rank1_saddle(nll, truth, data):
    """The best rank-1 fit embedded with zero blocks: a critical point of the rank-3 model (the
    zero blocks have zero gradient) that is not a minimum -- where plain GD from the truth sits."""
    r1 = [truth[0][:, :1], truth[1][:1, :]]
    m = fe.find_minimum(nll, r1, data, jax.random.key(9), jitter=0.0)
    w1, w2 = m.params
    return [jnp.zeros_like(truth[0]).at[:, :1].set(w1), jnp.zeros_like(truth[1]).at[:1, :].set(w2)]


def test_find_minimum_reaches_the_reduced_rank_minimum_from_the_saddle():
    """rrr 3-3-3, rank-1 truth, noisy data: the saddle is flagged; from the truth and from the
    saddle, find_minimum reaches the global (least-squares) minimum."""
    with jax.enable_x64(True):
        nll, truth, data = _rrr_problem()
        x, y = (np.asarray(a) for a in data)
        exact = _reduced_rank_min(x, y, 3)
        saddle = _rank1_saddle(nll, truth, data)
        at_saddle = jax.jit(lambda k: fe.check_minimum(nll, saddle, data, k))(jax.random.key(1))
        assert float(at_saddle.grad_norm) < 1e-8                                # stationary
        assert float(at_saddle.hess_min) < -1e-3 and not bool(at_saddle.ok)    # a saddle, flagged
        m = jax.jit(lambda k: fe.find_minimum(nll, saddle, data, k))(jax.random.key(2))
        assert abs(float(m.loss) - exact) / exact <= 1e-6, (float(m.loss), exact)
        assert float(m.hess_min) >= -1e-6 and float(m.grad_norm) <= 1e-9
        assert float(m.probe_drop) <= 0.1 and bool(m.ok)
        m0 = jax.jit(lambda k: fe.find_minimum(nll, truth, data, k))(jax.random.key(3))
        assert abs(float(m0.loss) - exact) / exact <= 1e-6 and float(m0.hess_min) >= -1e-6 and bool(m0.ok)
        # a rank-2 bottleneck (h = 2): the minimum is the best rank-2 fit
        nll2, truth2, data2 = _rrr_problem(h=2, seed=3)
        m2 = jax.jit(lambda k: fe.find_minimum(nll2, truth2, data2, k))(jax.random.key(4))
        exact2 = _reduced_rank_min(*(np.asarray(a) for a in data2), 2)
        assert abs(float(m2.loss) - exact2) / exact2 <= 1e-6 and bool(m2.ok)


def test_hessian_extremes_match_dense_eigenvalues():
    with jax.enable_x64(True):
        nll, truth, data = _rrr_problem(n=200, seed=5)
        w, unravel = jax.flatten_util.ravel_pytree(truth)
        dense = np.linalg.eigvalsh(np.asarray(jax.hessian(lambda v: jnp.mean(nll(unravel(v), data)))(w)))
        lo, hi = fe.hessian_extremes(nll, truth, data, jax.random.key(0))
        np.testing.assert_allclose([float(lo), float(hi)], dense[[0, -1]], atol=1e-9, rtol=1e-9)
        top = fe.curvature(nll, truth, data, jax.random.key(1), iters=200)
        assert abs(float(top) / max(abs(dense[0]), dense[-1]) - 1) < 1e-3


def test_descent_probe_catches_a_point_that_is_not_a_minimum():
    """Off the minimum (gradient-descent stopped early), the probe lowers n L_n and the gradient
    check fails; at the minimum neither does."""
    with jax.enable_x64(True):
        nll, truth, data = _rrr_problem(n=300, seed=6)
        off = jax.tree_util.tree_map(lambda a: a + 0.05, truth)
        c = fe.check_minimum(nll, off, data, jax.random.key(0))
        assert float(c.probe_drop) > 1.0 and not bool(c.ok)
