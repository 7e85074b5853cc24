"""Benign-overfitting experiments: interpolation, the noisy-label metric, laziness versus width,
the lazy-limit formulas against independent implementations, and every figure."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import unordered_lapack_calls
from jaxbench import bounds, data, mlp, ntk, store, sweep
from jaxbench import train as trainlib
from jaxbench.experiments import benign
from jaxbench.experiments import benign_regression as reg

_CLS = ["width", "depth", "n", "n_test", "d", "steps", "n_log", "n_lip", "loss", "parametrization"]
Static = dataclasses.make_dataclass("Static", _CLS, frozen=True)
RegStatic = dataclasses.make_dataclass(
    "RegStatic", ["width", "depth", "n", "n_test", "d", "steps", "n_log", "n_lip", "parametrization"], frozen=True)


def _run(module, static, traced):
    """Outputs of ``vmap(run_one)`` and the optimized HLO text of the compiled program."""
    fn = jax.jit(jax.vmap(lambda p: module.run_one(static, p, jax.random.PRNGKey(p["seed"]))))
    compiled = fn.lower(traced).compile()
    out = {k: np.asarray(v) for k, v in compiled(traced).items()}
    return out, compiled.as_text()


@pytest.fixture(scope="module")
def tiny_run():
    """A width-256 one-hidden-layer net on 32 separated points in d = 8: eta = 0 and eta = 0.3."""
    s = Static(256, 2, 32, 512, 8, 300, 4, 16, "logistic", "ntk")
    p = {"eta": jnp.array([0.0, 0.0, 0.3, 0.3]), "gamma": jnp.full(4, 0.3), "lr": jnp.full(4, 8.0),
         "alpha": jnp.ones(4), "seed": jnp.arange(4)}
    return _run(benign, s, p)


@pytest.fixture(scope="module")
def tiny(tiny_run):
    return tiny_run[0]


@pytest.fixture(scope="module")
def wide_regression():
    """Regression, one hidden layer of width 2048, sigma 0.5, alpha 1 and 2, two seeds."""
    s = RegStatic(2048, 2, 64, 256, 6, 1500, 4, 16, "ntk")
    p = {"sigma": jnp.full(4, 0.5), "alpha": jnp.array([1.0, 1.0, 2.0, 2.0]), "lr": jnp.full(4, 6.0),
         "seed": jnp.array([0, 1, 0, 1])}
    return _run(reg, s, p)


def test_separable_clean_labels_reach_zero_training_error(tiny):
    assert np.all(tiny["train_err"][:2] == 0)
    assert np.all(tiny["steps_to_fit"][:2] >= 0)
    assert not tiny["diverged"].any()


def test_wide_net_interpolates_noisy_labels(tiny):
    # with eta = 0.3 about 10 of the 32 training labels are flipped; the net still fits all of them
    assert np.all(tiny["train_err"][2:] == 0) and np.all(tiny["steps_to_fit"][2:] > 0)
    # so does the infinite-width lazy dynamics on the same data
    assert np.all(tiny["ntk_limit_train_err"] == 0)


def test_reported_errors_are_consistent(tiny):
    eta = np.array([0.0, 0.0, 0.3, 0.3])
    np.testing.assert_allclose(tiny["excess_risk"], tiny["noisy_test_err"] - eta, atol=1e-6)
    np.testing.assert_allclose(tiny["excess_risk_clean"], (1 - 2 * eta) * tiny["clean_test_err"], atol=1e-6)
    assert np.all(tiny["lip_lower"] <= tiny["lip_upper"] * (1 + 1e-5))
    assert np.all(tiny["ntk_min_eig"] > 0) and np.all(tiny["ntk_inf_min_eig"] > 0)


def test_lapack_calls_run_one_at_a_time(tiny_run):
    """Two batched LAPACK calls at once deadlock XLA:CPU's 2-thread pool (`bounds.after`): every
    pair of them must be ordered by a data path in the compiled program of both experiments."""
    calls, unordered = unordered_lapack_calls(tiny_run[1])
    assert len(calls) == 4 and not unordered  # eigh(Theta_0), svd(W_1), eigh(K) twice


def test_regression_lapack_calls_run_one_at_a_time(wide_regression):
    calls, unordered = unordered_lapack_calls(wide_regression[1])
    assert len(calls) == 5 and not unordered  # eigh(Theta_0), svd, eigh(K) x 3


def test_wide_regression_net_tracks_its_ntk_limit(wide_regression):
    out = wide_regression[0]
    assert not out["diverged"].any()
    assert np.all(out["train_mse"] < 0.05 * 0.25)  # nearly interpolates noise of variance 0.25
    assert np.all(out["ntk_limit_dist"] < 0.15)  # test predictions within 15% of the lazy limit
    np.testing.assert_allclose(out["test_mse"], out["ntk_limit_mse"], rtol=0.25)
    # the expected limit decomposes exactly; alpha only moves the initialization part (x alpha^2)
    np.testing.assert_allclose(out["ntk_limit_mse_expected"],
                               out["ntk_limit_label_mse"] + out["ntk_limit_init_var"], rtol=1e-5)
    np.testing.assert_allclose(out["ntk_limit_init_var"][2:], 4 * out["ntk_limit_init_var"][:2], rtol=1e-4)
    np.testing.assert_allclose(out["ntk_limit_label_mse"][2:], out["ntk_limit_label_mse"][:2], rtol=1e-4)


def test_chained_lipschitz_upper_equals_bounds():
    spec = mlp.MLPSpec(6, (20, 30), 1)
    params = mlp.init(spec, jax.random.PRNGKey(0))
    ours = benign.lipschitz_upper(spec, params, -2.0)
    np.testing.assert_allclose(ours, bounds.lipschitz_upper(spec, params, -2.0), rtol=1e-5)


@pytest.mark.parametrize("eta", [0.1, 0.3])
def test_noisy_error_of_a_clean_perfect_classifier_is_eta(eta):
    n = 200_000
    s = data.separated_sphere(jax.random.PRNGKey(1), n, 8, eta, 0.2)
    e = benign.errors(s.x[:, 0], s.y_clean, s.y, eta)  # sign(x_1) is the clean rule
    sd = math.sqrt(eta * (1 - eta) / n)
    assert float(e["clean_test_err"]) == 0.0
    assert abs(float(e["noisy_test_err"]) - eta) < 4 * sd
    assert abs(float(e["excess_risk"])) < 4 * sd
    # an imperfect classifier: noisy error = eta + (1 - 2 eta) clean error in expectation
    e = benign.errors(s.x[:, 0] + s.x[:, 1], s.y_clean, s.y, eta)
    assert float(e["clean_test_err"]) > 0.05
    assert abs(float(e["noisy_test_err"]) - eta - float(e["excess_risk_clean"])) < 4 * sd


def test_weight_movement_and_ntk_drift_decrease_with_width():
    """Fixed seeds 0..5, same data per seed, widths 32 / 128 / 512: laziness grows with width."""
    seeds = jnp.arange(6)
    move, drift = {}, {}
    for m in (32, 128, 512):
        spec = mlp.MLPSpec(8, (m,), 1)

        def one(seed, spec=spec):
            k_data, k_init = jax.random.split(jax.random.PRNGKey(seed))
            tr, te = benign.split_sample(data.separated_sphere(k_data, 96, 8, 0.2, 0.3), 32)
            p0 = mlp.init(spec, k_init)
            cfg = trainlib.TrainConfig(300, n_log=4, stop_at_interpolation=True)
            res = trainlib.train(cfg, spec, p0, trainlib.Data(tr.x, tr.y, te.x, te.y), 8.0, k_init)
            return res.final["train_err"], benign.laziness(spec, p0, res.params, tr.x)

        err, lz = jax.jit(jax.vmap(one))(seeds)
        assert np.all(np.asarray(err) == 0)  # compare interpolating networks only
        move[m], drift[m] = np.asarray(lz["weight_move"]), np.asarray(lz["ntk_drift"])
    for a, b in [(32, 128), (128, 512)]:
        assert move[b].mean() < move[a].mean() and drift[b].mean() < drift[a].mean()
    assert np.all(move[512] < move[32]) and np.all(drift[512] < drift[32])  # seed by seed
    slope = np.polyfit(np.log([32, 128, 512]), np.log([move[m].mean() for m in (32, 128, 512)]), 1)[0]
    assert -1.0 < slope < -0.2  # roughly m^(-1/2)


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
        f, ft, fit = benign.kernel_gd(loss, K, Kt, f0, f0t, y, 5.0, 400)
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
            _, ft, _ = benign.kernel_gd("square", K, Kt, f0, f0t, y, 3.0, steps, stop=False)
            a = reg.lazy_limit_map(K, Kt, 3.0, steps)
            np.testing.assert_allclose(f0t + a @ (y - f0), ft, rtol=1e-9, atol=1e-12)
        # T -> infinity: the minimum-norm interpolator
        a = reg.lazy_limit_map(K, Kt, 3.0, 10**7)
        np.testing.assert_allclose(a @ y, ntk.kernel_regression(K, y, Kt), rtol=1e-6, atol=1e-8)


def test_init_variance_matches_monte_carlo():
    """alpha^2 mean Var[f0(x) - A f0(X)] for f0 ~ GP(0, NNGP) against 20000 sampled functions."""
    with jax.enable_x64(True):
        x, xt, y, K, Kt, *_ = _kernels(2, n=16, m=12)
        a = np.asarray(reg.lazy_limit_map(K, Kt, 3.0, 50))
        z = np.concatenate([np.asarray(x), np.asarray(xt)])
        S = np.asarray(ntk.relu_nngp(z, None, 3))
        var = reg.init_variance(a, S[:16, :16], S[16:, :16], np.diag(S)[16:])
        f = np.random.default_rng(0).multivariate_normal(np.zeros(28), S, size=20000, method="eigh")
        resid = f[:, 16:] - f[:, :16] @ a.T  # (samples, m)
        mc = resid.var(axis=0)
        se = mc * math.sqrt(2 / 20000)
        assert np.all(np.abs(np.asarray(var) - mc) < 5 * se + 1e-12)


def test_regression_target_has_unit_variance():
    x = data.sphere(jax.random.PRNGKey(3), 400_000, 8)
    f = np.asarray(reg.target(x), np.float64)
    assert abs(f.mean()) < 0.01 and abs(f.var() - 1) < 0.01


def _fake_results(tmp_path, module, grid, columns, seed=0):
    """A results directory with random metric values over a full grid (plotting reads only files)."""
    rng = np.random.default_rng(seed)
    keys = list(grid)
    rows = []
    for i, combo in enumerate(np.array(np.meshgrid(*grid.values(), indexing="ij")).reshape(len(keys), -1).T):
        row = {"variant": i, **{k: type(grid[k][0])(v) for k, v in zip(keys, combo)}, "diverged": False}
        row.update({c: float(rng.uniform(0.01, 1.0)) for c in columns})
        rows.append(row)
    meta = {"experiment": module.NAME, "scale": "test", "n_variants": len(rows)}
    store.write_results(tmp_path, rows, {}, meta)
    return sorted(p.name for p in module.plot(tmp_path))


def test_every_classification_figure(tmp_path):
    grid = {"width": [16, 64, 256], "depth": [2, 3], "eta": [0.0, 0.2], "gamma": [0.3], "alpha": [1.0],
            "seed": [0, 1]}
    cols = ["train_err", "clean_test_err", "noisy_test_err", "excess_risk", "excess_risk_clean", "weight_move",
            "ntk_drift", "ntk_min_eig", "ntk_inf_min_eig", "lip_lower", "lip_upper", "steps_to_fit",
            "ntk_limit_clean_err", "ntk_limit_disagree", "ntk_interp_clean_err"]
    names = _fake_results(tmp_path, benign, grid, cols)
    figs = ["excess_risk_vs_lipschitz", "laziness_vs_width", "ntk_limit_vs_width", "phase_width_depth",
            "phase_width_eta", "test_error_vs_width"]
    assert names == sorted(f"{f}.{e}" for f in figs for e in ("pdf", "png"))
    assert all((tmp_path / n).stat().st_size > 1000 for n in names)


def test_every_regression_figure(tmp_path):
    grid = {"width": [16, 64], "depth": [2], "lr": [6.0], "sigma": [0.0, 0.5], "alpha": [1.0, 2.0],
            "seed": [0, 1]}
    cols = ["test_mse", "weight_move", "ntk_limit_mse_expected", "ntk_limit_label_mse"]
    names = _fake_results(tmp_path, reg, grid, cols)
    assert names == sorted(f"{f}.{e}" for f in ("mse_plateau", "mse_vs_width") for e in ("pdf", "png"))


@pytest.mark.parametrize("line,needle", [("eta = 0.7", "eta"), ("d = 1", "d = 1"),
                                         ("loss = \"hinge\"", "loss"), ("gamma = -0.1", "gamma")])
def test_bad_parameters_give_one_line_errors(tmp_path, line, needle):
    f = tmp_path / "bad.toml"
    f.write_text(f'experiment = "benign_overfitting"\n[fixed]\nwidth = 8\n{line}\n')
    with pytest.raises(sweep.SweepError, match=needle) as e:
        sweep.load(f)
    assert "\n" not in str(e.value)
