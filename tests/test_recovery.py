"""Local recovery experiment (jaxbench.experiments.recovery): constructions, GD, outcomes, sweep."""

import dataclasses
import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbench.experiments import recovery as R

SWEEP = Path(__file__).resolve().parents[1] / "sweeps" / "local_recovery.toml"
FIGURES = ("recovery_n_eps", "recovery_n_m", "test_error", "convergence", "random_init")


_STATIC_NAMES = [k for k, p in R.PARAMS.items() if p.kind == "static"]
Static = dataclasses.make_dataclass("Static", _STATIC_NAMES, frozen=True)


@functools.lru_cache(maxsize=None)
def _compiled(static):
    return jax.jit(jax.vmap(functools.partial(R.run_one, static)))  # what the sweep engine runs


def _run(seeds, **kw):
    """run_one vmapped over seeds, float64 (one compilation per static config); numpy outputs."""
    st = Static(**{k: kw.get(k, R.PARAMS[k].default) for k in _STATIC_NAMES})
    with jax.enable_x64(True):
        tr = {k: jnp.full((len(seeds),), kw.get(k, p.default), jnp.int32 if p.type is int else jnp.float64)
              for k, p in R.PARAMS.items() if p.kind == "traced"}
        keys = jax.vmap(jax.random.PRNGKey)(jnp.asarray(seeds))
        return jax.tree.map(np.asarray, _compiled(st)(tr, keys))


# A tiny fast configuration: k (d + 1) = 4.
SEEDS = list(range(8))  # one batch shape: every call with the same static config reuses a compilation
TINY = dict(d=3, k=1, m=3, m_max=3, n_max=16, n_test=500, steps=4000, n_log=12, lr=0.2)


@pytest.mark.parametrize("act", ["tanh", "relu"])
@pytest.mark.parametrize("m,split", [(2, 0.0), (5, 0.5), (7, 1.0), (6, 0.0)])
def test_split_point_is_exactly_the_teacher(act, m, split):
    with jax.enable_x64(True):
        key = jax.random.PRNGKey(m)
        d, k, m_max = 4, 2, 8
        g = jax.random.normal(key, (k + d * k + d * m_max + m_max,))
        a_star, w_star = R.teacher(g[:k], g[k:k + d * k].reshape(d, k))
        rest = g[k + d * k:]
        a, w, owner = R.split_init(rest[:d * m_max].reshape(d, m_max), rest[d * m_max:],
                                   a_star, w_star, m, split)
        x = jax.random.normal(jax.random.PRNGKey(1), (500, d))
        f_star = R.forward(R._ACT[act], a_star, w_star, x)
        f = R.forward(R._ACT[act], a, w, x)
    a, w, owner, a_star, w_star = map(np.asarray, (a, w, owner, a_star, w_star))
    # Independent check, numpy: neuron by neuron, grouped by the teacher neuron each copies.
    phi = np.tanh if act == "tanh" else (lambda h: np.maximum(h, 0.0))
    f_np = sum(a[i] * phi(np.asarray(x) @ w[:, i]) for i in range(m_max))
    assert np.max(np.abs(f - f_star)) < 1e-14 and np.max(np.abs(f_np - np.asarray(f_star))) < 1e-14
    n_copies = k + round(split * (m - k))
    assert list(owner[:n_copies]) == [i % k for i in range(n_copies)]
    assert np.all(owner[n_copies:m] == -1) and np.all(owner[m:] == -2)
    for j in range(k):
        mine = owner == j
        assert np.all(w[:, mine] == w_star[:, [j]])
        assert abs(a[mine].sum() - a_star[j]) < 1e-15 and np.all(a[mine] / a_star[j] > 0)
    assert np.all(a[owner < 0] == 0) and np.all(w[:, owner == -2] == 0)
    assert np.all(np.linalg.norm(w[:, owner == -1], axis=0) > 0)
    np.testing.assert_allclose(w_star.T @ w_star, np.eye(k), atol=1e-14)
    assert np.all((np.abs(a_star) >= 0.5) & (np.abs(a_star) < 1.5))


def test_gradient_descent_matches_numpy_loop():
    """Against a plain numpy GD with hand-written gradients, including masked rows and neurons."""
    rng = np.random.default_rng(0)
    n, n_pad, d, m, m_pad, lr, steps = 7, 3, 3, 4, 2, 0.1, 60
    x = rng.normal(size=(n + n_pad, d))
    y = rng.normal(size=n + n_pad)
    a0 = np.concatenate([rng.normal(size=m), np.zeros(m_pad)])
    w0 = np.concatenate([rng.normal(size=(d, m)), np.zeros((d, m_pad))], axis=1)
    with jax.enable_x64(True):
        a, w, done, path, c_steps, c_loss = R.gradient_descent(
            jnp.tanh, jnp.asarray(a0), jnp.asarray(w0), jnp.asarray(x), jnp.asarray(y),
            jnp.arange(n + n_pad) < n, lr, 0.7, 0.0, R.log_grid(steps, 6))
    a_np, w_np, path_np, losses = a0[:m].copy(), w0[:, :m].copy(), 0.0, {}
    for s in range(steps + 1):
        h = x[:n] @ w_np
        r = np.tanh(h) @ a_np - y[:n]
        losses[s] = np.mean(r**2) / 0.7
        if s == steps:
            break
        ga = np.tanh(h).T @ r / n
        gw = x[:n].T @ (r[:, None] * a_np[None, :] * (1 - np.tanh(h) ** 2)) / n
        path_np += lr * np.sqrt(np.sum(ga**2) + np.sum(gw**2))
        a_np, w_np = a_np - lr * ga, w_np - lr * gw
    np.testing.assert_allclose(np.asarray(a)[:m], a_np, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(np.asarray(w)[:, :m], w_np, rtol=1e-12, atol=1e-14)
    assert np.all(np.asarray(a)[m:] == 0) and np.all(np.asarray(w)[:, m:] == 0)
    assert int(done) == steps and abs(float(path) - path_np) < 1e-12 * path_np
    np.testing.assert_allclose(np.asarray(c_loss), [losses[int(s)] for s in c_steps], rtol=1e-12)


def test_rate_fits_recover_known_slopes():
    t = jnp.asarray(np.geomspace(1.0, 1e3, 12))
    mask = jnp.arange(12) >= 3
    slope, r2 = R.masked_slope(t, -0.05 * t + 2.0, mask)
    assert abs(float(slope) + 0.05) < 1e-6 and abs(float(r2) - 1) < 1e-6
    slope, r2 = R.masked_slope(jnp.log(t), -1.5 * jnp.log(t), mask)
    assert abs(float(slope) + 1.5) < 1e-6
    assert np.isnan(float(R.masked_slope(t, t, jnp.arange(12) < 2)[0]))
    g = R.log_grid(1000, 24)
    assert len(g) == 24 and g[0] == 1 and g[-1] == 1000 and np.all(np.diff(g) > 0)


def test_large_n_small_epsilon_recovers_every_seed():
    out = _run(SEEDS, **TINY, n=16, epsilon=0.01)  # n = 4 k (d + 1)
    assert out["recovered"].all(), out["test_mse"]
    assert np.all(out["test_mse"] < 1e-2 * out["init_test_mse"])
    assert np.all(out["displacement"] < 0.1) and not np.isnan(out["rate_pow"]).any()


def test_small_n_local_init_interpolates_without_recovery():
    out = _run(SEEDS, **TINY, n=2, epsilon=0.01)  # n = k (d + 1) / 2
    assert out["interpolated"].all() and not out["recovered"].any()


def test_random_init_small_n_overfits_for_most_seeds():
    out = _run(SEEDS, **TINY, n=2, init="random")
    assert out["overfits"].sum() >= 6, (out["train_loss"], out["test_mse"])
    assert np.median(out["test_mse"]) > 0.1


@pytest.mark.parametrize("init,n", [("local", 16), ("random", 2)])
def test_halving_the_step_keeps_the_outcome(init, n):
    """Same gradient-flow time t = steps * lr with half the step: same flags, close test MSE."""
    kw = dict(TINY, n=n, init=init, epsilon=0.01)
    full = _run(SEEDS, **kw)
    half = _run(SEEDS, **(kw | dict(lr=TINY["lr"] / 2, steps=2 * TINY["steps"])))
    for flag in ("recovered", "interpolated"):
        np.testing.assert_array_equal(full[flag], half[flag])
    # the flows stop at the same tolerance: the limits agree to a few per cent in test MSE
    np.testing.assert_allclose(np.log(full["test_mse"]), np.log(half["test_mse"]), atol=0.3)


def test_bad_variants_are_reported():
    base = dict(d=3, k=1, m=2, m_max=4, n=4, n_max=8, steps=100, n_log=8)
    R.check(base)
    for bad in (dict(m=5), dict(n=9), dict(k=4, m=4), dict(steps=10)):
        with pytest.raises(ValueError):
            R.check(base | bad)
    out = _run(SEEDS, **(TINY | dict(n=17)))  # n > n_max inside a sweep: nan, flagged
    assert np.isnan(out["test_mse"]).all() and out["diverged"].all()


def test_smoke_preset_end_to_end(smoke_run):
    from jaxbench import store

    out = smoke_run("local_recovery")
    res = store.load(out)
    assert len(res.table["variant"]) == res.meta["n_variants"] and not res.table["diverged"].any()
    for name in FIGURES:
        for ext in ("png", "pdf"):
            assert (Path(out) / f"{name}.{ext}").stat().st_size > 1000, name
    assert res.arrays["curve_loss"].shape == (res.meta["n_variants"], 9)


def test_branches_figure_from_a_written_table(tmp_path):
    """The "branches" preset's figure (split swept), drawn from files only."""
    from jaxbench import store
    from jaxbench.experiments import recovery_plot

    rows = [dict(variant=i, n=n, m=6, split=sp, epsilon=0.01, init="local", activation="tanh",
                 seed=s, diverged=False, recovered=bool(n >= 12 + 4 * (sp == 0)), overfits=False)
            for i, (n, sp, s) in enumerate((n, sp, s) for n in (8, 12, 16, 20) for sp in (0.0, 1.0)
                                           for s in range(2))]
    meta = {"experiment": "local_recovery", "scale": "branches", "n_variants": len(rows),
            "config": {"fixed": {"d": 5, "k": 2}}}
    store.write_results(tmp_path, rows, {}, meta)
    paths = recovery_plot.plot(tmp_path)
    assert sorted(p.name for p in paths) == ["recovery_branches.pdf", "recovery_branches.png"]
    assert all(p.stat().st_size > 1000 for p in paths)
