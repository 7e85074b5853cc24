"""Tests of the info_bounds experiment: closed forms against an independent numpy simulation,
data processing (KL term non-increasing), every bound above the Monte Carlo gap, exact
label-aware OT against scipy, bad input, and the smoke preset end to end."""

import dataclasses
import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

from jaxbench import info, store, sweep
from jaxbench.experiments.infobound import layers as infobound, relu as infobound_relu

SWEEP = Path(__file__).resolve().parents[1] / "sweeps" / "info_bounds.toml"


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def _static(**kw):
    base = {k: p.default for k, p in infobound.PARAMS.items()}
    base.update(kw)
    return dataclasses.make_dataclass("Static", list(base), frozen=True)(**base)


def _simulate(s, p, key, n_sets, rng, n_test=0):
    """Independent numpy simulation of the linear model: readouts w and, for training point 0,
    its representation at every layer with FRESH evaluation noise; plus per-set gaps by sampling."""
    A = [np.asarray(a) for a in infobound.moments(s, p, key)["A"]]
    d, n, noise, sig = s.d, s.n, p["noise"], p["sigma"]
    mu = np.zeros(d)
    mu[0] = p["mu"]
    y = rng.choice([-1.0, 1.0], size=(n_sets, n))
    x = y[..., None] * mu + sig * rng.normal(size=(n_sets, n, d))

    def forward(t):
        reps = [t]
        for a in A:
            t = t @ a.T + noise * rng.normal(size=t.shape[:-1] + (a.shape[0],))
            reps.append(t)
        return reps

    w = np.mean(y[..., None] * forward(x)[-1], axis=1)  # training-time noise
    u0 = [y[:, 0, None] * r[:, 0] for r in forward(x)]  # point 0, fresh evaluation noise
    if not n_test:
        return w, u0, None
    # logistic losses by plain sampling (one fresh noise draw per point)
    v_train = y * np.einsum("rk,rnk->rn", w, forward(x)[-1])
    yt = rng.choice([-1.0, 1.0], size=(n_sets, n_test))
    xt = yt[..., None] * mu + sig * rng.normal(size=(n_sets, n_test, d))
    v_test = yt * np.einsum("rk,rnk->rn", w, forward(xt)[-1])
    gap = np.logaddexp(0, -v_test).mean(1) - np.logaddexp(0, -v_train).mean(1)
    return w, u0, gap


@functools.lru_cache(maxsize=None)
def _linear_case():
    s = _static(d=3, width=4, depth=3, n=6, reps=4000)  # d != width: the padded layer path
    p = {"noise": 0.7, "mu": 1.0, "sigma": 1.0, "lr": 0.5}
    with jax.enable_x64(True):
        key = jax.random.PRNGKey(3)
        out = jax.jit(functools.partial(infobound.run_one, s))(p, key)
        mo = infobound.moments(s, p, jax.random.split(key)[0])
    return s, p, jax.device_get(out), jax.device_get(mo)


def test_linear_moments_and_conditioning_match_simulation():
    s, p, _, mo = _linear_case()
    rng = np.random.default_rng(0)
    w, u0, _ = _simulate(s, p, jax.random.split(jax.random.PRNGKey(3))[0], 60_000, rng)
    K, n, sig2 = s.depth - 1, s.n, p["sigma"] ** 2
    np.testing.assert_allclose(w.mean(0), mo["m"][K], atol=0.02)
    np.testing.assert_allclose(np.cov(w.T), mo["C"][K] / n, atol=0.01)
    for l in range(s.depth):
        u = u0[l]
        np.testing.assert_allclose(u.mean(0), mo["m"][l], atol=0.05)
        np.testing.assert_allclose(np.cov(u.T), mo["C"][l], rtol=0.05, atol=0.05)
        cross = (w - w.mean(0)).T @ (u - u.mean(0)) / len(w)  # Cov(w, U_l) = sigma^2 B_K B_l^T / n
        np.testing.assert_allclose(cross, sig2 * mo["B"][K] @ mo["B"][l].T / n, atol=0.01)
        # the Gaussian MI from those moments equals the closed-form KL term
        mi = info.gaussian_mutual_information(jnp.asarray(np.cov(w.T)), jnp.asarray(np.cov(u.T)), jnp.asarray(cross))
        assert abs(float(mi) - _linear_case()[2]["kl_term"][l]) < 0.1 * _linear_case()[2]["kl_term"][l] + 2e-3
        # the zero-padded per-layer computation equals the unpadded closed form exactly
        exact = info.gaussian_mutual_information(jnp.asarray(mo["C"][K] / n), jnp.asarray(mo["C"][l]),
                                                 jnp.asarray(sig2 * mo["B"][K] @ mo["B"][l].T / n))
        np.testing.assert_allclose(_linear_case()[2]["kl_term"][l], exact, rtol=1e-10)


def test_mutual_information_equals_mean_conditional_kl():
    # I(w; U) = E_w KL(P_{U|w} || P_U): closed form vs the Monte Carlo mean over training sets
    _, _, out, _ = _linear_case()
    diff = np.abs(out["kl_term"][:-1] - out["kl_term_mc"][:-1])
    assert np.all(diff < 4 * out["kl_term_mc_se"][:-1] + 1e-12), (out["kl_term"], out["kl_term_mc"])
    # W1 sandwich |mean shift| <= W1 <= Gelbrich W2, and the two ends nearly agree here
    assert np.all(out["w1_term_lower"] <= out["w1_term"] + 1e-15)
    assert np.all(out["w1_bound_lower"] <= out["w1_bound"] + 1e-15)


def test_gap_matches_sampling_and_closed_form():
    s, p, out, _ = _linear_case()
    _, _, gap = _simulate(s, p, jax.random.split(jax.random.PRNGKey(3))[0], 4000, np.random.default_rng(1), 1000)
    se = np.hypot(gap.std() / np.sqrt(len(gap)), out["gap_se"])
    assert abs(gap.mean() - out["gap"]) < 4 * se, (gap.mean(), out["gap"], se)
    # linear (correlation) loss: E[gap] = sigma^2 |B_K|_F^2 / n exactly
    s_lin = _static(d=3, width=4, depth=3, n=6, reps=4000, loss="linear")
    lin = jax.jit(functools.partial(infobound.run_one, s_lin))(p, jax.random.PRNGKey(4))
    assert abs(float(lin["gap"] - lin["gap_exact"])) < 4 * float(lin["gap_se"])


def test_w1_output_layer_closed_form_matches_gaussian_quantile_coupling():
    # the output W1 is the closed-form 1-d W1 of two Gaussians; check it against sorted samples
    rng = np.random.default_rng(2)
    a, s1, b, s2 = 0.3, 1.1, -0.2, 0.8
    x, y = rng.normal(a, s1, 400_000), rng.normal(b, s2, 400_000)
    assert abs(float(info.w1_samples_1d(jnp.asarray(x), jnp.asarray(y))) - float(info.w1_gaussians_1d(a, s1, b, s2))) < 0.01


def test_labelled_w1_is_exact_and_never_mixes_classes():
    rng = np.random.default_rng(5)
    n = 12
    y = np.where(np.arange(n) % 3 == 0, 1.0, -1.0)
    a, b = rng.normal(size=(n, 3)), rng.normal(size=(n, 3)) + 0.5
    cost, dist = infobound_relu.labelled_cost(jnp.asarray(a), jnp.asarray(b), jnp.asarray(y))
    got = float(infobound_relu.exact_w1_batch(cost[None], dist[None])[0])
    # second implementation: scipy on each class separately
    want = 0.0
    for c in (1.0, -1.0):
        sel = y == c
        dc = np.linalg.norm(a[sel][:, None] - b[sel][None], axis=-1)
        r, k = scipy.optimize.linear_sum_assignment(dc)
        want += dc[r, k].sum()
    np.testing.assert_allclose(got, want / n, rtol=1e-12)


@pytest.mark.parametrize("line,why", [("noise = 0.0", "noise"), ("reps = 1", "reps"), ('loss = "hinge"', "loss")])
def test_bad_input_is_one_clear_line(tmp_path, line, why):
    f = tmp_path / "bad.toml"
    f.write_text(SWEEP.read_text().replace("[presets.smoke]", f"[presets.bad]\n[presets.bad.fixed]\n{line}\n[presets.smoke]"))
    with pytest.raises(sweep.SweepError, match=why):
        sweep.load(f, "bad")


@pytest.fixture(scope="module")
def smoke(smoke_run):
    return smoke_run("info_bounds")


def test_smoke_preset_end_to_end(smoke):
    res = store.load(smoke)
    assert len(res.table["variant"]) == res.meta["n_variants"] and not res.table["diverged"].any()
    for name in ("bounds_vs_layer", "terms_vs_layer", "bounds_vs_gap", "funnel", "relu_w1"):
        assert (smoke / f"{name}.png").stat().st_size > 1000 and (smoke / f"{name}.pdf").exists()


def test_kl_term_non_increasing_in_layer_for_every_smoke_config(smoke):
    res = store.load(smoke)
    t, a = res.table, res.arrays
    lin = np.flatnonzero(t["model"] == "linear")
    assert lin.size and any(t["depth"][lin] >= 3)
    for i in lin:
        L = t["depth"][i]
        kl = a["kl_term"][i, : L + 1]
        assert np.all(np.diff(kl[:L]) <= 1e-12), kl  # closed forms: exact data processing
        assert kl[L] <= kl[L - 1] + 4 * a["kl_term_mc_se"][i, L], kl  # output: Monte Carlo


def test_every_bound_is_at_least_the_monte_carlo_gap(smoke):
    res = store.load(smoke)
    t, a = res.table, res.arrays
    for i in np.flatnonzero(t["model"] == "linear"):
        L = t["depth"][i]
        floor = t["gap"][i] - 2 * t["gap_se"][i]
        assert floor > 0  # a gap that is there to bound
        assert np.all(a["kl_bound"][i, : L + 1] >= floor)
        assert np.all(a["w1_bound"][i, : L + 1] + 2 * a["w1_bound_se"][i, : L + 1] >= floor)
