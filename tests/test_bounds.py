"""Tests of jaxbench.bounds in float64: closed forms, a second implementation, the bound's validity."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbench import bounds, mlp

ARCHS = [(), (2,), (5, 4, 2), (64,) * 7, (8,) * 15, (128, 2, 40)]


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def _data(seed, n, d, k, m=0):
    key = jax.random.PRNGKey(seed) if isinstance(seed, int) else seed
    kx, ky, kt = jax.random.split(key, 3)
    return (jax.random.normal(kx, (n, d)), jax.random.normal(ky, (n, k)),
            jax.random.normal(kt, (m, d)))


def test_after_passes_values_through():
    x, y = jnp.arange(3.0), {"a": jnp.ones(2)}
    out = jax.jit(lambda x, y: bounds.after(x, y, 2 * x))(x, y)
    np.testing.assert_array_equal(out, x)
    tree = jax.jit(lambda y, x: bounds.after(y, x))(y, x)
    np.testing.assert_array_equal(tree["a"], y["a"])


def test_op_norm_matches_numpy_svd_and_power_iteration():
    for seed, shape in enumerate([(5, 3), (3, 5), (40, 40), (1, 7)]):
        w = jax.random.normal(jax.random.PRNGKey(seed), shape)
        ref = np.linalg.svd(np.asarray(w), compute_uv=False)[0]
        np.testing.assert_allclose(bounds.op_norm(w), ref, rtol=1e-12)
        np.testing.assert_allclose(jax.jit(bounds.op_norm_power)(w), ref, rtol=1e-8)


def test_layer_norms_fold_in_the_parametrization():
    for par in ("ntk", "standard"):
        spec = mlp.MLPSpec(6, (9, 4), 2, parametrization=par, b_std=0.3)
        p = mlp.init(spec, jax.random.PRNGKey(1))
        ws = [p_["w"] * (spec.w_std / np.sqrt(p_["w"].shape[0]) if par == "ntk" else 1.0) for p_ in p]
        ref = [np.linalg.svd(np.asarray(w), compute_uv=False)[0] for w in ws]
        np.testing.assert_allclose(bounds.layer_op_norms(spec, p), ref, rtol=1e-12)
        np.testing.assert_allclose(bounds.lipschitz_upper(spec, p, out_scale=-2.0), 2 * np.prod(ref),
                                   rtol=1e-12)
        bscale = spec.b_std if par == "ntk" else 1.0
        np.testing.assert_allclose(bounds.bias_norms(spec, p),
                                   [bscale * np.linalg.norm(p_["b"]) for p_ in p], rtol=1e-12)


def test_lipschitz_lower_closed_forms():
    w = jax.random.normal(jax.random.PRNGKey(0), (7,))
    x = jax.random.normal(jax.random.PRNGKey(1), (5, 7))
    np.testing.assert_allclose(bounds.lipschitz_lower(lambda v: v @ w, x),
                               np.linalg.norm(w), rtol=1e-12)
    a = jax.random.normal(jax.random.PRNGKey(2), (7, 3))  # linear vector map: Lip = |A|_op
    np.testing.assert_allclose(bounds.lipschitz_lower(lambda v: v @ a, x),
                               np.linalg.svd(np.asarray(a), compute_uv=False)[0], rtol=1e-12)
    # a deep linear network: the lower estimate is |W1 W2 W3|_op <= prod |W_l|_op = upper
    spec = mlp.MLPSpec(7, (6, 5), 3, activation="linear", parametrization="standard", bias=True)
    p = mlp.init(spec, jax.random.PRNGKey(3))
    prod = np.linalg.multi_dot([np.asarray(q["w"]) for q in p])
    lo = bounds.lipschitz_lower(lambda v: mlp.apply(spec, p, v), x)
    np.testing.assert_allclose(lo, np.linalg.svd(prod, compute_uv=False)[0], rtol=1e-12)
    assert lo <= bounds.lipschitz_upper(spec, p)


def test_lipschitz_lower_never_exceeds_upper_on_random_relu_nets():
    for seed in range(4):
        spec = mlp.MLPSpec(5, (16,) * (2 * seed + 1), 2, parametrization=("ntk", "standard")[seed % 2])
        p = mlp.init(spec, jax.random.PRNGKey(seed))
        x = jax.random.normal(jax.random.PRNGKey(100 + seed), (64, 5))
        lo = jax.jit(lambda p, x: bounds.lipschitz_lower(
            lambda v: mlp.apply(spec, p, v, out_scale=0.5), x))(p, x)
        assert 0 < lo <= bounds.lipschitz_upper(spec, p, out_scale=0.5)


def test_interpolant_three_ways_and_sigma_min():
    x, y, _ = _data(0, 12, 20, 3)
    m = bounds.interpolant(x, y)
    gram = x.T @ np.linalg.solve(x @ x.T, y)
    lstsq = np.linalg.lstsq(np.asarray(x), np.asarray(y), rcond=None)[0]  # min-norm solution
    np.testing.assert_allclose(m, gram, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(m, lstsq, rtol=1e-9, atol=1e-12)
    s = np.linalg.svd(np.asarray(x), compute_uv=False)
    np.testing.assert_allclose(bounds.sigma_min(x), s[-1], rtol=1e-12)
    # a mask keeps a subset of rows: same as slicing them out
    mask = jnp.arange(12) % 3 != 0
    np.testing.assert_allclose(bounds.interpolant(x, y, mask), bounds.interpolant(x[mask], y[mask]),
                               rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(bounds.sigma_min(x, mask),
                               np.linalg.svd(np.asarray(x[mask]), compute_uv=False)[-1], rtol=1e-12)


@functools.partial(jax.jit, static_argnums=0)
@functools.partial(jax.vmap, in_axes=(None, 0, 0, 0, 0))
def _fit(spec, x, y, xt, n):
    """Construction from the first n rows on the ball holding x and xt (vmapped over draws).

    Returns (train MSE, f(xt), Lip upper bound, min-norm interpolant X^+ Y by a Gram solve).
    """
    mask = jnp.arange(x.shape[0]) < n
    radius = jnp.max(jnp.linalg.norm(jnp.concatenate([x, xt]), axis=-1))
    p = bounds.zero_loss_params(spec, x, y, radius=radius, mask=mask, check=False)
    assert [q["w"].shape for q in p] == list(zip(spec.dims[:-1], spec.dims[1:]))
    assert [q["b"].shape for q in p] == [(m,) for m in spec.dims[1:]]
    res = jnp.where(mask[:, None], mlp.apply(spec, p, x) - y, 0.0)
    lip = bounds.lipschitz_upper(spec, p)  # depends on p: after the first LAPACK call
    xm, ym = jnp.where(mask[:, None], x, 0.0), jnp.where(mask[:, None], y, 0.0)
    xm = bounds.after(xm, lip)  # LAPACK calls one after another (see bounds.after)
    gram = xm @ xm.T + jnp.diag(1.0 - mask)  # identity on the masked-out block: decoupled
    m_ref = xm.T @ jnp.linalg.solve(gram, ym)
    return (jnp.sum(res**2) / n, mlp.apply(spec, p, xt), lip, m_ref)


def _draws(seed, draws, n_max, d, k, m):
    keys = jax.random.split(jax.random.PRNGKey(seed), draws)
    x, y, xt = jax.vmap(lambda key: _data(key, n_max, d, k, m))(keys)
    n = jnp.concatenate([jnp.array([1, n_max]), jax.random.randint(keys[0], (draws - 2,), 1, n_max + 1)])
    return x, y, xt, n


def test_construction_zero_loss_and_one_function_for_every_architecture():
    n_max, d, k = 20, 20, 2
    x, y, xt, n = _draws(0, 24, n_max, d, k, 50)
    outs = []
    for widths in ARCHS:
        loss, out, lip, m_ref = _fit(bounds.construction_spec(d, widths, k), x, y, xt, n)
        assert float(jnp.max(loss)) < 1e-20, widths
        # the same function as the linear interpolant x -> x X^+ Y (Gram solve), on fresh points
        np.testing.assert_allclose(out, xt @ m_ref, rtol=1e-8, atol=1e-10)
        # Lip upper bound of the construction = |X^+ Y|_op
        np.testing.assert_allclose(lip, jax.vmap(bounds.op_norm)(m_ref), rtol=1e-8)
        outs.append(out)
    for o in outs[1:]:  # identical across architectures, up to rounding in the first layer
        np.testing.assert_allclose(o, outs[0], rtol=1e-12, atol=1e-13)


def test_construction_eager_path_width_equal_to_k_and_numpy_reference():
    for widths, k in [((1, 1, 1), 1), ((3, 4), 2), ((3,), 3)]:
        x, y, xt = _data(k, 5, 8, k, m=10)
        spec = bounds.construction_spec(8, widths, k)
        radius = jnp.max(jnp.linalg.norm(jnp.concatenate([x, xt]), axis=-1))
        eager = bounds.zero_loss_params(spec, x, y, radius=radius)
        m_np = np.linalg.lstsq(np.asarray(x), np.asarray(y), rcond=None)[0]
        assert float(jnp.mean((mlp.apply(spec, eager, x) - y) ** 2)) < 1e-20
        np.testing.assert_allclose(mlp.apply(spec, eager, xt), np.asarray(xt) @ m_np, rtol=1e-10,
                                   atol=1e-12)
        lip = bounds.lipschitz_upper(spec, eager)
        np.testing.assert_allclose(lip, np.linalg.svd(m_np, compute_uv=False)[0], rtol=1e-10)
        assert lip <= bounds.op_norm(y) / bounds.sigma_min(x) * (1 + 1e-12)
    jitted = jax.jit(lambda x, y: bounds.zero_loss_params(spec, x, y, radius=radius))(x, y)
    for a, b in zip(eager, jitted):
        np.testing.assert_allclose(a["w"], b["w"], rtol=1e-12)
        np.testing.assert_allclose(a["b"], b["b"], rtol=1e-12)


def test_bound_never_below_the_true_error_over_many_draws():
    n_max, d, k, m = 24, 24, 2, 64

    @functools.partial(jax.jit, static_argnums=0)
    @functools.partial(jax.vmap, in_axes=(None, 0, 0, 0))
    def draw(widths, key, n, noise):
        kx, kb, ke, kt = jax.random.split(key, 4)
        x = jax.random.normal(kx, (n_max, d))
        xt = jax.random.normal(kt, (m, d))
        b = jax.random.normal(kb, (d, k))
        y = jnp.maximum(x @ b, 0) + noise * jax.random.normal(ke, (n_max, k))
        yt = jnp.maximum(xt @ b, 0)  # a nonlinear teacher: the interpolant is far from exact
        mask = jnp.arange(n_max) < n
        spec = bounds.construction_spec(d, widths, k)
        radius = jnp.max(jnp.linalg.norm(jnp.concatenate([x, xt]), axis=-1))
        p = bounds.zero_loss_params(spec, x, y, radius, mask=mask, check=False)
        err = jnp.linalg.norm(mlp.apply(spec, p, xt) - yt, axis=-1)
        lip = bounds.lipschitz_upper(spec, p)  # depends on p: after the first LAPACK call
        ok = bounds.full_rank(bounds.after(x, lip), mask)
        return err, bounds.geometry_bound(lip, x, y, xt, yt, mask), ok

    draws = 100
    keys = jax.random.split(jax.random.PRNGKey(7), draws)
    ns = jax.random.randint(jax.random.PRNGKey(8), (draws,), 1, n_max + 1)
    noise = jax.random.uniform(jax.random.PRNGKey(9), (draws,))
    for widths in [(), (32, 32, 32)]:
        err, bound, ok = draw(widths, keys, ns, noise)
        assert bool(jnp.all(ok))
        assert err.shape == bound.shape == (draws, m)
        assert bool(jnp.all(err <= bound * (1 + 1e-10))), float(jnp.max(err / bound))
        assert float(jnp.median(err / bound)) < 1.0  # it is an upper bound, not an equality


def test_geometry_bound_holds_for_any_network_with_its_training_outputs():
    for seed in range(3):
        spec = mlp.MLPSpec(6, (20,) * (2 * seed + 1), 2)
        p = mlp.init(spec, jax.random.PRNGKey(seed))
        x, _, xt = _data(seed, 15, 6, 2, m=100)
        yt = jax.random.normal(jax.random.PRNGKey(50 + seed), (100, 2))
        f = jax.jit(lambda v: mlp.apply(spec, p, v))
        bound = jax.jit(bounds.geometry_bound)(bounds.lipschitz_upper(spec, p), x, f(x), xt, yt)
        assert bool(jnp.all(jnp.linalg.norm(f(xt) - yt, axis=-1) <= bound * (1 + 1e-12)))
        # the brute-force check: min over i of the two-term inequality, term by term
        dx = np.linalg.norm(np.asarray(xt)[:, None] - np.asarray(x)[None], axis=-1)
        dy = np.linalg.norm(np.asarray(yt)[:, None] - np.asarray(f(x))[None], axis=-1)
        np.testing.assert_allclose(bound, (float(bounds.lipschitz_upper(spec, p)) * dx + dy).min(1),
                                   rtol=1e-12)


def test_rank_deficient_inputs_get_a_clear_error():
    x, y, _ = _data(0, 6, 5, 1)
    spec = bounds.construction_spec(5, (4,), 1)
    with pytest.raises(ValueError, match="rank deficient: n = 6 > d = 5"):
        bounds.zero_loss_params(spec, x, y)
    x, y, _ = _data(1, 4, 8, 1)
    dup = x.at[3].set(x[1])
    with pytest.raises(ValueError, match="rank deficient: rank 3 < n = 4"):
        bounds.zero_loss_params(bounds.construction_spec(8, (4,), 1), dup, y)
    comb = x.at[3].set(2 * x[0] - x[2])  # a linear combination, not a duplicate
    with pytest.raises(ValueError, match="rank deficient"):
        bounds.zero_loss_params(bounds.construction_spec(8, (), 1), comb, y)
    with pytest.raises(ValueError, match="rank deficient"):  # only the masked-in rows count
        bounds.zero_loss_params(bounds.construction_spec(8, (), 1), dup, y,
                                mask=jnp.array([True, True, False, True]))
    bounds.zero_loss_params(bounds.construction_spec(8, (), 1), dup, y,
                            mask=jnp.array([True, True, True, False]))
    # under jit no error can be raised: full_rank reports it instead
    assert not bool(jax.jit(bounds.full_rank)(dup))
    assert bool(jax.jit(bounds.full_rank)(x))


def test_bad_specs_get_a_clear_error():
    x, y, _ = _data(0, 3, 5, 2)
    with pytest.raises(ValueError, match=">= the output dimension k = 2"):
        bounds.zero_loss_params(bounds.construction_spec(5, (4, 1), 2), x, y)
    with pytest.raises(ValueError, match="parametrization='standard'"):
        bounds.zero_loss_params(mlp.MLPSpec(5, (4,), 2), x, y)
    with pytest.raises(ValueError, match="spec maps 6 -> 2"):
        bounds.zero_loss_params(bounds.construction_spec(6, (4,), 2), x, y)


def test_bias_term_closed_form_and_the_a_priori_bound():
    ops, bns = jnp.array([2.0, 3.0, 0.5]), jnp.array([1.0, 4.0, 7.0])
    # |b1| |W2| |W3| + |b2| |W3| + |b3|
    np.testing.assert_allclose(bounds.bias_term(ops, bns), 1.0 * 3.0 * 0.5 + 4.0 * 0.5 + 7.0, rtol=1e-15)
    for seed, par in enumerate(["ntk", "standard"]):
        spec = mlp.MLPSpec(5, (8, 6, 7), 3, parametrization=par, b_std=0.7)
        p = mlp.init(spec, jax.random.PRNGKey(seed))
        x = 3 * jax.random.normal(jax.random.PRNGKey(10 + seed), (200, 5))
        beta = bounds.bias_term(bounds.layer_op_norms(spec, p), bounds.bias_norms(spec, p))
        apriori = bounds.lipschitz_upper(spec, p) * jnp.linalg.norm(x, axis=1) + beta
        assert np.all(np.linalg.norm(mlp.apply(spec, p, x), axis=1) <= apriori)
    # the construction: beta = 2 |s| = 2 R |M|_F for every depth (first-layer shift, removed at the output)
    x, y, _ = _data(3, 4, 9, 2)
    for widths in [(2,), (5, 4, 2), (8,) * 6]:
        spec = bounds.construction_spec(9, widths, 2)
        p = bounds.zero_loss_params(spec, x, y, radius=2.5)
        beta = bounds.bias_term(bounds.layer_op_norms(spec, p), bounds.bias_norms(spec, p))
        np.testing.assert_allclose(beta, 2 * 2.5 * np.linalg.norm(bounds.interpolant(x, y)), rtol=1e-12)
