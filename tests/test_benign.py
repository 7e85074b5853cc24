"""Experiment 1 (benign overfitting under lazy training): the centred lazy model, exact label
noise, laziness ~ 1/alpha, the limits against independent implementations, the figures and the
claim checks of every Experiment-1 sweep (on their smoke presets)."""

import dataclasses
import functools
import math
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import unordered_lapack_calls
from jaxbench import data, mlp, ntk, report, store, sweep
from jaxbench.experiments.benign import classification as cls
from jaxbench.experiments.benign import claims, common, stats
from jaxbench.experiments.benign import regression as reg


def _static(module, **kw):
    names = [k for k, p in module.PARAMS.items() if p.kind == "static"]
    vals = {k: module.PARAMS[k].default for k in names if not module.PARAMS[k].required}
    vals.update(kw)
    return dataclasses.make_dataclass("Static", names, frozen=True)(**vals)


def _traced(module, rows):
    """Traced arrays for ``rows`` (dicts of overrides), defaults elsewhere; seed from each row."""
    keys = [k for k, p in module.PARAMS.items() if p.kind == "traced"]
    out = {k: jnp.array([r.get(k, module.PARAMS[k].default) for r in rows]) for k in keys}
    out["seed"] = jnp.array([r["seed"] for r in rows])
    return out


def _run(module, static, traced):
    """Outputs of ``vmap(run_one)`` and the optimized HLO text of the compiled program."""
    fn = jax.jit(jax.vmap(lambda p: module.run_one(static, p, jax.random.PRNGKey(p["seed"]))))
    compiled = fn.lower(traced).compile()
    out = {k: np.asarray(v) for k, v in compiled(traced).items()}
    return out, compiled.as_text()


ALPHAS = (1.0, 4.0, 16.0, 64.0)


@pytest.fixture(scope="module")
def alpha_run():
    """Width 64, depth 3, 32 points in d = 8, eta 0.2, centred: alpha 1, 4, 16, 64 x 2 seeds."""
    s = _static(cls, width=64, n=32, n_test=256, d=8, steps=400, n_log=3, n_lip=16)
    rows = [{"alpha": a, "eta": 0.2, "seed": sd} for a in ALPHAS for sd in (0, 1)]
    return _run(cls, s, _traced(cls, rows))


@pytest.fixture(scope="module")
def alpha_out(alpha_run):
    return alpha_run[0]


# ----------------------------------------------------------------------------- the centred model

def test_centred_network_is_zero_at_init_and_its_ntk_is_alpha_squared_times_uncentred():
    with jax.enable_x64(True):
        spec = mlp.MLPSpec(5, (24, 16), 1)
        p0 = mlp.init(spec, jax.random.PRNGKey(0))
        x = data.sphere(jax.random.PRNGKey(1), 12, 5) * math.sqrt(5)
        f0j = jax.jit(lambda p, a: common.outputs(spec, p, p, x, a, True))
        for alpha in (1.0, 16.0, 1e3):
            f0 = common.outputs(spec, p0, p0, x, alpha, centered=True)
            assert f0.dtype == jnp.float64 and np.all(np.asarray(f0) == 0.0)  # exactly
            assert np.all(np.asarray(f0j(p0, alpha)) == 0.0)
        # NTK of the centred model (plain Jacobian contraction, an independent method) vs alpha^2 x the
        # uncentred network's (structured per-layer Gram formula); init_noise does not enter it
        k_h = ntk.empirical_ntk(functools.partial(mlp.apply, spec), p0, x, method="structured")
        for alpha, s0 in [(16.0, 0.0), (1e3, 2.5)]:
            centred = lambda p, z: common.outputs(spec, p, p0, z, alpha, True, s0)  # noqa: E731
            k_c = ntk.empirical_ntk(centred, p0, x, method="jacobian")
            np.testing.assert_allclose(k_c, alpha**2 * k_h, rtol=1e-12, atol=1e-12 * alpha**2)
        # uncentred: alpha h, and with init_noise the initial function is init_noise h0
        np.testing.assert_array_equal(common.outputs(spec, p0, p0, x, 3.0, False), 3.0 * mlp.apply(spec, p0, x)[:, 0])
        np.testing.assert_allclose(common.outputs(spec, p0, p0, x, 3.0, True, 0.5), 0.5 * mlp.apply(spec, p0, x)[:, 0])


@pytest.mark.parametrize("n,eta", [(128, 0.2), (128, 0.3), (37, 0.1), (1000, 0.45), (10, 0.0), (64, 0.5)])
def test_exactly_round_eta_n_labels_are_flipped(n, eta):
    y = jnp.where(jnp.arange(n) % 3 == 0, -1.0, 1.0)
    k = round(eta * n)
    flips = jax.jit(jax.vmap(lambda key, e: data.flip_labels(key, y, e, exact=True), in_axes=(0, None)))(
        jax.random.split(jax.random.PRNGKey(n), 20), eta)
    counts = np.sum(np.asarray(flips) != np.asarray(y), axis=1)
    assert np.all(counts == k), (counts, k)
    if 0 < k < n:  # different keys flip different sets, and a larger eta flips a superset
        assert len({tuple(np.flatnonzero(r)) for r in np.asarray(flips) != np.asarray(y)}) > 1
        more = data.flip_labels(jax.random.PRNGKey(0), y, min(eta + 0.05, 0.5), exact=True) != y
        assert np.all(more[np.asarray(data.flip_labels(jax.random.PRNGKey(0), y, eta, exact=True) != y)])


def test_separated_sphere_keeps_iid_flips_by_default_and_offers_exact_ones():
    key = jax.random.PRNGKey(5)
    iid = data.separated_sphere(key, 400, 6, 0.25, 0.2)
    exact = data.separated_sphere(key, 400, 6, 0.25, 0.2, exact_flips=True)
    np.testing.assert_array_equal(iid.x, exact.x)
    assert int(jnp.sum(exact.y != exact.y_clean)) == 100
    # the default draw is the i.i.d. one of earlier versions (bernoulli on the flip key)
    k_flip = jax.random.split(key, 4)[3]
    np.testing.assert_array_equal(iid.y, jnp.where(jax.random.bernoulli(k_flip, 0.25, (400,)), -iid.y_clean, iid.y_clean))


def test_run_one_flips_exactly_and_interpolates(alpha_out):
    assert np.all(alpha_out["flip_rate"] * 32 == round(0.2 * 32))
    assert np.all(alpha_out["train_err"] == 0) and not alpha_out["diverged"].any()
    assert np.all(alpha_out["ntk_limit_train_err"] == 0) and np.all(alpha_out["lazy_limit_train_err"] == 0)


def test_weight_movement_is_one_over_alpha_and_the_net_reaches_its_lazy_limit(alpha_out):
    """Fixed width: movement ~ alpha^-1 (fitted slope within 20% of -1); the sign disagreement
    with the alpha -> infinity limit (kernel GD with this net's initial NTK) goes to 0; what is
    left of the gap to the infinite-width NTK limit is the finite-width kernel's own."""
    a = np.repeat(ALPHAS, 2)
    slope = np.polyfit(np.log(a), np.log(alpha_out["weight_move"]), 1)[0]
    assert abs(slope + 1) <= 0.2, slope
    lazy = [alpha_out["lazy_limit_disagree"][a == al].mean() for al in ALPHAS]
    dist = [alpha_out["lazy_limit_dist"][a == al].mean() for al in ALPHAS]
    assert lazy[-1] == 0.0 and lazy[-1] <= lazy[0] and np.all(np.diff(dist) < 0), (lazy, dist)
    assert dist[-1] < 0.25 * dist[0]  # (the distance falls slower than 1/alpha: a net that stops one
    # step before or after its limit keeps a floor; see docs/experiments/benign_overfitting.md)
    top = a == ALPHAS[-1]
    np.testing.assert_allclose(alpha_out["ntk_limit_disagree"][top], alpha_out["kernel_disagree"][top], atol=2 / 256)


def test_classification_lapack_calls_run_one_at_a_time(alpha_run):
    calls, unordered = unordered_lapack_calls(alpha_run[1])
    assert len(calls) == 3 and not unordered  # eigh(Theta_0), eigh(K) twice


def test_reported_errors_and_smoothness_are_consistent(alpha_out):
    np.testing.assert_allclose(alpha_out["excess_risk"], alpha_out["noisy_test_err"] - 0.2, atol=1e-6)
    np.testing.assert_allclose(alpha_out["excess_risk_clean"], 0.6 * alpha_out["clean_test_err"], atol=1e-6)
    np.testing.assert_allclose(alpha_out["gap_clean_err"], alpha_out["clean_test_err"] - alpha_out["ntk_limit_clean_err"],
                               atol=1e-6)
    np.testing.assert_allclose(alpha_out["lip_pair_rel"] * alpha_out["f_rms"], alpha_out["lip_pair"], rtol=1e-5)
    assert np.all(alpha_out["margin_rel"] > 0)  # interpolating: every training margin is positive


def test_smoothness_of_a_linear_function_matches_its_closed_form():
    w = jnp.array([3.0, -4.0, 0.0, 0.0])
    pts = data.sphere(jax.random.PRNGKey(0), 300, 4)
    f_test = pts @ w
    out = common.smoothness(lambda z: z @ w, pts, f_test, jnp.array([0.5, 2.0]))
    np.testing.assert_allclose(out["lip_grad"], 5.0, rtol=1e-6)
    np.testing.assert_allclose(out["grad_rms"], 5.0, rtol=1e-6)
    assert 4.5 < float(out["lip_pair"]) <= 5.0 * (1 + 1e-5)  # difference quotients of a linear map: <= |w|
    f_rms = math.sqrt(float(jnp.mean(f_test**2)))
    np.testing.assert_allclose(out["lip_grad_rel"], 5.0 / f_rms, rtol=1e-5)
    np.testing.assert_allclose(out["margin_rel"], 0.5 / f_rms, rtol=1e-5)


@pytest.mark.parametrize("eta", [0.1, 0.3])
def test_noisy_error_of_a_clean_perfect_classifier_is_eta(eta):
    n = 200_000
    s = data.separated_sphere(jax.random.PRNGKey(1), n, 8, eta, 0.2)
    e = common.errors(s.x[:, 0], s.y_clean, s.y, eta)  # sign(x_1) is the clean rule
    sd = math.sqrt(eta * (1 - eta) / n)
    assert float(e["clean_test_err"]) == 0.0
    assert abs(float(e["noisy_test_err"]) - eta) < 4 * sd
    e = common.errors(s.x[:, 0] + s.x[:, 1], s.y_clean, s.y, eta)
    assert float(e["clean_test_err"]) > 0.05
    assert abs(float(e["noisy_test_err"]) - eta - float(e["excess_risk_clean"])) < 4 * sd


# ----------------------------------------------------------------------------- limits vs second implementations

def _numpy_kernel_gd(loss, K, Kt, f0, f0t, y, lr, steps):
    """Second implementation: explicit loop, float64 numpy."""
    f, ft, n = f0.copy(), f0t.copy(), len(y)
    for t in range(steps):
        if np.all(y * f > 0):
            return f, ft, t
        g = (-y / (1 + np.exp(y * f)) if loss == "logistic" else f - y) / n
        f, ft = f - lr * K @ g, ft - lr * Kt @ g
    return f, ft, -1


def _kernels(seed, n=24, m=40, d=5, depth=3):
    kx, kt, k0 = jax.random.split(jax.random.PRNGKey(seed), 3)
    x, xt = data.sphere(kx, n, d), data.sphere(kt, m, d)
    y = jnp.sign(x[:, 0] + 0.5 * x[:, 1])
    K, Kt = ntk.relu_ntk(x, None, depth), ntk.relu_ntk(xt, x, depth)
    f0, f0t = 0.3 * jax.random.normal(k0, (n,)), 0.3 * jax.random.normal(jax.random.fold_in(k0, 1), (m,))
    return x, xt, y, K, Kt, f0, f0t


@pytest.mark.parametrize("loss", ["logistic", "square"])
def test_kernel_gd_matches_a_plain_loop(loss):
    with jax.enable_x64(True):
        x, xt, y, K, Kt, f0, f0t = _kernels(0)
        f, ft, fit = common.kernel_gd(loss, K, Kt, f0, f0t, y, 5.0, 400)
        g, gt, gfit = _numpy_kernel_gd(loss, *(np.asarray(a) for a in (K, Kt, f0, f0t, y)), 5.0, 400)
        assert int(fit) == gfit and gfit > 0
        np.testing.assert_allclose(f, g, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(ft, gt, rtol=1e-10, atol=1e-12)


def test_lazy_limit_map_matches_kernel_gd_without_stopping():
    """Closed form ``f0 + A (y - f0)`` (regression) = T steps of kernel GD on the square loss."""
    with jax.enable_x64(True):
        x, xt, y, K, Kt, f0, f0t = _kernels(1)
        y = y + 0.2 * x[:, 2]
        for steps in (1, 37, 2000):
            _, ft, _ = common.kernel_gd("square", K, Kt, f0, f0t, y, 3.0, steps, stop=False)
            a = reg.lazy_limit_map(K, Kt, 3.0, steps)
            np.testing.assert_allclose(f0t + a @ (y - f0), ft, rtol=1e-9, atol=1e-12)
        a = reg.lazy_limit_map(K, Kt, 3.0, 10**7)  # T -> infinity: the minimum-norm interpolator
        np.testing.assert_allclose(a @ y, ntk.kernel_regression(K, y, Kt), rtol=1e-6, atol=1e-8)


def test_init_variance_matches_monte_carlo():
    """mean Var[f0(x) - A f0(X)] for f0 ~ GP(0, NNGP) against 20000 sampled functions."""
    with jax.enable_x64(True):
        x, xt, y, K, Kt, *_ = _kernels(2, n=16, m=12)
        a = np.asarray(reg.lazy_limit_map(K, Kt, 3.0, 50))
        z = np.concatenate([np.asarray(x), np.asarray(xt)])
        S = np.asarray(ntk.relu_nngp(z, None, 3))
        var = reg.init_variance(a, S[:16, :16], S[16:, :16], np.diag(S)[16:])
        f = np.random.default_rng(0).multivariate_normal(np.zeros(28), S, size=20000, method="eigh")
        mc = (f[:, 16:] - f[:, :16] @ a.T).var(axis=0)
        assert np.all(np.abs(np.asarray(var) - mc) < 5 * mc * math.sqrt(2 / 20000) + 1e-12)


def test_regression_target_has_unit_variance():
    f = np.asarray(reg.target(data.sphere(jax.random.PRNGKey(3), 400_000, 8)), np.float64)
    assert abs(f.mean()) < 0.01 and abs(f.var() - 1) < 0.01


@pytest.fixture(scope="module")
def wide_regression():
    """Regression, one hidden layer of width 2048, d = 16, sigma 0.5, uncentred f = alpha h with
    alpha 1 and 2 (the initialization noise), two seeds."""
    s = _static(reg, width=2048, n=64, n_test=256, d=16, steps=600, n_log=3, centered=False)
    rows = [{"sigma": 0.5, "alpha": a, "init_noise": 0.0, "seed": sd} for a in (1.0, 2.0) for sd in (0, 1)]
    return _run(reg, s, _traced(reg, rows))


def test_wide_regression_net_tracks_its_ntk_limit(wide_regression):
    out, hlo = wide_regression
    calls, unordered = unordered_lapack_calls(hlo)
    assert len(calls) == 4 and not unordered  # eigh(Theta_0), eigh(K) x 3
    assert not out["diverged"].any() and np.all(out["train_mse"] < 0.01 * 0.25)
    assert np.all(out["ntk_limit_dist"] < 0.2)
    np.testing.assert_allclose(out["test_mse"], out["ntk_limit_mse"], rtol=0.25)
    np.testing.assert_allclose(out["ntk_limit_mse_expected"], out["ntk_limit_label_mse"] + out["ntk_limit_init_var"],
                               rtol=1e-5)
    # alpha only moves the initialization part (x alpha^2)
    np.testing.assert_allclose(out["init_scale"], [1, 1, 2, 2])
    np.testing.assert_allclose(out["ntk_limit_init_var"][2:], 4 * out["ntk_limit_init_var"][:2], rtol=1e-4)
    np.testing.assert_allclose(out["ntk_limit_label_mse"][2:], out["ntk_limit_label_mse"][:2], rtol=1e-4)


# ----------------------------------------------------------------------------- sweeps: errors, figures, claims

@pytest.mark.parametrize("line,needle", [("eta = 0.7", "eta"), ("d = 1", "d = 1"), ("loss = \"hinge\"", "loss"),
                                         ("gamma = -0.1", "gamma"), ("centered = false\ninit_noise = 1.0", "init_noise"),
                                         ("optimizer = \"sgd\"\nbatch = 200", "batch"), ("inputs = \"cube\"", "inputs")])
def test_bad_parameters_give_one_line_errors(tmp_path, line, needle):
    f = tmp_path / "bad.toml"
    f.write_text(f'experiment = "benign_overfitting"\n[fixed]\nwidth = 8\n{line}\n')
    with pytest.raises(sweep.SweepError, match=needle) as e:
        sweep.load(f)
    assert "\n" not in str(e.value)


FIGURES = {"benign_overfitting": ["approach_to_limit", "gap_phase", "laziness", "sgd_vs_gd", "smoothness"],
           "benign_n_growth": ["bayes_vs_n"], "benign_regression": ["mse_plateau", "mse_vs_width"],
           "benign_mnist": ["mnist_separation"]}


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_smoke_sweep_draws_every_figure_and_checks_every_claim(name, smoke_run):
    if name == "benign_mnist":
        _need_mnist()
    out = smoke_run(name)
    assert sorted(p.stem for p in out.glob("*.png")) == FIGURES[name]
    rows = report.checks_of(out)
    assert rows and all(c.verdict in report.VERDICTS and c.measured for c in rows)
    assert not any(c.claim.startswith("(claim checks failed") for c in rows)


def test_a_claim_whose_criterion_fails_reads_not_reproduced(smoke_run, tmp_path):
    """Doctor the smoke table: weights that moved by half their norm fail the laziness bar."""
    src = smoke_run("benign_overfitting")
    dst = tmp_path / "doctored"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".chunks", "*.png", "*.pdf"))
    res = store.load(dst)
    ok = ~res.table["diverged"]
    before = claims.plane(dst)[0]
    assert before.claim.startswith("regime: lazy") and stats.bars(res.table, ok) is not None
    t = dict(res.table, weight_move=np.full_like(res.table["weight_move"], 0.5))
    rows = [{k: (v[i].item() if hasattr(v[i], "item") else v[i]) for k, v in t.items()} for i in range(len(t["seed"]))]
    store.write_results(dst, rows, res.arrays, res.meta)
    after = claims.plane(dst)[0]
    assert after.verdict == "not reproduced" and "0.5000" in after.measured


def _need_mnist():
    from jaxbench import datasets
    try:
        datasets.mnist_files("train")
    except datasets.MissingDataset as e:
        pytest.skip(f"MNIST absent: {e}")
