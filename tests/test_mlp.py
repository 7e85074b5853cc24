import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbench import mlp


def test_shapes_and_param_count():
    spec = mlp.MLPSpec(5, (7, 3), 2)
    params = mlp.init(spec, jax.random.PRNGKey(0))
    assert [p["w"].shape for p in params] == [(5, 7), (7, 3), (3, 2)]
    assert spec.num_params == sum(p["w"].size + p["b"].size for p in params)
    assert mlp.apply(spec, params, jnp.ones((4, 5))).shape == (4, 2)
    assert [h.shape for h in mlp.hidden(spec, params, jnp.ones((4, 5)))] == [(4, 7), (4, 3)]


def test_ntk_and_standard_parametrizations_compute_the_same_function():
    # Rescaling NTK-parametrized weights by w_std/sqrt(fan_in) (and biases by b_std) must give the
    # standard-parametrized network that computes the identical function.
    kw = dict(in_dim=3, widths=(6, 4), out_dim=2, activation="tanh", w_std=1.3, b_std=0.4)
    ntk, std = mlp.MLPSpec(parametrization="ntk", **kw), mlp.MLPSpec(parametrization="standard", **kw)
    p = mlp.init(ntk, jax.random.PRNGKey(1))
    q = [{"w": l["w"] * 1.3 / math.sqrt(l["w"].shape[0]), "b": l["b"] * 0.4} for l in p]
    x = jax.random.normal(jax.random.PRNGKey(2), (5, 3))
    np.testing.assert_allclose(mlp.apply(ntk, p, x), mlp.apply(std, q, x), rtol=1e-5, atol=1e-6)
    for a, b in zip(mlp.weight_matrices(ntk, p), mlp.weight_matrices(std, q)):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_apply_matches_a_hand_written_numpy_forward_pass():
    spec = mlp.MLPSpec(4, (8,), 1, parametrization="ntk", w_std=2.0, b_std=0.5)
    p = mlp.init(spec, jax.random.PRNGKey(3))
    x = np.random.default_rng(0).normal(size=(6, 4))
    w0, b0, w1, b1 = (np.asarray(a, np.float64) for a in (p[0]["w"], p[0]["b"], p[1]["w"], p[1]["b"]))
    h = np.maximum(x @ w0 * 2.0 / 2.0 + 0.5 * b0, 0)
    f = 3.0 * (h @ w1 * 2.0 / math.sqrt(8) + 0.5 * b1)
    np.testing.assert_allclose(mlp.apply(spec, p, jnp.asarray(x, jnp.float32), out_scale=3.0), f, rtol=1e-5)


def test_init_variance_matches_convention():
    spec = mlp.MLPSpec(400, (300,), 1, parametrization="standard", w_std=2.0)
    w = mlp.init(spec, jax.random.PRNGKey(0))[0]["w"]
    assert abs(float(jnp.var(w)) * 400 / 4.0 - 1.0) < 0.02


def test_no_bias_and_relative_movement():
    spec = mlp.MLPSpec(3, (5,), 1, bias=False)
    p = mlp.init(spec, jax.random.PRNGKey(0))
    assert all("b" not in l for l in p)
    q = [{"w": 1.5 * l["w"]} for l in p]
    np.testing.assert_allclose(mlp.relative_movement(q, p), 0.5, rtol=1e-6)


@pytest.mark.parametrize("kw", [dict(widths=(0,)), dict(in_dim=-1), dict(activation="gelu"),
                                dict(parametrization="mup"), dict(w_std=0.0)])
def test_bad_specs_raise(kw):
    args = dict(in_dim=3, widths=(4,), out_dim=1) | kw
    with pytest.raises(ValueError):
        mlp.MLPSpec(**args)


def test_wrong_input_dim_raises():
    spec = mlp.MLPSpec(3, (4,), 1)
    with pytest.raises(ValueError, match="in_dim=3"):
        mlp.apply(spec, mlp.init(spec, jax.random.PRNGKey(0)), jnp.ones((2, 5)))


def test_init_draws_are_the_plain_normal_draws():
    """`init` materializes its arrays (compile time); the values are still the per-layer draws:
    bit for bit unscaled (ntk); in the standard parametrization the scaled product is rounded
    differently inside the compiled program (1 ulp of float32, measured), so to that tolerance."""
    key = jax.random.PRNGKey(11)
    for par, tol in (("ntk", 0.0), ("standard", 3e-7)):
        spec = mlp.MLPSpec(3, (5, 4), 2, parametrization=par, w_std=1.5, b_std=0.5)
        params = jax.jit(lambda k: mlp.init(spec, k))(key)
        for k, layer, fan_in, fan_out in zip(jax.random.split(key, 3), params, spec.dims[:-1], spec.dims[1:]):
            kw, kb = jax.random.split(k)
            w, b = jax.random.normal(kw, (fan_in, fan_out)), jax.random.normal(kb, (fan_out,))
            if par == "standard":
                w, b = w * (1.5 / np.sqrt(fan_in)), b * 0.5
            np.testing.assert_allclose(layer["w"], w, rtol=tol, atol=0)
            np.testing.assert_allclose(layer["b"], b, rtol=tol, atol=0)
