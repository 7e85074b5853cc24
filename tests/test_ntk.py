"""Tests for jaxbench.ntk: every method against an independent whole-batch Jacobian (float64),
the infinite-width kernels against hand-computed arc-cosine values, 1-D quadrature and wide
networks, vmap over variants, flax models, memory bounds and bad input."""

import dataclasses
import functools
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from scipy import integrate, stats

from jaxbench import mlp, ntk

METHODS = ("jacobian", "jvp_vjp", "structured", "auto")


def naive_ntk(f, params, x1, x2, trace=True):
    """Independent reference: Jacobian of the whole batch w.r.t. the raveled params, no tiles."""
    flat, unravel = ravel_pytree(params)

    def jac(x):
        return jax.jacrev(lambda p: f(unravel(p), x).reshape(x.shape[0], -1))(flat)  # (n, k, P)

    full = jnp.einsum("akp,blp->abkl", jac(x1), jac(x2))
    return jnp.einsum("abkk->ab", full) if trace else full


def rel(a, b):
    return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))


def ntk_fn(f, method, trace=True, tile=None, same=False):
    if same:
        return jax.jit(lambda p, a: ntk.empirical_ntk(f, p, a, method=method, trace=trace, tile=tile))
    return jax.jit(lambda p, a, b: ntk.empirical_ntk(f, p, a, b, method=method, trace=trace, tile=tile))


# (in_dim, widths, out_dim, parametrization, bias, activation, trace, x2 given): depth 1..5,
# mixed widths, both parametrizations, with and without biases, scalar and vector outputs.
MLP_CASES = [
    (3, (), 1, "ntk", True, "relu", True, True),
    (3, (5,), 2, "standard", False, "relu", False, True),
    (4, (7, 3), 1, "ntk", False, "relu", True, False),
    (4, (6, 9, 4), 3, "standard", True, "relu", True, True),
    (2, (5, 3, 8, 4), 2, "ntk", True, "tanh", False, False),
    (3, (4, 6, 2, 5), 1, "standard", True, "relu", True, False),
]


@pytest.mark.parametrize("case", MLP_CASES, ids=lambda c: f"L{len(c[1]) + 1}-{c[3]}-b{int(c[4])}-k{c[2]}")
def test_all_methods_agree_with_the_whole_batch_jacobian_float64(case):
    d, widths, k, param, bias, act, trace, two = case
    with jax.enable_x64(True):
        spec = mlp.MLPSpec(d, widths, k, activation=act, parametrization=param, bias=bias)
        params = mlp.init(spec, jax.random.PRNGKey(len(widths)))
        x1 = jax.random.normal(jax.random.PRNGKey(10), (7, d))
        x2 = jax.random.normal(jax.random.PRNGKey(11), (5, d)) if two else None
        f = functools.partial(mlp.apply, spec, out_scale=0.7)
        # tile=3 forces padded blocks (7 = 3 + 3 + 1) through the tiled path; one compilation
        tile = 3 if len(widths) % 2 else None

        @jax.jit
        def kernels(p, a, b):
            ref = naive_ntk(f, p, a, a if b is None else b, trace)
            return ref, [ntk.empirical_ntk(f, p, a, b, method=m, trace=trace, tile=tile) for m in METHODS]

        ref, got = kernels(params, x1, x2)
        for method, kernel in zip(METHODS, got):
            assert kernel.shape == ref.shape
            assert rel(kernel, ref) < 1e-10, method


def test_standard_structured_equals_jacobian_of_an_independently_written_network():
    # A hand-written standard-parametrized ReLU net (no mlp.py) must have the same NTK as the
    # structured path of the equivalent MLPSpec: checks the scale factors c_l = 1, beta = 1.
    with jax.enable_x64(True):
        spec = mlp.MLPSpec(3, (6, 4), 2, parametrization="standard")
        params = mlp.init(spec, jax.random.PRNGKey(0))

        def net(p, x):
            for layer in p[:-1]:
                x = jnp.maximum(x @ layer["w"] + layer["b"], 0.0)
            return x @ p[-1]["w"] + p[-1]["b"]

        x = jax.random.normal(jax.random.PRNGKey(1), (6, 3))
        f = functools.partial(mlp.apply, spec)
        got, ref = jax.jit(lambda p, a: (ntk.empirical_ntk(f, p, a, method="structured"), naive_ntk(net, p, a, a)))(params, x)
        assert rel(got, ref) < 1e-12


def _conv_net(p, x):
    """1-D convolution with shared filters + a weight matrix reused twice: not an MLP."""
    h = jax.lax.conv_general_dilated(x, p["k"], (1,), "SAME", dimension_numbers=("NWC", "WIO", "NWC"))
    h = jnp.tanh(h).mean(axis=1)  # (n, c)
    return jnp.tanh(h @ p["w"]) @ p["w"].T @ p["v"]  # (n, 2): p["w"] used twice


def test_jacobian_and_jvp_vjp_on_a_convolution_with_shared_weights_float64():
    with jax.enable_x64(True):
        ks = jax.random.split(jax.random.PRNGKey(0), 4)
        p = {"k": jax.random.normal(ks[0], (3, 2, 4)), "w": jax.random.normal(ks[1], (4, 5)),
             "v": jax.random.normal(ks[2], (4, 2))}
        x1 = jax.random.normal(ks[3], (6, 8, 2))
        x2 = x1[:4] * 1.5

        @jax.jit
        def kernels(p, a, b):
            return [(naive_ntk(_conv_net, p, a, b, trace),
                     [ntk.empirical_ntk(_conv_net, p, a, b, method=m, trace=trace, tile=4)
                      for m in ("jacobian", "jvp_vjp", "auto")]) for trace in (True, False)]

        for ref, got in kernels(p, x1, x2):
            for kernel in got:
                assert kernel.shape == ref.shape and rel(kernel, ref) < 1e-10
        with pytest.raises(ValueError, match="structured"):
            ntk.empirical_ntk(_conv_net, p, x1, method="structured")


def test_flax_linen_apply_and_equivalence_with_mlp():
    from flax import linen as nn

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.relu(nn.Dense(6)(x))
            x = nn.relu(nn.Dense(5)(x))
            return nn.Dense(2)(x)

    with jax.enable_x64(True):
        model = Net()
        x = jax.random.normal(jax.random.PRNGKey(0), (5, 3))
        variables = jax.tree.map(lambda a: a.astype(jnp.float64), model.init(jax.random.PRNGKey(1), x))
        ref, got = jax.jit(lambda v, a: (naive_ntk(model.apply, v, a, a), [
            ntk.empirical_ntk(model.apply, v, a, method=m, tile=2) for m in ("jacobian", "jvp_vjp", "auto")]))(variables, x)
        assert all(rel(kernel, ref) < 1e-10 for kernel in got)
        # the same weights in mlp.py's standard parametrization: structured path agrees
        spec = mlp.MLPSpec(3, (6, 5), 2, parametrization="standard")
        dense = variables["params"]
        params = [{"w": dense[f"Dense_{i}"]["kernel"], "b": dense[f"Dense_{i}"]["bias"]} for i in range(3)]
        got = ntk.empirical_ntk(functools.partial(mlp.apply, spec), params, x, method="structured")
        assert rel(got, ref) < 1e-12


def test_flax_nnx_model_through_split_merge():
    from flax import nnx

    class Net(nnx.Module):
        def __init__(self, rngs):
            kw = dict(rngs=rngs, param_dtype=jnp.float64, dtype=jnp.float64)
            self.l1, self.l2 = nnx.Linear(3, 6, **kw), nnx.Linear(6, 2, **kw)

        def __call__(self, x):
            return self.l2(nnx.tanh(self.l1(x)))

    with jax.enable_x64(True):
        f, params = ntk.nnx_fn(Net(nnx.Rngs(0)))
        x = jax.random.normal(jax.random.PRNGKey(0), (5, 3))
        ref = naive_ntk(f, params, x, x, trace=False)
        for method in ("jacobian", "jvp_vjp"):
            got = ntk.empirical_ntk(f, params, x, method=method, trace=False)
            assert got.shape == (5, 5, 2, 2) and rel(got, ref) < 1e-10


@pytest.mark.parametrize("method", ("jacobian", "jvp_vjp", "structured"))
def test_vmapped_variants_equal_each_variant_alone(method):
    spec = mlp.MLPSpec(3, (8, 6), 2)
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    params = jax.vmap(lambda k: mlp.init(spec, k))(keys)
    alpha = jnp.array([0.5, 1.0, 2.0])
    x = jax.random.normal(jax.random.PRNGKey(1), (3, 4, 3))  # inputs differ per variant too

    def one(p, a, xi):
        return ntk.empirical_ntk(functools.partial(mlp.apply, spec, out_scale=a), p, xi, method=method, tile=2)

    batched = jax.jit(jax.vmap(one))(params, alpha, x)
    alone_fn = jax.jit(one)
    for i in range(3):
        alone = alone_fn(jax.tree.map(lambda a: a[i], params), alpha[i], x[i])
        np.testing.assert_allclose(batched[i], alone, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("method", ("jacobian", "jvp_vjp"))
def test_tiles_bound_memory_below_the_full_jacobian(method):
    # n = 256 points, P ~ 70k parameters: the whole Jacobian is 72 MB; tiles of 16 must use a
    # small fraction of that (compiled temporary buffers), so memory does not grow with n * P.
    spec = mlp.MLPSpec(16, (256, 256), 1)
    params = mlp.init(spec, jax.random.PRNGKey(0))
    x = jnp.ones((256, 16))
    f = functools.partial(mlp.apply, spec)
    compiled = ntk_fn(f, method, tile=16, same=True).lower(params, x).compile()
    temp = compiled.memory_analysis().temp_size_in_bytes
    full_jacobian = 256 * spec.num_params * 4
    assert temp < full_jacobian / 4, (temp, full_jacobian)


# ----------------------------------------------------------------------------- infinite width


def test_relu_kernels_depth_one_hidden_layer_hand_computed():
    # One hidden layer (depth 2), w_std^2 = 2, d = 2. Arc-cosine kernel of degree 1:
    # E relu(u) relu(v) = sqrt(k11 k22) (sin t + (pi - t) cos t) / (2 pi), E relu' relu' = (pi - t)/(2 pi).
    s2 = 1 / math.sqrt(2)
    x = jnp.array([[1.0, 0.0], [s2, s2]])
    # no bias: Sigma1 = <x,x'> = 1/sqrt2 (t = pi/4), diag 1. Sigma2 = 2 E = s2 (1/pi + 3/4),
    # Theta2 = Sigma2 + 2 (3/8) Sigma1 = s2 (1/pi + 3/2); diagonals Sigma2 = 1, Theta2 = 2.
    nngp = ntk.relu_nngp(x, None, 2, bias=False)
    theta = ntk.relu_ntk(x, None, 2, bias=False)
    np.testing.assert_allclose(nngp, [[1, s2 * (1 / math.pi + 0.75)], [s2 * (1 / math.pi + 0.75), 1]], rtol=1e-6)
    np.testing.assert_allclose(theta, [[2, s2 * (1 / math.pi + 1.5)], [s2 * (1 / math.pi + 1.5), 2]], rtol=1e-6)
    # orthogonal inputs, b_std = 1: Sigma1 = [[2, 1], [1, 2]] (t = pi/3); Sigma2 = sqrt3/pi + 5/3,
    # Theta2 = Sigma2 + 2 (1/3) 1 = sqrt3/pi + 7/3; diagonals Sigma2 = 3, Theta2 = 3 + 2 = 5.
    y = jnp.eye(2)
    r3 = math.sqrt(3)
    np.testing.assert_allclose(ntk.relu_nngp(y, None, 2, b_std=1.0), [[3, r3 / math.pi + 5 / 3]] * 1 + [[r3 / math.pi + 5 / 3, 3]], rtol=1e-6)
    np.testing.assert_allclose(ntk.relu_ntk(y, None, 2, b_std=1.0), [[5, r3 / math.pi + 7 / 3], [r3 / math.pi + 7 / 3, 5]], rtol=1e-6)
    # standard parametrization, width m: Theta2 = m E relu relu + 1 + 2 E relu' relu' Theta1 with
    # Theta1 = <x,x'> + 1 = 1: m (sqrt3/(2 pi) + 1/3) + 5/3 off the diagonal
    m = 100
    got = ntk.relu_ntk(y, None, 2, b_std=1.0, parametrization="standard", widths=(m,))
    np.testing.assert_allclose(got[0, 1], m * (r3 / (2 * math.pi) + 1 / 3) + 5 / 3, rtol=1e-6)
    # depth 1 is the linear model: Sigma1 = w^2 <x,x'>/d + b^2; out_scale multiplies by alpha^2
    np.testing.assert_allclose(ntk.relu_ntk(x, None, 1, out_scale=3.0), 9 * (x @ x.T + 0.01), rtol=1e-6)


def _quad_kernels(x, depth, w2, b2):
    """Independent recursion with 1-D quadrature for the two Gaussian expectations (numpy)."""
    x = np.asarray(x, np.float64)
    s = w2 * x @ x.T / x.shape[1] + b2
    th = s.copy()
    n = len(x)
    for _ in range(depth - 1):
        e, ed = np.zeros_like(s), np.zeros_like(s)
        for i in range(n):
            for j in range(n):
                a, b = math.sqrt(s[i, i]), math.sqrt(s[j, j])
                r = min(s[i, j] / (a * b), 1.0)
                c = math.sqrt(max(1 - r * r, 0.0))
                if c < 1e-12:  # identical points
                    e[i, j], ed[i, j] = a * b / 2, 0.5
                    continue
                # u = a z, v = b (r z + c w): integrate over z > 0 in closed form over w
                f1 = lambda z: z * stats.norm.pdf(z) * (r * z * stats.norm.cdf(r * z / c) + c * stats.norm.pdf(r * z / c))
                f2 = lambda z: stats.norm.pdf(z) * stats.norm.cdf(r * z / c)
                e[i, j] = a * b * integrate.quad(f1, 0, np.inf, epsabs=1e-13, epsrel=1e-12)[0]
                ed[i, j] = integrate.quad(f2, 0, np.inf, epsabs=1e-13, epsrel=1e-12)[0]
        s = w2 * e + b2
        th = s + w2 * ed * th
    return s, th


def test_relu_kernels_match_quadrature_at_depth_four_float64():
    with jax.enable_x64(True):
        x = jax.random.normal(jax.random.PRNGKey(0), (4, 3))
        s, th = _quad_kernels(x, 4, 1.7, 0.3)
        kw = dict(w_std=math.sqrt(1.7), b_std=math.sqrt(0.3))
        np.testing.assert_allclose(ntk.relu_nngp(x, None, 4, **kw), s, rtol=1e-9)
        np.testing.assert_allclose(ntk.relu_ntk(x, None, 4, **kw), th, rtol=1e-9)
        spec = mlp.MLPSpec(3, (9, 9, 9), 1, **kw)  # spec= gives the same conventions
        np.testing.assert_allclose(ntk.relu_ntk(x[:2], x, spec=spec), th[:2], rtol=1e-9)


def _wide_errors(width, seeds=4):
    """Mean over seeds of the relative Frobenius errors at one width: NTK (NTK parametrization),
    NTK (the same draw in the standard parametrization), NNGP."""
    spec = mlp.MLPSpec(5, (width, width), 1)
    std = mlp.MLPSpec(5, (width, width), 1, parametrization="standard")
    x = jax.random.normal(jax.random.PRNGKey(100), (6, 5))
    rel_fro = lambda a, b: jnp.linalg.norm(a - b) / jnp.linalg.norm(b)  # noqa: E731

    def errors(key):
        p = mlp.init(spec, key)
        q = [{"w": l["w"] * spec.w_std / math.sqrt(l["w"].shape[0]), "b": l["b"] * spec.b_std} for l in p]
        emp = ntk.empirical_ntk(functools.partial(mlp.apply, spec), p, x)
        emp_std = ntk.empirical_ntk(functools.partial(mlp.apply, std), q, x)
        # empirical NNGP: covariance of the last layer's pre-activation given the features
        h = mlp.hidden(spec, p, x)[-1]
        emp_nngp = spec.w_std**2 * h @ h.T / width + spec.b_std**2
        return jnp.stack([rel_fro(emp, ntk.relu_ntk(x, spec=spec)), rel_fro(emp_std, ntk.relu_ntk(x, spec=std)),
                          rel_fro(emp_nngp, ntk.relu_nngp(x, spec=spec))])

    return np.mean(jax.jit(jax.vmap(errors))(jax.random.split(jax.random.PRNGKey(0), seeds)), 0)


def test_wide_networks_converge_to_the_infinite_width_kernels():
    narrow, wide = _wide_errors(8), _wide_errors(512)
    # fluctuations scale like width^-1/2: 64x the width should cut the error ~8x
    for e_narrow, e_wide in zip(narrow, wide):
        assert e_wide < 0.2 and e_wide < e_narrow / 3, (narrow, wide)


# ----------------------------------------------------------------------------- helpers


def test_kernel_regression_classification_and_min_eigenvalue_float64():
    with jax.enable_x64(True):
        x = jax.random.normal(jax.random.PRNGKey(0), (12, 4))
        xt = jax.random.normal(jax.random.PRNGKey(1), (5, 4))
        y = jnp.sign(x[:, 0])
        k, kt = jax.jit(lambda a, b: (ntk.relu_ntk(a, None, 3), ntk.relu_ntk(b, a, 3)))(x, xt)
        kn, ktn, yn = (np.asarray(a) for a in (k, kt, y))
        # ridgeless: interpolates the training labels and equals the direct solve
        np.testing.assert_allclose(ntk.kernel_regression(k, y, k), y, atol=1e-8)
        np.testing.assert_allclose(ntk.kernel_regression(k, y, kt), ktn @ np.linalg.solve(kn, yn), rtol=1e-8)
        ridge = ntk.kernel_regression(k, y, kt, ridge=0.5)
        np.testing.assert_allclose(ridge, ktn @ np.linalg.solve(kn + 0.5 * np.eye(12), yn), rtol=1e-10)
        two = jnp.stack([y, -y], 1)
        np.testing.assert_allclose(ntk.kernel_regression(k, two, kt)[:, 1], -ntk.kernel_regression(k, y, kt), rtol=1e-10)
        np.testing.assert_array_equal(ntk.kernel_classify(k, y, kt), np.sign(ktn @ np.linalg.solve(kn, yn)))
        assert ntk.kernel_classify(k, jax.nn.one_hot((y > 0).astype(int), 2), kt).shape == (5,)
        np.testing.assert_allclose(ntk.min_eigenvalue(k), np.linalg.eigvalsh(kn)[0], rtol=1e-10)
        # a singular kernel (repeated point): ridgeless prediction stays finite (minimum norm)
        xs = jnp.concatenate([x, x[:1]])
        ks = ntk.relu_ntk(xs, None, 3)
        assert abs(float(ntk.min_eigenvalue(ks))) < 1e-10
        assert np.all(np.isfinite(ntk.kernel_regression(ks, jnp.concatenate([y, y[:1]]), ntk.relu_ntk(xt, xs, 3))))


def test_ntk_drift():
    with jax.enable_x64(True):
        spec = mlp.MLPSpec(3, (8,), 1)
        p0 = mlp.init(spec, jax.random.PRNGKey(0))
        p1 = jax.tree.map(lambda a: a * 1.1, p0)
        x = jax.random.normal(jax.random.PRNGKey(1), (5, 3))
        f = functools.partial(mlp.apply, spec)
        assert float(ntk.ntk_drift(f, p0, p0, x)) == 0.0
        k0, k1 = naive_ntk(f, p0, x, x), naive_ntk(f, p1, x, x)
        np.testing.assert_allclose(ntk.ntk_drift(f, p0, p1, x), np.linalg.norm(k1 - k0) / np.linalg.norm(k0), rtol=1e-10)


def test_bad_input_gets_a_clear_error():
    spec = mlp.MLPSpec(3, (4,), 1)
    p = mlp.init(spec, jax.random.PRNGKey(0))
    f = functools.partial(mlp.apply, spec)
    x = jnp.ones((4, 3))
    with pytest.raises(ValueError, match="feature shapes differ"):
        ntk.empirical_ntk(f, p, x, jnp.ones((4, 2)))
    with pytest.raises(ValueError, match="in_dim=3"):
        ntk.empirical_ntk(f, p, jnp.ones((4, 5)))
    with pytest.raises(ValueError, match=r"must return \(n,\) or \(n, k\)"):
        ntk.empirical_ntk(lambda q, a: jnp.ones((a.shape[0], 2, 2)) * q, 1.0, x)
    with pytest.raises(ValueError, match=r"must return \(n,\) or \(n, k\)"):
        ntk.empirical_ntk(lambda q, a: jnp.sum(a) * q, 1.0, x)
    with pytest.raises(ValueError, match="unknown method"):
        ntk.empirical_ntk(f, p, x, method="fast")
    with pytest.raises(ValueError, match=r"\(n, features"):
        ntk.empirical_ntk(f, p, jnp.ones(3))
    with pytest.raises(ValueError, match="tile"):
        ntk.empirical_ntk(f, p, x, tile=0)
    with pytest.raises(ValueError, match="widths"):
        ntk.relu_ntk(x, None, 3, parametrization="standard")
    with pytest.raises(ValueError, match="same d"):
        ntk.relu_ntk(x, jnp.ones((2, 4)), 2)
    with pytest.raises(ValueError, match="activation='relu'"):
        ntk.relu_ntk(x, spec=mlp.MLPSpec(3, (4,), 1, activation="tanh"))
    with pytest.raises(ValueError, match="shapes mismatch"):
        ntk.kernel_regression(jnp.eye(3), jnp.ones(4), jnp.ones((2, 3)))


# ----------------------------------------------------------------------------- experiment


def test_ntk_convergence_smoke_preset_end_to_end(smoke_run):
    from jaxbench import store
    from jaxbench.experiments.ntk import convergence as ntk_convergence

    out = smoke_run("ntk_convergence")
    res = store.load(out)
    # width is traced: the two widths of the smoke preset's one depth share one compiled program
    assert res.meta["n_buckets"] == 1 and [b["compiles"] for b in res.meta["buckets"]] == [1]
    assert sorted(set(res.table["width"].tolist())) == [8, 32]
    for metric in ntk_convergence.METRICS:
        vals = np.asarray(res.table[metric], float)
        assert np.all(np.isfinite(vals)) and np.all(vals > 0)
    assert (out / "ntk_convergence.png").exists() and (out / "ntk_convergence.pdf").exists()
    fits = json.loads((out / "slopes.json").read_text())
    assert set(fits) == {f"{m}/L=2" for m in ntk_convergence.METRICS}
    assert all(np.isfinite(v["slope"]) for v in fits.values())


def test_ntk_convergence_params_reject_bad_values():
    from jaxbench.experiments.ntk import convergence as ntk_convergence

    with pytest.raises(ValueError, match="depth = 1: must be >= 2"):
        ntk_convergence.PARAMS["depth"].validate("depth", 1)
    with pytest.raises(ValueError, match="must be one of"):
        ntk_convergence.PARAMS["method"].validate("method", "exact")
    # the slope fit recovers a known power law
    w = np.array([32, 64, 128, 256] * 3, float)
    assert abs(ntk_convergence.fit_slope(w, 3.0 * w**-0.5)[0] + 0.5) < 1e-12


@pytest.mark.parametrize("depth,width,pad", [(2, 8, 32), (3, 5, 16), (4, 16, 16)])
def test_ntk_convergence_padded_kernels_are_the_unpadded_networks(depth, width, pad):
    """The width-traced variant (a pad-wide network with dead units, live fan-in in the scaling)
    computes exactly the width-``width`` MLP's kernels, float64, by all three methods."""
    import types

    from jaxbench.experiments.ntk import convergence as conv

    with jax.enable_x64(True):
        s = types.SimpleNamespace(depth=depth, pad=pad, n=7, d=5, w_std=math.sqrt(2.0), b_std=0.1)
        w = jnp.asarray(width)
        x = jax.random.normal(jax.random.PRNGKey(0), (7, 5))
        padded = conv.init_padded(jax.random.PRNGKey(depth), s, w)
        spec = mlp.MLPSpec(5, (width,) * (depth - 1), 1, activation="relu", w_std=s.w_std, b_std=s.b_std)
        std = dataclasses.replace(spec, parametrization="standard")
        cut = [{"w": p["w"][: (5 if l == 0 else width), : (1 if l == depth - 1 else width)],
                "b": p["b"][: (1 if l == depth - 1 else width)]} for l, p in enumerate(padded)]
        cut_std = [{"w": p["w"] * (s.w_std / math.sqrt(p["w"].shape[0])), "b": p["b"] * s.b_std} for p in cut]
        want = (ntk.empirical_ntk(functools.partial(mlp.apply, spec), cut, x, method="jacobian"),
                ntk.empirical_ntk(functools.partial(mlp.apply, std), cut_std, x, method="jacobian"),
                s.w_std**2 * mlp.hidden(spec, cut, x)[-1] @ mlp.hidden(spec, cut, x)[-1].T / width + s.b_std**2)
        for method in ("structured", "jacobian", "jvp_vjp"):
            got = conv.empirical_kernels(types.SimpleNamespace(**vars(s), method=method), w, padded, x)
            for g, ref in zip(got, want):
                np.testing.assert_allclose(g, ref, rtol=1e-12, atol=1e-12)
        assert float(jnp.max(jnp.abs(conv.apply_padded(s, w, padded, x) - mlp.apply(spec, cut, x)))) < 1e-13


def test_ntk_convergence_rejects_a_width_above_pad(tmp_path):
    from jaxbench import sweep

    f = tmp_path / "s.toml"
    f.write_text('experiment = "ntk_convergence"\n[fixed]\npad = 64\n[grid]\nwidth = [32, 128]\ndepth = [2]\n')
    with pytest.raises(sweep.SweepError, match="width 128 exceeds pad=64"):
        sweep.load(f)
