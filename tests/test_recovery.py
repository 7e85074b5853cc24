"""Experiment 2 (jaxbench.experiments.recovery): geometry of Q*, distance to Q*, descents, sweeps."""

import dataclasses
import functools
import itertools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend import core as jcore

from jaxbench import compat
from jaxbench.experiments.recovery import local_recovery as R
from jaxbench.experiments.recovery import dynamics as D
from jaxbench.experiments.recovery import geometry as G

ROOT = Path(__file__).resolve().parents[1]
_STATIC_NAMES = [k for k, p in R.PARAMS.items() if p.kind == "static"]
Static = dataclasses.make_dataclass("Static", _STATIC_NAMES, frozen=True)


@functools.lru_cache(maxsize=None)
def _compiled(static, n_variants):
    """vmap of run_one with its LAPACK calls ordered (jaxlib 0.10 deadlock, compat), as the engine runs it."""
    def one(tr):
        return R.run_one(static, {k: v for k, v in tr.items() if k != "seed"}, jax.random.PRNGKey(tr["seed"]))

    shapes = {k: jax.ShapeDtypeStruct((), jnp.int32 if (k == "seed" or R.PARAMS[k].type is int) else jnp.float64)
              for k in [*(k for k, p in R.PARAMS.items() if p.kind == "traced"), "seed"]}
    closed, out_shapes = jax.make_jaxpr(one, return_shape=True)(shapes)
    fun, tree = jcore.jaxpr_as_fun(compat.serialize_lapack(closed)), jax.tree.structure(out_shapes)
    return jax.jit(jax.vmap(lambda tr: jax.tree.unflatten(tree, fun(*jax.tree.leaves(tr)))))


def _run(seeds, per_variant=None, **kw):
    """run_one over seeds (float64); per_variant: traced values given per seed. Numpy outputs."""
    st = Static(**{k: kw.get(k, R.PARAMS[k].default) for k in _STATIC_NAMES})
    with jax.enable_x64(True):
        tr = {k: jnp.full((len(seeds),), kw.get(k, p.default), jnp.int32 if p.type is int else jnp.float64)
              for k, p in R.PARAMS.items() if p.kind == "traced"}
        for k, v in (per_variant or {}).items():
            tr[k] = jnp.asarray(v, tr[k].dtype)
        tr["seed"] = jnp.asarray(seeds, jnp.int32)
        return jax.tree.map(np.asarray, _compiled(st, len(seeds))(tr))


def _split_point(d, k, m, m_max, split, seed=0):
    g = np.random.default_rng(seed).normal(size=k + d * k + d * m_max + m_max)
    with jax.enable_x64(True):
        a_s, w_s = G.teacher(jnp.asarray(g[:k]), jnp.asarray(g[k:k + d * k]).reshape(d, k))
        rest = jnp.asarray(g[k + d * k:])
        a, w, owner = G.split_point(rest[:d * m_max].reshape(d, m_max), rest[d * m_max:], a_s, w_s, m, split)
    return tuple(map(np.asarray, (a, w, owner, a_s, w_s)))


# ----------------------------------------------------------------------------- must hold: model rank

# one static configuration for every run_one test (one compilation): k (d + 1) = 8, P <= 16
SMALL = dict(d=3, k=2, m_max=4, n_max=14, n_test=400, n_rank=100, method="lm", steps=200, n_save=8, epsilon=0.01)
SEEDS = list(range(6)) * 2


@pytest.mark.parametrize("m,split", [(4, 0.0), (4, 0.5)])
def test_jacobian_rank_at_split_point_is_k_d1_plus_zero_output(m, split):
    """Rank of the n x P Jacobian at the split construction (float64) = k(d+1) + #zero-output
    neurons, from jax.jacfwd of the network and numpy's rank (independent of the closed-form
    Jacobian and SVD the experiment uses)."""
    d, k = SMALL["d"], SMALL["k"]
    zero_out = (m - k) - round(split * (m - k))
    a, w, owner, _, _ = _split_point(d, k, m, m, split)
    assert (owner == -1).sum() == zero_out
    x = np.random.default_rng(1).normal(size=(120, d))
    with jax.enable_x64(True):
        jac = jax.jacfwd(lambda th: G.forward(*G.unflat(th, d), jnp.asarray(x)))(G.flat(jnp.asarray(a), jnp.asarray(w)))
        np.testing.assert_allclose(jac, G.jacobian(jnp.asarray(a), jnp.asarray(w), jnp.asarray(x)), atol=1e-14)
    s = np.linalg.svd(np.asarray(jac), compute_uv=False)
    expected = k * (d + 1) + zero_out
    assert np.linalg.matrix_rank(np.asarray(jac), tol=1e-9 * s[0]) == expected
    assert s[expected - 1] / s[0] > 1e-4 and s[expected] / s[0] < 1e-13  # a clean gap


def test_threshold_column_is_the_rank_of_the_split_construction():
    """The experiment's threshold column (SVD of the closed-form Jacobian on n_rank test inputs)
    on the two cases above: 8 + 2 = 10 (split 0: two zero-output neurons), 8 + 1 = 9 (split 0.5)."""
    out = _run(SEEDS, per_variant=dict(split=[0.0] * 6 + [0.5] * 6, n=[5] * 12), m=4, **SMALL)
    assert list(out["threshold"]) == [10] * 6 + [9] * 6 and np.all(out["threshold"] == out["rank_formula"])
    assert np.all(out["rank_n"] == 5) and np.all(out["rank_gap_log10"] > 8)
    assert list(out["tangent_dim"]) == [2 * 3] * 6 + [1 + 3] * 6  # (copies - k) + d z


# ----------------------------------------------------------------------------- must hold: distance to Q*

def _brute_dist(a, w, a_s, w_s):
    """Distance to Q* by enumerating every labelling of the neurons (teacher j with a sign, null
    group g with a sign, or zero input) and projecting onto that affine piece with numpy lstsq."""
    d, m = w.shape
    k = len(a_s)
    theta = np.concatenate([a, w.T.ravel()])
    labels = [("t", j, s) for j in range(k) for s in (1, -1)] + [("g", g, s) for g in range(m) for s in (1, -1)] + [("z",)]
    best = np.inf
    for lab in itertools.product(labels, repeat=m):
        if any(not any(x[0] == "t" and x[1] == j for x in lab) for j in range(k)):
            continue
        rows, rhs = [], []

        def row():
            r = np.zeros(m * (d + 1))
            rows.append(r)
            return r

        for j in range(k):
            r = row()
            rhs.append(a_s[j])
            for i, x in enumerate(lab):
                if x[0] == "t" and x[1] == j:
                    r[i] = x[2]
                    for q in range(d):
                        row()[m + i * d + q] = 1.0
                        rhs.append(x[2] * w_s[q, j])
        for g in range(m):
            members = [(i, x[2]) for i, x in enumerate(lab) if x[0] == "g" and x[1] == g]
            if not members:
                continue
            r = row()
            rhs.append(0.0)
            for i, s in members:
                r[i] = s
            (i0, s0), rest = members[0], members[1:]
            for i, s in rest:
                for q in range(d):
                    r = row()
                    r[m + i * d + q], r[m + i0 * d + q] = s, -s0
                    rhs.append(0.0)
        for i, x in enumerate(lab):
            if x[0] == "z":
                for q in range(d):
                    row()[m + i * d + q] = 1.0
                    rhs.append(0.0)
        A, b = np.array(rows), np.array(rhs)
        delta = np.linalg.lstsq(A, b - A @ theta, rcond=None)[0]
        if np.allclose(A @ (theta + delta), b, atol=1e-9):
            best = min(best, np.linalg.norm(delta))
    return best


@pytest.mark.parametrize("d,k,m,split", [(3, 1, 3, 0.5), (3, 2, 4, 0.5), (2, 1, 4, 1.0)])
def test_distance_to_q_is_zero_on_q_and_invariant_to_permutations_and_sign_flips(d, k, m, split):
    a, w, owner, a_s, w_s = _split_point(d, k, m, m, split, seed=m)
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        dist = jax.jit(G.dist_q)
        assert float(dist(a, w, a_s, w_s)) < 1e-12
        for _ in range(5):
            perm, sign = rng.permutation(m), rng.choice([-1.0, 1.0], m)
            assert float(dist(sign * a[perm], sign * w[:, perm], a_s, w_s)) < 1e-12
        # away from Q*: the same distance for every relabelled copy, and the brute-force value
        a2, w2 = a + 0.3 * rng.normal(size=m), w + 0.3 * rng.normal(size=(d, m))
        ref = float(dist(a2, w2, a_s, w_s))
        perm, sign = rng.permutation(m), rng.choice([-1.0, 1.0], m)
        assert abs(float(dist(sign * a2[perm], sign * w2[:, perm], a_s, w_s)) - ref) < 1e-12
        if m <= 3 or k == 1 and m <= 4 and d <= 2:
            assert abs(_brute_dist(a2, w2, a_s, w_s) - ref) < 1e-9


def test_distance_to_q_matches_brute_force_on_random_points():
    """Against the brute-force projection, including points near cancelling pairs and zero inputs."""
    rng = np.random.default_rng(3)
    d, k, m = 2, 1, 3
    a_s, w_s = np.array([0.9]), np.array([[0.6], [0.8]])
    pts = [(rng.normal(size=m), rng.normal(size=(d, m))) for _ in range(4)]
    v = rng.normal(size=d)
    pts.append((np.array([0.9, 0.7, -0.68]), np.stack([w_s[:, 0], v, -v + 0.01], axis=1)))  # cancelling pair
    pts.append((np.array([0.8, 2.0, 0.1]), np.stack([w_s[:, 0], 0.02 * v, -w_s[:, 0]], axis=1)))  # zero input
    with jax.enable_x64(True):
        for a, w in pts:
            assert abs(float(G.dist_q(a, w, a_s, w_s)) - _brute_dist(a, w, a_s, w_s)) < 1e-9


def test_branch_dimensions_and_separation_count():
    """The formulas on hand-made owners (the tangent dimension is checked numerically below)."""
    for own, z, extra, tangent, count in (([0, 1, 0, 1, -1, -1], 2, 2, 2 + 10, 14 + 10),
                                          ([0, 1, 0, 1, 0, 1], 0, 4, 4, 12 + 20 - 2),
                                          ([0, 1, -1, -1, -1, -1], 4, 0, 20, 16)):
        with jax.enable_x64(True):
            dims = tuple(map(int, G.branch_dims(jnp.asarray(own), 2, 5)))
            assert dims == (z, extra, 12 + z, tangent)
            assert int(G.separation_count(jnp.asarray(own), 2, 5)) == count


@pytest.mark.slow
def test_tangent_dimension_is_the_corank_of_the_hessian_of_dist2():
    """Tangent dimension of Q* at a split point = P - rank of the Hessian of dist^2 (numerical,
    from the distance function, independent of the branch's parameterization)."""
    d, k, m = 3, 2, 4
    a, w, owner, a_s, w_s = _split_point(d, k, m, m, 0.5, seed=2)
    with jax.enable_x64(True):
        z, extra, rank, tangent = map(int, G.branch_dims(jnp.asarray(owner), k, d))
        h = jax.hessian(lambda th: G.dist2_q(*G.unflat(th, d), a_s, w_s))(G.flat(jnp.asarray(a), jnp.asarray(w)))
    assert (z, extra, rank) == (1, 1, k * (d + 1) + 1)
    assert m * (d + 1) - np.linalg.matrix_rank(np.asarray(h), tol=1e-8) == tangent == extra + d * z


# ----------------------------------------------------------------------------- must hold: ODE vs GD

def _problem(seed=0, n=10, m=4, d=3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(12, d))
    a_s, w_s = np.array([1.0, -0.7]), np.linalg.qr(rng.normal(size=(d, 2)))[0]
    y = np.tanh(x @ w_s) @ a_s
    theta0 = np.concatenate([0.5 * rng.normal(size=m), rng.normal(size=d * m) / np.sqrt(d)])
    return (jnp.asarray(v) for v in (theta0, x, y, np.arange(12) < n))


def test_gradient_flow_ode_agrees_with_small_step_gradient_descent():
    """diffrax's solve and explicit Euler with lr = 1e-3 (and lr / 2) agree on t <= 20."""
    with jax.enable_x64(True):
        theta0, x, y, rows = _problem()
        ts = jnp.array([2.5, 5.0, 10.0, 20.0])
        ode, t_stop, _, ok = jax.jit(lambda th: D.gradient_flow(th, x, y, rows, 0.7, ts, rtol=1e-10, stop_loss=0.0,
                                                                max_steps=4000, d=3))(theta0)
        assert bool(ok) and float(t_stop) == 20.0
        for lr in (1e-3, 5e-4):
            grid = np.round(np.asarray(ts) / lr).astype(int)
            steps, _, gd = jax.jit(lambda th: D.gradient_descent(th, x, y, rows, 0.7, lr, 0.0, grid, d=3))(theta0)
            np.testing.assert_array_equal(steps, grid)
            loss = jax.vmap(D.rel_loss_fn(x, y, rows, 0.7, 3))
            err = np.abs(np.asarray(gd) - np.asarray(ode)).max()
            assert err < 40 * lr * np.abs(np.asarray(ode)).max(), (lr, err)  # first order in lr
            np.testing.assert_allclose(loss(gd), loss(ode), rtol=80 * lr)
        assert float(loss(ode)[-1]) < 0.5 * float(loss(theta0[None])[0])


def test_closed_form_hessian_matches_autodiff():
    with jax.enable_x64(True):
        theta0, x, y, rows = _problem(seed=1)
        theta = theta0.at[3].set(0.0)  # an a = 0 neuron
        h = D.loss_hessian(theta, x, y, rows, 0.7, 3)
        np.testing.assert_allclose(h, jax.hessian(D.rel_loss_fn(x, y, rows, 0.7, 3))(theta), atol=1e-13)
        field = D.flow_field(x, y, rows, 0.7, 3)
        v = jnp.arange(theta.size, dtype=theta.dtype)
        np.testing.assert_allclose(jax.jvp(field, (theta,), (v,))[1], -0.35 * h @ v, atol=1e-12)


def test_levenberg_marquardt_reaches_zero_loss_and_gd_matches_numpy():
    with jax.enable_x64(True):
        theta0, x, y, rows = _problem(seed=2, n=8)
        it, loss, thetas = jax.jit(lambda th: D.levenberg_marquardt(th, x, y, rows, 0.7, 1e-24, D.log_grid(200, 8), d=3))(theta0)
        assert float(loss[-1]) <= 1e-24 and int(it[-1]) < 200
        _, _, gd = D.gradient_descent(theta0, x, y, rows, 0.7, 0.1, 0.0, np.array([60]), d=3)
    th, xs, ys, n = np.asarray(theta0), np.asarray(x)[:8], np.asarray(y)[:8], 8
    a, w = th[:4].copy(), th[4:].reshape(4, 3).T.copy()
    for _ in range(60):  # L_rel = mean r^2 / 0.7, step lr * 0.7 / 2 on grad L_rel = lr * grad (mean r^2 / 2)
        h = np.tanh(xs @ w)
        r = h @ a - ys
        ga, gw = h.T @ r / n, xs.T @ (r[:, None] * a[None, :] * (1 - h**2)) / n
        a, w = a - 0.1 * ga, w - 0.1 * gw
    np.testing.assert_allclose(np.asarray(gd[-1]), np.concatenate([a, w.T.ravel()]), rtol=1e-12, atol=1e-14)


@jax.enable_x64(True)
def test_rate_fits_recover_known_laws():
    t = jnp.asarray(np.geomspace(1.0, 1e4, 30))
    fit = D.rate_fits(t, 3.0 * jnp.exp(-2e-3 * t), 1e-22, 100.0)
    assert abs(float(fit["rate_exp"]) - 2e-3) < 1e-9 and float(fit["r2_exp"]) > 0.999 > float(fit["r2_pow"])
    fit = D.rate_fits(t, 5.0 * t**-1.5, 1e-22, 100.0)
    assert abs(float(fit["rate_pow"]) - 1.5) < 1e-9 and float(fit["r2_pow"]) > 0.999 > float(fit["r2_exp"])
    # points at the floor are left out: the window ends at the last point above it
    fit = D.rate_fits(t, jnp.maximum(jnp.exp(-0.05 * t), 1e-30), 1e-22, 100.0)
    assert abs(float(fit["rate_exp"]) - 0.05) < 1e-6 and float(fit["t_fit_end"]) < 1.1e3


# ----------------------------------------------------------------------------- the experiment

def test_local_runs_reach_a_non_q_minimum_below_the_rank_and_q_above_it():
    """split = 0 (no degenerate directions, rank = count = 2 (d+1) + 2 = 10 for d = 3, m = 4):
    below, every end point is a zero-loss point outside Q* at a distance ~ the start's; above, in Q*."""
    out = _run(SEEDS, per_variant=dict(n=[6] * 6 + [14] * 6), m=4, split=0.0, **SMALL)
    lo, hi = slice(0, 6), slice(6, 12)
    assert np.all(out["threshold"] == 10) and np.all(out["sep_count"] == 10)
    assert out["converged"].all() and out["other_min"][lo].all() and out["in_q"][hi].all()
    assert np.all(out["rank_end"][lo] == 6)  # J_n has full row rank at the non-Q* minima
    ratio = out["dist_end"][lo] / out["dist_start"][lo]
    assert np.all((ratio > 0.2) & (ratio < 1.0)) and np.all(out["dist_end"][hi] < 1e-8)
    assert not out["recovered_rel"][lo].any() and out["recovered_rel"][hi].all()


def test_bad_variants_are_reported():
    base = dict(d=3, k=1, m=2, m_max=4, n=4, n_max=8, n_test=100, n_rank=50, n_save=8, steps=100, method="lm")
    R.check(base)
    for bad in (dict(m=5), dict(n=9), dict(k=4, m=4), dict(n_rank=200), dict(m_max=11), dict(steps=4)):
        with pytest.raises(ValueError):
            R.check(base | bad)
    out = _run(SEEDS, per_variant=dict(n=[15] * 6 + [6] * 6), m=4, **SMALL)  # n > n_max inside a sweep
    assert out["diverged"][:6].all() and np.isnan(out["test"][:6]).all() and not out["diverged"][6:].any()


@pytest.mark.parametrize("name,figures", [
    ("local_recovery", ("recovery_n", "geometry", "rates", "flow_vs_lm")),
    ("local_recovery_separation", ("separation", "endpoints")),
    ("local_recovery_random", ("random_init",))])
def test_smoke_presets_write_figures_and_claims(name, figures, smoke_run):
    from jaxbench import report, store

    out = smoke_run(name)
    res = store.load(out)
    assert len(res.table["variant"]) == res.meta["n_variants"]
    for f in figures:
        assert (Path(out) / f"{f}.png").stat().st_size > 1000, f
    rows = report.checks_of(Path(out))
    assert rows and all(r.verdict in report.VERDICTS for r in rows)
    assert not any("failed to run" in r.claim for r in rows)
