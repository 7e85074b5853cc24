"""Langevin samplers of a localized, tempered posterior, vmapped over chains.

Every sampler targets

    log pi(w) = -nbeta L_n(w) - (gamma/2) ||w - w_c||^2 - (alpha/2) ||w||^2      (+ const)

(`jaxbench.free_energy` explains the notation). ``nbeta``, ``gamma``, ``alpha`` and the step may
be traced arrays, so one compiled call serves a whole sweep.

* MALA (Roberts & Tweedie 1996): blackjax's kernel (``blackjax.mala``), its step adapted per
  chain during burn-in by blackjax's dual averaging (Hoffman & Gelman 2014, sec. 3.2) to
  ``target_accept`` and frozen after, so the draws come from a fixed, exact kernel.
* HMC (Duane et al. 1987; Neal 2011): blackjax's kernel (``blackjax.hmc``) with a fixed number
  of leapfrog steps, its step adapted and frozen as MALA's (and the same optional diagonal
  metric). Each transition costs ``num_integration_steps`` gradients; it moves along flat,
  weakly curved directions in O(sqrt(kappa)) gradients where MALA's random walk needs O(kappa)
  (kappa: the condition number), which is what deep linear networks need
  (docs/experiments/lambda_validation.md).
* SGLD (Welling & Teh 2011, in the form of Lau et al. 2023): ``w <- w + (eps/2) G grad log pi
  + N(0, eps G)`` with the loss on a minibatch, ``G = I`` or an RMSProp-style diagonal
  preconditioner (Li et al. 2016) estimated during burn-in and frozen after. Its diagnostic is
  the Metropolis acceptance probability its proposals would have under MALA (devinterp's check):
  near 1 the discretisation bias is small.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

METHODS = ("sgld", "mala", "hmc")


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    """Static shape of a sampling run.

    method: "sgld", "mala" or "hmc" (both Metropolis-adjusted, full batch only).
    Each chain runs ``num_burnin + num_draws * thin`` steps (HMC: transitions of
    ``num_integration_steps`` leapfrog steps each) and records ``num_draws`` draws.
    Defaults (4 x (2000 + 2000)): measured in docs/experiments/lambda_validation.md.
    num_integration_steps: HMC only: leapfrog steps per transition.
    adapt_step: MALA / HMC: dual-average the step toward ``target_accept`` during burn-in.
    precondition: SGLD: RMSProp-style diagonal preconditioner, estimated in burn-in; MALA / HMC: a
      diagonal metric from the posterior standard deviations, re-estimated over the doubling
      windows [B/16, B/8), [B/8, B/4), [B/4, B/2) of a burn-in of B >= 64 steps ([B/4, B/2) alone
      for shorter ones; needs adapt_step and num_burnin >= 4).
    accept_check: SGLD only: compute the MALA acceptance probability of each proposal (free with
      the full batch; with minibatches it costs one full-batch gradient per step). None: on for
      full-batch SGLD, off with minibatches.
    batch_size: SGLD minibatch size (None = full batch).
    shuffle: epochs of minibatches without replacement, each epoch a fresh random order (an
      affine map i -> (a i + b) mod n, cheap under vmap), like a shuffled PyTorch DataLoader;
      False: each minibatch drawn with replacement (needed when ``weights`` mask examples).
    """

    method: str = "sgld"
    num_chains: int = 4
    num_draws: int = 2000
    num_burnin: int = 2000
    thin: int = 1
    batch_size: int | None = None
    shuffle: bool = False
    adapt_step: bool = True
    target_accept: float = 0.8
    precondition: bool = False
    accept_check: bool | None = None
    num_integration_steps: int = 16

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown sampler {self.method!r}; choose from {METHODS}")
        for name in ("num_chains", "num_draws", "thin", "num_integration_steps"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"SamplerConfig.{name} must be an integer >= 1, got {getattr(self, name)!r}")
        if not isinstance(self.num_burnin, int) or self.num_burnin < 0:
            raise ValueError(f"SamplerConfig.num_burnin must be an integer >= 0, got {self.num_burnin!r}")
        if not 0.0 < self.target_accept < 1.0:
            raise ValueError(f"SamplerConfig.target_accept must lie in (0, 1), got {self.target_accept!r}")
        if self.method != "sgld" and self.batch_size is not None:
            raise ValueError(f"{self.method.upper()} needs the full-batch loss (batch_size=None)")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"SamplerConfig.batch_size must be >= 1 or None, got {self.batch_size!r}")

    @property
    def checks_acceptance(self) -> bool:
        return self.method != "sgld" or (self.batch_size is None if self.accept_check is None else self.accept_check)


class Chains(NamedTuple):
    """Output of `sample`. C chains, T draws.

    loss: (C, T) L_n at each draw (SGLD: the minibatch value, recorded at the state *before* the
      step, as devinterp does). accept: (C,) mean Metropolis acceptance probability over the
      draws (MALA: of its moves; SGLD: of its proposals, had they been MALA's; NaN when not
      checked). observed: ``observe_fn`` of each draw, leading axes (C, T), or None.
    final: params, axis C. step_size: (C,) the step used for the draws (after adaptation):
      the Langevin step eps for MALA / SGLD, the leapfrog step for HMC.
    """

    loss: jax.Array
    accept: jax.Array
    observed: Any
    final: Any
    step_size: jax.Array | None = None


def _concrete(v):
    try:
        return float(v)
    except (TypeError, jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        return None


def validate(*, nbeta=None, localization=None, prior_precision=None, step_size=None, data=None, weights=None,
             nbeta_min=None):
    """One-line ValueError for a bad concrete argument (traced ones are not inspected). nbeta must
    be > 0 (>= ``nbeta_min`` when given: the TI ladder samples the prior at nbeta = 0)."""
    nb_ok = (lambda x: x > 0) if nbeta_min is None else (lambda x: x >= nbeta_min)
    for name, v, ok, why in (("nbeta", nbeta, nb_ok, "> 0" if nbeta_min is None else f">= {nbeta_min:g}"),
                             ("localization (gamma)", localization, lambda x: x >= 0, ">= 0"),
                             ("prior_precision (alpha)", prior_precision, lambda x: x >= 0, ">= 0"),
                             ("step_size", step_size, lambda x: x > 0, "> 0")):
        x = None if v is None else _concrete(v)
        if x is not None and not (math.isfinite(x) and ok(x)):
            raise ValueError(f"{name} must be finite and {why}, got {x!r}")
    for name, tree in (("data", data), ("weights", weights)):
        for leaf in jax.tree_util.tree_leaves(tree):
            if isinstance(leaf, jax.core.Tracer):
                continue
            a = np.asarray(leaf)
            if a.dtype.kind in "fc" and not np.all(np.isfinite(a)):
                raise ValueError(f"{name} contains {int(np.sum(~np.isfinite(a)))} non-finite values")


def mean_nll(nll_fn, params, data, weights=None):
    """L_n(w): the (weighted) mean per-example negative log-likelihood."""
    l = nll_fn(params, data)
    if weights is None:
        return jnp.mean(l)
    return jnp.sum(weights * l) / jnp.sum(weights)


def num_examples(data) -> int:
    return jax.tree_util.tree_leaves(data)[0].shape[0]


def _minibatcher(data, weights, cfg):
    """``batch(t, key, k_perm) -> (batch, weights)``: the data SGLD's step t sees."""
    n = num_examples(data)
    if cfg.batch_size is None:
        if cfg.shuffle:
            raise ValueError("shuffle needs a batch_size and no weights mask")
        return lambda t, key, k_perm: (data, weights)
    if cfg.shuffle and weights is not None:
        raise ValueError("shuffle needs a batch_size and no weights mask")
    per_epoch = max(1, n // cfg.batch_size)
    units = jnp.asarray([a for a in range(1, n) if math.gcd(a, n) == 1] if cfg.shuffle else [1])

    def batch(t, key, k_perm):
        if cfg.shuffle:
            # epoch e visits every example once, in the order i -> (a i + b) mod n with a
            # (a unit mod n) and b drawn per epoch: O(batch) work, unlike a full permutation
            ka, kb = jax.random.split(jax.random.fold_in(k_perm, t // per_epoch))
            a = units[jax.random.randint(ka, (), 0, units.shape[0])]
            b = jax.random.randint(kb, (), 0, n)
            idx = (a * ((t % per_epoch) * cfg.batch_size + jnp.arange(cfg.batch_size)) + b) % n
        else:
            p = None if weights is None else weights / jnp.sum(weights)
            idx = jax.random.choice(key, n, (cfg.batch_size,), p=p)
        return jax.tree_util.tree_map(lambda a: a[idx], data), None

    return batch


def _mh_log_ratio(w, g, logp, w_new, g_new, logp_new, eps, precond):
    """log of the MALA acceptance ratio for the move w -> w_new with step eps and metric G."""
    fwd = -jnp.sum((w_new - w - 0.5 * eps * precond * g) ** 2 / precond) / (2 * eps)
    bwd = -jnp.sum((w - w_new - 0.5 * eps * precond * g_new) ** 2 / precond) / (2 * eps)
    return logp_new - logp + bwd - fwd


def sample(nll_fn: Callable, params0, data, key, config: SamplerConfig, step_size, *, nbeta,
           localization=0.0, prior_precision=0.0, center=None, weights=None,
           observe_fn: Callable | None = None) -> Chains:
    """Runs ``config.num_chains`` chains from ``params0`` (vmapped) targeting ``pi`` above.

    Args:
      params0: starting parameters (shared by all chains). center: ``w_c`` (default params0).
      step_size: eps (the Langevin move is ``(eps/2) grad log pi + N(0, eps)``); for adapted
        MALA the starting step of the adaptation; HMC starts its leapfrog step at sqrt(eps) (one
        leapfrog step of size sqrt(eps) is a Langevin move of step eps). nbeta, localization,
        prior_precision: scalars, may be traced. observe_fn: optional ``params -> pytree``
        recorded at every draw.
    Returns: `Chains` with loss (C, T), accept (C,), observed (C, T, ...), final params (C, ...),
      step_size (C,).
    """
    validate(nbeta=nbeta, localization=localization, prior_precision=prior_precision, step_size=step_size,
             data=data, weights=weights, nbeta_min=0.0)
    w0, unravel = ravel_pytree(params0)
    dtype = w0.dtype
    c = w0 if center is None else ravel_pytree(center)[0]
    as_ = lambda v: jnp.asarray(v, dtype)
    eps0, nbeta, gamma, alpha = as_(step_size), as_(nbeta), as_(localization), as_(prior_precision)
    cfg = config

    def prior_terms(w):
        return 0.5 * gamma * jnp.sum((w - c) ** 2) + 0.5 * alpha * jnp.sum(w**2)

    def log_target(w, batch, wts):
        loss = mean_nll(nll_fn, unravel(w), batch, wts)
        return -nbeta * loss - prior_terms(w), loss

    grad_fn = jax.value_and_grad(log_target, has_aux=True)
    full = lambda w: grad_fn(w, data, weights)
    observe = (lambda w: None) if observe_fn is None else (lambda w: observe_fn(unravel(w)))

    if cfg.method in ("mala", "hmc"):
        step = _metropolis_steps(log_target, prior_terms, nbeta, data, weights, cfg, eps0, w0)
    else:
        step = _sgld_steps(grad_fn, full, _minibatcher(data, weights, cfg), cfg, eps0, w0.shape, dtype)

    def chain(k):
        k_run, k_perm = jax.random.split(k)
        state = step.init(w0)
        burn = lambda s, t: (step.update(s, jax.random.fold_in(k_run, t), t, k_perm, True)[0], None)
        if cfg.num_burnin and step.switch is not None:
            # the metric is re-estimated at the end of each of the windows [B/16, B/8),
            # [B/8, B/4), [B/4, B/2) (doubling, as Stan's): each window's moves along flat
            # directions are already scaled by the previous metric, so a metric that started
            # too stiff (chains start at a point) grows toward the posterior's widths
            ends = _metric_window_ends(cfg.num_burnin)
            t0 = 0
            for t1 in ends:
                state = step.switch(jax.lax.scan(burn, state, jnp.arange(t0, t1))[0])
                t0 = t1
            state = jax.lax.scan(burn, state, jnp.arange(t0, cfg.num_burnin))[0]
        elif cfg.num_burnin:
            state = jax.lax.scan(burn, state, jnp.arange(cfg.num_burnin))[0]

        def draw(carry, i):
            obs = observe(step.position(carry[0]))
            t0 = cfg.num_burnin + i * cfg.thin

            def one(c, j):
                s, (loss, acc) = step.update(c[0], jax.random.fold_in(k_run, t0 + j), t0 + j, k_perm, False)
                return (s, c[1] + acc), loss

            carry, losses = jax.lax.scan(one, carry, jnp.arange(cfg.thin))
            return carry, (losses[0], obs)

        (state, acc_sum), (loss, obs) = jax.lax.scan(draw, (state, jnp.zeros((), dtype)), jnp.arange(cfg.num_draws))
        acc = acc_sum / (cfg.num_draws * cfg.thin) if cfg.checks_acceptance else jnp.full((), jnp.nan, dtype)
        return loss, acc, obs, unravel(step.position(state)), step.final_step(state)

    loss, acc, obs, final, eps = jax.vmap(chain)(jax.random.split(key, cfg.num_chains))
    return Chains(loss, acc, obs, final, eps)


def _metric_window_ends(num_burnin: int) -> tuple:
    """Ends of the metric's estimation windows (each starts where the previous ended, the first
    at B/16): B/8, B/4, B/2 for burn-ins of at least 64 steps, else B/2 alone (window [B/4, B/2))."""
    b = num_burnin
    return (b // 8, b // 4, 2 * (b // 4)) if b >= 64 else (2 * (b // 4),)


class _Steps(NamedTuple):
    init: Callable
    update: Callable        # (state, key, t, k_perm, burning) -> (state, (loss before, accept prob))
    position: Callable
    final_step: Callable
    switch: Callable | None = None   # called once at mid burn-in (MALA's metric), if any


def _metropolis_steps(log_target, prior_terms, nbeta, data, weights, cfg, eps0, w0):
    """blackjax's MALA or HMC kernel on the localized target, with dual averaging in burn-in.

    blackjax writes the MALA move as ``w + tau grad + sqrt(2 tau) xi``: tau = eps / 2; its HMC
    adapts a leapfrog step that starts at sqrt(eps) (unit mass in z below). blackjax's
    ``logdensity_fn`` returns a scalar only, so the loss is recovered from the stored log
    density: ``L = -(log pi + prior terms) / nbeta`` (exact; needs nbeta > 0, NaN at nbeta = 0).

    With ``precondition``: a diagonal metric by a change of variables ``w = w0 + D z`` (blackjax's
    MALA has no mass matrix; in z the kernel is the plain one, so it stays exact; HMC uses the
    same map, so the two samplers share one adaptation). D is the
    posterior standard deviation of each coordinate over a burn-in window (`_metric_window_ends`), divided
    by its smallest value (the stiffest direction keeps the adapted step, flat ones move
    further; capped at 1e3); the second half of burn-in re-adapts the step in z.
    """
    import blackjax
    from blackjax.adaptation.step_size import dual_averaging_adaptation

    if cfg.method == "hmc":
        hmc_kernel, init_state = blackjax.hmc.build_kernel(), blackjax.hmc.init
        unit_mass = jnp.ones_like(w0)

        def kernel(key, st, logp, step):
            return hmc_kernel(key, st, logp, step, unit_mass, cfg.num_integration_steps)

        step0, reported = jnp.sqrt(eps0), lambda s: s[2]
    else:
        kernel, init_state = blackjax.mala.build_kernel(), blackjax.mala.init
        step0, reported = 0.5 * eps0, lambda s: 2.0 * s[2]
    da_init, da_update, da_final = dual_averaging_adaptation(cfg.target_accept)
    adapt = cfg.adapt_step and cfg.num_burnin > 0
    safe_nbeta = jnp.where(nbeta > 0, nbeta, 1.0)
    quarter = cfg.num_burnin // 4
    ends = _metric_window_ends(cfg.num_burnin)
    start = cfg.num_burnin // 16 if len(ends) > 1 else quarter
    if not (cfg.precondition and adapt and quarter > 0):
        w0 = jnp.zeros_like(w0)        # no metric: z = w exactly (0 + 1 * z rounds to z)

    def logdensity(scale):
        return lambda z: log_target(w0 + scale * z, data, weights)[0]

    def position(s):
        return w0 + s[3] * s[0].position

    def loss_of(st, scale):
        return jnp.where(nbeta > 0, -(st.logdensity + prior_terms(w0 + scale * st.position)) / safe_nbeta, jnp.nan)

    def init(w):
        one = jnp.ones_like(w)
        zero = jnp.zeros((), w.dtype)
        welford = (zero, jnp.zeros_like(w), jnp.zeros_like(w))
        return init_state(w - w0, logdensity(one)), da_init(step0), step0, one, welford

    def update(s, key, t, k_perm, burning: bool):
        st, da, tau, scale, (cnt, mean, m2) = s     # tau: blackjax's step (MALA eps/2, HMC leapfrog)
        logp = logdensity(scale)
        if burning and adapt:
            new, info = kernel(key, st, logp, jnp.exp(da.log_step_size))
            da = da_update(da, info.acceptance_rate)
            tau = da_final(da)                  # the averaged step: frozen once burn-in ends
            if cfg.precondition:                # Welford mean / variance of w in the current window
                w = w0 + scale * new.position
                on = (t >= start) & (t < 2 * quarter)
                c1 = cnt + 1
                d = w - mean
                mean_n = mean + d / c1
                cnt, mean, m2 = (jnp.where(on, c1, cnt), jnp.where(on, mean_n, mean),
                                 jnp.where(on, m2 + d * (w - mean_n), m2))
        else:
            new, info = kernel(key, st, logp, tau)
        return (new, da, tau, scale, (cnt, mean, m2)), (loss_of(st, scale), info.acceptance_rate)

    def switch(s):
        """End of a metric estimation window: D from the window's variances, state in z."""
        st, da, tau, scale, (cnt, mean, m2) = s
        sd = jnp.sqrt(m2 / jnp.maximum(cnt - 1, 1))
        new_scale = jnp.clip(sd / jnp.maximum(jnp.min(sd), 1e-30), 1.0, 1e3)
        new_scale = jnp.where(jnp.all(jnp.isfinite(new_scale)) & (cnt > 1), new_scale, scale)
        w = w0 + scale * st.position
        fresh = (jnp.zeros_like(cnt), jnp.zeros_like(mean), jnp.zeros_like(m2))   # the next window starts anew
        return init_state((w - w0) / new_scale, logdensity(new_scale)), da_init(tau), tau, new_scale, fresh

    steps = _Steps(init, update, position, reported)
    return steps._replace(switch=switch) if cfg.precondition and adapt and quarter > 0 else steps


def _sgld_steps(grad_fn, full, batch_of, cfg, eps, shape, dtype):
    """Hand-written SGLD: blackjax's SGLD has no diagonal preconditioner and no hook for the
    full-batch MALA acceptance check, and its minibatch interface cannot take our shuffled
    epochs or 0/1 weight masks; one kernel here covers all of them."""
    check = cfg.checks_acceptance
    rho, floor = 0.99, 1e-3   # RMSProp decay; G_i >= 1 and <= 1 / floor after normalisation

    def init(w):
        logp_g = full(w) if check else ((jnp.zeros((), dtype), jnp.zeros((), dtype)), jnp.zeros_like(w))
        return w, logp_g, jnp.zeros(shape, dtype), jnp.ones(shape, dtype)

    def update(s, key, t, k_perm, burning: bool):
        w, ((logp, loss_full), g_full), v, precond = s
        kb, kn = jax.random.split(key)
        if check and cfg.batch_size is None:     # the full-batch gradient at w is carried
            loss, g = loss_full, g_full
        else:
            batch, wts = batch_of(t, kb, k_perm)
            (_, loss), g = grad_fn(w, batch, wts)
        if cfg.precondition and burning:
            # second moments of the gradient during burn-in; G = sqrt(max v) / sqrt(v), so the
            # stiffest direction keeps the step eps and flatter ones move further
            v = rho * v + (1 - rho) * g**2
            r = jnp.sqrt(v)
            top = jnp.max(r)
            precond = jnp.where(top > 0, jnp.clip(top / jnp.maximum(r, floor * top), 1.0, 1 / floor), 1.0)
        new = w + 0.5 * eps * precond * g + jnp.sqrt(eps * precond) * jax.random.normal(kn, shape, dtype)
        if check:
            g_cur = g if cfg.batch_size is None else g_full
            (logp_new, loss_new), g_new = full(new)
            log_r = _mh_log_ratio(w, g_cur, logp, new, g_new, logp_new, eps, precond)
            acc = jnp.exp(jnp.minimum(0.0, jnp.where(jnp.isnan(log_r), -jnp.inf, log_r)))
            logp_g = ((logp_new, loss_new), g_new)
        else:
            acc, logp_g = jnp.ones((), dtype), ((logp, loss_full), g_full)
        return (new, logp_g, v, precond), (loss, acc)

    return _Steps(init, update, lambda s: s[0], lambda s: eps * jnp.ones((), dtype))
