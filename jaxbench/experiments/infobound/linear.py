"""Layerwise bounds for linear networks with explicit rank / norms, SDPI contraction, funnel.

Source: H. He, Z. Goldfeld, arXiv 2404.03176 (abstract only could be read). The model, the
bounds and every constant below are OUR DERIVATION (docs/experiments/info_bounds.md, sections
"Rank", "SDPI", "Funnel"); what the paper states is not verified.

Model. ``Y = +-1``, ``X | Y ~ N(Y mu, sigma^2 I_d)``; ``Z = Y X ~ N(mu, sigma^2 I)`` (label-folded).
K = depth - 1 hidden layers ``W_k (d, d)``, fixed per seed:

* ``arch = "rank"``: ``W_1 = beta O_1 diag(1[j < rank]) O_0^T``, ``W_k = beta O_k`` (``O``
  random orthogonal): ``B_K = W_K ... W_1`` has rank r and all singular values ``beta^K``.
* ``arch = "aniso"``: ``W_k = diag(1, rho, ..., rho)``, ``mu`` along ``e_1`` (the signal
  coordinate is kept, the others amplified by rho per layer): the funnel construction.

Learning: the readout ``w = B_K Zbar`` (class-mean rule on clean features, ``Zbar`` the mean of the
n training ``Z_j``); the hidden layers are fixed. Evaluation passes a point through the layers with
a random mechanism after each hidden layer (``mech``, strength ``strength``), fresh at every
evaluation and absent in training: ``gauss`` ``W u + s xi``; ``dropout`` ``D * (W u) / (1-p)``;
``dropconnect`` ``((M * W) / (1-p)) u``; ``none``. All three are unbiased, so the linear loss gap
does not depend on them. Losses: 0-1, ``l(w, z) = P(w^T T_K(z) <= 0)`` over the mechanism (bounded,
sub-Gaussian 1/4), and linear, ``-w^T T_K(z)`` (1-Lipschitz in the margin).

Per layer l = 0..K (0 = input) the outputs are:

* ``kl0 = (r/2) log(n / (n-1))``: ``I(w; Z_i)``, r = rank B_K (closed form) and its Monte Carlo
  check ``kl0_mc`` (mean over training sets of ``KL(P_{Z_i|w} || P_Z)``);
* ``kl_exact[l] = I(w; U_{l,i})`` (``U_l`` the evaluated representation; none: = kl0 at every
  layer; gauss: Gaussian closed form, with the MC check ``kl_mc``); ``kl_mask[l]``
  (dropout / dropconnect): ``E_M I(w; U_l | M)`` by Monte Carlo over masks, an upper bound on
  ``I(w; U_l)`` (revealing the masks can only add information);
* ``eta[l]``: SDPI coefficient of the channel ``U_{l-1} -> U_l`` (eta[0] = 1): gauss, the exact
  input-dependent value for Gaussian input, ``lambda_max(W C W^T) / (lambda_max + s^2)`` (the squared
  maximal correlation); dropout, ``1 - p^d`` (a certified upper bound: the channel is a degradation
  of d erasures); dropconnect, ``1 - p^(d^2)`` (same argument through the all-masked columns);
* KL bounds on the 0-1 gap ``sqrt(D / 2)``: uncontracted (D = kl0, data processing only),
  contracted (D = prod_{k <= l} eta_k kl0), exact (D = kl_exact) and mask-revealed;
* W1 bound on the linear-loss gap ``E_w[|G_l^T w| W1(P_{U_l|w}, P_{U_l})]`` with W1 <= Gelbrich W2
  (mean over training sets, none / gauss), its lower end ``|G_l^T w| |mean shift|``, and at the
  last hidden layer the closed form by Cauchy-Schwarz,
  ``sqrt((|m_K|^2 + sigma^2 F^2 / n) sigma^2 F^2 (1/n + (1 - sqrt(1 - 1/n))^2))`` with
  ``F = |B_K|_F``, ``m_K = B_K mu`` (norms explicit).
* Monte Carlo gaps over ``reps`` training sets: 0-1 (exact Gaussian expectations for none / gauss,
  sampled fresh masks for dropout / dropconnect) and linear (``|w|^2 - w.m_K``, whose mean is
  ``sigma^2 F^2 / n`` exactly).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxbench import compat, info
from jaxbench.experiments import Param, one_of, positive

NAME = "info_linear"
X64 = True
CPU_FUSION_EMITTERS = False  # compile-bound (5 small buckets): 19 -> 12-13 s wall side by side (benchmarks/RESULTS.md)

PARAMS = {
    "arch": one_of("rank", "aniso", default="rank"),
    "mech": one_of("none", "gauss", "dropout", "dropconnect", default="none"),
    "depth": Param("static", int, 4, lambda v: v >= 2, "must be >= 2 (one hidden layer at least)"),
    "d": positive(int, default=4),
    "n": Param("static", int, 32, lambda v: v >= 2, "must be >= 2"),
    "reps": Param("static", int, 2000, lambda v: v >= 2, "must be >= 2 (training sets per variant)"),
    "n_test": positive(int, default=256),
    "rank": positive(float, default=4.0, kind="traced"),
    "beta": positive(float, default=1.0, kind="traced"),
    "rho": positive(float, default=1.0, kind="traced"),
    "strength": Param("traced", float, 0.5, lambda v: v >= 0, "must be >= 0"),
    "mu": positive(float, default=1.0, kind="traced"),
    "sigma": positive(float, default=1.0, kind="traced"),
}


def check(v):
    if v["mech"] in ("dropout", "dropconnect") and not v["strength"] < 1:
        raise ValueError(f"strength = {v['strength']}: a drop rate must be < 1")
    if v["mech"] == "gauss" and not v["strength"] > 0:
        raise ValueError(f"strength = {v['strength']}: Gaussian noise must be > 0")
    if v["arch"] == "rank" and not 1 <= v["rank"] <= v["d"]:
        raise ValueError(f"rank = {v['rank']}: must lie in [1, d = {v['d']}]")


def _orthogonal(keys, d):
    """Random orthogonal ``(len(keys), d, d)``, one per key: the Q of a QR of a normal draw, signs
    fixed by R's diagonal. One vmapped draw (the same numbers as a draw per key; one generator
    compiled instead of one per layer)."""
    q, r = jnp.linalg.qr(jax.vmap(lambda k: jax.random.normal(k, (d, d)))(keys))
    return q * jnp.sign(jnp.diagonal(r, axis1=-2, axis2=-1))[..., None, :]


def layers(s, p, key):
    """Hidden layers and the readout's row-space coordinates.

    Returns ``(W (K, d, d), V (d, d), mask (d,))``: ``B_K``'s row space is spanned by the columns
    ``V[:, mask]`` (orthonormal), so ``P = V diag(mask) V^T`` is the projection onto it.
    """
    K, d = s.depth - 1, s.d
    mask = (jnp.arange(d) < jnp.round(p["rank"])).astype(jnp.float64)
    if s.arch == "aniso":
        g = jnp.concatenate([jnp.ones(1), jnp.full((d - 1,), p["rho"])])
        return jnp.broadcast_to(jnp.diag(g), (K, d, d)), jnp.eye(d), jnp.ones(d)
    O = _orthogonal(jax.random.split(key, K + 1), d)
    V, Os = O[0], O[1:]
    W = p["beta"] * Os
    return W.at[0].set(W[0] @ (mask[:, None] * V.T)), V, mask


def _chain(W):
    """``B_l = W_l...W_1`` and ``G_l = W_K...W_{l+1}`` for l = 0..K, stacked ``(K+1, d, d)``."""
    d = W.shape[-1]
    B, G = [jnp.eye(d)], [jnp.eye(d)]
    for w in W:
        B.append(w @ B[-1])
    for w in W[::-1]:
        G.insert(0, G[0] @ w)
    return jnp.stack(B), jnp.stack(G)


def _noise_covs(W, s2):
    """Accumulated Gaussian-injection covariance ``N_l`` (l = 0..K), ``N_0 = 0``."""
    N = [jnp.zeros_like(W[0])]
    for w in W:
        N.append(w @ N[-1] @ w.T + s2 * jnp.eye(w.shape[0]))
    return jnp.stack(N)


def _mechanism(s, p, W, z, key):
    """Evaluated last-hidden representations ``T_K (R, m, d)`` of points ``z (R, m, d)``, fresh masks.

    All masks of a layer come from ONE key (a vmap over per-set keys compiled pathologically slowly
    under the engine's outer vmap: minutes instead of seconds, measured). The layers run in a
    ``lax.scan``, so the mask generator is compiled once, not once per layer (the same draws:
    layer k's key is ``fold_in(key, k)`` either way)."""
    q = p["strength"]

    def layer(t, kw):
        k, w = kw
        kk = jax.random.fold_in(key, k)
        if s.mech == "dropout":
            return jnp.einsum("rmj,ij->rmi", t, w) * jax.random.bernoulli(kk, 1 - q, t.shape) / (1 - q), None
        if s.mech == "dropconnect":
            m = jax.random.bernoulli(kk, 1 - q, t.shape[:2] + w.shape)
            return jnp.einsum("rmij,rmj->rmi", m * w / (1 - q), t), None
        return jnp.einsum("rmj,ij->rmi", t, w), None

    return jax.lax.scan(layer, z, (jnp.arange(W.shape[0]), W))[0]


def _row_space_projection(b, tol=1e-9):
    """Orthogonal projection ``(d, d)`` onto the row space of ``b (d, d)``: Gram-Schmidt over the
    rows (twice, for stability), a row kept when its residual exceeds ``tol`` times the largest
    row norm. Plain XLA ops (no LAPACK: see `jaxbench.info.cholesky_loop` for why)."""
    d = b.shape[-1]
    scale = jnp.maximum(jnp.max(jnp.linalg.norm(b, axis=1)), 1e-300)
    q = jnp.zeros((d, d))
    for i in range(b.shape[0]):
        v = b[i]
        for _ in range(2):
            v = v - q.T @ (q @ v)
        nv = jnp.linalg.norm(v)
        keep = nv > tol * scale
        q = q.at[i].set(jnp.where(keep, v / jnp.where(keep, nv, 1.0), 0.0))
    return q.T @ q


def _mask_mi(s, p, W, V, mask, key, n, R):
    """``I(w; B^M_l Z_i)`` for R draws of the masks M, l = 0..K. Returns ``(R, K+1)``. With ``Pi_l``
    the projection onto the row space of the masked product ``B^M_l`` and
    ``Q = diag(mask) V^T Pi_l V diag(mask)`` (its eigenvalues are the squared canonical
    correlations of ``(sqrt(n) V^T Zbar, B^M_l Z_i)``), ``I = -1/2 log det(I - Q / n)``."""
    q, d = p["strength"], s.d
    shape = (R, d) if s.mech == "dropout" else (R, d, d)
    # layer k's masks from fold_in(key, k), all layers in one vmapped draw (one generator compiled)
    drawn = jax.vmap(lambda k: jax.random.bernoulli(jax.random.fold_in(key, k), 1 - q, shape))(jnp.arange(len(W)))
    masked = (drawn[..., None] if s.mech == "dropout" else drawn) * W[:, None]  # (K, R, d, d)
    # one step per layer l = 0..K (a trailing identity: B_K's step multiplies by nothing that is used)
    steps = jnp.concatenate([masked, jnp.broadcast_to(jnp.eye(d), (1, R, d, d))])

    def layer(B, w):
        Q = mask[:, None] * (V.T @ _row_space_projection(B) @ V) * mask[None, :]
        low = info.cholesky_loop(jnp.eye(d) - 0.5 * (Q + Q.T) / n)
        return w @ B, -jnp.sum(jnp.log(jnp.diagonal(low)))

    return jax.vmap(lambda ws: jax.lax.scan(layer, jnp.eye(d), ws)[1])(jnp.moveaxis(steps, 0, 1))


def run_one(s, p, key):
    """One variant (``reps`` training sets). Per-layer outputs have length ``depth`` (l = 0..K)."""
    k_arch, k_data, k_mech, k_test = jax.random.split(key, 4)
    W, V, mask = layers(s, p, k_arch)
    B, G = _chain(W)
    K, d, n, R = s.depth - 1, s.d, s.n, s.reps
    sig, sig2 = p["sigma"], p["sigma"] ** 2
    mu = jnp.zeros(d).at[0].set(p["mu"]) if s.arch == "aniso" else p["mu"] * jnp.ones(d) / math.sqrt(d)
    BK, mK = B[-1], B[-1] @ mu
    P = V @ (mask[:, None] * V.T)
    r = jnp.sum(mask)
    sem = lambda v: jnp.std(v, ddof=1, axis=0) / math.sqrt(R)

    # Zbar - mu, one per training set (materialized: XLA would compile its draw into each consumer)
    zbar_dev = compat.materialize(jax.random.normal(k_data, (R, d))) * sig / math.sqrt(n)
    w = (mu + zbar_dev) @ BK.T  # (R, d)
    shift0 = zbar_dev @ P  # E[Z_i | w] - mu = P (Zbar - mu)

    # ---- gaps: linear loss (exact per set) and 0-1 loss
    gap_lin = jnp.sum(w**2, 1) - w @ mK
    s2 = p["strength"] ** 2 if s.mech == "gauss" else 0.0
    N = _noise_covs(W, s2)
    # training points given their mean: Z_j = Zbar + sigma (e_j - ebar), drawn per set
    e = jax.random.normal(jax.random.fold_in(k_data, 1), (R, n, d))
    Z = mu + zbar_dev[:, None, :] + sig * (e - jnp.mean(e, 1, keepdims=True))
    signal_sd = sig * jnp.linalg.norm(w @ BK, axis=1)
    if s.mech in ("none", "gauss"):
        noise_sd = jnp.sqrt(jnp.einsum("ri,ij,rj->r", w, N[-1], w))
        margin = jnp.einsum("rnd,rd->rn", Z @ BK.T, w)
        if s.mech == "none":
            train01 = jnp.mean(margin <= 0, 1)
        else:
            train01 = jnp.mean(jax.scipy.stats.norm.cdf(-margin / noise_sd[:, None]), 1)
        test01 = jax.scipy.stats.norm.cdf(-(w @ mK) / jnp.sqrt(signal_sd**2 + noise_sd**2))
    else:
        tk = _mechanism(s, p, W, Z, k_mech)
        train01 = jnp.mean(jnp.einsum("rnd,rd->rn", tk, w) <= 0, 1)
        zt = mu + sig * jax.random.normal(k_test, (R, s.n_test, d))
        tt = _mechanism(s, p, W, zt, jax.random.fold_in(k_test, 1))
        test01 = jnp.mean(jnp.einsum("rnd,rd->rn", tt, w) <= 0, 1)
    gap01 = test01 - train01

    # ---- KL terms
    kl0 = 0.5 * r * jnp.log(n / (n - 1.0))
    zeta = (zbar_dev @ V) * mask  # row-space coordinates of Zbar - mu
    kl0_w = 0.5 * (jnp.sum(zeta**2, 1) / sig2 - r / n - r * jnp.log1p(-1.0 / n))
    nan = jnp.full((K + 1,), jnp.nan)
    kl_exact, kl_mc, kl_mc_se, kl_mask, kl_mask_se = nan, nan, nan, nan, nan
    C = sig2 * jnp.einsum("lij,lkj->lik", B, B) + N  # Cov(U_l)
    S = (sig2 / n) * jnp.einsum("lij,jk,lmk->lim", B, P, B)  # covariance removed by conditioning on w
    if s.mech == "none":
        kl_exact = jnp.full((K + 1,), kl0)
    elif s.mech == "gauss":
        c_zeta = jnp.diag(mask * sig2 / n + (1 - mask))  # padded coordinates: independent N(0, 1)
        cross = jax.vmap(lambda b: (mask[:, None] * V.T) @ b.T * sig2 / n)(B)
        kl_exact = jax.vmap(lambda c, x: info.gaussian_mutual_information(c_zeta, c, x))(C, cross)

        def cond_kl(c, sl, b):
            ci = jnp.linalg.inv(c)
            const = 0.5 * (jnp.trace(ci @ (c - sl)) - d + jnp.linalg.slogdet(c)[1] - jnp.linalg.slogdet(c - sl)[1])
            sh = shift0 @ b.T
            return const + 0.5 * jnp.einsum("ri,ij,rj->r", sh, ci, sh)

        per_w = jax.vmap(cond_kl)(C, S, B)  # (K+1, R)
        kl_mc, kl_mc_se = jnp.mean(per_w, 1), jnp.std(per_w, 1, ddof=1) / math.sqrt(R)
    else:
        mm = _mask_mi(s, p, W, V, mask, jax.random.fold_in(k_mech, 7), n, R)
        kl_mask, kl_mask_se = jnp.mean(mm, 0), sem(mm)

    # ---- SDPI coefficients per layer
    q = p["strength"]
    if s.mech == "gauss":
        lam = jax.vmap(lambda w_, c: jnp.linalg.eigvalsh(w_ @ c @ w_.T)[-1])(W, C[:-1])
        eta_h = lam / (lam + s2)
    elif s.mech == "dropout":
        eta_h = jnp.full((K,), 1.0 - q**d)
    elif s.mech == "dropconnect":
        eta_h = jnp.full((K,), 1.0 - q ** (d * d))
    else:
        eta_h = jnp.ones(K)
    eta = jnp.concatenate([jnp.ones(1), eta_h])
    kl_contracted = kl0 * jnp.cumprod(eta)

    # ---- W1 bound on the linear-loss gap (none / gauss: Gaussian laws)
    if s.mech in ("none", "gauss"):
        shift = jnp.einsum("lij,rj->lri", B, shift0)  # (K+1, R, d)
        lip = jnp.linalg.norm(jnp.einsum("lji,rj->lri", G, w), axis=2)
        bures = jax.vmap(info.bures_squared)(C - S, C)
        w2 = jnp.sqrt(jnp.sum(shift**2, 2) + bures[:, None])
        lo = jnp.linalg.norm(shift, axis=2)
        bw = lip * w2  # (K+1, R): the bound's integrand per training set
        w1b, w1b_se, w1b_lo = jnp.mean(bw, 1), jnp.std(bw, 1, ddof=1) / math.sqrt(R), jnp.mean(lip * lo, 1)
        # funnel depth: the better end minus the minimum, paired over the same training sets
        lmin = jnp.argmin(w1b)
        end = jnp.where(w1b[0] <= w1b[-1], 0, K)
        diff = bw[end] - bw[lmin]
        dip, dip_se = jnp.mean(diff) / w1b[lmin], sem(diff) / w1b[lmin]
        w2sq_K, w2sq_K_se = jnp.mean(w2[-1] ** 2), jnp.std(w2[-1] ** 2, ddof=1) / math.sqrt(R)
    else:
        w1b = w1b_se = w1b_lo = nan
        dip = dip_se = jnp.full((), jnp.nan)
        w2sq_K = w2sq_K_se = jnp.full((), jnp.nan)
    F2 = jnp.sum(BK**2)
    c_n = 1.0 / n + (1.0 - math.sqrt(1.0 - 1.0 / n)) ** 2
    w2sq_cf = sig2 * F2 * c_n if s.mech == "none" else jnp.full((), jnp.nan)
    wnorm2_cf = jnp.sum(mK**2) + sig2 * F2 / n
    w1_cf = jnp.sqrt(wnorm2_cf * w2sq_cf)

    return {
        "gap01": jnp.mean(gap01), "gap01_se": sem(gap01), "test01": jnp.mean(test01),
        "gap_lin": jnp.mean(gap_lin), "gap_lin_se": sem(gap_lin), "gap_lin_cf": sig2 * F2 / n,
        "rank_eff": r, "frob2": F2, "mK2": jnp.sum(mK**2),
        "kl0": kl0, "kl0_mc": jnp.mean(kl0_w), "kl0_mc_se": sem(kl0_w),
        "kl_exact": kl_exact, "kl_mc": kl_mc, "kl_mc_se": kl_mc_se, "kl_mask": kl_mask, "kl_mask_se": kl_mask_se,
        "eta": eta, "kl_contracted": kl_contracted,
        "klb_uncontracted": jnp.full((K + 1,), jnp.sqrt(kl0 / 2)), "klb_contracted": jnp.sqrt(kl_contracted / 2),
        "klb_exact": jnp.sqrt(kl_exact / 2), "klb_mask": jnp.sqrt(kl_mask / 2),
        "w1_bound": w1b, "w1_bound_se": w1b_se, "w1_bound_lower": w1b_lo, "w1_bound_cf": w1_cf,
        "wnorm2_mc": jnp.mean(jnp.sum(w**2, 1)), "wnorm2_mc_se": sem(jnp.sum(w**2, 1)), "wnorm2_cf": wnorm2_cf,
        "w2sq_mc": w2sq_K, "w2sq_mc_se": w2sq_K_se, "w2sq_cf": w2sq_cf,
        "funnel": jnp.argmin(w1b).astype(jnp.int32), "funnel_dip": dip, "funnel_dip_se": dip_se,
        "diverged": ~(jnp.isfinite(jnp.mean(gap01)) & jnp.isfinite(kl0)),
    }


def variant_bytes(s) -> int:
    per_set = s.n * s.d * 4 + (s.n + s.n_test) * s.d * s.d * (s.mech == "dropconnect") * 2 + s.n_test * s.d * 2
    return 8 * s.reps * (per_set + 4 * s.depth * s.d * s.d)


from jaxbench.experiments.infobound.plots_linear import claims, plot  # noqa: E402,F401
