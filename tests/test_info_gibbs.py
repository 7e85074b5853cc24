"""Tests of `info_gibbs`: the enumerated Gibbs posterior against an independent brute force (plain
Python loops over hypotheses and over every training sequence), chunking, bounds, smoke."""

import dataclasses
import functools
import itertools
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbench import store, sweep
from jaxbench.experiments.infobound import gibbs

SWEEP = Path(__file__).resolve().parents[1] / "sweeps" / "info_gibbs.toml"


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def _brute_forward(arch, flat, x):
    """Independent forward pass: weights consumed layer by layer, row-major (out, in)."""
    w = [int(v) for v in arch.split("-")]
    t, k = list(x), 0
    for li, (a, b) in enumerate(zip(w[:-1], w[1:])):
        m = [flat[k + j * a: k + (j + 1) * a] for j in range(b)]
        k += a * b
        t = [sum(mi * ti for mi, ti in zip(row, t)) for row in m]
        if li < len(w) - 2:
            t = [max(v, 0.0) for v in t]
    return t[0]


def _brute_loss(arch, flat, x, y):
    v = y * _brute_forward(arch, flat, x)
    return 0.0 if v > 0 else (1.0 if v < 0 else 0.5)


def _brute_expected_gap(arch, xs, ys, n, gamma):
    """E_S[E_{h ~ Gibbs(S)} (L_mu(h) - L_S(h))] over every ordered training sequence of the pool."""
    P = gibbs.n_weights(arch)
    hyps = list(itertools.product([-1, 0, 1], repeat=P))
    # gibbs.weights_of reads digit j of h as weight j; enumerate in the same index order
    hyps = [tuple(((h // 3**j) % 3) - 1 for j in range(P)) for h in range(3**P)]
    M = len(xs)
    loss = [[_brute_loss(arch, h, xs[i], ys[i]) for i in range(M)] for h in hyps]
    test = [sum(row) / M for row in loss]
    total = 0.0
    for seq in itertools.product(range(M), repeat=n):
        train = [sum(row[i] for i in seq) / n for row in loss]
        wts = [math.exp(-gamma * lt) for lt in train]
        z = sum(wts)
        total += sum(wt * (te - tr) for wt, te, tr in zip(wts, test, train)) / z
    return total / M**n, hyps, loss


def _pool():
    rng = np.random.default_rng(0)
    y = np.array([1.0, -1.0, 1.0])
    x = y[:, None] * np.array([0.6, -0.3]) + rng.normal(size=(3, 2))
    return x, y


def test_posterior_sums_to_one_and_matches_brute_force():
    x, y = _pool()
    arch, gamma = "2-1-1", 5.0
    counts = np.array([2.0, 0.0, 1.0])
    post = np.asarray(gibbs.posterior(arch, jnp.asarray(x), jnp.asarray(y), jnp.asarray(counts), 3.0, gamma))
    assert post.shape == (27,)
    np.testing.assert_allclose(post.sum(), 1.0, rtol=1e-13)
    _, hyps, loss = _brute_expected_gap(arch, list(x), list(y), 1, gamma)
    unnorm = np.array([math.exp(-gamma * (2 * row[0] + row[2]) / 3) for row in loss])
    np.testing.assert_allclose(post, unnorm / unnorm.sum(), rtol=1e-12)


def test_exact_expected_gap_matches_independent_enumeration():
    x, y = _pool()
    arch, n, gamma = "2-1-1", 3, 4.0
    want, _, _ = _brute_expected_gap(arch, list(x), list(y), n, gamma)
    seqs = list(itertools.product(range(3), repeat=n))
    counts = np.array([np.bincount(s, minlength=3) for s in seqs], float)
    st = gibbs.gibbs_stats(arch, jnp.asarray(x), jnp.asarray(y), jnp.asarray(counts), float(n), gamma, chunk=5)
    got = float(np.mean(np.asarray(st["test"]) - np.asarray(st["train"])))
    np.testing.assert_allclose(got, want, rtol=1e-11)
    assert abs(want) > 1e-3  # a gap that is there to match
    # our bound tanh(gamma / (2n)) is above the exact gap
    assert want <= math.tanh(gamma / (2 * n))


def test_chunked_scan_equals_one_pass():
    x, y = _pool()
    counts = jnp.asarray([[1.0, 1.0, 2.0], [0.0, 4.0, 0.0]])
    a = gibbs.gibbs_stats("2-2-1", jnp.asarray(x), jnp.asarray(y), counts, 4.0, 7.0, chunk=10)  # 729 = 72*10 + 9
    b = gibbs.gibbs_stats("2-2-1", jnp.asarray(x), jnp.asarray(y), counts, 4.0, 7.0, chunk=729)
    for k in a:
        np.testing.assert_allclose(np.asarray(a[k]), np.asarray(b[k]), rtol=1e-12)
    post = np.asarray(gibbs.posterior("2-2-1", jnp.asarray(x), jnp.asarray(y), counts[0], 4.0, 7.0))
    lo = np.asarray(gibbs.losses("2-2-1", jnp.arange(729), jnp.asarray(x), jnp.asarray(y)))
    np.testing.assert_allclose(float(a["test"][0]), post @ lo.mean(1), rtol=1e-12)
    np.testing.assert_allclose(float(a["entropy"][0]), -np.sum(post * np.log(post)), rtol=1e-10)


@pytest.mark.parametrize("line,why", [('arch = "3-2-2"', "arch"), ("n = 1000.0", "n_max"), ("gamma = 0.0", "gamma")])
def test_bad_input_is_one_clear_line(tmp_path, line, why):
    f = tmp_path / "bad.toml"
    f.write_text(SWEEP.read_text().replace("[presets.smoke]\n", f"[presets.bad]\n[presets.bad.fixed]\n{line}\n"
                                           "[presets.bad.grid]\narch = [\"3-3-1\"]\n[presets.smoke]\n", 1)
                 if "arch" not in line else
                 SWEEP.read_text().replace("[presets.smoke]\n", f"[presets.bad.grid]\narch = [\"3-2-2\"]\n[presets.smoke]\n", 1))
    with pytest.raises(sweep.SweepError, match=why):
        sweep.load(f, "bad")


@pytest.fixture(scope="module")
def smoke(smoke_run):
    return smoke_run("info_gibbs")


def test_smoke_preset_end_to_end(smoke):
    res = store.load(smoke)
    t = res.table
    assert len(t["variant"]) == res.meta["n_variants"] and not t["diverged"].any()
    assert (smoke / "gibbs.png").stat().st_size > 1000
    assert np.all(t["bound_tv"] >= t["gap"] + 2 * t["gap_se"])
    assert len(set(t["n_params"].tolist())) == 1  # equal parameter counts
