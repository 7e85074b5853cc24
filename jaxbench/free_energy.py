"""Bayesian free energy and learning coefficients from Langevin samplers, vmapped over chains.

Setting (Watanabe, *Algebraic Geometry and Statistical Learning Theory*, 2009; JMLR 2013).
Data ``D_n``, per-example negative log-likelihood ``l_i(w) = -log p(y_i | x_i, w)``, empirical
loss ``L_n(w) = (1/n) sum_i l_i(w)`` (for Gaussian regression it includes the ``1/(2 sigma^2)``
factor and the ``log(2 pi sigma^2)/2`` constant), prior ``phi``. Every sampler targets

    log pi(w) = -nbeta L_n(w) - (gamma/2) ||w - w_c||^2 - (alpha/2) ||w||^2      (+ const)

with ``nbeta = n beta`` (inverse temperature times n), localization ``gamma`` around the centre
``w_c`` (Lau, Furman, Wang, Murfet, Wei 2023, arXiv 2308.12108) and a Gaussian prior
``N(0, alpha^{-1} I)`` (``alpha = 0``: flat). All three numbers may be traced arrays, so one
compiled call serves a whole sweep. Samplers: `jaxbench.samplers` (MALA with the step adapted
in burn-in, SGLD optionally preconditioned); verified minima: `jaxbench.minimum`; diagnostics:
`jaxbench.mcmc_diagnostics`; closed forms: `jaxbench.learning_coefficients`. Their public names
are importable from here.

Estimators (each returns an `Estimate`: value, standard error over chains, per-chain values,
loss traces, diagnostics and a ``converged`` flag):

* `llc`: local learning coefficient ``lambda_hat = nbeta (E[L_n] - L_n(w*))`` at
  ``beta = 1/log n`` under the localized posterior (Lau et al. 2023, eq. 12), with the checks of
  w*, a gamma-plateau rerun and the baseline-free ``nbeta^2 Var[L_n]`` beside it.
* `wbic`: ``WBIC = E_beta[n L_n]`` at ``beta = 1/log n`` (Watanabe 2013, Thm. 4); it estimates
  the free energy ``F_n = -log int exp(-n L_n) phi dw = n S_n + lambda log n + O_p(log log n)``.
* `free_energy_ti`: thermodynamic integration ``F_n = int_0^1 E_beta[n L_n] d beta`` (valid
  because ``d/d beta (-log Z_beta) = E_beta[n L_n]`` and ``Z_0 = 1`` for a normalised prior);
  the temperature ladder is a vmapped axis.
* `free_energy_ais`: annealed importance sampling from the prior over the same ladder, the
  particles a vmapped axis; ``-log`` of the mean importance weight is an upper bound on F_n in
  expectation.
* `free_energy_smc`: tempered sequential Monte Carlo from the prior (blackjax, resampling and
  MALA or HMC moves at every rung): the normalizing-constant estimate and, from the same weighted
  particles, the TI integrand at every rung: two estimates whose agreement is a diagnostic.
* `bayes_generalization_error`: ``G_n = E_x KL(q(y|x) || E_w[p(y|x, w)])`` from posterior
  predictive draws (Gaussian noise, scalar output: Gauss-Hermite quadrature over y); Watanabe's
  theory gives ``E[G_n] = lambda / n + o(1/n)``. `generalization_from_smc`: the same from
  beta = 1 chains started at an SMC run's particles, checked across its independent runs.

Interface: ``nll_fn(params, batch) -> (m,)`` per-example negative log-likelihoods, where
``batch`` is the data pytree (leading axis = examples) or a minibatch of it. ``weights`` (n,)
optionally masks examples (0/1), so the sample size can be a traced number. Parameters are any
pytree; samplers work on the flattened vector. Bad arguments (negative sizes, ``nbeta <= 0``,
``gamma < 0``, non-finite data) raise a one-line ValueError when they are concrete values.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jaxbench.learning_coefficients import (dln_learning_coefficient, dln_learning_coefficient_jnp,  # noqa: F401
                                            chain_llc_exact, dln_multiplicity, rrr_learning_coefficient,
                                            rrr_multiplicity)
from jaxbench.mcmc_diagnostics import (THRESHOLDS, Estimate, converged, ess, rhat,  # noqa: F401
                                       split_half, stderr_over_chains, summary, zscore)
from jaxbench.minimum import (Minimum, check_minimum, curvature, default_grad_tol, find_minimum,  # noqa: F401
                              hessian_extremes)
from jaxbench.samplers import METHODS, Chains, SamplerConfig, mean_nll, num_examples, sample, validate  # noqa: F401

# llc defaults, chosen from measurements (docs/experiments/lambda_validation.md)
DEFAULT_LOCALIZATION = 0.1
DEFAULT_STEP_SCALE = {"mala": 1.0, "hmc": 1.0, "sgld": 0.1}


def _sample_size(data, weights):
    return num_examples(data) if weights is None else jnp.sum(weights)


# ----------------------------------------------------------------------------- estimators


def llc_from_losses(loss, loss_star, nbeta, accept=None, *, plateau_loss=None, wstar: Minimum | None = None,
                    full_batch: bool = True) -> Estimate:
    """``lambda_hat = nbeta (mean_t L_t - L_n(w*))`` per chain, with its diagnostics.

    loss (C, T): L_n at the draws; plateau_loss (C, T): the same at gamma / 10 (or None);
    wstar: the checks of w* (or None). ``diag`` keys: rhat, ess, accept, split_first /
    split_second / split_z (halves of the draws), lambda_var / lambda_var_se / var_rel
    (``nbeta^2 Var[L_n]`` per chain, averaged; NaN with minibatch losses, whose variance
    includes minibatch noise), lambda_plateau / lambda_plateau_se / plateau_z (gamma / 10),
    wstar_ok / grad_norm / hess_min / hess_max / probe_drop. `converged` combines them.
    """
    per_draw = nbeta * (loss - loss_star)
    per_chain = jnp.mean(per_draw, axis=1)
    value = jnp.mean(per_chain)
    first, second, split_z = split_half(per_draw)
    var_chain = nbeta**2 * jnp.var(loss, axis=1, ddof=1)
    nan = jnp.full((), jnp.nan, loss.dtype)
    diag = {"split_first": first, "split_second": second, "split_z": split_z,
            "lambda_var": jnp.mean(var_chain), "lambda_var_se": stderr_over_chains(var_chain),
            "var_rel": jnp.mean(var_chain) / value - 1 if full_batch else nan}
    if plateau_loss is not None:
        pc = jnp.mean(nbeta * (plateau_loss - loss_star), axis=1)
        diag.update(lambda_plateau=jnp.mean(pc), lambda_plateau_se=stderr_over_chains(pc),
                    plateau_z=zscore(value, stderr_over_chains(per_chain), jnp.mean(pc), stderr_over_chains(pc)))
    if wstar is not None:
        diag.update(wstar_ok=wstar.ok, grad_norm=wstar.grad_norm, hess_min=wstar.hess_min,
                    hess_max=wstar.hess_max, probe_drop=wstar.probe_drop)
    acc = jnp.full(loss.shape[:1], jnp.nan, loss.dtype) if accept is None else accept
    aux = {"loss_star": jnp.asarray(loss_star), "nbeta": jnp.asarray(nbeta)}
    return summary(per_chain, loss, acc, aux, diag)


def llc(nll_fn, params_star, data, key, config: SamplerConfig, step_size=None, *, nbeta=None,
        localization=DEFAULT_LOCALIZATION, prior_precision=0.0, weights=None, plateau: bool = True,
        wstar: Minimum | None = None, check_wstar: bool = True, step_scale=None) -> Estimate:
    """Local learning coefficient at ``params_star`` (Lau et al. 2023), with diagnostics.

    Samples the posterior localized at w* (``gamma = localization``) at ``nbeta = n / log n``
    by default and returns ``nbeta (E[L_n] - L_n(w*))``: value, stderr over chains, per-chain
    values, loss traces (C, T) and the diagnostics of `llc_from_losses`.

    w*: ``wstar`` (a `Minimum` from `find_minimum`, whose params replace ``params_star``), else
    ``params_star`` checked by `check_minimum` (``check_wstar=False`` skips the checks).
    step_size: None -> ``step_scale / (nbeta h + gamma + alpha)`` with h the top Hessian
    eigenvalue at w* (``step_scale`` default `DEFAULT_STEP_SCALE`); for MALA the start of the
    burn-in adaptation. plateau: also sample at gamma / 10 (one more vmapped copy of the chains)
    and flag when the two estimates differ by more than 2 combined standard errors.
    """
    validate(nbeta=nbeta, localization=localization, prior_precision=prior_precision, step_size=step_size,
             data=data, weights=weights)
    n = _sample_size(data, weights)
    nbeta = n / jnp.log(n) if nbeta is None else nbeta
    k_w, k_s = jax.random.split(key)
    if wstar is None and check_wstar:
        wstar = check_minimum(nll_fn, params_star, data, k_w, weights=weights)
    if wstar is not None:
        params_star = wstar.params
    dtype = ravel_pytree(params_star)[0].dtype
    gamma = jnp.asarray(localization, dtype)
    loss_star = wstar.loss if wstar is not None else mean_nll(nll_fn, params_star, data, weights)
    if step_size is None:
        h = wstar.hess_max if wstar is not None else curvature(nll_fn, params_star, data, k_w, weights=weights)
        scale = DEFAULT_STEP_SCALE[config.method] if step_scale is None else step_scale
        step_size = scale / (nbeta * h + gamma + prior_precision)
    gammas = jnp.stack([gamma, gamma / 10]) if plateau else gamma[None]
    ch = jax.vmap(lambda g, k: sample(nll_fn, params_star, data, k, config, step_size, nbeta=nbeta, localization=g,
                                      prior_precision=prior_precision, center=params_star, weights=weights))(
        gammas, jax.random.split(k_s, gammas.shape[0]))
    est = llc_from_losses(ch.loss[0], loss_star, nbeta, ch.accept[0], plateau_loss=ch.loss[1] if plateau else None,
                          wstar=wstar, full_batch=config.batch_size is None)
    est.aux["step_size"] = jnp.mean(ch.step_size[0])
    return est


def wbic(nll_fn, params0, data, key, config: SamplerConfig, step_size, *, localization=0.0,
         prior_precision=1.0, weights=None) -> Estimate:
    """WBIC ``= E_beta[n L_n]`` at ``beta = 1/log n`` (Watanabe 2013), chains started at params0.

    With ``localization > 0`` it is the WBIC of the localized posterior (a local free energy).
    Per-chain values are ``n * mean_t L_t``; stderr is their spread over chains.
    """
    validate(localization=localization, prior_precision=prior_precision, step_size=step_size, data=data,
             weights=weights)
    n = _sample_size(data, weights)
    ch = sample(nll_fn, params0, data, key, config, step_size, nbeta=n / jnp.log(n), localization=localization,
                prior_precision=prior_precision, weights=weights)
    first, second, z = split_half(n * ch.loss)
    return summary(n * jnp.mean(ch.loss, axis=1), ch.loss, ch.accept, {},
                   {"split_first": first, "split_second": second, "split_z": z})


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
    the posterior's width; adapted MALA starts its adaptation there). Per chain: Simpson's rule
    over the rungs of ``n * mean_t L_t``; the beta = 0 rung has weight 0 (with power > 1) and is
    not sampled into the sum (MALA records no loss at nbeta = 0).
    aux: betas (K+1,), integrand (K+1,) = E_beta[n L_n], integrand_se (K+1,).
    Returns an `Estimate` whose trace is the beta = 1 rung's loss trace (C, T).
    """
    validate(localization=localization, prior_precision=prior_precision, step_size=step_size, data=data,
             weights=weights)
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
    per_chain = jnp.sum(jnp.where(v_j[:, None] > 0, v_j[:, None] * g, 0.0), axis=0)
    c = g.shape[1]
    aux = {"betas": betas_j, "integrand": jnp.mean(g, axis=1),
           "integrand_se": jnp.std(g, axis=1, ddof=1) / math.sqrt(c) if c > 1 else jnp.zeros_like(betas_j)}
    return summary(per_chain, ch.loss[-1], ch.accept[-1], aux)


def _particle_variances(w, weights=None):
    """Per-coordinate variances (P,) of particles w (N, P) (``weights`` (N,): normalized), floored
    at 1e-6 of their mean: HMC's diagonal metric for moves that follow the population."""
    weights = jnp.full(w.shape[:1], 1.0 / w.shape[0], w.dtype) if weights is None else weights
    var = weights @ (w - weights @ w) ** 2
    return jnp.maximum(var, 1e-6 * jnp.mean(var) + jnp.finfo(w.dtype).tiny)


def free_energy_ais(nll_fn, params_like, data, key, config: SamplerConfig, step_size, *, num_rungs=256,
                    power=4.0, steps_per_rung=1, prior_precision=1.0, weights=None,
                    target_accept=0.7, adapt_rate=0.5) -> Estimate:
    """Free energy ``F_n = -log int exp(-n L_n(w)) phi(w) dw`` by annealed importance sampling
    (Neal 2001) from the prior ``phi = N(0, alpha^-1 I)``.

    ``config.num_chains`` particles start from independent prior draws (``params_like`` gives
    only the structure and dtype) and move through ``beta_k = (k/K)^power``, k = 1..K: at each
    rung the log weight gains ``-(beta_k - beta_{k-1}) n L_n(w)``, then ``steps_per_rung``
    blackjax moves leave ``pi_k ~ exp(-n beta_k L_n) phi`` invariant (``config.method``):

    * ``"mala"``: the step of rung k is ``eps_k (n + alpha) / (n beta_k + alpha)``
      (``step_size``: the step at beta = 1, as in `free_energy_ti`);
    * ``"hmc"``: ``config.num_integration_steps`` leapfrog steps of ``eps_k`` (jittered by ±20%
      per particle) with the diagonal metric of the particles' variances, as in
      `free_energy_smc` (``step_size``: the first eps, O(1 / sqrt(leapfrog))). On
      ReLU students of depth 1-4 at n = 100-900 one such move per rung put the seed means 0.5-7.7
      nats above SMC's where one MALA step left them 7-197 nats above
      (docs/experiments/free_energy.md).

    ``eps_k`` is adapted between rungs from the particles' mean acceptance
    (``eps <- eps exp(adapt_rate (acc - target))``, target ``target_accept`` for MALA,
    ``config.target_accept`` for HMC): each move is still an exact kernel of its rung's target;
    the adaptation (and HMC's metric) only reads the population's present and past (the moves
    then depend on all particles, so the unbiasedness below holds exactly only with
    ``adapt_rate = 0`` and MALA; otherwise it is the usual adaptive-SMC approximation).

    Estimate: ``F_hat = -log mean_i exp(logw_i)``. ``E[exp(-F_hat)] = Z``, so by Jensen
    ``E[F_hat] >= F_n``: in expectation an upper bound (the conservative side for an
    upper-bound claim). stderr: delta method, ``std(w_i / mean w) / sqrt(N)``; per_chain:
    ``-logw_i`` (single-particle estimates). diag: weight_ess (``(sum w)^2 / sum w^2``),
    weight_ess_frac (over N), logw_std, accept (mean over rungs and particles), accept_min (the
    lowest rung's mean). ``converged``: weight ESS >= max(0.1 N, 5) (with few particles a fraction says nothing) and
    accept >= 0.5 (rhat / ess
    of a trace do not apply: the trace (C, K) is each particle's n L_n along the ladder).
    aux: betas (K+1,), step (K,) the step per rung (HMC: the leapfrog step in the particles'
    standard deviations), accept_rung (K,), logw (C,), particles (C, P)
    (flattened final positions: weighted draws of the beta = 1 posterior).
    """
    import blackjax

    validate(prior_precision=prior_precision, step_size=step_size, data=data, weights=weights)
    if num_rungs < 2:
        raise ValueError(f"num_rungs must be >= 2, got {num_rungs}")
    if steps_per_rung < 1:
        raise ValueError(f"steps_per_rung must be >= 1, got {steps_per_rung}")
    if config.method not in ("mala", "hmc"):
        raise ValueError(f"free_energy_ais moves particles by 'mala' or 'hmc', got {config.method!r}")
    w_like, unravel = ravel_pytree(params_like)
    dtype, dim = w_like.dtype, w_like.shape[0]
    n = _sample_size(data, weights)
    alpha = jnp.asarray(prior_precision, dtype)
    t = np.linspace(0.0, 1.0, num_rungs + 1)
    betas = jnp.asarray(t**power, dtype)
    k_0, k_run = jax.random.split(key)
    loss = lambda w: mean_nll(nll_fn, unravel(w), data, weights)
    w0 = jax.random.normal(k_0, (config.num_chains, dim), dtype) / jnp.sqrt(alpha)
    hmc = config.method == "hmc"
    algorithm = blackjax.hmc if hmc else blackjax.mala
    kernel = algorithm.build_kernel()
    target = config.target_accept if hmc else target_accept

    def rung(carry, k):
        w, logw, l_prev, log_eps = carry
        b_prev, b = betas[k - 1], betas[k]
        logw = logw - (b - b_prev) * n * l_prev
        logdens = lambda v: -n * b * loss(v) - 0.5 * alpha * jnp.sum(v**2)
        k_rung = jax.random.fold_in(k_run, k)
        if hmc:                  # per-particle leapfrog steps, the population's metric
            k_rung, k_jit = jax.random.split(k_rung)
            tau = jnp.exp(log_eps)
            step = tau * jax.random.uniform(k_jit, (w.shape[0],), dtype, 0.8, 1.2)
            extra = (_particle_variances(w), config.num_integration_steps)
        else:
            tau = 0.5 * jnp.exp(log_eps) * (n + alpha) / (n * b + alpha)
            step, extra = jnp.full((w.shape[0],), tau, dtype), ()

        def move(wi, kk, step_i):
            def one(st, j):
                st, info = kernel(jax.random.fold_in(kk, j), st, logdens, step_i, *extra)
                return st, info.acceptance_rate

            st, acc = jax.lax.scan(one, algorithm.init(wi, logdens), jnp.arange(steps_per_rung))
            return st.position, jnp.mean(acc)

        w, acc = jax.vmap(move)(w, jax.random.split(k_rung, w.shape[0]), step)
        l_new = jax.vmap(loss)(w)
        a = jnp.mean(acc)
        log_eps = log_eps + adapt_rate * (a - target)
        return (w, logw, l_new, log_eps), (n * l_new, a, tau if hmc else 2 * tau)

    l0 = jax.vmap(loss)(w0)
    init = (w0, jnp.zeros(config.num_chains, dtype), l0, jnp.log(jnp.asarray(step_size, dtype)))
    (w_final, logw, _, _), (trace, acc, steps) = jax.lax.scan(rung, init, jnp.arange(1, num_rungs + 1))
    c = config.num_chains
    log_z = jax.scipy.special.logsumexp(logw) - math.log(c)
    wn = jnp.exp(logw - log_z)                                   # w_i / mean(w)
    se = jnp.std(wn, ddof=1) / math.sqrt(c) if c > 1 else jnp.full((), jnp.nan, dtype)
    ess_w = jnp.sum(wn) ** 2 / jnp.sum(wn**2)
    diag = {"weight_ess": ess_w, "weight_ess_frac": ess_w / c, "logw_std": jnp.std(logw),
            "accept": jnp.mean(acc), "accept_min": jnp.min(acc), "value": -log_z}
    ok = (ess_w >= max(0.1 * c, 5.0)) & (jnp.mean(acc) >= THRESHOLDS["accept_min"]) & jnp.isfinite(log_z)
    nan = jnp.full((), jnp.nan, dtype)
    aux = {"betas": betas, "step": steps, "accept_rung": acc, "logw": logw, "particles": w_final}
    return Estimate(-log_z, se, -logw, trace.T, nan, nan, jnp.mean(acc), aux, diag, ok)


def free_energy_smc(nll_fn, params_like, data, key, config: SamplerConfig, step_size, *, num_rungs=64,
                    power=4.0, steps_per_rung=4, num_runs=2, prior_precision=1.0, weights=None,
                    target_accept=0.7, adapt_rate=0.5) -> Estimate:
    """Free energy ``F_n = -log int exp(-n L_n(w)) phi(w) dw`` by tempered sequential Monte Carlo
    from the prior ``phi = N(0, alpha^-1 I)`` (Del Moral, Doucet & Jasra 2006), with two estimates
    from one run whose agreement is the diagnostic.

    blackjax's tempered SMC kernel (``blackjax.smc.tempered.build_kernel``: systematic resampling
    at every rung, then ``steps_per_rung`` MCMC moves of each particle under the previous rung's
    target, then reweighting) over the fixed ladder ``beta_k = (k/K)^power`` of `ti_ladder`;
    ``config.num_chains`` particles, ``num_runs`` independent populations (a vmapped axis: the
    standard errors are their spread). The moves (``config.method``), each an exact kernel whose
    parameters are set from the population before it moves:

    * ``"mala"``: step ``eps_k (n + alpha) / (n beta + alpha)`` as in `free_energy_ais`, with
      ``eps_1 = step_size`` and ``eps_k`` adapted between rungs toward ``target_accept``;
    * ``"hmc"``: ``config.num_integration_steps`` leapfrog steps with the diagonal metric of the
      weighted particles' variances (Buchholz, Chopin & Jacob 2021), the leapfrog step (in those
      standard deviations; ``step_size`` is its first value, O(1 / sqrt(leapfrog))) adapted
      between rungs toward ``config.target_accept``. Longer trajectories are what lets the
      particles follow a posterior that sharpens with n: on a 2-hidden-layer ReLU student at
      n = 900, 2 HMC moves of 8 leapfrog steps per rung left the runs 0.7 nat apart where 16
      MALA moves (the same gradients) left them 2.7 nats apart and 4 MALA moves 19
      (docs/experiments/free_energy.md).

    * ``value``: ``-log Z`` with ``log Z = sum_k log mean_i exp((beta_k - beta_{k-1}) (-n L_n(w_i)))``
      (the SMC normalizing-constant estimate: unbiased for Z, an upper bound on F_n in
      expectation);
    * ``diag["f_ti"]``: thermodynamic integration with the integrand ``E_beta_k[n L_n]`` read off
      the weighted particles at each rung (Simpson weights of `ti_ladder`).
    diag: f_ti / f_ti_se, f_ti_quad (TI's quadrature error: ``|Simpson - trapezoid|`` on the same
    integrand), agree_z (``|value - f_ti|`` in combined standard errors, the quadrature error
    counted with them: with two runs their spread alone can be far below it), ess_min (the
    smallest weight ESS over rungs, as a fraction of the particles), accept (mean acceptance),
    per_run. ``converged``: ess_min >= 0.3, accept >= 0.5 and the two estimates agree within
    `z_critical` (with ``num_runs`` runs). aux: betas (K+1,), integrand (K+1,), step (K,: MALA's
    step, HMC's leapfrog step in standard deviations), particles (R, N, P) and logw (R, N) of
    every run (each run's weighted draws of the beta = 1 posterior).
    """
    import blackjax
    from blackjax.smc import resampling, tempered

    from jaxbench.mcmc_diagnostics import z_critical

    validate(prior_precision=prior_precision, step_size=step_size, data=data, weights=weights)
    if steps_per_rung < 1 or num_runs < 1:
        raise ValueError(f"steps_per_rung and num_runs must be >= 1, got {steps_per_rung}, {num_runs}")
    if config.method not in ("mala", "hmc"):
        raise ValueError(f"free_energy_smc moves particles by 'mala' or 'hmc', got {config.method!r}")
    hmc = config.method == "hmc"
    betas_np, v_np = ti_ladder(num_rungs, power)
    t = np.linspace(0.0, 1.0, num_rungs + 1)          # the trapezoid rule on Simpson's nodes
    v_trap = np.where((t == 0) | (t == 1), 1.0, 2.0) / (2 * num_rungs) * power * t ** (power - 1)
    w_like, unravel = ravel_pytree(params_like)
    dtype, dim = w_like.dtype, w_like.shape[0]
    n = _sample_size(data, weights)
    alpha = jnp.asarray(prior_precision, dtype)
    betas, v = jnp.asarray(betas_np, dtype), jnp.asarray(v_np, dtype)
    loss = lambda w: mean_nll(nll_fn, unravel(w), data, weights)
    move = blackjax.hmc if hmc else blackjax.mala
    kernel = tempered.build_kernel(lambda w: -0.5 * alpha * jnp.sum(w**2), lambda w: -n * loss(w),
                                   move.build_kernel(), move.init, resampling.systematic)
    c = config.num_chains
    target = config.target_accept if hmc else target_accept

    def move_parameters(state, log_eps, k):
        """The kernel's parameters for this rung, and the step to report."""
        if not hmc:
            tau = 0.5 * jnp.exp(log_eps) * (n + alpha) / (n * state.tempering_param + alpha)
            return {"step_size": jnp.reshape(tau, (1,))}, 2 * tau
        var = _particle_variances(state.particles, state.weights)
        eps = jnp.exp(log_eps)
        jitter = jax.random.uniform(k, (c,), dtype, 0.8, 1.2)   # no particle keeps one trajectory length
        return {"step_size": eps * jitter, "inverse_mass_matrix": var[None],
                "num_integration_steps": jnp.full((1,), config.num_integration_steps, jnp.int32)}, eps

    def run(k):
        k_0, k_run = jax.random.split(k)
        w0 = jax.random.normal(k_0, (c, dim), dtype) / jnp.sqrt(alpha)

        def rung(carry, k_i):
            state, log_z, log_eps = carry
            k_move, k_jitter = jax.random.split(jax.random.fold_in(k_run, k_i))
            params, step = move_parameters(state, log_eps, k_jitter)
            state, info = kernel(k_move, state, steps_per_rung, betas[k_i], params)
            acc = jnp.mean(info.update_info.acceptance_rate)
            nl = n * jax.vmap(loss)(state.particles)
            ess_frac = 1.0 / jnp.sum(state.weights**2) / c
            log_eps = log_eps + adapt_rate * (acc - target)
            return (state, log_z + info.log_likelihood_increment, log_eps), \
                (jnp.sum(state.weights * nl), ess_frac, acc, step)

        state0 = tempered.init(w0)._replace(tempering_param=jnp.zeros((), dtype))
        init = (state0, jnp.zeros((), dtype), jnp.log(jnp.asarray(step_size, dtype)))
        (state, log_z, _), (g, ess_frac, acc, steps) = jax.lax.scan(rung, init, jnp.arange(1, num_rungs + 1))
        g = jnp.concatenate([jnp.mean(n * jax.vmap(loss)(w0))[None], g])
        return -log_z, jnp.sum(v * g), g, jnp.min(ess_frac), jnp.mean(acc), steps, state.particles, \
            jnp.log(state.weights)

    f_z, f_ti, g, ess_min, acc, steps, parts, logw = jax.vmap(run)(jax.random.split(key, num_runs))
    se = lambda a: stderr_over_chains(a) if num_runs > 1 else jnp.full((), jnp.nan, dtype)
    value, ti_value = jnp.mean(f_z), jnp.mean(f_ti)
    # TI carries a quadrature error the normalizer does not: |Simpson - trapezoid| bounds it
    quad = jnp.abs(ti_value - jnp.mean(g @ jnp.asarray(v_trap, dtype)))
    agree = zscore(value, jnp.hypot(se(f_z), quad), ti_value, se(f_ti))
    diag = {"f_ti": ti_value, "f_ti_se": se(f_ti), "f_ti_quad": quad, "agree_z": agree, "ess_min": jnp.min(ess_min),
            "accept": jnp.mean(acc), "per_run": f_z, "per_run_ti": f_ti, "value": value}
    ok = ((jnp.min(ess_min) >= 0.3) & (jnp.mean(acc) >= THRESHOLDS["accept_min"])
          & (agree <= z_critical(num_runs, THRESHOLDS["z_max"])) & jnp.isfinite(value) & jnp.isfinite(ti_value))
    nan = jnp.full((), jnp.nan, dtype)
    aux = {"betas": betas, "integrand": jnp.mean(g, axis=0), "step": steps[0], "particles": parts, "logw": logw}
    return Estimate(value, se(f_z), f_z, g, nan, nan, jnp.mean(acc), aux, diag, ok)


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


def generalization_from_smc(nll_fn, smc: Estimate, params_like, data, key, config: SamplerConfig, step_size,
                            observe_fn, f_true, sigma, *, prior_precision=1.0, weights=None,
                            num_nodes: int = 20) -> Estimate:
    """``G_n`` (`bayes_generalization_error`) from beta = 1 chains started at the particles of a
    `free_energy_smc` run ``smc``, drawn by their weights.

    ``config.num_chains`` chains (even, >= 4; each ``config.num_burnin`` + ``config.num_draws``
    steps of ``config.method`` at ``nbeta = n``); chain i starts from run ``floor(i R / C)`` of
    the R runs (with two runs: one half from each). Started at posterior draws, the chains stay
    posterior draws whether or not they cross between the posterior's modes, so the mode shares
    are the SMC populations' and the check is that two independent populations give the same G_n:
    ``diag["split_z"]`` (the halves' values in combined jackknife standard errors), with
    ``rhat`` of the chains' training loss reported beside it, not required. ``converged``:
    split_z within `z_critical` (C/2 chains each), acceptance >= ``accept_min``, finite.
    observe_fn: ``params -> (m,)`` predictions at the test inputs; f_true (m,) the truth there.
    """
    from jaxbench.mcmc_diagnostics import z_critical

    c = config.num_chains
    if c < 4 or c % 2:
        raise ValueError(f"generalization_from_smc needs an even number of chains >= 4, got {c}")
    logw, parts = smc.aux["logw"], smc.aux["particles"]                  # (R, N), (R, N, P)
    k_pick, k_run = jax.random.split(key)
    run_of = jnp.arange(c) * logw.shape[0] // c
    idx = jax.vmap(jax.random.categorical)(jax.random.split(k_pick, c), logw[run_of])
    unravel = ravel_pytree(params_like)[1]
    n = _sample_size(data, weights)
    one = dataclasses.replace(config, num_chains=1)
    ch = jax.vmap(lambda w, k: sample(nll_fn, unravel(w), data, k, one, step_size, nbeta=n,
                                      prior_precision=prior_precision, weights=weights, observe_fn=observe_fn))(
        parts[run_of, idx], jax.random.split(k_run, c))
    pred = ch.observed[:, 0]                                              # (C, T, m)
    full, a, b = (bayes_generalization_error(p, f_true, sigma, num_nodes) for p in (pred, pred[:c // 2], pred[c // 2:]))
    split_z = zscore(a.value, a.stderr, b.value, b.stderr)
    accept = jnp.mean(ch.accept)
    ok = jnp.isfinite(full.value) & (split_z <= z_critical(c // 2, THRESHOLDS["z_max"])) \
        & (accept >= THRESHOLDS["accept_min"])
    loss = ch.loss[:, 0]
    diag = {"split_z": split_z, "halves": jnp.stack([a.value, b.value])}
    return Estimate(full.value, full.stderr, full.per_chain, loss, rhat(loss), ess(loss), accept, {}, diag, ok)


def generalization_error_mc(loglik, log_q):
    """Monte Carlo ``G = mean_j [log q(y_j|x_j) - log mean_s p(y_j|x_j, w_s)]`` for test pairs
    (x_j, y_j) ~ q; loglik (S, m) = log p(y_j | x_j, w_s), log_q (m,). Any likelihood."""
    log_pred = jax.scipy.special.logsumexp(loglik, axis=0) - math.log(loglik.shape[0])
    return jnp.mean(log_q - log_pred)


