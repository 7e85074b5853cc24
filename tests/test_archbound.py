"""Tests of the architecture-bound experiment (jaxbench.experiments.archbound), float64."""

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbench import bounds, mlp, store, sweep
from jaxbench.experiments import archbound as ab

SWEEP = Path(__file__).resolve().parents[1] / "sweeps" / "arch_bounds.toml"
Static = dataclasses.make_dataclass(
    "Static", [k for k, p in ab.PARAMS.items() if p.kind == "static"], frozen=True)


def _static(**kw):
    values = {k: p.default for k, p in ab.PARAMS.items() if p.kind == "static"}
    return Static(**{**values, **kw})


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


@pytest.mark.parametrize("par", ["ntk", "standard"])
@pytest.mark.parametrize("hidden", [0, 1, 4])
def test_stacked_network_equals_mlp(par, hidden):
    """The scanned network and its helpers against jaxbench.mlp's list-of-layers versions."""
    spec = mlp.MLPSpec(6, (7,) * hidden, 3, parametrization=par, b_std=0.2)
    st = ab.init(spec, jax.random.PRNGKey(hidden))
    params = ab.unstack(st)
    ref = mlp.init(spec, jax.random.PRNGKey(0))
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, ref)
    x = jax.random.normal(jax.random.PRNGKey(1), (11, 6))
    np.testing.assert_allclose(ab._apply_scan(spec, st, x), mlp.apply(spec, params, x), rtol=1e-12)
    np.testing.assert_allclose(ab.lipschitz_upper_stacked(spec, st), bounds.lipschitz_upper(spec, params),
                               rtol=1e-12)
    moved = jax.tree.map(lambda a: a * 1.1 + 0.01, st)
    np.testing.assert_allclose(ab.relative_movement_stacked(moved, st),
                               mlp.relative_movement(ab.unstack(moved), params), rtol=1e-12)


def test_stacked_init_has_mlp_init_scales():
    spec = mlp.MLPSpec(400, (300, 300, 300), 2, parametrization="standard", b_std=0.5)
    first, mid, last = ab.init(spec, jax.random.PRNGKey(0))
    np.testing.assert_allclose(jnp.var(first["w"]), 2.0 / 400, rtol=0.02)
    np.testing.assert_allclose(jnp.var(mid["w"]), 2.0 / 300, rtol=0.02)
    np.testing.assert_allclose(jnp.var(mid["b"]), 0.25, rtol=0.1)
    assert abs(float(jnp.mean(mid["w"]))) < 1e-3 and last["w"].shape == (300, 2)


def test_draw_shapes_and_the_linear_teacher_closed_form():
    s = _static(data="linear", d=12, k=2, n_test=20)
    x, y, xt, yt = ab.draw(s, jax.random.PRNGKey(0), 0.0)
    assert x.shape == (12, 12) and y.shape == (12, 2) and xt.shape == (20, 12) and yt.shape == (20, 2)
    # noise-free linear teacher, n = d: the interpolant recovers it exactly on fresh points
    m = bounds.interpolant(x, y)
    np.testing.assert_allclose(xt @ m, yt, rtol=1e-8, atol=1e-10)
    s = _static(data="relu", d=12, k=2, n_test=20, teacher_width=5)
    x, y, xt, yt = ab.draw(s, jax.random.PRNGKey(0), 0.0)
    assert yt.shape == (20, 2) and float(jnp.min(jnp.abs(y))) >= 0
    # same seed, same data across architectures (only data fields enter draw)
    x2, *_ = ab.draw(_static(data="relu", d=12, k=2, n_test=20, teacher_width=5, hidden_layers=9),
                     jax.random.PRNGKey(0), 0.0)
    np.testing.assert_array_equal(x, x2)


def test_bad_parameters_get_clear_errors():
    with pytest.raises(ValueError, match=r"must lie in \(0, 1\]"):
        ab.PARAMS["n_frac"].validate("n_frac", 1.5)
    with pytest.raises(ValueError, match="width = 4 < output dimension 10"):
        ab.check({"data": "relu", "k": 10, "hidden_layers": 2, "width": 4, "d": 64})
    with pytest.raises(ValueError, match="must be one of"):
        ab.PARAMS["data"].validate("data", "digits")  # dropped: MNIST is arch_bounds_mnist
    ab.check({"data": "linear", "k": 3, "hidden_layers": 0, "width": 1, "d": 8})  # no hidden layer


@pytest.fixture(scope="module")
def smoke(smoke_run):
    out = smoke_run("arch_bounds")  # the experiment sets X64: float64 throughout
    return out, store.load(out)


def test_smoke_preset_end_to_end(smoke):
    out, res = smoke
    for name in ("error_and_bound_vs_n", "tightness_vs_n", "ingredients"):
        for ext in ("png", "pdf"):
            assert (out / f"{name}.{ext}").stat().st_size > 1000
    t = res.table
    assert len(t["variant"]) == res.meta["n_variants"] == 6
    assert np.all(t["rank_ok"]) and not np.any(t["diverged"])
    assert np.all(t["c_train_loss"] < 1e-20)  # a global minimizer, in float64
    assert np.all(t["c_violations"] == 0) and np.all(t["g_violations"] == 0)  # upper bounds
    assert np.all(t["c_ratio_min"] >= 1.0) and np.all(t["g_ratio_min"] >= 1.0)
    # the construction is linear on the data ball: Lip lower = upper = |X^+ Y|_op
    np.testing.assert_allclose(t["c_lip_upper"], t["m_op"], rtol=1e-10)
    np.testing.assert_allclose(t["c_lip_lower"], t["m_op"], rtol=1e-10)
    assert np.all(t["m_op"] <= t["y_op"] / t["sigma_min"] * (1 + 1e-12))
    assert np.all(t["g_lip_lower"] <= t["g_lip_upper"])
    # identical construction across architectures (same data per seed), different GD nets
    lin = t["data"] == "linear"
    for frac in np.unique(t["n_frac"]):
        rows = np.flatnonzero(lin & (t["n_frac"] == frac))
        assert len(rows) == 2 and t["hidden_layers"][rows[0]] != t["hidden_layers"][rows[1]]
        for col in ("c_test_err", "c_bound", "c_test_mse"):
            np.testing.assert_allclose(t[col][rows[0]], t[col][rows[1]], rtol=1e-12)
        assert t["g_test_err"][rows[0]] != t["g_test_err"][rows[1]]
    # gradient descent decreases the training loss
    curve = res.arrays["g_curve_train_loss"]
    assert curve.shape == (6, 4) and np.all(curve[:, -1] < curve[:, 0])
