"""The Gibbs algorithm on a finite parameter space: small ternary ReLU networks, enumerated exactly.

Source: H. He, Z. Goldfeld, arXiv 2404.03176 (abstract: "with a finite parameter space and the
Gibbs algorithm, deeper yet narrower networks generalize better, O(1/n)"). The setting and the
bound below are OURS (docs/experiments/info_bounds.md, section "Gibbs").

Hypotheses: every bias-free ReLU network of architecture ``arch`` ("3-2-2-1": input 3, hidden
2 and 2, output 1) with weights in {-1, 0, 1}: ``3^P`` networks (P weights; hypothesis h is the
base-3 expansion of its index). Population: uniform over a fixed pool of M labelled points drawn
once per seed from ``X | Y ~ N(Y mu, sigma^2 I)`` (a finite population, so the test loss of every
hypothesis is exact). Training sets: n i.i.d. draws from the pool (a count vector). Loss: 0-1 with
ties ``f = 0`` counted 1/2 (bounded in [0, 1]). Gibbs posterior with a uniform prior:
``p(h | S) ∝ exp(-gamma L_S(h))``, summed exactly over all 3^P hypotheses (chunks of a
``lax.scan``, online log-sum-exp).

Per training set: posterior-mean train and test loss (exact), the posterior's entropy. The expected
gap is their difference averaged over ``reps`` training sets (Monte Carlo over S only).

Bounds (ours): changing one of the n samples multiplies the unnormalised posterior by a factor in
``[e^{-gamma/n}, e^{gamma/n}]``, so the two posteriors' log-density ratio spans at most
``2 gamma / n`` and their total variation is at most ``tanh(gamma / (2n))``; with a loss in [0, 1]
and the usual swap of one sample, ``gen <= tanh(gamma / (2n)) = O(1/n)`` (architecture-free).
For contrast the mutual-information bound with ``I(H; S) <= H(H) <= log 3^P`` gives
``sqrt(P log 3 / (2n))`` (sub-Gaussian 1/4), O(1/sqrt(n)), equal for equal parameter counts.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxbench.experiments import Param, positive

NAME = "info_gibbs"
X64 = True


def _arch_ok(v: str) -> bool:
    try:
        w = [int(x) for x in v.split("-")]
    except ValueError:
        return False
    return len(w) >= 2 and w[-1] == 1 and min(w) >= 1 and n_weights(v) <= 16


def widths(arch: str) -> list[int]:
    return [int(x) for x in arch.split("-")]


def n_weights(arch: str) -> int:
    w = widths(arch)
    return sum(a * b for a, b in zip(w[:-1], w[1:]))


PARAMS = {
    "arch": Param("static", str, "3-2-2-1", _arch_ok, "must look like 3-2-2-1 (output 1, at most 16 weights)"),
    "pool": positive(int, default=64),
    "n_max": positive(int, default=512),
    "reps": Param("static", int, 128, lambda v: v >= 2, "must be >= 2 (training sets per variant)"),
    "chunk": positive(int, default=6561),
    "n": positive(float, default=32.0, kind="traced"),
    "gamma": positive(float, default=16.0, kind="traced"),
    "mu": positive(float, default=1.0, kind="traced"),
    "sigma": positive(float, default=1.0, kind="traced"),
}


def check(v):
    if v["n"] > v["n_max"] or v["n"] != int(v["n"]):
        raise ValueError(f"n = {v['n']}: must be an integer <= n_max = {v['n_max']}")


def weights_of(arch: str, h: jax.Array) -> list[jax.Array]:
    """Weight matrices ``(C, out, in)`` per layer of hypotheses ``h (C,)`` (ternary digits of h)."""
    P = n_weights(arch)
    digits = (h[:, None] // (3 ** jnp.arange(P, dtype=h.dtype))) % 3 - 1
    w, out, k = widths(arch), [], 0
    for a, b in zip(w[:-1], w[1:]):
        out.append(digits[:, k:k + a * b].reshape(-1, b, a).astype(jnp.float64))
        k += a * b
    return out


def losses(arch: str, h: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
    """0-1 loss (ties 1/2) of hypotheses ``h (C,)`` on points ``x (M, d)``, ``y (M,)``. Returns ``(C, M)``."""
    ws = weights_of(arch, h)
    t = jnp.broadcast_to(x, (h.shape[0],) + x.shape)
    for w in ws[:-1]:
        t = jax.nn.relu(jnp.einsum("cij,cmj->cmi", w, t))
    f = jnp.einsum("cij,cmj->cmi", ws[-1], t)[..., 0]
    v = y * f
    return jnp.where(v > 0, 0.0, jnp.where(v < 0, 1.0, 0.5))


def gibbs_stats(arch: str, x, y, counts, n, gamma, chunk: int):
    """Exact Gibbs-posterior statistics for training sets given as counts over the pool.

    Args: ``x (M, d)``, ``y (M,)`` the pool (the population is uniform on it); ``counts (R, M)``
    multiplicities of the R training sets (each sums to n). Returns per-set ``(R,)`` arrays:
    ``train`` = E_p L_S, ``test`` = E_p L_mu, ``log_z`` = log sum_h exp(-gamma L_S(h)), ``entropy``.
    """
    H = 3 ** n_weights(arch)
    chunk = min(chunk, H)
    n_chunks = -(-H // chunk)
    R = counts.shape[0]
    cnt = counts.astype(jnp.float32)

    def body(carry, c):
        mx, z, a, b = carry
        h = c * chunk + jnp.arange(chunk)
        valid = h < H
        lo = losses(arch, jnp.minimum(h, H - 1), x, y)  # (C, M), multiples of 1/2
        # integer-valued product (exact in float32): 2 x total loss of each set
        tr = (jnp.einsum("cm,rm->rc", (2 * lo).astype(jnp.float32), cnt).astype(jnp.float64) / (2 * n))
        te = jnp.mean(lo, 1)
        e = jnp.where(valid, -gamma * tr, -jnp.inf)  # (R, C)
        new = jnp.maximum(mx, jnp.max(e, 1))
        scale = jnp.exp(mx - new)
        p = jnp.exp(e - new[:, None])
        return (new, z * scale + p.sum(1), a * scale + (p * tr).sum(1), b * scale + (p * te).sum(1)), None

    init = (jnp.full((R,), -jnp.inf), jnp.zeros(R), jnp.zeros(R), jnp.zeros(R))
    (mx, z, a, b), _ = jax.lax.scan(body, init, jnp.arange(n_chunks))
    train, test, log_z = a / z, b / z, mx + jnp.log(z)
    return {"train": train, "test": test, "log_z": log_z, "entropy": log_z + gamma * train}


def posterior(arch: str, x, y, counts, n, gamma) -> jax.Array:
    """The full posterior ``(3^P,)`` of one training set ``counts (M,)`` (small spaces; tests)."""
    lo = losses(arch, jnp.arange(3 ** n_weights(arch)), x, y)
    return jax.nn.softmax(-gamma * (lo @ counts) / n)


def pool_of(s, p, key):
    """The population: ``pool`` points ``x (M, d)``, labels ``y (M,)`` of the binary Gaussian model."""
    d = widths(s.arch)[0]
    ky, kx = jax.random.split(key)
    y = jnp.where(jax.random.bernoulli(ky, 0.5, (s.pool,)), 1.0, -1.0)
    mu = p["mu"] * jnp.ones(d) / math.sqrt(d)
    return y[:, None] * mu + p["sigma"] * jax.random.normal(kx, (s.pool, d)), y


def run_one(s, p, key):
    k_pool, k_sets = jax.random.split(key)
    x, y = pool_of(s, p, k_pool)
    idx = jax.random.randint(k_sets, (s.reps, s.n_max), 0, s.pool)
    take = (jnp.arange(s.n_max) < p["n"]).astype(jnp.float64)
    counts = jnp.einsum("rtm,t->rm", jax.nn.one_hot(idx, s.pool), take)
    st = gibbs_stats(s.arch, x, y, counts, p["n"], p["gamma"], s.chunk)
    gap = st["test"] - st["train"]
    R = s.reps
    sem = lambda v: jnp.std(v, ddof=1) / math.sqrt(R)
    P = n_weights(s.arch)
    return {
        "gap": jnp.mean(gap), "gap_se": sem(gap), "train": jnp.mean(st["train"]), "test": jnp.mean(st["test"]),
        "entropy": jnp.mean(st["entropy"]), "log_h": jnp.asarray(P * math.log(3.0)),
        "bound_tv": jnp.tanh(p["gamma"] / (2 * p["n"])),
        "bound_mi": jnp.sqrt(P * math.log(3.0) / (2 * p["n"])),
        "n_params": jnp.asarray(P), "depth": jnp.asarray(len(widths(s.arch)) - 1),
    }


def variant_bytes(s) -> int:
    return 8 * (s.reps * s.n_max * s.pool + 4 * s.chunk * s.pool * (1 + max(widths(s.arch))) + 2 * s.reps * s.chunk)



from jaxbench.experiments.infobound.plots_gibbs import claims, plot  # noqa: E402,F401
