import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbench import data, mlp


def test_separated_sphere_geometry_and_labels():
    c = data.separated_sphere(jax.random.PRNGKey(0), 4000, 6, eta=0.25, gamma=0.3)
    np.testing.assert_allclose(jnp.linalg.norm(c.x, axis=1), 1.0, atol=1e-5)
    assert float(jnp.abs(c.x[:, 0]).min()) >= 0.3 - 1e-5
    np.testing.assert_array_equal(c.y_clean, jnp.sign(c.x[:, 0]))
    flips = float(jnp.mean(c.y != c.y_clean))
    assert abs(flips - 0.25) < 4 * np.sqrt(0.25 * 0.75 / 4000)


def test_margin_conditioning_matches_rejection_sampling():
    # Independent implementation: uniform sphere points by normalised Gaussians, rejected by margin.
    d, gamma, n = 5, 0.4, 60000
    rng = np.random.default_rng(0)
    g = rng.normal(size=(4 * n, d))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    ref = g[np.abs(g[:, 0]) >= gamma][:n]
    x = np.asarray(data.separated_sphere(jax.random.PRNGKey(1), n, d, gamma=gamma).x)
    for j in (0, 1):
        q = [0.1, 0.25, 0.5, 0.75, 0.9]
        np.testing.assert_allclose(np.quantile(np.abs(x[:, j]), q), np.quantile(np.abs(ref[:, j]), q), atol=0.01)


def test_noisy_label_error_of_the_bayes_classifier_is_eta():
    # A classifier perfect on clean labels (sign of x_1) has noisy-label error eta in expectation.
    for eta in (0.0, 0.1, 0.3, 0.5):
        c = data.separated_sphere(jax.random.PRNGKey(7), 20000, 8, eta=eta, gamma=0.1)
        err = float(jnp.mean(jnp.sign(c.x[:, 0]) != c.y))
        assert abs(err - eta) < 4 * np.sqrt(max(eta * (1 - eta), 1e-4) / 20000)


def test_generators_are_pure_functions_of_the_key():
    a = data.separated_sphere(jax.random.PRNGKey(3), 10, 4, 0.2, 0.1)
    b = jax.jit(data.separated_sphere, static_argnums=(1, 2))(jax.random.PRNGKey(3), 10, 4, 0.2, 0.1)
    for u, v in zip(a, b):
        np.testing.assert_allclose(u, v, atol=1e-6)


def test_teacher_student_and_linear_regression():
    t = mlp.MLPSpec(3, (4,), 2)
    tp = mlp.init(t, jax.random.PRNGKey(0))
    x, y = data.teacher_student(jax.random.PRNGKey(1), 50, t, tp, noise_std=0.0, inputs="cube")
    assert x.shape == (50, 3) and y.shape == (50, 2) and float(jnp.abs(x).max()) <= 1.0
    np.testing.assert_allclose(y, mlp.apply(t, tp, x), rtol=1e-6)
    x, y, xt, yt, B = data.linear_regression(jax.random.PRNGKey(2), 8, 20, 1, noise_std=0.0, n_test=5)
    assert x.shape == (8, 20) and xt.shape == (5, 20)
    np.testing.assert_allclose(y, x @ B, rtol=1e-5)
    assert np.linalg.matrix_rank(np.asarray(x)) == 8  # n <= d: linearly independent inputs
    with pytest.raises(ValueError):
        data.teacher_student(jax.random.PRNGKey(1), 5, t, tp, inputs="nope")


def test_gaussian_binary_moments():
    mu = jnp.array([1.0, -2.0, 0.5])
    x, y = data.gaussian_binary(jax.random.PRNGKey(0), 40000, mu, sigma=0.5)
    np.testing.assert_allclose(jnp.mean(y[:, None] * x, axis=0), mu, atol=0.02)
    np.testing.assert_allclose(jnp.std(x - y[:, None] * mu, axis=0), 0.5, atol=0.01)


# Random draws of the kinds the experiments make (jitted, vmapped over keys, splits), saved to argv[1].
DRAWS = """
import sys
import jax, numpy as np
k = jax.random.PRNGKey(3)
ks = jax.random.split(k, 5)
bits8 = lambda k: jax.random.bits(k, (8,))
np.savez(sys.argv[1],
         rolled=["stablehlo.while" in jax.jit(f).lower(a).as_text() for f, a in [(bits8, k), (jax.vmap(bits8), ks)]],
         normal=jax.jit(lambda k: jax.random.normal(k, (7, 33)))(k),
         uniform_vmap=jax.jit(jax.vmap(lambda k: jax.random.uniform(k, (129,))))(ks),
         bits_vmap=jax.jit(jax.vmap(lambda k: jax.random.bits(k, (4, 5))))(ks),
         split=jax.jit(lambda k: jax.random.split(k, 3))(k),
         bernoulli=jax.random.bernoulli(k, 0.3, (50,)))
"""


def test_cpu_threefry_backport_draws_the_same_bits(tmp_path):
    """jaxbench.compat lowers batched threefry unrolled on CPU; draws equal a process without jaxbench."""
    from jaxbench import compat

    assert compat.THREEFRY_BATCHED_UNROLLED
    r = subprocess.run([sys.executable, "-c", DRAWS, str(tmp_path / "plain.npz")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    argv = sys.argv
    try:
        sys.argv = ["draws", str(tmp_path / "here.npz")]
        exec(DRAWS, {})
    finally:
        sys.argv = argv
    plain, here = np.load(tmp_path / "plain.npz"), np.load(tmp_path / "here.npz")
    if jax.default_backend() == "cpu":  # one key: both rolled; batched keys: lowered differently ...
        assert plain["rolled"].tolist() == [True, True] and here["rolled"].tolist() == [True, False]
    for name in set(plain.files) - {"rolled"}:  # ... and drew the same bits
        np.testing.assert_array_equal(here[name], plain[name], err_msg=name)


def test_normals_cuts_one_draw_into_the_requested_shapes():
    key = jax.random.PRNGKey(3)
    shapes = [(2, 3), (4,), (1, 2, 2)]
    parts = jax.jit(lambda k: data.normals(k, shapes))(key)
    assert [p.shape for p in parts] == shapes
    flat = jax.random.normal(key, (14,))  # the same numbers as one plain draw, in order
    np.testing.assert_array_equal(np.concatenate([np.ravel(p) for p in parts]), flat)
    with jax.enable_x64(True):
        assert data.normals(key, [(3,)], jnp.float64)[0].dtype == jnp.float64
