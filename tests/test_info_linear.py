"""Tests of `info_linear`: rank / norm closed forms against Monte Carlo and an independent numpy
simulation, the Gaussian-channel SDPI coefficient against its closed form (squared maximal
correlation), the contracted bounds' ordering, the dropout erasure bound, bad input, smoke."""

import dataclasses
import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbench import store, sweep
from jaxbench.experiments.infobound import linear as lin

SWEEP = Path(__file__).resolve().parents[1] / "sweeps" / "info_linear.toml"


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def _static(**kw):
    base = {k: p.default for k, p in lin.PARAMS.items() if p.kind == "static"}
    base.update(kw)
    return dataclasses.make_dataclass("Static", list(base), frozen=True)(**base)


def _traced(**kw):
    base = {k: p.default for k, p in lin.PARAMS.items() if p.kind == "traced"}
    base.update(kw)
    return {k: jnp.asarray(v, jnp.float64) for k, v in base.items()}


@functools.lru_cache(maxsize=None)
def _run(mech, rank, beta, strength=0.0, seed=0):
    s = _static(d=3, depth=3, n=8, reps=3000, mech=mech)
    with jax.enable_x64(True):
        p = _traced(rank=rank, beta=beta, strength=strength)
        return s, p, jax.device_get(jax.jit(functools.partial(lin.run_one, s))(p, jax.random.PRNGKey(seed)))


@pytest.mark.parametrize("rank,beta", [(1.0, 1.3), (3.0, 0.9)])
def test_closed_forms_match_monte_carlo_within_3_se(rank, beta):
    _, _, out = _run("none", rank, beta)
    for cf, mc, se in (("kl0", "kl0_mc", "kl0_mc_se"), ("gap_lin_cf", "gap_lin", "gap_lin_se"),
                       ("wnorm2_cf", "wnorm2_mc", "wnorm2_mc_se"), ("w2sq_cf", "w2sq_mc", "w2sq_mc_se")):
        assert abs(out[cf] - out[mc]) <= 3 * out[se], (cf, out[cf], out[mc], out[se])
    assert out["rank_eff"] == rank
    np.testing.assert_allclose(out["kl0"], 0.5 * rank * np.log(8 / 7), rtol=1e-12)
    np.testing.assert_allclose(out["frob2"], rank * beta ** 4, rtol=1e-10)  # |B_K|_F^2 = r beta^(2K), K = 2
    # the Cauchy-Schwarz closed form is above the Monte Carlo value of the W1 bound it bounds
    assert out["w1_bound_cf"] >= out["w1_bound"][-1] - 3 * out["w1_bound_se"][-1]
    assert np.all(out["w1_bound_lower"] <= out["w1_bound"] + 1e-12)


def test_model_against_independent_numpy_simulation():
    # real labels and inputs, w = B_K mean(Y X): E|w|^2 and the linear-loss gap by plain sampling
    s, p, out = _run("none", 2.0, 1.3)
    W, _, _ = (np.asarray(a) for a in lin.layers(s, p, jax.random.split(jax.random.PRNGKey(0), 4)[0]))
    BK = W[1] @ W[0]
    rng = np.random.default_rng(0)
    mu = np.ones(3) / np.sqrt(3)
    y = rng.choice([-1.0, 1.0], size=(20000, 8))
    x = y[..., None] * mu + rng.normal(size=(20000, 8, 3))
    w = np.mean(y[..., None] * x, 1) @ BK.T
    wn2 = np.sum(w**2, 1)
    assert abs(wn2.mean() - out["wnorm2_cf"]) < 4 * wn2.std() / np.sqrt(len(wn2))
    # gap of the linear loss -y w.B_K x: test = -w.B_K mu, train = -mean_i y_i w.B_K x_i
    gap = -(w @ (BK @ mu)) + np.einsum("rd,rnd->r", w, (y[..., None] * x) @ BK.T) / 8
    assert abs(gap.mean() - out["gap_lin_cf"]) < 4 * gap.std() / np.sqrt(len(gap))


def test_gaussian_mutual_information_matches_monte_carlo_and_sdpi():
    for strength in (0.4, 1.5):
        _, _, out = _run("gauss", 3.0, 1.0, strength)
        assert np.all(np.abs(out["kl_exact"] - out["kl_mc"]) <= 3 * out["kl_mc_se"]), out
        # exact data processing with the SDPI coefficient: I_l <= eta_l I_{l-1}
        assert np.all(out["kl_exact"][1:] <= out["eta"][1:] * out["kl_exact"][:-1] * (1 + 1e-10))
        assert np.all(out["klb_exact"] <= out["klb_contracted"] * (1 + 1e-10))
        assert np.all(out["klb_contracted"] <= out["klb_uncontracted"] * (1 + 1e-12))
        assert np.all(out["klb_exact"] >= out["gap01"] + 2 * out["gap01_se"])


def test_gaussian_channel_sdpi_coefficient_is_the_known_closed_form():
    # scalar channel U -> beta U + s xi with U ~ N(., sigma^2): eta_KL = rho^2 = beta^2 sigma^2 / (beta^2 sigma^2 + s^2)
    s = _static(d=1, depth=2, n=8, reps=16, mech="gauss")
    for beta, noise, sigma in ((0.7, 0.5, 1.0), (2.0, 1.5, 0.6)):
        out = jax.jit(functools.partial(lin.run_one, s))(_traced(rank=1.0, beta=beta, strength=noise, sigma=sigma),
                                                          jax.random.PRNGKey(1))
        want = beta**2 * sigma**2 / (beta**2 * sigma**2 + noise**2)
        np.testing.assert_allclose(float(out["eta"][1]), want, rtol=1e-12)
    # vector channel: the largest squared canonical correlation of (U_{l-1}, U_l), by numpy SVD
    s3, p, out = _run("gauss", 3.0, 1.0, 0.4)
    W, _, _ = (np.asarray(a) for a in lin.layers(s3, p, jax.random.split(jax.random.PRNGKey(0), 4)[0]))
    C = np.eye(3)
    for k, w in enumerate(W):
        Cy = w @ C @ w.T + 0.16 * np.eye(3)
        cross = C @ w.T  # Cov(U_{l-1}, U_l)
        lx, ly = np.linalg.cholesky(C), np.linalg.cholesky(Cy)
        rho = np.linalg.svd(np.linalg.solve(lx, cross) @ np.linalg.inv(ly).T, compute_uv=False)[0]
        np.testing.assert_allclose(out["eta"][k + 1], rho**2, rtol=1e-9)
        C = Cy


@pytest.mark.parametrize("mech", ["dropout", "dropconnect"])
def test_drop_mechanisms_certified_coefficients_and_ordering(mech):
    s, p, out = _run(mech, 3.0, 1.0, 0.5)
    want = 1 - 0.5 ** (3 if mech == "dropout" else 9)
    np.testing.assert_allclose(out["eta"][1:], want, rtol=1e-12)
    assert np.all(out["klb_contracted"] <= out["klb_uncontracted"] * (1 + 1e-12))
    assert np.all(out["klb_contracted"] >= out["gap01"] + 2 * out["gap01_se"])
    # revealing the masks: E_M I(w; U_l | M) <= eta E_M I(w; U_{l-1} | M) (erasure argument), MC tolerance
    km, ks = out["kl_mask"], out["kl_mask_se"]
    assert np.all(km[1:] <= out["eta"][1:] * km[:-1] + 3 * (ks[1:] + ks[:-1]))
    assert km[0] == pytest.approx(out["kl0"], rel=1e-12)


@pytest.mark.parametrize("bad,why", [({"mech": '"dropout"', "strength": "1.0"}, "strength"), ({"rank": "9.0"}, "rank"),
                                     ({"mech": '"gauss"', "strength": "0.0"}, "strength")])
def test_bad_input_is_one_clear_line(tmp_path, bad, why):
    # one complete [zip] row (every zipped key, as the default preset zips them) with the bad value in it
    row = {"arch": '"rank"', "mech": '"none"', "depth": "3", "rank": "2.0", "beta": "1.0", "strength": "0.5", "rho": "1.0"}
    row.update(bad)
    zipped = "".join(f"{k} = [{v}]\n" for k, v in row.items())
    f = tmp_path / "bad.toml"
    text = SWEEP.read_text().replace("[presets.smoke]\n", f"[presets.bad]\n[presets.bad.zip]\n{zipped}[presets.smoke]\n", 1)
    f.write_text(text)
    with pytest.raises(sweep.SweepError, match=why):
        sweep.load(f, "bad")


@pytest.fixture(scope="module")
def smoke(smoke_run):
    return smoke_run("info_linear")


def test_smoke_preset_end_to_end(smoke):
    res = store.load(smoke)
    assert len(res.table["variant"]) == res.meta["n_variants"] and not res.table["diverged"].any()
    for name in ("rank", "sdpi", "funnel_linear"):
        assert (smoke / f"{name}.png").stat().st_size > 1000
    t, a = res.table, res.arrays
    for i in range(len(t["variant"])):
        K = int(t["depth"][i]) - 1
        con = a["klb_contracted"][i, : K + 1]
        assert np.all(con <= a["klb_uncontracted"][i, : K + 1] * (1 + 1e-12))
        assert np.all(con >= t["gap01"][i] + 2 * t["gap01_se"][i])


@pytest.mark.parametrize("mech", ["none", "dropout", "dropconnect"])
def test_batched_draws_are_the_per_layer_draws(mech):
    """The layers' random matrices and masks come from one vmapped draw / one scanned layer: the
    same numbers as a draw per key, checked against a plain per-layer loop."""
    keys = jax.random.split(jax.random.PRNGKey(4), 3)
    for k, o in zip(keys, lin._orthogonal(keys, 4)):
        q, r = np.linalg.qr(np.asarray(jax.random.normal(k, (4, 4))))
        np.testing.assert_allclose(o, q * np.sign(np.diag(r)), rtol=0, atol=1e-13)
    s, p = _static(d=3, mech=mech), _traced(strength=0.4 if mech != "none" else 0.0)
    W = jax.random.normal(jax.random.PRNGKey(5), (2, 3, 3))
    z = jax.random.normal(jax.random.PRNGKey(6), (5, 7, 3))
    key = jax.random.PRNGKey(7)
    t, q = np.asarray(z), 0.4
    for k in range(2):  # the per-layer loop, in numpy from the same keys
        kk = jax.random.fold_in(key, k)
        w = np.asarray(W[k])
        if mech == "dropout":
            t = np.einsum("rmj,ij->rmi", t, w) * np.asarray(jax.random.bernoulli(kk, 1 - q, t.shape)) / (1 - q)
        elif mech == "dropconnect":
            m = np.asarray(jax.random.bernoulli(kk, 1 - q, t.shape[:2] + w.shape))
            t = np.einsum("rmij,rmj->rmi", m * w / (1 - q), t)
        else:
            t = np.einsum("rmj,ij->rmi", t, w)
    np.testing.assert_allclose(lin._mechanism(s, p, W, z, key), t, rtol=1e-12, atol=1e-14)
