"""Must-hold on the COMMITTED default results of experiment 4 (results/info_*): every bound is at
least the Monte Carlo generalization gap in every row (He & Goldfeld, arXiv 2404.03176; our bound
forms, docs/experiments/info_bounds.md). The minimum ratio is printed (pytest -s) and is reported
by the claims in results/REPORT.md. A results folder that is not there is skipped."""

from pathlib import Path

import numpy as np
import pytest

from jaxbench import store

RESULTS = Path(__file__).resolve().parents[1] / "results"


def _load(name):
    d = RESULTS / name
    if not (d / "table.csv").exists():
        pytest.skip(f"{d} not committed")
    res = store.load(d)
    ok = ~np.asarray(res.table["diverged"], bool)
    assert ok.all(), f"{name}: {int((~ok).sum())} diverged rows"
    return res.table, res.arrays


def test_info_bounds_every_linear_bound_at_least_the_gap():
    t, a = _load("info_bounds")
    lin = np.flatnonzero(t["model"] == "linear")
    assert lin.size
    ratios = []
    for i in lin:
        L = int(t["depth"][i])
        gap, se = float(t["gap"][i]), float(t["gap_se"][i])
        assert gap - 2 * se > 0, (i, gap, se)  # a resolved gap to bound
        for key in ("kl_bound", "w1_bound"):
            b = np.asarray(a[key][i, : L + 1], float)
            assert np.all(np.isfinite(b)) and np.all(b >= gap), (i, key, b, gap)
            ratios.append(b.min() / gap)
    print(f"info_bounds: min bound / gap over {lin.size} linear rows, every layer: {min(ratios):.3f}")


def test_info_linear_every_bound_at_least_the_gap():
    t, a = _load("info_linear")
    K = np.asarray(t["depth"], int) - 1
    r01, rw1 = [], []
    for i in range(len(K)):
        gap01 = float(t["gap01"][i]) + 2 * float(t["gap01_se"][i])  # MC 0-1 gap, upper end
        for key in ("klb_uncontracted", "klb_contracted"):
            b = np.asarray(a[key][i, : K[i] + 1], float)
            assert np.all(b >= gap01), (i, key, b, gap01)
            r01.append(b.min() / gap01)
        w1 = np.asarray(a["w1_bound"][i, : K[i] + 1], float)
        if np.isfinite(w1).all():  # evaluated for none / gauss (Gelbrich W2 >= W1)
            assert np.all(w1 >= float(t["gap_lin"][i])), (i, w1, t["gap_lin"][i])
            rw1.append(w1.min() / float(t["gap_lin"][i]))
    assert rw1
    print(f"info_linear: min KL bound / (0-1 gap + 2 s.e.) {min(r01):.3f}; min W1 bound / linear gap {min(rw1):.3f}")


def test_info_gibbs_bound_at_least_the_exact_gap():
    t, _ = _load("info_gibbs")
    top = np.asarray(t["gap"], float) + 2 * np.asarray(t["gap_se"], float)
    for key in ("bound_tv", "bound_mi"):
        b = np.asarray(t[key], float)
        assert np.all(b >= top), (key, np.flatnonzero(b < top))
    print(f"info_gibbs: min tanh bound / (gap + 2 s.e.) {np.min(np.asarray(t['bound_tv'], float) / top):.3f}")


@pytest.mark.parametrize("name", ["info_bounds", "info_linear", "info_gibbs"])
def test_claims_of_the_committed_results_run(name):
    from jaxbench import experiments

    _load(name)
    checks = experiments.of_results(store.load_meta(RESULTS / name)).claims(RESULTS / name)
    assert checks and all(c.verdict in ("reproduced", "partly", "not reproduced", "inconclusive") for c in checks)
    assert all("nan" not in c.measured.lower() for c in checks), [c.measured for c in checks]
