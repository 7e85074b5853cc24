"""Experiments "lambda_validation" and "free_energy": closed-form checks and smoke presets end to end."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbench.experiments import freeenergy, lambda_validation


def _static_traced(module, **kw):
    d = {k: p.default for k, p in module.PARAMS.items()}
    d.update(kw)
    st = {k: module.PARAMS[k].validate(k, v) for k, v in d.items() if module.PARAMS[k].kind == "static"}
    tr = {k: jnp.asarray(v, jnp.float32) for k, v in d.items() if module.PARAMS[k].kind == "traced"}
    return dataclasses.make_dataclass("Static", list(st), frozen=True)(**st), tr


@pytest.mark.parametrize("m,n,h", [(2, 6, 2), (6, 2, 2), (2, 2, 5)])
def test_reduced_rank_lambda_hat_within_15_percent(m, n, h):
    """Aoyagi-Watanabe cases 2, 3 and 4 (rank 1): SGLD lambda_hat within 15% of the closed form."""
    s, tr = _static_traced(lambda_validation, model="rrr", in_dim=m, out_dim=n, hidden=str(h), rank=1,
                           n=1000, chains=4, draws=2000, burnin=500, sgld_step=0.2)
    out = jax.jit(functools.partial(lambda_validation.run_one, s))(tr, jax.random.key(0))
    lam, true = float(out["lambda_hat"]), float(out["lambda_true"])
    assert true == {(2, 6, 2): 4.0, (6, 2, 2): 4.0, (2, 2, 5): 2.0}[(m, n, h)]
    assert abs(lam / true - 1) < 0.15, (lam, true)
    assert float(out["d_half"]) > 1.9 * true      # the naive count d/2 is far off: a real test
    assert float(out["loss_star"]) <= float(out["loss_truth"])


def test_validation_params_are_checked():
    s, tr = _static_traced(lambda_validation, model="rrr", in_dim=2, out_dim=2, hidden="2", rank=3)
    with pytest.raises(ValueError, match="rank=3 exceeds"):
        lambda_validation.run_one(s, tr, jax.random.key(0))
    with pytest.raises(ValueError, match="comma-separated"):
        lambda_validation.PARAMS["hidden"].validate("hidden", "4,x")
    with pytest.raises(ValueError, match="one of"):
        lambda_validation.PARAMS["sampler"].validate("sampler", "hmc")
    s, tr = _static_traced(freeenergy, width=2, teacher_width=3)
    with pytest.raises(ValueError, match="teacher_width"):
        freeenergy.run_one(s, tr, jax.random.key(0))


@pytest.mark.parametrize("width,depth", [(3, 1), (4, 3)])
def test_teacher_embedding_is_exact(width, depth):
    """The bound's construction: the student with the embedded teacher computes f* exactly."""
    s, _ = _static_traced(freeenergy, width=width, depth=depth)
    t_sp, t_par = freeenergy.teacher(s)
    x = jax.random.uniform(jax.random.key(1), (500, 2), minval=-1, maxval=1)
    f_student = freeenergy.mlp.apply(freeenergy.student(s), freeenergy.embed_teacher(s, t_par), x)
    np.testing.assert_allclose(f_student, freeenergy.mlp.apply(t_sp, t_par, x), atol=1e-5)


def test_teacher_bound_and_teacher_units_are_active():
    assert freeenergy.teacher_bound(2, 3) == 5.0
    s, _ = _static_traced(freeenergy)
    sp, params = freeenergy.teacher(s)
    x = jax.random.uniform(jax.random.key(0), (4000, 2), minval=-1, maxval=1)
    active = np.asarray(jnp.mean(freeenergy.mlp.hidden(sp, params, x)[0] > 0, axis=0))
    assert np.all((active > 0.05) & (active < 0.95))   # every teacher unit matters on the cube


@pytest.mark.parametrize("sweep,figures", [
    ("lambda_validation", ["lambda_validation"]),
    ("free_energy", ["lambda_vs_params", "free_energy_vs_logn", "gen_error_vs_lambda"]),
])
def test_smoke_preset_end_to_end(smoke_run, sweep, figures):
    from jaxbench import store
    out = smoke_run(sweep)
    for f in figures:
        assert (out / f"{f}.png").exists() and (out / f"{f}.pdf").exists()
    t = store.load(out).table
    assert np.all(np.isfinite(np.asarray(t["lambda_hat"], float)))
