"""Layerwise information-theoretic generalization bounds (linear networks, closed forms).

Source: H. He, Z. Goldfeld, "Information-Theoretic Generalization Bounds for Deep Neural
Networks", arXiv 2404.03176 (IEEE Trans. Inf. Theory 2025). Claim (abstract): hierarchical
bounds on the generalization gap through the KL divergence or the 1-Wasserstein distance
between the train and test distributions of internal representations; the KL bound shrinks
with the layer index, the W1 bound is minimal at a "generalization funnel" layer; analytic
expressions for binary Gaussian classification with linear networks.

We could not check the paper's theorems and constants; the bound forms below are OUR
RECONSTRUCTION, derived in full in docs/experiments/info_bounds.md. Summary:

Data and network. ``Y = +-1``, ``X | Y ~ N(Y mu, sigma^2 I_d)``, ``mu = |mu| e_1``. Layers
``l = 1..L-1`` are fixed random linear maps (``A_l`` with N(0, 1/fan_in) entries, drawn from the
variant's seed) with Gaussian noise injection ``T_l = A_l T_{l-1} + s xi_l`` (``T_0 = X``); the
readout ``f = w^T T_{L-1}`` is learned from n samples: ``w = (1/n) sum_j Y_j T_{L-1,j}`` (the
ERM of the correlation loss with unit ridge; training draws its own injection noise).
A hypothesis is evaluated with fresh injection noise, so the loss of a sample is
``E phi(Y w^T T_{L-1})`` with ``phi`` the logistic loss (or the linear loss ``-v``); both are
1-Lipschitz in the margin. Then with ``U_l = Y T_l`` (the label-folded representation; the loss
of layer l depends on (T_l, Y) only through U_l, and Y is independent of (w, U_l)):

* ``U_l ~ N(m_l, C_l)``, ``m_l = B_l mu``, ``C_0 = sigma^2 I``, ``C_l = A_l C_{l-1} A_l^T + s^2 I``,
  ``B_l = A_l...A_1``; ``w ~ N(m_K, C_K / n)`` with K = L-1; ``Cov(w, U_{l,i}) = sigma^2 B_K B_l^T / n``.
* KL term ``D_l = D(P_{w, T_{l,i}, Y_i} || P_w x P_{T_l, Y}) = I(w; U_{l,i})``: closed-form Gaussian
  mutual information. Non-increasing in l by data processing (each layer is the same channel,
  fresh noise, for train and test). At the output (l = L) ``D_L = E_w KL(P_{V_i|w} || P_{V|w})``
  for the margin ``V = w^T U_K``, two 1-d Gaussians given w (Monte Carlo over w).
* KL bound ``sqrt(2 E[sigma_w^2] D_l)``, ``sigma_w^2 = w^T C_K w`` (the loss given w is a 1-Lipschitz
  function of a Gaussian margin of that variance, hence sigma_w-sub-Gaussian; Donsker-Varadhan
  per w, then Cauchy-Schwarz over w). ``E[sigma_w^2] = m_K^T C_K m_K + tr(C_K^2)/n``.
* W1 bound ``E_w[ |G_l^T w| W1(P_{U_{l,i}|w}, P_{U_l}) ]`` with ``G_l = A_K...A_{l+1}``: the loss is
  ``|G_l^T w|``-Lipschitz in U_l for fixed w (the Lipschitz factor of the remaining network).
  ``U_{l,i} | w`` is Gaussian (conditioning), W1 between d-dimensional Gaussians has no closed
  form, so we use its Gelbrich W2 upper bound (valid) and report the lower bound ``|mean shift|``
  (the two agree to < 1% here). At the output ``W1`` of two 1-d Gaussians is closed form.
* Monte Carlo gap over ``reps`` independent training sets (one vmapped batch): train and test
  losses per training set by 64-point Gauss-Hermite quadrature (exact for the linear loss),
  whose expectation for the linear loss is ``sigma^2 tr(B_K B_K^T) / n``.

Layer index: 0 = input, 1..L-1 hidden, L = output margin. The funnel is the internal layer
(0..L-1) with the smallest W1 bound; the output term is reported separately because in this
fixed-w form it is ALWAYS the smallest (W1 contracts under the Lipschitz map to the output).

The ReLU / gradient-descent extension lives in `infobound.relu` (``model = "relu"``).
"""

from __future__ import annotations

import numpy as np

import jax
import jax.numpy as jnp

from jaxbench import data, info, mlp
from jaxbench.experiments import Param, one_of, positive
from jaxbench.experiments.infobound import relu as infobound_relu

NAME = "info_bounds"
X64 = True

PARAMS = {
    "model": one_of("linear", "relu", default="linear"),
    "depth": positive(int, default=4),
    "width": positive(int, default=16),
    "d": positive(int, default=16),
    "n": Param("static", int, 64, lambda v: v >= 2, "must be >= 2"),
    "reps": Param("static", int, 1000, lambda v: v >= 2, "must be >= 2 (training sets per variant)"),
    "loss": one_of("logistic", "linear", default="logistic"),
    "steps": positive(int, default=200),
    "n_test": positive(int, default=1024),
    "noise": positive(float, default=0.5, kind="traced"),
    "mu": positive(float, default=1.0, kind="traced"),
    "sigma": positive(float, default=1.0, kind="traced"),
    "lr": positive(float, default=1.0, kind="traced"),
}

_GH_Z, _GH_W = np.polynomial.hermite_e.hermegauss(64)
_GH_W = _GH_W / np.sqrt(2.0 * np.pi)


def _phi(loss: str, v):
    return jnp.logaddexp(0.0, -v) if loss == "logistic" else -v


def gauss_expect(loss: str, mean, std):
    """``E phi(mean + std Z)``, Z ~ N(0, 1), by Gauss-Hermite quadrature (elementwise)."""
    z = jnp.asarray(_GH_Z, jnp.result_type(mean))
    return jnp.sum(_GH_W * _phi(loss, mean[..., None] + std[..., None] * z), -1)


def moments(s, p, key):
    """Fixed layers and the Gaussian moments of every representation. Returns a dict with lists
    ``A`` (L-1 maps ``(d_l, d_{l-1})``), ``B``, ``C``, ``m``, ``G`` (index l = 0..L-1)."""
    spec = mlp.MLPSpec(s.d, (s.width,) * (s.depth - 1), 1, activation="linear",
                       parametrization="standard", bias=False, w_std=1.0)
    A = [layer["w"].T for layer in mlp.init(spec, key)[:-1]]
    mu = jnp.zeros(s.d).at[0].set(p["mu"])
    B, C = [jnp.eye(s.d)], [p["sigma"] ** 2 * jnp.eye(s.d)]
    for a in A:
        B.append(a @ B[-1])
        C.append(a @ C[-1] @ a.T + p["noise"] ** 2 * jnp.eye(a.shape[0]))
    G = [jnp.eye(B[-1].shape[0])]
    for a in A[::-1]:
        G.insert(0, G[0] @ a)
    return {"A": A, "B": B, "C": C, "m": [b @ mu for b in B], "G": G, "mu": mu}


def _sample_readouts(s, p, mo, key):
    """``reps`` training sets: readouts ``w (R, d_K)`` and noiseless train features
    ``U_i = B_K Y_i X_i`` ``(R, n, d_K)``.

    The training-time injection noise enters w only through its average over the n samples,
    ``(1/n) sum_j Y_j eps_j ~ N(0, N_K / n)`` with ``N_K = C_K - sigma^2 B_K B_K^T`` the
    accumulated noise covariance, so it is drawn once per training set (exact in law; the
    tests compare with a layer-by-layer simulation)."""
    BK = mo["B"][-1]
    root = info.sqrtm_psd((mo["C"][-1] - p["sigma"] ** 2 * BK @ BK.T) / s.n)

    def one(k):
        kx, kn = jax.random.split(k)
        x, y = data.gaussian_binary(kx, s.n, mo["mu"], p["sigma"])
        u = (y[:, None] * x) @ BK.T
        return jnp.mean(u, 0) + root @ jax.random.normal(kn, (BK.shape[0],)), u

    return jax.vmap(one)(jax.random.split(key, s.reps))


def _padded_layers(mo):
    """Stacks B_l ``(D, d)``, C_l ``(D, D)``, G_l ``(d_K, D)`` for l = 0..L-1, zero-padded to
    D = max width (identity on the padded block of C_l)."""
    D = max(c.shape[0] for c in mo["C"])
    out = {"B": [], "C": [], "G": []}
    for B, C, G in zip(mo["B"], mo["C"], mo["G"]):
        k = C.shape[0]
        out["B"].append(jnp.zeros((D, B.shape[1])).at[:k].set(B))
        out["C"].append(jnp.eye(D).at[:k, :k].set(C))
        out["G"].append(jnp.zeros((G.shape[0], D)).at[:, :k].set(G))
    return {k: jnp.stack(v) for k, v in out.items()}


def linear_run(s, p, key):
    k_arch, k_data = jax.random.split(key)
    mo = moments(s, p, k_arch)
    n, sig2 = s.n, p["sigma"] ** 2
    BK, CK, mK = mo["B"][-1], mo["C"][-1], mo["m"][-1]
    CK_inv = jnp.linalg.inv(CK)
    W, U = _sample_readouts(s, p, mo, k_data)
    quad = lambda M: jnp.einsum("ri,ij,rj->r", W, M, W)
    # losses with fresh injection noise: train margins N(w.B_K u_i, w^T N_K w), test N(w.m_K, w^T C_K w)
    noise_cov = CK - sig2 * BK @ BK.T
    train = jnp.mean(gauss_expect(s.loss, jnp.einsum("rk,rnk->rn", W, U),
                                  jnp.broadcast_to(jnp.sqrt(quad(noise_cov))[:, None], U.shape[:2])), 1)
    test = gauss_expect(s.loss, W @ mK, jnp.sqrt(quad(CK)))
    gap = test - train
    test_err = jax.scipy.stats.norm.cdf(-(W @ mK) / jnp.sqrt(quad(CK)))
    sub_g = mK @ CK @ mK + jnp.trace(CK @ CK) / n  # E[w^T C_K w]

    r = s.reps
    sem = lambda v: jnp.std(v, ddof=1, axis=-1) / jnp.sqrt(r)

    def layer(pad):
        """Terms of one layer. Layers are zero-padded to a common width D (the padded block of U
        is an independent N(0, I) coordinate, equal under train and test laws, so MI, KL, W2 and
        the Lipschitz factor are unchanged) and go through ONE compiled body via lax.map."""
        Bl, Cl, Gl = pad["B"], pad["C"], pad["G"]
        mi = info.gaussian_mutual_information(CK / n, Cl, sig2 * BK @ Bl.T / n)
        M = sig2 * Bl @ BK.T @ CK_inv  # E[U_l | w] = m_l + M (w - m_K)
        S = (sig2**2 / n) * Bl @ BK.T @ CK_inv @ BK @ Bl.T  # Cov reduction by conditioning on w
        shift = (W - mK) @ M.T  # (R, D)
        # per-w KL(P_{U|w} || P_U): its mean over w is the mutual information (a check)
        Cl_inv = jnp.linalg.inv(Cl)
        const = 0.5 * (jnp.trace(Cl_inv @ (Cl - S)) - Cl.shape[0] + jnp.linalg.slogdet(Cl)[1]
                       - jnp.linalg.slogdet(Cl - S)[1])
        kl_w = const + 0.5 * jnp.einsum("ri,ij,rj->r", shift, Cl_inv, shift)
        lo = jnp.linalg.norm(shift, axis=1)
        hi = jnp.sqrt(lo**2 + info.bures_squared(Cl - S, Cl))
        lp = jnp.linalg.norm(W @ Gl, axis=1)
        return {"kl": mi, "kl_mc": jnp.mean(kl_w), "kl_mc_se": sem(kl_w), "w1_hi": jnp.mean(hi),
                "w1_lo": jnp.mean(lo), "lip": jnp.mean(lp), "wb": jnp.mean(lp * hi), "wb_se": sem(lp * hi),
                "wb_lo": jnp.mean(lp * lo)}

    per_layer = jax.lax.map(layer, _padded_layers(mo))
    # output margin V = w^T U_K given w: train N(a, s1^2), test N(b, s2^2)
    M = sig2 * BK @ BK.T @ CK_inv
    S = (sig2**2 / n) * BK @ BK.T @ CK_inv @ BK @ BK.T
    a = jnp.sum(W * (mK + (W - mK) @ M.T), 1)
    b, s1, s2 = W @ mK, jnp.sqrt(quad(CK - S)), jnp.sqrt(quad(CK))
    kl_out = info.kl_gaussians_1d(a, s1, b, s2)
    w1_out = info.w1_gaussians_1d(a, s1, b, s2)
    out_layer = {"kl": jnp.mean(kl_out), "kl_mc": jnp.mean(kl_out), "kl_mc_se": sem(kl_out),
                 "w1_hi": jnp.mean(w1_out), "w1_lo": jnp.mean(w1_out), "lip": jnp.ones(()),
                 "wb": jnp.mean(w1_out), "wb_se": sem(w1_out), "wb_lo": jnp.mean(w1_out)}
    t = {k: jnp.concatenate([v, out_layer[k][None]]) for k, v in per_layer.items()}
    exact = sig2 * jnp.sum(BK**2) / n if s.loss == "linear" else jnp.full((), jnp.nan)
    return {
        "gap": jnp.mean(gap), "gap_se": sem(gap), "gap_exact": exact,
        "train_loss": jnp.mean(train), "test_loss": jnp.mean(test), "test_err": jnp.mean(test_err),
        "kl_term": t["kl"], "kl_term_mc": t["kl_mc"], "kl_term_mc_se": t["kl_mc_se"],
        "kl_bound": jnp.sqrt(2.0 * sub_g * t["kl"]), "w1_term": t["w1_hi"], "w1_term_lower": t["w1_lo"],
        "lip": t["lip"], "w1_bound": t["wb"], "w1_bound_se": t["wb_se"], "w1_bound_lower": t["wb_lo"],
    }


def run_one(s, p, key):
    """One variant: ``reps`` training sets of one architecture/noise/data configuration.

    Returns scalars (gap, gap_se, gap_exact, losses, test_err, funnel, bound minima,
    kl_increase) and per-layer arrays of length depth + 1 (index 0 input ... depth output).
    """
    if s.model == "linear":
        out = linear_run(s, p, key)
    else:
        out = infobound_relu.run(s, p, key)
        out["gap_exact"] = jnp.full((), jnp.nan)
        out["kl_bound"] = jnp.full((s.depth + 1,), jnp.nan)  # no sub-Gaussian constant: no bound
    internal = out["w1_bound"][:-1]
    out["funnel"] = jnp.argmin(internal).astype(jnp.int32)
    out["w1_bound_min"] = jnp.min(internal)
    out["w1_bound_out"] = out["w1_bound"][-1]
    out["kl_bound_min"] = jnp.min(out["kl_bound"])
    # largest increase of the KL term from one layer to the next (<= 0 by data processing)
    out["kl_increase"] = jnp.max(jnp.diff(out["kl_term"]))
    # gap_exact / kl_bound are NaN by design where no closed form / no bound exists
    out["diverged"] = ~(jnp.isfinite(out["gap"]) & jnp.all(jnp.isfinite(out["w1_bound"])))
    return out


def variant_bytes(s) -> int:
    """Rough float64 footprint of one variant: per training set, the train features and the
    Gauss-Hermite evaluations (linear), or activations and the OT cost matrices (ReLU)."""
    if s.model == "linear":
        return 8 * s.reps * (s.n * (s.d + max(s.d, s.width)) * 2 + s.n * len(_GH_Z))
    acts = (3 * s.n + s.n_test) * max(s.d, s.width) * (s.depth + 1) * 8 * 4
    return s.reps * (acts + 2 * s.depth * s.n * s.n * 8 * 3)


def claims(results_dir) -> list:
    """The layerwise claims on the linear-Gaussian model (closed forms, Monte Carlo gap) and the ReLU
    extension. Rank / norm closed forms, SDPI contraction and the Gibbs algorithm have their own
    claim rows in the sweeps info_linear and info_gibbs."""
    from jaxbench import report, store

    res = store.load(results_dir)
    t, a = res.table, res.arrays
    lin = (t["model"] == "linear") & ~np.asarray(t["diverged"], bool)
    inc = float(np.max(t["kl_increase"][lin]))
    out = [report.check("the KL bound shrinks with the layer index (data processing)",
                        f"largest layer-to-layer increase of the KL term {inc:.1e} ({int(lin.sum())} linear variants)",
                        "< 0 everywhere", inc < 0)]
    gap, se = t["gap"][lin], t["gap_se"][lin]
    kl, w1 = a["kl_bound"][lin], a["w1_bound"][lin]
    below = int(np.sum(np.nanmin(kl, 1) < gap - 2 * se) + np.sum(np.nanmin(w1, 1) < gap - 2 * se))
    r_kl, r_w1 = np.nanmin(np.nanmin(kl, 1) / gap), np.nanmin(np.nanmin(w1, 1) / gap)
    out.append(report.check("every layer's KL and W1 bound is above the generalization gap (Monte Carlo)",
                            f"{below} of {2 * int(lin.sum())} layer minima below gap - 2 s.e.; smallest bound / gap "
                            f"{r_kl:.2f} (KL), {r_w1:.2f} (W1)", "none below", below == 0))
    depth, funnel = t["depth"][lin], t["funnel"][lin]
    deep = depth >= 3
    interior = int(np.sum((funnel[deep] > 0) & (funnel[deep] < depth[deep] - 1)))
    out.append(report.check("the W1 bound's minimum over the internal layers (the funnel) can sit inside the network",
                            f"interior in {interior} of {int(deep.sum())} linear variants of depth >= 3 (else at the "
                            f"input or the last hidden layer)", ">= 1 interior funnel", interior > 0))
    relu = (t["model"] == "relu") & ~np.asarray(t["diverged"], bool)
    if relu.any():
        n_relu = int(np.min(t["n"][relu]))
        ex, ex_se = a["w1_excess"][relu], a["w1_excess_se"][relu]
        # per-layer arrays of ReLU-only keys are padded to the deepest ReLU net, shared keys to the deepest of all
        w = ex.shape[1]
        null, raw = a["w1_null"][relu], a["w1_term"][relu][:, :w]
        hidden = np.zeros_like(ex, bool)
        for i, L in enumerate(t["depth"][relu]):
            hidden[i, 1:L] = True  # hidden layers 1..L-1 (0 = input, L = output margin)
        resolved = int(np.sum(hidden & (ex > 3 * ex_se)))
        frac = np.nanmax(np.where(hidden, null / raw, np.nan))
        out.append(report.check("ReLU networks: the per-layer train/test W1 is resolved above its plug-in bias (debiased by the "
                                "test-vs-test baseline)",
                                f"n = {n_relu} per representation: {resolved} of {int(hidden.sum())} hidden-layer excesses "
                                f"> 3 s.e.; baseline is up to {100 * frac:.0f}% of the raw W1",
                                ">= half of the hidden layers resolved", resolved >= hidden.sum() / 2 if hidden.any() else None,
                                partly=resolved > 0))
        if "w1_bound_debiased" in a:
            # plug-in Lip x W1 (and with W1's test-vs-test baseline removed) against the gap, every layer incl. the output
            L_all = np.asarray(t["depth"])[relu]
            layers = np.arange(w)[None, :] <= L_all[:, None]
            g = np.asarray(t["gap"], float)[relu][:, None]
            r_raw = np.where(layers, np.asarray(a["w1_bound"], float)[relu][:, :w] / g, np.nan)
            r_deb = np.where(layers, np.asarray(a["w1_bound_debiased"], float)[relu] / g, np.nan)
            out.append(report.check("ReLU networks: Lip x W1 (plug-in, not certified) is above the Monte Carlo gap at every layer",
                                    f"min over {int(relu.sum())} variants and all layers of Lip x W1 / gap: {np.nanmin(r_raw):.2f} "
                                    f"(raw W1), {np.nanmin(r_deb):.2f} (debiased W1 - baseline); layers below the gap: "
                                    f"{int(np.sum(r_raw < 1))} raw, {int(np.sum(r_deb < 1))} debiased of {int(layers.sum())}",
                                    "ratio >= 1 everywhere (debiased)", bool(np.nanmin(r_deb) >= 1),
                                    partly=bool(np.nanmin(r_raw) >= 1)))
    return out


from jaxbench.experiments.infobound.plots import plot  # noqa: E402,F401  (figures read from disk)
