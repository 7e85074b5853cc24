"""Experiments "lambda_validation" and "free_energy": closed-form checks and smoke presets end to end."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbench.experiments.freeenergy import free_energy as freeenergy, lambda_validation


def _static_traced(module, **kw):
    d = {k: p.default for k, p in module.PARAMS.items()}
    d.update(kw)
    st = {k: module.PARAMS[k].validate(k, v) for k, v in d.items() if module.PARAMS[k].kind == "static"}
    tr = {k: jnp.asarray(v, jnp.int32 if module.PARAMS[k].type is int else jnp.float32)
          for k, v in d.items() if module.PARAMS[k].kind == "traced"}
    return dataclasses.make_dataclass("Static", list(st), frozen=True)(**st), tr


def test_reduced_rank_lambda_hat_sampler_and_statistical_check():
    """rrr 2-5-2 r1 (Aoyagi-Watanabe case 3, lambda = 2, while d/2 = 10) in one compiled call:
    noise-free centred at the truth within 10%, noisy at find_minimum's w* within 15% (one seed),
    the closed-form minimum reached, and the columns the table needs present."""
    s, tr = _static_traced(lambda_validation, model="rrr", depth=2, pad=5, in_dim=2, out_dim=2, h1=5, rank=1,
                           n=1000, chains=4, draws=1000, burnin=1000)
    run = jax.jit(jax.vmap(functools.partial(lambda_validation.run_one, s), in_axes=(0, None)))
    trs = {k: jnp.stack([v, v]) for k, v in tr.items()}
    trs["noise_std"] = jnp.array([0.0, 1.0])
    out = run(trs, jax.random.key(0))
    lam, true = np.asarray(out["lambda_hat"]), np.asarray(out["lambda_true"])
    assert np.all(true == 2.0) and np.all(np.asarray(out["multiplicity"]) == 1)
    assert abs(lam[0] / 2 - 1) < 0.10 and abs(lam[1] / 2 - 1) < 0.15, lam
    assert np.all(np.asarray(out["d_half"]) == 10.0)       # the naive count d/2 is far off: a real test
    assert np.all(np.asarray(out["wstar_ok"])) and abs(float(out["wstar_gap"][1])) < 1e-5
    for k in ("lambda_se", "rhat", "ess", "accept", "split_z", "plateau_z", "var_rel", "converged", "lambda_corrected"):
        assert out[k].shape == (2,), k


@pytest.mark.parametrize("depth,dims", [(1, (4, 2)), (2, (3, 2, 4)), (5, (3, 4, 2, 4, 3, 3))])
def test_sufficient_statistic_loss_is_the_per_example_loss(depth, dims):
    """The loss the estimators see (`stats_nll_fn`: L_n from X^T X / n, the least-squares fit and
    its residual) equals the mean per-example loss (`nll_fn`) at any parameters, gradient
    included (float64)."""
    with jax.enable_x64(True):
        pad = max(dims) + 1
        s = dataclasses.make_dataclass("S", ["pad", "depth"], frozen=True)(pad, depth)
        d = jnp.asarray(dims)
        masks = lambda_validation._masks(s, d)
        in_mask = (jnp.arange(pad) < dims[0]).astype(jnp.float64)
        k1, k2, k3 = jax.random.split(jax.random.key(3), 3)
        x = jax.random.normal(k1, (500, pad), jnp.float64) * in_mask
        truth = lambda_validation.truth(s, d, 1, k2)
        y = lambda_validation.nll_apply(truth, masks, x) + jax.random.normal(k3, (500, pad), jnp.float64)
        per_example = lambda p: jnp.mean(lambda_validation.nll_fn(masks, pad)(p, (x, y)))
        stats = lambda_validation.sufficient_stats(x, y, in_mask, pad)
        suff = lambda p: jnp.sum(jnp.full((1,), 500.0) * lambda_validation.stats_nll_fn(masks)(p, stats)) / 500
        for k in range(3):
            p = [0.5 * jax.random.normal(jax.random.fold_in(jax.random.key(k), l), (pad, pad), jnp.float64)
                 for l in range(depth)]
            np.testing.assert_allclose(suff(p), per_example(p), rtol=1e-12)
            for a, b in zip(jax.grad(suff)(p), jax.grad(per_example)(p)):
                np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("width,depth", [(3, 1), (6, 2), (12, 3), (24, 4)])
def test_sweep_embedding_is_the_teacher(width, depth):
    """The experiment's embedded start (float32, as the sweep runs it) computes its own teacher
    on the box; the float64 exactness test of the construction is tests/test_freeenergy_embedding.py."""
    s, _ = _static_traced(freeenergy, width=width, depth=depth)
    x = jax.random.uniform(jax.random.key(1), (500, 2), minval=-1, maxval=1)
    params, C = freeenergy.embedded(s)
    f_student = freeenergy.mlp.apply(freeenergy.student(s), params, x)[:, 0]
    np.testing.assert_allclose(f_student, freeenergy.teacher_fn(s)(x), atol=1e-5)
    assert (C == 0.0) == (depth == 1)


def test_teacher_bound_and_teacher_units_are_active():
    assert freeenergy.teacher_bound(2, 3) == 5.0
    s, _ = _static_traced(freeenergy)
    v, c, _, _ = freeenergy.teacher_np(s)
    x = np.asarray(jax.random.uniform(jax.random.key(0), (4000, 2), minval=-1, maxval=1))
    active = np.mean(x @ v + c > 0, axis=0)
    assert np.all((active > 0.05) & (active < 0.95))   # every teacher unit matters on the box


@pytest.mark.parametrize("override,msg", [
    ("depth = 0", "depth = 0: must be > 0"),
    ("width = 2", "width = 2 must be >= teacher_width = 3"),
    ("n = 0.0", "n = 0.0: must be > 0"),
    ("n = -5.0", "n = -5.0: must be > 0"),
    ("rungs = 1", "rungs = 1: must be even and >= 2"),
    ("ais_rungs = 1", "ais_rungs = 1: must be >= 2"),
    ("smc_runs = 1", "smc_runs = 1: must be >= 2"),
    ('smc_sampler = "sgld"', "must be one of ['mala', 'hmc']"),
    ("smc_leapfrog = 0", "smc_leapfrog = 0: must be >= 1"),
    ("gen_chains = 5", "gen_chains = 5: must be even and >= 4"),
])
def test_bad_free_energy_sweep_values_give_one_clear_line(tmp_path, root, override, msg):
    """Must hold (issue 15): depth 0, width below the teacher's, n <= 0, rungs < 2 are refused
    before anything runs, with one line on stderr and a non-zero exit code (the CLI)."""
    import subprocess
    import sys
    body = f'experiment = "free_energy"\n[fixed]\n{override}\n'
    f = tmp_path / "fe.toml"
    f.write_text(body)
    r = subprocess.run([sys.executable, "-m", "jaxbench", "sweep", str(f), "--dry-run"],
                       capture_output=True, text=True, cwd=root)
    assert r.returncode != 0
    err = r.stderr.strip()
    assert msg in err and len(err.splitlines()) == 1, err


@pytest.mark.parametrize("sweep,figures", [
    ("lambda_validation", ["lambda_validation"]),
    ("free_energy", ["lambda_vs_params", "free_energy_vs_logn", "gen_error_vs_n", "diagnostics", "overfit_minima"]),
])
def test_smoke_preset_end_to_end(smoke_run, sweep, figures):
    from jaxbench import store
    out = smoke_run(sweep)
    for f in figures:
        assert (out / f"{f}.png").exists() and (out / f"{f}.pdf").exists()
    t = store.load(out).table
    assert np.all(np.isfinite(np.asarray(t["lambda_hat"], float)))
    if sweep == "free_energy":
        # every row carries its diagnostics (Must hold, issue 15); the parts a row ran are finite
        for k in ("rhat", "ess", "accept", "split_z", "plateau_z", "var_rel", "wstar_ok", "grad_norm", "kink_grad",
                  "teacher_gap", "test_mse", "converged", "ti_converged", "smc_converged", "ais_converged",
                  "gen_converged"):
            assert k in t, k
        g = np.asarray(t["global_fe"]) == 1
        for k in ("f_ti", "f_smc", "f_smc_se", "smc_agree_z", "smc_ess_min", "f_ais", "ais_weight_ess", "gen_error",
                  "gen_split_z", "gen_rhat"):
            assert np.all(np.isfinite(np.asarray(t[k], float)[g])), k
        assert not np.any(np.asarray(t["diverged"], bool))
        checks = freeenergy.claims(out)
        assert len(checks) == 3 and all(c.verdict in ("reproduced", "partly", "not reproduced", "inconclusive")
                                        for c in checks)


def test_smoke_validation_hits_the_closed_forms(smoke_run):
    """The must-hold bands on the smoke preset (linear 3-1 and rrr 2-3-2 r1 at n = 1000, 4 seeds,
    both checks): the mean over seeds within 10% (sampler check) / 15% (statistical check) of
    lambda, with s.e./lambda <= 5%, and w* reaching the closed-form minimum."""
    from jaxbench.experiments.freeenergy import validation_claims as lc
    cases = lc.cases(smoke_run("lambda_validation"))
    assert {c["check"] for c in cases} == {"sampler", "statistical"} and len(cases) == 4
    for c in cases:
        assert lc.within(c), (c["check"], c["label"], c["rel_err"])
        assert c["se"] / c["lambda"] <= lc.SE_MAX, (c["check"], c["label"], c["se"])
        assert np.all(c["wstar_ok"]) and np.max(np.abs(c["wstar_gap"])) <= 1e-5, c["label"]


# The one case the sampler check does not judge (docs/experiments/lambda_validation.md, "The order
# of the pole"): dln 3-3-3-3-3-3 r1, whose pole has order m = 7 (Aoyagi's a(l - a) + 1 with l = 5,
# a = 2): at nbeta = 145 the first-order correction (m - 1)/log(nbeta) = 1.2 is 30% of lambda, and
# on the exactly solvable chain of order 5 the estimator's exact finite-n value lies far from both
# lambda and the first-order value, so neither is a target for it. Its estimate is the same with
# MALA at 160,000 steps and HMC at 80,000-576,000 gradients, at gamma 0.01 and 0.1 and from
# n = 10^3 to 10^6. It is not exempt from honesty: it must be named in its claim row, and its
# measured shortfall is pinned (a change of the pipeline that moves it must be looked at).
SHORTFALLS = lambda c: c["label"] == "dln 3-3-3-3-3-3 r1"
SHORTFALL_RANGE = (-0.22, -0.05)   # measured vs lambda: -17.7% (sampler), -9.9% / -9.7% (statistical)


def test_committed_validation_results_hit_the_closed_forms(root):
    """The must-hold numbers, read from the committed default sweep (results/lambda_validation):
    sampler check at n = 1000 and statistical check at n = 1000 and 10000, 18 cases each, 8 seeds;
    every case's mean over seeds within 10% (sampler check; vs lambda - (m-1)/log(nbeta) allowed
    where m > 1, judged where that correction is within 10% of lambda) or 15% (statistical check,
    every case) of the closed form, with s.e./lambda <= 5%; the one case outside the sampler
    check's regime (above) stays where it was measured and is named in its claim row."""
    from jaxbench.experiments.freeenergy import validation_claims as lc
    out = root / "results" / "lambda_validation"
    cases = lc.cases(out)
    for check, n in (("sampler", 1000), ("statistical", 1000), ("statistical", 10000)):
        sel = [c for c in cases if c["check"] == check and c["n"] == n]
        assert len(sel) >= 18, (check, n, len(sel))
        assert {c["label"].split()[0] for c in sel} == {"linear", "rrr", "dln"}
        assert {c["label"].count("-") for c in sel if c["label"].startswith("dln")} >= {3, 4, 5}   # depth 3-5
    assert min(c["seeds"] for c in cases) >= 8
    apart = [(c["check"], c["label"]) for c in cases if not lc.in_regime(c)]
    assert apart == [("sampler", "dln 3-3-3-3-3-3 r1")], apart
    held = [c for c in cases if lc.in_regime(c)]
    assert len(held) == 3 * 18 - 1
    bad = [(c["check"], c["label"], c["n"], round(c["rel_err"], 3)) for c in held if not lc.within(c)]
    assert not bad, bad
    wide = [(c["check"], c["label"], c["n"], round(c["se"] / c["lambda"], 3)) for c in cases
            if c["se"] / c["lambda"] > lc.SE_MAX]
    assert not wide, wide
    rows = {r.claim: r for r in lc.claims(out)}
    for c in cases:
        if SHORTFALLS(c):
            assert c["m"] == 7 and SHORTFALL_RANGE[0] <= c["rel_err"] <= SHORTFALL_RANGE[1], (c["check"], c["n"], c["mean"])
            if not lc.in_regime(c):
                row = next(r for k, r in rows.items() if f"{c['check']} check, n = {c['n']}" in k)
                assert c["label"] in row.measured and "not judged" in row.measured, row


def test_every_free_energy_preset_loads(root):
    """Each preset of sweeps/free_energy.toml expands (no compilation): the paper preset once did
    not, its [zip] mixing the default's 20-long lists with its own 5-long ones."""
    from jaxbench import sweepfile
    sizes = {s: len(sweepfile.load(root / "sweeps" / "free_energy.toml", s).variants)
             for s in ("smoke", "default", "paper", "wide", "moves")}
    assert sizes == {"smoke": 6, "default": 160, "paper": 1280, "wide": 48, "moves": 136}


def test_slope_fits_recover_lambda_and_the_log_log_term():
    """F_n - n S_n = lambda log n - (m - 1) log log n + c, exactly, over five n spaced x3: the
    plain fit recovers lambda when m = 1; the fit with the log log n term recovers lambda = 5
    and m - 1 = 1 where the plain slope is biased (to 5 - 1 / mean log n); with one point too
    few each returns NaN."""
    from jaxbench.experiments.freeenergy.plots import fit_slope, fit_slope_loglog

    logn = np.log([300.0, 900, 2700, 8100, 24300])
    sem = np.full(5, 0.1)
    slope, se, icpt = fit_slope(logn, 5 * logn + 3, sem)
    assert abs(slope - 5) < 1e-9 and abs(icpt - 3) < 1e-9 and 0 < se < 0.1
    y = 5 * logn - np.log(logn) + 3
    lam, lam_se, mm1, mm1_se = fit_slope_loglog(logn, y, sem)
    assert abs(lam - 5) < 1e-9 and abs(mm1 - 1) < 1e-9 and lam_se > se and mm1_se > 0
    assert 4.7 < fit_slope(logn, y, sem)[0] < 4.9
    assert np.isnan(fit_slope(logn[:1], y[:1], sem[:1])[0])
    assert np.isnan(fit_slope_loglog(logn[:2], y[:2], sem[:2])[0])


@pytest.mark.parametrize("part", ["global_one_n", "local_only"])
def test_figures_draw_from_a_sweep_that_ran_one_part(smoke_run, tmp_path, part):
    """A sweep of one's own may run only the global part at a single n, or only the local part:
    every figure is still drawn (the empty panels say "not in this sweep"), never a traceback
    from a log axis with nothing on it (the diagnostics figure once raised there)."""
    from jaxbench import store
    res = store.load(smoke_run("free_energy"))
    t = res.table
    rows = [{k: v[i].item() for k, v in t.items()} for i in range(len(t["variant"]))]
    off = freeenergy.LOCAL_COLUMNS if part == "global_one_n" else freeenergy.GLOBAL_COLUMNS
    assert set(off) <= set(t), set(off) - set(t)
    if part == "global_one_n":
        n0 = min(r["n"] for r in rows if r["global_fe"] == 1)
        keep = [i for i, r in enumerate(rows) if r["global_fe"] == 1 and r["n"] == n0]
    else:
        keep = list(range(len(rows)))
    rows = [rows[i] for i in keep]
    for r in rows:
        r.update({k: (False if isinstance(r[k], bool) else float("nan")) for k in off})
        r["local" if part == "global_one_n" else "global_fe"] = 0
        r["rr_teacher_gap"] = r["rr_test_mse"] = float("nan")
    arrays = {k: v[keep] for k, v in res.arrays.items()}
    store.write_results(tmp_path, rows, arrays, res.meta)
    paths = freeenergy.plot(tmp_path)
    names = {p.stem for p in paths}
    assert {"free_energy_vs_logn", "lambda_vs_params", "gen_error_vs_n", "diagnostics"} <= names, names
    assert all(p.exists() and p.stat().st_size > 0 for p in paths)


def test_students_at_several_moves_per_rung_are_never_pooled(smoke_run, tmp_path):
    """The `moves` preset runs one student at several SMC moves per rung: claims and figures keep
    each (student, moves) its own series. Here the smoke's global rows again at 2 moves, their
    F_n raised by 3 log n: pooled, that student's slope would move by about 1.5; kept apart, the
    2-move series reads exactly 3 above the 1-move one."""
    from jaxbench import store
    from jaxbench.experiments.freeenergy.plots import fit_slope, global_students
    res = store.load(smoke_run("free_energy"))
    t = res.table
    rows = [{k: v[i].item() for k, v in t.items()} for i in range(len(t["variant"]))]
    glob = [i for i, r in enumerate(rows) if r["global_fe"] == 1]
    extra = [dict(rows[i], variant=len(rows) + j, smc_steps=2, f_ti=rows[i]["f_ti"] + 3 * np.log(rows[i]["n"]))
             for j, i in enumerate(glob)]
    arrays = {k: np.concatenate([v, v[glob]]) for k, v in res.arrays.items()}
    store.write_results(tmp_path, rows + extra, arrays, res.meta)
    t2 = store.load(tmp_path).table
    groups = global_students(t2, np.asarray(t2["global_fe"]) == 1)
    assert [(d, w, sfx) for d, w, sfx, _ in groups] == [(1, 3, ", 1 move"), (1, 3, ", 2 moves")]
    slopes = []
    for _, _, _, m in groups:
        n, ex = np.asarray(t2["n_used"])[m], (np.asarray(t2["f_ti"]) - np.asarray(t2["ns_n"]))[m]
        ns = np.unique(n)
        slopes.append(fit_slope(np.log(ns), [ex[n == v].mean() for v in ns], [1.0] * len(ns))[0])
    assert abs(slopes[1] - slopes[0] - 3) < 1e-6, slopes
    text = " ".join(c.measured for c in freeenergy.claims(tmp_path))
    assert "1x3, 1 move TI over SMC" in text and "1x3, 2 moves TI over SMC" in text, text
    names = {p.stem for p in freeenergy.plot(tmp_path)}
    assert {"free_energy_vs_logn", "lambda_vs_params", "gen_error_vs_n", "diagnostics"} <= names, names
