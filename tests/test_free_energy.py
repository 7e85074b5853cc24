"""Samplers, diagnostics and estimators of jaxbench.free_energy against closed forms (float64)."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbench import free_energy as fe

DUMMY = jnp.zeros((1,))


def _gauss_nll(a, mu):
    return lambda w, _: 0.5 * jnp.sum(a * (w - mu) ** 2)[None]


@pytest.mark.parametrize("method,eps", [("sgld", 0.05), ("mala", 0.3)])
def test_samplers_gaussian_mean_and_variance(method, eps):
    """Diagonal Gaussian N(mu, diag(1/a)). MALA: exact. SGLD (Euler-Maruyama of Langevin) is
    the AR(1) chain w' = (1 - eps a/2) w + sqrt(eps) xi, whose stationary variance is exactly
    1 / (a (1 - eps a / 4)); the mean is exact for both."""
    with jax.enable_x64(True):
        a, mu = jnp.array([1.0, 4.0, 16.0]), jnp.array([1.0, -2.0, 0.5])
        cfg = fe.SamplerConfig(method, num_chains=8, num_draws=4000, num_burnin=400)
        ch = jax.jit(lambda k: fe.sample(_gauss_nll(a, mu), mu, DUMMY, k, cfg, eps, nbeta=1.0,
                                         observe_fn=lambda w: w))(jax.random.key(0))
        w = np.asarray(ch.observed)                                      # (C, T, 3)
        var_exact = 1 / (a * (1 - eps * a / 4)) if method == "sgld" else 1 / a
        for i in range(3):
            n_eff = float(fe.ess(ch.observed[..., i]))
            m, v = w[..., i].mean(), w[..., i].var()
            assert abs(m - mu[i]) < 4 * np.sqrt(var_exact[i] / n_eff)
            # var of a sample variance of Gaussians: 2 v^2 / n_eff
            assert abs(v - var_exact[i]) < 5 * np.sqrt(2 / n_eff) * var_exact[i]
        if method == "sgld":                                             # the bias is real
            assert abs(w[..., 2].var() - 1 / a[2]) > 5 * np.sqrt(2 / float(fe.ess(ch.observed[..., 2]))) / a[2]
        else:
            assert 0.2 < float(ch.accept.mean()) < 0.9  # a step at which SGLD diverges (eps a > 4)


def test_mala_exact_on_2d_non_gaussian_target():
    """pi(u, v) ~ exp(-2 (u^2 - 1)^2 - 2 (v - u^2/2)^2): bimodal banana. Moments against grid
    quadrature (trapezoid on a fine grid)."""
    with jax.enable_x64(True):
        def pot(w, _):
            u, v = w[0], w[1]
            return (2 * (u**2 - 1) ** 2 + 2 * (v - 0.5 * u**2) ** 2)[None]

        feats = lambda w: jnp.stack([w[0] ** 2, w[1], w[1] ** 2, w[0] ** 2 * w[1], w[0] ** 4, w[0]])
        cfg = fe.SamplerConfig("mala", num_chains=8, num_draws=5000, num_burnin=300)
        ch = jax.jit(lambda k: fe.sample(pot, jnp.array([1.0, 0.5]), DUMMY, k, cfg, 0.25, nbeta=1.0,
                                         observe_fn=feats))(jax.random.key(1))
        u, v = np.meshgrid(np.linspace(-3.5, 3.5, 1401), np.linspace(-4.0, 8.0, 2401), indexing="ij")
        dens = np.exp(-(2 * (u**2 - 1) ** 2 + 2 * (v - 0.5 * u**2) ** 2))
        z = dens.sum()
        exact = [(f * dens).sum() / z for f in (u**2, v, v**2, u**2 * v, u**4, u)]  # E[u] = 0: mode crossing
        for i, ex in enumerate(exact):
            x = ch.observed[..., i]
            mc, se = float(jnp.mean(x)), float(jnp.std(x) / jnp.sqrt(fe.ess(x)))
            assert abs(mc - ex) < 4 * se + 1e-3, (i, mc, ex, se)
        assert float(fe.rhat(ch.observed[..., 5])) < 1.05


def test_ess_and_rhat_on_ar1():
    """AR(1) with coefficient phi: integrated autocorrelation time (1 + phi)/(1 - phi)."""
    with jax.enable_x64(True):
        phi, c, t = 0.8, 8, 4000
        xi = jax.random.normal(jax.random.key(2), (c, t))

        def step(x, e):
            x = phi * x + jnp.sqrt(1 - phi**2) * e
            return x, x

        _, x = jax.lax.scan(step, jax.random.normal(jax.random.key(3), (c,)), xi.T)
        x = x.T
        expected = c * t * (1 - phi) / (1 + phi)
        assert abs(float(fe.ess(x)) / expected - 1) < 0.2
        assert abs(float(fe.ess(xi)) / (c * t) - 1) < 0.15            # iid draws
        assert float(fe.rhat(x)) < 1.02
        shifted = x + jnp.arange(c)[:, None]                            # chains disagree
        assert float(fe.rhat(shifted)) > 1.5


def _linear_problem(n, d, sigma=1.0, seed=0):
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    x = jax.random.normal(k1, (n, d))
    y = x @ jax.random.normal(k2, (d,)) + sigma * jax.random.normal(k3, (n,))
    nll = lambda w, b: (b[1] - b[0] @ w) ** 2 / (2 * sigma**2) + 0.5 * jnp.log(2 * jnp.pi * sigma**2)
    return x, y, nll


def test_llc_recovers_half_dimension_of_regular_linear_model():
    """Regular model: lambda = d/2 (d = 10, n = 1000, w* = least squares)."""
    with jax.enable_x64(True):
        n, d = 1000, 10
        x, y, nll = _linear_problem(n, d)
        w_star = jnp.linalg.solve(x.T @ x, x.T @ y)
        nbeta = n / np.log(n)
        cfg = fe.SamplerConfig("sgld", num_chains=8, num_draws=1000, num_burnin=200)
        h = fe.curvature(nll, w_star, (x, y), jax.random.key(4))
        eps = 0.05 / (nbeta * h + 1.0)
        est = jax.jit(lambda k: fe.llc(nll, w_star, (x, y), k, cfg, eps, localization=1.0))(jax.random.key(5))
        assert abs(float(est.value) / (d / 2) - 1) < 0.10, est.value
        assert float(est.stderr) < 0.05 * d / 2
        assert est.trace.shape == (8, 1000) and est.per_chain.shape == (8,)
        # curvature = top eigenvalue of X^T X / (n sigma^2)
        assert abs(float(h) / float(jnp.linalg.eigvalsh(x.T @ x / n)[-1]) - 1) < 1e-2


def test_ti_matches_exact_log_evidence_of_conjugate_linear_regression():
    """y ~ N(0, sigma^2 I + X X^T / alpha) exactly; TI with MALA on 16 rungs within 1%."""
    with jax.enable_x64(True):
        n, d, alpha = 200, 5, 1.0
        x, y, nll = _linear_problem(n, d, seed=1)
        cov = jnp.eye(n) + x @ x.T / alpha
        f_exact = float(-jax.scipy.stats.multivariate_normal.logpdf(y, jnp.zeros(n), cov))
        w0 = jnp.linalg.solve(x.T @ x, x.T @ y)
        cfg = fe.SamplerConfig("mala", num_chains=4, num_draws=500, num_burnin=100)
        est = jax.jit(lambda k: fe.free_energy_ti(nll, w0, (x, y), k, cfg, 0.5 / n, num_rungs=16,
                                                  prior_precision=alpha))(jax.random.key(6))
        assert abs(float(est.value) / f_exact - 1) < 0.01
        # far tighter than 1% in fact: the free energy's log n part is resolved
        assert abs(float(est.value) - f_exact) < 1.0, (float(est.value), f_exact)
        assert est.aux["integrand"].shape == (17,)


def test_ti_quadrature_with_exact_integrand():
    """Simpson on beta = t^4 with the closed-form E_beta[n L_n] of the conjugate model."""
    with jax.enable_x64(True):
        n, d, alpha = 200, 5, 1.0
        x, y, _ = _linear_problem(n, d, seed=1)
        cov = jnp.eye(n) + x @ x.T / alpha
        f_exact = float(-jax.scipy.stats.multivariate_normal.logpdf(y, jnp.zeros(n), cov))

        def e_nl(beta):
            s = jnp.linalg.inv(beta * x.T @ x + alpha * jnp.eye(d))
            m = s @ (beta * x.T @ y)
            return jnp.sum((y - x @ m) ** 2) / 2 + jnp.trace(x.T @ x @ s) / 2 + n / 2 * jnp.log(2 * jnp.pi)

        betas, v = fe.ti_ladder(32, 4.0)
        assert abs(float(sum(vi * e_nl(b) for b, vi in zip(betas, v))) - f_exact) < 1e-3


@pytest.mark.slow
def test_llc_of_minibatch_sgld_and_weights_mask():
    """Masking with weights equals using the first n rows; minibatch SGLD stays close."""
    with jax.enable_x64(True):
        n, d = 600, 4
        x, y, nll = _linear_problem(n + 200, d, seed=3)
        wts = (jnp.arange(n + 200) < n).astype(x.dtype)
        w_star = jnp.linalg.solve(x[:n].T @ x[:n], x[:n].T @ y[:n])
        assert abs(float(fe.mean_nll(nll, w_star, (x, y), wts) - fe.mean_nll(nll, w_star, (x[:n], y[:n])))) < 1e-12
        cfg = fe.SamplerConfig("sgld", num_chains=4, num_draws=1000, num_burnin=200, batch_size=100)
        est = jax.jit(lambda k: fe.llc(nll, w_star, (x, y), k, cfg, 1e-3, localization=1.0, weights=wts))(
            jax.random.key(7))
        assert abs(float(est.value) / (d / 2) - 1) < 0.2, est.value
        # epoch-shuffled minibatches (as a shuffled DataLoader) need the unmasked data
        with pytest.raises(ValueError, match="shuffle"):
            fe.sample(nll, w_star, (x, y), jax.random.key(0), dataclasses.replace(cfg, shuffle=True), 1e-3,
                      nbeta=1.0, weights=wts)
        cfg = dataclasses.replace(cfg, shuffle=True)
        est = jax.jit(lambda k: fe.llc(nll, w_star, (x[:n], y[:n]), k, cfg, 1e-3, localization=1.0))(jax.random.key(7))
        assert abs(float(est.value) / (d / 2) - 1) < 0.2, est.value


def test_bayes_generalization_error_quadrature_vs_monte_carlo():
    """Gauss-Hermite G_n equals a Monte Carlo over y ~ q(y|x) (independent implementation)."""
    with jax.enable_x64(True):
        k1, k2, k3 = jax.random.split(jax.random.key(8), 3)
        m, sigma, r = 20, 0.7, 2000
        f_true = jax.random.normal(k1, (m,))
        pred = f_true + 0.3 * jax.random.normal(k2, (4, 25, m)) + 0.1
        est = jax.jit(fe.bayes_generalization_error, static_argnums=3)(pred, f_true, sigma, 40)

        @jax.jit
        def monte_carlo(key):
            y = f_true + sigma * jax.random.normal(key, (r, m))
            lp = lambda mu: -(y - mu) ** 2 / (2 * sigma**2) - jnp.log(sigma * jnp.sqrt(2 * jnp.pi))
            loglik = jax.vmap(lp)(pred.reshape(100, m)).reshape(100, r * m)  # (S, r m)
            log_q = lp(f_true).reshape(r * m)
            terms = log_q - (jax.scipy.special.logsumexp(loglik, axis=0) - jnp.log(100.0))
            return fe.generalization_error_mc(loglik, log_q), jnp.std(terms) / jnp.sqrt(r * m)

        mc, mc_se = monte_carlo(k3)
        mc_se = float(mc_se)
        assert abs(float(est.value) - float(mc)) < 4 * mc_se, (float(est.value), float(mc), mc_se)
        assert float(est.stderr) > 0 and est.per_chain.shape == (4,)
        # one posterior draw at the truth: G = 0
        assert abs(float(fe.bayes_generalization_error(f_true[None, None], f_true, sigma).value)) < 1e-12


def test_known_learning_coefficients():
    # regular rank-r matrices: r (m + n - r) / 2
    assert fe.rrr_learning_coefficient(3, 5, 2, 2) == 2 * (3 + 5 - 2) / 2
    # the four cases of Aoyagi & Watanabe (2005)
    assert fe.rrr_learning_coefficient(3, 3, 3, 1) == 4.0
    assert fe.rrr_learning_coefficient(2, 6, 2, 1) == 4.0
    assert fe.rrr_learning_coefficient(6, 2, 2, 1) == 4.0
    assert fe.rrr_learning_coefficient(2, 2, 5, 1) == 2.0
    assert fe.rrr_learning_coefficient(1, 1, 1, 0) == 0.5                # y = a b x at the origin
    # Aoyagi's deep-linear formula reduces to the reduced-rank one for one hidden layer
    for m in range(1, 6):
        for n in range(1, 6):
            for h in range(1, 6):
                for r in range(min(m, n, h) + 1):
                    assert fe.dln_learning_coefficient((m, h, n), r) == pytest.approx(fe.rrr_learning_coefficient(m, n, h, r))
    assert fe.dln_learning_coefficient((3, 3, 3, 3), 3) == pytest.approx(4.5)  # full rank: 9 / 2
    with pytest.raises(ValueError):
        fe.rrr_learning_coefficient(2, 2, 2, 3)
    with pytest.raises(ValueError):
        fe.SamplerConfig("mala", batch_size=10)


def test_shuffled_minibatches_visit_every_example_once_per_epoch():
    """With l_i = i, the recorded minibatch loss is the batch's mean index: over each epoch the
    batches must sum to 0 + 1 + ... + (n - 1), with batches differing between epochs."""
    n, m = 50, 10
    data = jnp.arange(n, dtype=jnp.float32)[:, None]
    nll = lambda w, b: b[:, 0] + 0.0 * w[0]
    cfg = fe.SamplerConfig("sgld", num_chains=3, num_draws=6 * (n // m), batch_size=m, shuffle=True)
    ch = fe.sample(nll, jnp.zeros(1), data, jax.random.key(0), cfg, 1e-3, nbeta=1.0)
    per_epoch = np.asarray(ch.loss).reshape(3, 6, n // m) * m          # (chains, epochs, batches)
    np.testing.assert_allclose(per_epoch.sum(-1), n * (n - 1) / 2, rtol=1e-6)
    assert len({tuple(e) for e in per_epoch.reshape(-1, n // m).round(3)}) > 10
