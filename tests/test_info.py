"""Tests of jaxbench.info: closed forms against Monte Carlo / quadrature / scipy, exact OT
against brute-force assignment and an LP-duality certificate. All in float64."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.optimize
import scipy.stats

from jaxbench import info


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def _random_spd(rng, k, scale=1.0):
    a = rng.normal(size=(k, k))
    return scale * (a @ a.T / k + 0.3 * np.eye(k))


def test_kl_gaussians_matches_monte_carlo():
    rng = np.random.default_rng(0)
    k = 3
    m1, m2 = rng.normal(size=k), rng.normal(size=k)
    c1, c2 = _random_spd(rng, k), _random_spd(rng, k, 2.0)
    closed = float(info.kl_gaussians(*map(jnp.asarray, (m1, c1, m2, c2))))
    x = rng.multivariate_normal(m1, c1, size=400_000)
    log_ratio = scipy.stats.multivariate_normal(m1, c1).logpdf(x) - scipy.stats.multivariate_normal(
        m2, c2
    ).logpdf(x)
    se = log_ratio.std() / np.sqrt(len(x))
    assert abs(log_ratio.mean() - closed) < 4 * se
    assert closed > 0
    # same-law KL is exactly zero; the 1-d formula agrees with the k-d one
    assert abs(float(info.kl_gaussians(jnp.asarray(m1), jnp.asarray(c1), jnp.asarray(m1), jnp.asarray(c1)))) < 1e-12
    one_d = info.kl_gaussians_1d(0.3, 0.7, -0.2, 1.3)
    k_d = info.kl_gaussians(jnp.array([0.3]), jnp.array([[0.49]]), jnp.array([-0.2]), jnp.array([[1.69]]))
    np.testing.assert_allclose(one_d, k_d, rtol=1e-12)


def test_mutual_information_closed_forms():
    # bivariate: I = -1/2 log(1 - rho^2)
    rho = 0.6
    mi = info.gaussian_mutual_information(jnp.array([[2.0]]), jnp.array([[0.5]]), jnp.array([[rho * 1.0]]))
    np.testing.assert_allclose(mi, -0.5 * np.log(1 - rho**2), rtol=1e-12)
    # general: KL(joint || product of marginals), computed by kl_gaussians
    rng = np.random.default_rng(1)
    s = _random_spd(rng, 5)
    p = 2
    mi = info.gaussian_mutual_information(jnp.asarray(s[:p, :p]), jnp.asarray(s[p:, p:]), jnp.asarray(s[:p, p:]))
    prod = np.zeros_like(s)
    prod[:p, :p], prod[p:, p:] = s[:p, :p], s[p:, p:]
    kl = info.kl_gaussians(jnp.zeros(5), jnp.asarray(s), jnp.zeros(5), jnp.asarray(prod))
    np.testing.assert_allclose(mi, kl, rtol=1e-10)


@pytest.mark.parametrize("m1,s1,m2,s2", [(0.0, 1.0, 0.5, 1.0), (0.2, 0.5, -0.3, 2.0), (1.0, 1.5, 1.0, 0.4)])
def test_w1_gaussians_1d_matches_quantile_integral_and_samples(m1, s1, m2, s2):
    closed = float(info.w1_gaussians_1d(m1, s1, m2, s2))
    # W1 = int_0^1 |F^-1(u) - G^-1(u)| du, by quadrature in the normal scale
    integrand = lambda z: abs((m1 - m2) + (s1 - s2) * z) * scipy.stats.norm.pdf(z)
    quad = scipy.integrate.quad(integrand, -12, 12, points=[(m2 - m1) / (s1 - s2)] if s1 != s2 else None)[0]
    np.testing.assert_allclose(closed, quad, rtol=1e-7)
    rng = np.random.default_rng(2)
    x, y = rng.normal(m1, s1, 200_000), rng.normal(m2, s2, 200_000)
    assert abs(scipy.stats.wasserstein_distance(x, y) - closed) < 0.02
    # the jax sorted-sample W1 is the exact empirical W1 (scipy's is an independent implementation)
    np.testing.assert_allclose(info.w1_samples_1d(jnp.asarray(x), jnp.asarray(y)),
                               scipy.stats.wasserstein_distance(x, y), rtol=1e-9)


def test_w2_gaussians_closed_forms_and_w1_sandwich():
    # 1-d: W2^2 = delta^2 + (s - t)^2
    w2 = info.w2_gaussians(jnp.array([0.3]), jnp.array([[0.25]]), jnp.array([-0.1]), jnp.array([[4.0]]))
    np.testing.assert_allclose(w2, np.sqrt(0.4**2 + 1.5**2), rtol=1e-10)
    # commuting covariances: W2^2 = |dm|^2 + |sqrt(a) - sqrt(b)|^2 elementwise
    a, b = np.array([1.0, 2.0, 0.5]), np.array([0.3, 2.0, 3.0])
    dm = np.array([0.1, -0.4, 0.2])
    w2 = info.w2_gaussians(jnp.asarray(dm), jnp.diag(jnp.asarray(a)), jnp.zeros(3), jnp.diag(jnp.asarray(b)))
    np.testing.assert_allclose(w2, np.sqrt(np.sum(dm**2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)), rtol=1e-10)
    # in 2-d, exact OT on large samples lands in [|dm|, W2] up to its O(n^-1/2) sampling error
    rng = np.random.default_rng(3)
    m1, m2 = np.array([0.0, 0.0]), np.array([1.0, 0.5])
    c1, c2 = np.diag([1.0, 0.2]), np.array([[0.5, 0.2], [0.2, 0.8]])
    n = 500
    x, y = rng.multivariate_normal(m1, c1, n), rng.multivariate_normal(m2, c2, n)
    w1_hat = float(jax.jit(info.w1_empirical)(jnp.asarray(x), jnp.asarray(y)))
    upper = float(info.w2_gaussians(*map(jnp.asarray, (m1, c1, m2, c2))))
    lower = float(np.linalg.norm(m1 - m2))
    assert lower - 0.1 < w1_hat < upper + 0.1, (lower, w1_hat, upper)


def _brute_force(c):
    n = c.shape[0]
    return min(sum(c[i, p[i]] for i in range(n)) for p in itertools.permutations(range(n)))


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 7])
def test_assignment_matches_brute_force(n):
    rng = np.random.default_rng(n)
    solve = jax.jit(info.assignment)
    for trial in range(3):
        # real costs, negative costs, and integer costs with many ties
        c = [rng.normal(size=(n, n)), rng.random((n, n)) - 2.0, rng.integers(0, 3, (n, n)).astype(float)][trial]
        col, u, v = solve(jnp.asarray(c))
        col = np.asarray(col)
        assert sorted(col) == list(range(n))  # a permutation
        got = c[np.arange(n), col].sum()
        np.testing.assert_allclose(got, _brute_force(c), atol=1e-12)
        # LP-duality certificate: feasible potentials whose sum equals the matching cost
        assert np.max(np.asarray(u)[:, None] + np.asarray(v)[None, :] - c) <= 1e-12
        np.testing.assert_allclose(float(u.sum() + v.sum()), got, atol=1e-12)


def test_assignment_vmapped_matches_scipy():
    rng = np.random.default_rng(7)
    costs = rng.random((4, 60, 60))
    cols, _, _ = jax.jit(jax.vmap(info.assignment))(jnp.asarray(costs))
    for c, col in zip(costs, np.asarray(cols)):
        r, cc = scipy.optimize.linear_sum_assignment(c)
        np.testing.assert_allclose(c[np.arange(60), col].sum(), c[r, cc].sum(), rtol=1e-12)


def test_w1_empirical_equals_sorted_matching_in_1d_and_is_a_metric_on_samples():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(50, 1)), rng.normal(1.0, 2.0, size=(50, 1))
    np.testing.assert_allclose(info.w1_empirical(jnp.asarray(x), jnp.asarray(y)),
                               info.w1_samples_1d(jnp.asarray(x[:, 0]), jnp.asarray(y[:, 0])), rtol=1e-12)
    z = rng.normal(size=(40, 3))
    assert float(info.w1_empirical(jnp.asarray(z), jnp.asarray(z[::-1]))) < 1e-12
    # a pure translation by t moves the empirical measure by exactly |t| (optimal: identity plan)
    t = np.array([0.3, -0.2, 0.1])
    np.testing.assert_allclose(info.w1_empirical(jnp.asarray(z), jnp.asarray(z + t)), np.linalg.norm(t), rtol=1e-10)


def test_gaussian_fit_kl_is_consistent():
    rng = np.random.default_rng(5)
    k = 3
    m1, m2 = np.zeros(k), np.array([0.5, 0.0, -0.3])
    c1, c2 = _random_spd(rng, k), _random_spd(rng, k)
    x, y = rng.multivariate_normal(m1, c1, 100_000), rng.multivariate_normal(m2, c2, 100_000)
    est = float(info.gaussian_fit_kl(jnp.asarray(x), jnp.asarray(y), ridge=0.0))
    exact = float(info.kl_gaussians(*map(jnp.asarray, (m1, c1, m2, c2))))
    np.testing.assert_allclose(est, exact, rtol=0.03)
    assert abs(float(info.gaussian_fit_kl(jnp.asarray(x), jnp.asarray(x)))) < 1e-10
    # 0/1 weights fit the selected rows only: same as slicing
    sel = rng.random(2000) < 0.4
    xs, ys = x[:2000], y[:2000]
    np.testing.assert_allclose(
        info.gaussian_fit_kl(jnp.asarray(xs), jnp.asarray(ys), wx=jnp.asarray(sel), wy=jnp.asarray(~sel)),
        info.gaussian_fit_kl(jnp.asarray(xs[sel]), jnp.asarray(ys[~sel])), rtol=1e-10)


def test_lapack_free_cholesky_and_kl_match_lapack():
    rng = np.random.default_rng(6)
    c = np.stack([_random_spd(rng, 7) for _ in range(3)])
    np.testing.assert_allclose(info.cholesky_loop(jnp.asarray(c)), np.linalg.cholesky(c), rtol=1e-10, atol=1e-12)
    m1, m2 = rng.normal(size=(3, 7)), rng.normal(size=(3, 7))
    c2 = np.stack([_random_spd(rng, 7, 2.0) for _ in range(3)])
    batched = info.kl_gaussians_loop(*map(jnp.asarray, (m1, c, m2, c2)))
    for i in range(3):
        np.testing.assert_allclose(batched[i], info.kl_gaussians(*map(jnp.asarray, (m1[i], c[i], m2[i], c2[i]))), rtol=1e-10)
