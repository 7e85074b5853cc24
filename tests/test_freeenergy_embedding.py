"""The embedded-teacher construction of Experiment 5 (experiments/freeenergy/embedding.py):
exact in float64 on the whole input box for every depth 1-4 and width >= the teacher's, with
the tight carry constant and balanced layer scales."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbench import mlp
from jaxbench.experiments.freeenergy import embedding


def _teacher(seed=0, h=3, d=2):
    r = np.random.default_rng(seed)
    v, c = 2.0 * r.normal(size=(d, h)), r.uniform(-1, 1, h)
    a = r.uniform(1, 2, h) * np.where(np.arange(h) % 2 == 0, 1.0, -1.0)
    return v, c, a, float(r.uniform(-1, 1))


def _box_points(d=2, radius=1.0):
    """A dense grid, the corners and random points of the box (float64)."""
    g = np.linspace(-radius, radius, 61)
    grid = np.stack(np.meshgrid(*[g] * d, indexing="ij"), -1).reshape(-1, d)
    corners = np.array(list(itertools.product([-radius, radius], repeat=d)))
    rand = np.random.default_rng(1).uniform(-radius, radius, (2000, d))
    return np.concatenate([grid, corners, rand])


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("depth", [1, 2, 3, 4])
@pytest.mark.parametrize("width_mult", [1, 2, 4, 8])
def test_embedded_student_computes_the_teacher_exactly(seed, depth, width_mult):
    v, c, a, a0 = _teacher(seed)
    width = 3 * width_mult
    params, C = embedding.embed(v, c, a, a0, width, depth)
    x = _box_points()
    f_teacher = np.maximum(x @ v + c, 0.0) @ a + a0            # the teacher, written out in numpy
    with jax.enable_x64(True):
        sp = mlp.MLPSpec(2, (width,) * depth, 1, parametrization="standard")
        p = jax.tree_util.tree_map(lambda z: jnp.asarray(z, jnp.float64), params)
        f = np.asarray(mlp.apply(sp, p, jnp.asarray(x, jnp.float64)))[:, 0]
        acts = [np.asarray(z) for z in mlp.hidden(sp, p, jnp.asarray(x, jnp.float64))]
    assert f.dtype == np.float64
    np.testing.assert_allclose(f, f_teacher, rtol=0, atol=1e-12)
    # balanced: every layer's weights have the same Frobenius norm
    norms = [np.linalg.norm(l["w"]) for l in params]
    np.testing.assert_allclose(norms, norms[0], rtol=1e-12)
    if depth >= 2:
        # tight: the carried unit stays active with a positive margin, and C exceeds -min f* by
        # the margin plus at most the grid's certified slack (a few hundredths)
        lo, grid_min = embedding.teacher_min(v, c, a, a0)
        assert 0.5 <= C + grid_min <= 0.5 + 0.05, (C, grid_min)
        assert min(z[:, 0].min() for z in acts[1:]) > 0
        # every other unit past layer 1 is dead on the box
        assert all(np.all(z[:, 1:] == 0) for z in acts[1:])
    else:
        assert C == 0.0


def test_unbalanced_construction_is_exact_too_and_balancing_shrinks_the_largest_layer():
    v, c, a, a0 = _teacher()
    x = _box_points()
    raw, _ = embedding.embed(v, c, a, a0, 6, 3, balance=False)
    bal, _ = embedding.embed(v, c, a, a0, 6, 3)

    def f(params):
        z = x
        for l in params[:-1]:
            z = np.maximum(z @ l["w"] + l["b"], 0.0)
        return (z @ params[-1]["w"] + params[-1]["b"])[:, 0]

    np.testing.assert_allclose(f(raw), f(bal), atol=1e-12)
    assert max(np.linalg.norm(l["w"]) for l in bal) < max(np.linalg.norm(l["w"]) for l in raw)


@pytest.mark.parametrize("width,depth,msg", [(2, 1, "width = 2 must be >= the teacher's width 3"),
                                             (3, 0, "depth must be >= 1")])
def test_bad_shapes_give_one_line(width, depth, msg):
    with pytest.raises(ValueError, match=msg) as e:
        embedding.embed(*_teacher(), width, depth)
    assert "\n" not in str(e.value)
