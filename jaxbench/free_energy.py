"""Bayesian free energy and learning coefficients from Langevin samplers, vmapped over chains.

Setting (Watanabe, *Algebraic Geometry and Statistical Learning Theory*, 2009; JMLR 2013).
Data ``D_n``, per-example negative log-likelihood ``l_i(w) = -log p(y_i | x_i, w)``, empirical
loss ``L_n(w) = (1/n) sum_i l_i(w)`` (for Gaussian regression it includes the ``1/(2 sigma^2)``
factor and the ``log(2 pi sigma^2)/2`` constant), prior ``phi``. Every sampler here targets

    log pi(w) = -nbeta L_n(w) - (gamma/2) ||w - w_c||^2 - (alpha/2) ||w||^2      (+ const)

with ``nbeta = n beta`` (inverse temperature times n), localization ``gamma`` around the centre
``w_c`` (Lau, Furman, Wang, Murfet, Wei 2023, arXiv 2308.12108) and a Gaussian prior
``N(0, alpha^{-1} I)`` (``alpha = 0``: flat). All three numbers may be traced arrays, so one
compiled call serves a whole sweep.

Estimators (each returns an `Estimate`: value, standard error over chains, per-chain values,
loss traces and diagnostics):

* `llc`: local learning coefficient ``lambda_hat = nbeta (E[L_n] - L_n(w*))`` at
  ``beta = 1/log n`` under the localized posterior (Lau et al. 2023, eq. 12).
* `wbic`: ``WBIC = E_beta[n L_n]`` at ``beta = 1/log n`` (Watanabe 2013, Thm. 4); it estimates
  the free energy ``F_n = -log int exp(-n L_n) phi dw = n S_n + lambda log n + O_p(log log n)``.
* `free_energy_ti`: thermodynamic integration ``F_n = int_0^1 E_beta[n L_n] d beta`` (valid
  because ``d/d beta (-log Z_beta) = E_beta[n L_n]`` and ``Z_0 = 1`` for a normalised prior);
  the temperature ladder is a vmapped axis.
* `bayes_generalization_error`: ``G_n = E_x KL(q(y|x) || E_w[p(y|x, w)])`` from posterior
  predictive draws (Gaussian noise, scalar output: Gauss-Hermite quadrature over y); Watanabe's
  theory gives ``E[G_n] = lambda / n + o(1/n)``.

Interface: ``nll_fn(params, batch) -> (m,)`` per-example negative log-likelihoods, where
``batch`` is the data pytree (leading axis = examples) or a minibatch of it. ``weights`` (n,)
optionally masks examples (0/1), so the sample size can be a traced number. Parameters are any
pytree; samplers work on the flattened vector.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

METHODS = ("sgld", "mala")


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    """Static shape of a sampling run.

    method: "sgld" (Lau et al. 2023 form) or "mala" (Metropolis-adjusted, full batch only).
    Each chain runs ``num_burnin + num_draws * thin`` steps and records ``num_draws`` draws.
    batch_size: SGLD minibatch size (None = full batch).
    shuffle: epochs of minibatches without replacement, each epoch a fresh random order (an
      affine map i -> (a i + b) mod n, cheap under vmap), like a shuffled PyTorch DataLoader;
      False: each minibatch drawn with replacement (needed when ``weights`` mask examples).
    """

    method: str = "sgld"
    num_chains: int = 4
    num_draws: int = 1000
    num_burnin: int = 0
    thin: int = 1
    batch_size: int | None = None
    shuffle: bool = False

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown sampler {self.method!r}; choose from {METHODS}")
        if min(self.num_chains, self.num_draws, self.thin) < 1 or self.num_burnin < 0:
            raise ValueError(f"invalid sampler sizes {self}")
        if self.method == "mala" and self.batch_size is not None:
            raise ValueError("MALA needs the full-batch loss (batch_size=None)")


class Chains(NamedTuple):
    """Output of `sample`. C chains, T draws.

    loss: (C, T) L_n at each draw (the minibatch value when minibatching; recorded at the
      state *before* the step, as devinterp does). accept: (C,) acceptance rate (1 for SGLD).
    observed: ``observe_fn`` of each draw, leading axes (C, T), or None. final: params, axis C.
    """

    loss: jax.Array
    accept: jax.Array
    observed: Any
    final: Any


class Estimate(NamedTuple):
    """value, stderr (std over chains / sqrt(C)), per_chain (C,), trace: loss traces,
    rhat / ess of the loss trace, accept: mean acceptance, aux: estimator-specific arrays."""

    value: jax.Array
    stderr: jax.Array
    per_chain: jax.Array
    trace: jax.Array
    rhat: jax.Array
    ess: jax.Array
    accept: jax.Array
    aux: dict


def mean_nll(nll_fn, params, data, weights=None):
    """L_n(w): the (weighted) mean per-example negative log-likelihood."""
    l = nll_fn(params, data)
    if weights is None:
        return jnp.mean(l)
    return jnp.sum(weights * l) / jnp.sum(weights)


def _num_examples(data) -> int:
    return jax.tree_util.tree_leaves(data)[0].shape[0]


def _steppers(nll_fn, unravel, data, weights, cfg, eps, nbeta, gamma, alpha, center):
    """Builds ``step(state, key) -> (state, (loss_before, accepted))`` for one chain."""

    def log_target(w, batch, wts):
        loss = mean_nll(nll_fn, unravel(w), batch, wts)
        return -nbeta * loss - 0.5 * gamma * jnp.sum((w - center) ** 2) - 0.5 * alpha * jnp.sum(w**2), loss

    grad_fn = jax.value_and_grad(log_target, has_aux=True)
    n = _num_examples(data)

    if cfg.shuffle and (weights is not None or cfg.batch_size is None):
        raise ValueError("shuffle needs a batch_size and no weights mask")

    per_epoch = n // cfg.batch_size if cfg.batch_size else 1
    units = jnp.asarray([a for a in range(1, n) if math.gcd(a, n) == 1] if cfg.shuffle else [1])

    def sgld_step(state, key):
        w, t, k_perm = state
        kb, kn = jax.random.split(key)
        if cfg.batch_size is None:
            batch, wts = data, weights
        else:
            if cfg.shuffle:
                # epoch e visits every example once, in the order i -> (a i + b) mod n with a
                # (a unit mod n) and b drawn per epoch: O(batch) work, unlike a full permutation
                ka, kb2 = jax.random.split(jax.random.fold_in(k_perm, t // per_epoch))
                a = units[jax.random.randint(ka, (), 0, units.shape[0])]
                b = jax.random.randint(kb2, (), 0, n)
                pos = (t % per_epoch) * cfg.batch_size + jnp.arange(cfg.batch_size)
                idx = (a * pos + b) % n
            else:
                p = None if weights is None else weights / jnp.sum(weights)
                idx = jax.random.choice(kb, n, (cfg.batch_size,), p=p)
            batch, wts = jax.tree_util.tree_map(lambda a: a[idx], data), None
        (_, loss), g = grad_fn(w, batch, wts)
        w = w + 0.5 * eps * g + jnp.sqrt(eps) * jax.random.normal(kn, w.shape, w.dtype)
        return (w, t + 1, k_perm), (loss, jnp.ones((), w.dtype))

    def mala_init(w):
        (logp, loss), g = grad_fn(w, data, weights)
        return w, logp, g, loss

    def mala_step(state, key):
        w, logp, g, loss = state
        kn, ku = jax.random.split(key)
        prop = w + 0.5 * eps * g + jnp.sqrt(eps) * jax.random.normal(kn, w.shape, w.dtype)
        (logp_p, loss_p), g_p = grad_fn(prop, data, weights)
        fwd = -jnp.sum((prop - w - 0.5 * eps * g) ** 2) / (2 * eps)
        bwd = -jnp.sum((w - prop - 0.5 * eps * g_p) ** 2) / (2 * eps)
        log_ratio = logp_p - logp + bwd - fwd
        ok = jnp.log(jax.random.uniform(ku, (), w.dtype)) < log_ratio
        new = jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), (prop, logp_p, g_p, loss_p), state)
        return new, (loss, ok.astype(w.dtype))

    if cfg.method == "sgld":
        return (lambda w, k: (w, jnp.zeros((), jnp.int32), k)), sgld_step, (lambda s: s[0])
    return (lambda w, k: mala_init(w)), mala_step, (lambda s: s[0])


def sample(nll_fn: Callable, params0, data, key, config: SamplerConfig, step_size, *, nbeta,
           localization=0.0, prior_precision=0.0, center=None, weights=None,
           observe_fn: Callable | None = None) -> Chains:
    """Runs ``config.num_chains`` chains from ``params0`` (vmapped) targeting ``pi`` above.

    SGLD step (Lau et al. 2023; Welling & Teh 2011 without step decay):
    ``w <- w + (eps/2) grad log pi(w) + N(0, eps I)``, the loss term estimated on a minibatch.
    MALA (Roberts & Tweedie 1996): the same move as a proposal, accepted with the
    Metropolis-Hastings ratio, so its stationary law is exactly ``pi``.

    Args:
      params0: starting parameters (shared by all chains). center: ``w_c`` (default params0).
      step_size, nbeta, localization, prior_precision: scalars, may be traced.
      observe_fn: optional ``params -> pytree`` recorded at every draw (e.g. test predictions).
    Returns: `Chains` with loss (C, T), accept (C,), observed (C, T, ...), final params (C, ...).
    """
    w0, unravel = ravel_pytree(params0)
    dtype = w0.dtype
    c = w0 if center is None else ravel_pytree(center)[0]
    as_ = lambda v: jnp.asarray(v, dtype)
    init, step, position = _steppers(nll_fn, unravel, data, weights, config, as_(step_size), as_(nbeta),
                                     as_(localization), as_(prior_precision), c)
    cfg = config

    def chain(k):
        k_burn, k_draw, k_perm = jax.random.split(k, 3)
        state = init(w0, k_perm)
        if cfg.num_burnin:
            state, _ = jax.lax.scan(lambda s, kk: (step(s, kk)[0], None), state,
                                    jax.random.split(k_burn, cfg.num_burnin))

        def draw(s, kk):
            ks = jax.random.split(kk, cfg.thin)
            obs = None if observe_fn is None else observe_fn(unravel(position(s)))
            s, (loss, acc) = step(s, ks[0])
            if cfg.thin > 1:
                s, (_, accs) = jax.lax.scan(step, s, ks[1:])
                acc = acc + jnp.sum(accs)
            return s, (loss, acc, obs)

        state, (loss, acc, obs) = jax.lax.scan(draw, state, jax.random.split(k_draw, cfg.num_draws))
        return loss, jnp.sum(acc) / (cfg.num_draws * cfg.thin), obs, unravel(position(state))

    loss, acc, obs, final = jax.vmap(chain)(jax.random.split(key, cfg.num_chains))
    return Chains(loss, acc, obs, final)


# ----------------------------------------------------------------------------- diagnostics


def _autocov(x):
    """Biased autocovariance along the last axis via FFT: (..., T) -> (..., T)."""
    t = x.shape[-1]
    xc = x - jnp.mean(x, axis=-1, keepdims=True)
    f = jnp.fft.rfft(xc, n=2 * t)
    return jnp.fft.irfft(f * jnp.conj(f), n=2 * t)[..., :t] / t


def rhat(x):
    """Split R-hat (Gelman et al., BDA3 sec. 11.4) of draws ``x`` (C, T): ~1 when mixed."""
    h = x.shape[1] // 2
    xs = jnp.concatenate([x[:, :h], x[:, x.shape[1] - h:]], axis=0)
    w = jnp.mean(jnp.var(xs, axis=1, ddof=1))
    b = h * jnp.var(jnp.mean(xs, axis=1), ddof=1)
    return jnp.sqrt(((h - 1) / h * w + b / h) / w)


def ess(x):
    """Multi-chain effective sample size of ``x`` (C, T) (Vehtari et al. 2021, eq. 10-11).

    Autocorrelations combine within- and between-chain variance; the sum is truncated by
    Geyer's initial positive sequence made monotone (pairs of lags).
    """
    c, t = x.shape
    acov = _autocov(x)
    chain_var = acov[:, 0] * t / (t - 1)
    w = jnp.mean(chain_var)
    b = jnp.var(jnp.mean(x, axis=1), ddof=1) if c > 1 else 0.0
    var_plus = w * (t - 1) / t + b
    rho = 1.0 - (w - jnp.mean(acov, axis=0)) / var_plus
    rho = rho.at[0].set(1.0)
    m = t // 2
    pairs = rho[: 2 * m : 2] + rho[1 : 2 * m : 2]
    keep = jnp.cumprod(pairs > 0)
    pairs = jax.lax.cummin(jnp.where(keep > 0, pairs, 0.0))
    tau = -1.0 + 2.0 * jnp.sum(pairs * keep)
    total = c * t
    return jnp.minimum(total / jnp.maximum(tau, 1e-12), total * math.log10(total))


def _summary(per_chain, trace, accept, aux) -> Estimate:
    c = per_chain.shape[0]
    se = jnp.std(per_chain, ddof=1) / math.sqrt(c) if c > 1 else jnp.full((), jnp.nan)
    return Estimate(jnp.mean(per_chain), se, per_chain, trace, rhat(trace), ess(trace), jnp.mean(accept), aux)


# ----------------------------------------------------------------------------- estimators


def _sample_size(data, weights):
    return _num_examples(data) if weights is None else jnp.sum(weights)


def llc_from_losses(loss, loss_star, nbeta, accept=None) -> Estimate:
    """``lambda_hat = nbeta (mean_t L_t - L_n(w*))`` per chain; loss (C, T)."""
    per_chain = nbeta * (jnp.mean(loss, axis=1) - loss_star)
    acc = jnp.ones(loss.shape[:1], loss.dtype) if accept is None else accept
    return _summary(per_chain, loss, acc, {"loss_star": jnp.asarray(loss_star), "nbeta": jnp.asarray(nbeta)})


def llc(nll_fn, params_star, data, key, config: SamplerConfig, step_size, *, nbeta=None,
        localization=1.0, prior_precision=0.0, weights=None) -> Estimate:
    """Local learning coefficient at ``params_star`` (Lau et al. 2023).

    Samples the posterior localized at w* (``gamma = localization``) at ``nbeta = n / log n``
    by default and returns ``nbeta (E[L_n] - L_n(w*))``: value, stderr, per-chain values,
    loss traces (C, T). L_n(w*) is the full-batch loss.
    """
    n = _sample_size(data, weights)
    nbeta = n / jnp.log(n) if nbeta is None else nbeta
    ch = sample(nll_fn, params_star, data, key, config, step_size, nbeta=nbeta, localization=localization,
                prior_precision=prior_precision, weights=weights)
    loss_star = mean_nll(nll_fn, params_star, data, weights)
    return llc_from_losses(ch.loss, loss_star, nbeta, ch.accept)


def wbic(nll_fn, params0, data, key, config: SamplerConfig, step_size, *, localization=0.0,
         prior_precision=1.0, weights=None) -> Estimate:
    """WBIC ``= E_beta[n L_n]`` at ``beta = 1/log n`` (Watanabe 2013), chains started at params0.

    With ``localization > 0`` it is the WBIC of the localized posterior (a local free energy).
    Per-chain values are ``n * mean_t L_t``; stderr is their spread over chains.
    """
    n = _sample_size(data, weights)
    ch = sample(nll_fn, params0, data, key, config, step_size, nbeta=n / jnp.log(n), localization=localization,
                prior_precision=prior_precision, weights=weights)
    return _summary(n * jnp.mean(ch.loss, axis=1), ch.loss, ch.accept, {})


def ti_ladder(num_rungs: int, power: float = 4.0):
    """Inverse temperatures ``beta_k = (k/K)^power``, k = 0..K, and Simpson weights ``v_k`` with
    ``int_0^1 g(beta) d beta ~= sum_k v_k g(beta_k)`` (substitution beta = t^power, K even)."""
    if num_rungs < 2 or num_rungs % 2:
        raise ValueError(f"num_rungs must be even and >= 2, got {num_rungs}")
    t = np.linspace(0.0, 1.0, num_rungs + 1)
    simpson = np.ones(num_rungs + 1)
    simpson[1:-1:2], simpson[2:-1:2] = 4.0, 2.0
    return t**power, simpson / (3 * num_rungs) * power * t ** (power - 1)


def free_energy_ti(nll_fn, params0, data, key, config: SamplerConfig, step_size, *, num_rungs=16,
                   power=4.0, prior_precision=1.0, localization=0.0, center=None, weights=None) -> Estimate:
    """Free energy ``F_n = -log int exp(-n L_n(w)) phi(w) dw`` by thermodynamic integration.

    ``phi`` is the normalised Gaussian ``N(0, alpha^-1 I)`` (times the localization Gaussian,
    renormalised, when ``localization > 0``). The ladder ``beta_k = (k/K)^power`` is a vmapped
    axis; rung k samples at ``nbeta = n beta_k`` with step ``step_size (n + alpha + gamma) /
    (n beta_k + alpha + gamma)`` (so ``step_size`` is the step at beta = 1 and the step follows
    the posterior's width). Per chain: Simpson's rule over the rungs of ``n * mean_t L_t``.
    aux: betas (K+1,), integrand (K+1,) = E_beta[n L_n], integrand_se (K+1,).
    Returns an `Estimate` whose trace is the beta = 1 rung's loss trace (C, T).
    """
    betas, v = ti_ladder(num_rungs, power)
    n = _sample_size(data, weights)
    dtype = ravel_pytree(params0)[0].dtype
    betas_j, v_j = jnp.asarray(betas, dtype), jnp.asarray(v, dtype)
    scale = n + prior_precision + localization
    eps = step_size * scale / (n * betas_j + prior_precision + localization)

    def rung(beta, e, k):
        return sample(nll_fn, params0, data, k, config, e, nbeta=n * beta, localization=localization,
                      prior_precision=prior_precision, center=center, weights=weights)

    ch = jax.vmap(rung)(betas_j, eps, jax.random.split(key, num_rungs + 1))
    g = n * jnp.mean(ch.loss, axis=2)                         # (K+1, C)
    per_chain = jnp.sum(v_j[:, None] * g, axis=0)
    c = g.shape[1]
    aux = {"betas": betas_j, "integrand": jnp.mean(g, axis=1),
           "integrand_se": jnp.std(g, axis=1, ddof=1) / math.sqrt(c) if c > 1 else jnp.zeros_like(betas_j)}
    return _summary(per_chain, ch.loss[-1], ch.accept[-1], aux)


def _chain_log_mixture(pred, f_true, sigma, num_nodes):
    """Gauss-Hermite pieces of the predictive KL. pred (C, T, m), f_true (m,).

    Returns ``lse`` (C, m, Q) = log sum_t exp(-(y_q - f_ct)^2 / (2 sigma^2)) at the nodes
    ``y_q = f* + sigma sqrt(2) t_q``, ``log_q`` (Q,) (same constant dropped) and weights (Q,).
    """
    t, wq = np.polynomial.hermite.hermgauss(num_nodes)
    t, wq = jnp.asarray(t, pred.dtype), jnp.asarray(wq / math.sqrt(math.pi), pred.dtype)
    y = f_true[:, None] + sigma * math.sqrt(2.0) * t[None, :]               # (m, Q)
    r = (y[None, None] - pred[..., None]) / sigma                           # (C, T, m, Q)
    return jax.scipy.special.logsumexp(-0.5 * r**2, axis=1), -(t**2), wq


def bayes_generalization_error(pred, f_true, sigma, num_nodes: int = 40) -> Estimate:
    """Bayes generalization error ``G_n`` of Gaussian regression with scalar output.

    ``G_n = mean_j KL(N(f*(x_j), sigma^2) || (1/S) sum_s N(f(x_j, w_s), sigma^2))`` over test
    inputs x_j, the posterior predictive built from all S = C T draws; the y-integral uses
    Gauss-Hermite quadrature with ``num_nodes`` nodes. stderr: jackknife over chains;
    per_chain: G_n from each chain's draws alone.

    Args: pred (C, T, m) predictions f(x_j, w) of posterior draws; f_true (m,); sigma: noise std.
    """
    c, t, _ = pred.shape
    lse, log_q, wq = _chain_log_mixture(pred, f_true, sigma, num_nodes)

    def g(mask, count):                     # G_n from the chains where mask is True
        log_p = jax.scipy.special.logsumexp(jnp.where(mask[:, None, None], lse, -jnp.inf), axis=0)
        return jnp.mean(jnp.sum(wq * (log_q - log_p + math.log(count * t)), axis=-1))

    full = g(jnp.ones(c, bool), c)
    eye = jnp.eye(c, dtype=bool)
    per_chain = jax.vmap(lambda e: g(e, 1))(eye)
    if c > 1:
        loo = jax.vmap(lambda e: g(~e, c - 1))(eye)
        se = jnp.sqrt((c - 1) / c * jnp.sum((loo - jnp.mean(loo)) ** 2))
    else:
        se = jnp.full((), jnp.nan, pred.dtype)
    nan = jnp.full((), jnp.nan, pred.dtype)
    return Estimate(full, se, per_chain, jnp.zeros((c, 0), pred.dtype), nan, nan, nan, {})


def generalization_error_mc(loglik, log_q):
    """Monte Carlo ``G = mean_j [log q(y_j|x_j) - log mean_s p(y_j|x_j, w_s)]`` for test pairs
    (x_j, y_j) ~ q; loglik (S, m) = log p(y_j | x_j, w_s), log_q (m,). Any likelihood."""
    log_pred = jax.scipy.special.logsumexp(loglik, axis=0) - math.log(loglik.shape[0])
    return jnp.mean(log_q - log_pred)


def curvature(nll_fn, params, data, key, iters: int = 30, weights=None):
    """Largest |eigenvalue| of the Hessian of L_n at ``params`` (power iteration on HVPs).

    Used to set step sizes: ``eps = step_scale / (nbeta * curvature + gamma + alpha)`` keeps
    ``eps`` times the stiffest curvature of ``pi`` at ``step_scale``, whatever the model.
    """
    w, unravel = ravel_pytree(params)
    loss = lambda v: mean_nll(nll_fn, unravel(v), data, weights)
    hvp = lambda v: jax.jvp(jax.grad(loss), (w,), (v,))[1]
    v0 = jax.random.normal(key, w.shape, w.dtype)

    def body(_, v):
        hv = hvp(v)
        return hv / (jnp.linalg.norm(hv) + 1e-30)

    v = jax.lax.fori_loop(0, iters, body, v0 / jnp.linalg.norm(v0))
    return jnp.abs(jnp.vdot(v, hvp(v)))


# ----------------------------------------------------------------------------- known values


def rrr_learning_coefficient(m: int, n: int, h: int, r: int) -> float:
    """Learning coefficient of reduced-rank regression ``y = B A x`` (Aoyagi & Watanabe 2005).

    m: input dim, n: output dim, h: hidden (inner) dim, r <= min(m, n, h): true rank.
    """
    if not 0 <= r <= min(m, n, h):
        raise ValueError(f"need 0 <= r <= min(m, n, h), got m={m} n={n} h={h} r={r}")
    if m + h < n + r:
        return (h * m - h * r + n * r) / 2
    if n + h < m + r:
        return (h * n - h * r + m * r) / 2
    if m + n < h + r:
        return m * n / 2
    lam = 2 * (h + r) * (m + n) - (m - n) ** 2 - (h + r) ** 2
    return (lam + (m + h + n + r) % 2) / 8


def dln_learning_coefficient(dims, r: int) -> float:
    """Learning coefficient of a deep linear network ``x -> x W_1 ... W_L`` (Aoyagi 2024,
    Neural Networks 172, Thm. 1). dims = (input, hidden_1, ..., output), r = true rank.

    With ``M_j = dims_j - r`` find the subset S (|S| = l + 1) whose members are all smaller than
    the rest and with ``l max_S M <= sum_S M < l min_{not S} M``; then, with
    ``s = sum_S M``, ``c = ceil(s / l)``, ``a = s - (c - 1) l``:
    ``lambda = (r (dims_0 + dims_L) - r^2)/2 + a (l - a)/(4 l) - l (l - 1) s^2/(4 l^2)
    + (1/2) sum_{i<j in S} M_i M_j``.
    """
    import itertools

    dims = tuple(int(v) for v in dims)
    if not 0 <= r <= min(dims):
        raise ValueError(f"need 0 <= r <= min(dims), got dims={dims} r={r}")
    if len(dims) == 2:
        return dims[0] * dims[1] / 2
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
            c = -(-s // l)
            a = s - (c - 1) * l
            pairs = sum(sub[i] * sub[j] for i in range(len(sub)) for j in range(i + 1, len(sub)))
            return (r * (dims[0] + dims[-1]) - r * r) / 2 + a * (l - a) / (4 * l) - (l - 1) * s * s / (4 * l) + pairs / 2
    raise ValueError(f"no admissible subset for dims={dims}, r={r}")
