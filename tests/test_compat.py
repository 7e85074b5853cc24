"""jaxbench.compat: LAPACK calls ordered in every bucket program (the jaxlib 0.10 CPU deadlock),
values unchanged; the regression runs of the program that hung `make sweep`."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend import core as jcore

from conftest import ROOT, unordered_lapack_calls, write_sweep
from jaxbench import compat, sweep


def _many_lapack_calls(a, b):
    """Independent LAPACK calls at the top level, in jitted functions, a scan body, a loop-invariant
    one in a while body (XLA hoists it), and both branches of a cond (vmap turns it into a select)."""
    eye = jnp.eye(a.shape[-1], dtype=a.dtype)
    e = jnp.linalg.eigvalsh(a @ a.T)
    s = jnp.linalg.svd(b, compute_uv=False)

    def body(c, x):
        return c + jnp.linalg.cholesky(x @ x.T + 3 * eye).sum() + jnp.linalg.det(x), None

    c, _ = jax.lax.scan(body, jnp.zeros((), a.dtype), jnp.stack([a, b]))
    d = jax.lax.cond(a[0, 0] > 0, lambda: jnp.linalg.inv(a + 3 * eye).sum(), lambda: jnp.linalg.slogdet(b)[1])
    w = jax.lax.while_loop(lambda t: t[0] < 3, lambda t: (t[0] + 1, t[1] + jnp.linalg.qr(a)[1].sum()),
                           (0, jnp.zeros((), a.dtype)))[1]
    return e, s, c, d, w, jnp.linalg.solve(b + 3 * eye, a)


def _vmapped(closed, *args):
    fn = jax.jit(jax.vmap(jcore.jaxpr_as_fun(closed)))
    compiled = fn.lower(*args).compile()
    return compiled(*args), compiled.as_text()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_serialize_lapack_orders_every_call_and_keeps_values(dtype):
    with jax.enable_x64(dtype == "float64"):
        a = jax.random.normal(jax.random.PRNGKey(0), (4, 3, 3), dtype)
        b = jax.random.normal(jax.random.PRNGKey(1), (4, 3, 3), dtype)
        closed = jax.make_jaxpr(_many_lapack_calls)(a[0], b[0])
        ser = compat.serialize_lapack(closed)
        out0, hlo0 = _vmapped(closed, a, b)
        out1, hlo1 = _vmapped(ser, a, b)
    calls0, unordered0 = unordered_lapack_calls(hlo0)
    calls1, unordered1 = unordered_lapack_calls(hlo1)
    assert len(calls0) >= 10 and unordered0  # as JAX compiles it: calls free to overlap
    assert len(calls1) == len(calls0) and not unordered1  # after the pass: one at a time
    for x, y in zip(out0, out1):  # adding 0 * t changes no bit
        np.testing.assert_array_equal(x, y)


def test_serialize_lapack_leaves_other_programs_alone():
    closed = jax.make_jaxpr(lambda x: jnp.tanh(x @ x.T).sum())(jnp.ones((3, 3)))
    assert compat.serialize_lapack(closed) is closed


def test_engine_orders_the_lapack_calls_of_a_bucket(tmp_path):
    """The ntk_convergence bucket whose two eigvalsh hung `make sweep` (issue 21)."""
    f = write_sweep(tmp_path / "s.toml", HUNG_BUCKET)
    sw = sweep.load(f)
    prog = sweep._Program(sw, sweep.plan(sw)[0], None, inner_batch=0)
    calls, unordered = unordered_lapack_calls(prog.compiled(8).as_text())
    assert len(calls) == 2 and not unordered


def test_after_passes_values_through():
    x, y = jnp.arange(3.0), {"a": jnp.ones(2), "i": jnp.arange(2)}
    np.testing.assert_array_equal(jax.jit(lambda x, y: compat.after(x, y, 2 * x))(x, y), x)
    tree = jax.jit(lambda y, x: compat.after(y, x))(y, x)
    np.testing.assert_array_equal(tree["a"], y["a"])
    np.testing.assert_array_equal(tree["i"], y["i"])


# The bucket of sweeps/ntk_convergence.toml's default preset that hung in 7 of 10 runs of
# `jaxbench sweep` before the engine ordered LAPACK calls, usually at its first execution.
HUNG_BUCKET = """
experiment = "ntk_convergence"
seeds = 8
[fixed]
n = 32
d = 16
pad = 256
[grid]
width = [256]
depth = [4]
"""

_REPEAT = """
import sys
import jax
from jaxbench import sweep
sw = sweep.load(sys.argv[1])
with sweep._Pipeline(sw, sweep.default_budget(), 1024, "auto", None, 0) as pipe:
    prog, lay = pipe.get(0)
compiled = prog.compiled(lay.chunk_size)
for rep in range(int(sys.argv[2])):
    jax.device_get(compiled(prog.inputs(lay.chunks[0], lay.chunk_size)))
print("finished")
"""


def test_the_bucket_that_hung_make_sweep_finishes_every_time(tmp_path):
    """Regression test for the deadlock: the engine's program for that bucket, executed 40 times
    in one process, then the sweep itself 3 times through the CLI, each under a time limit."""
    f = write_sweep(tmp_path / "s.toml", HUNG_BUCKET)
    env = {**os.environ, "JAXBENCH_STALL_S": "20"}
    script = tmp_path / "repeat.py"
    script.write_text(textwrap.dedent(_REPEAT))
    try:
        r = subprocess.run([sys.executable, str(script), str(f), "40"], capture_output=True, text=True,
                           timeout=60, cwd=ROOT, env=env)
    except subprocess.TimeoutExpired:  # about 6 s when it does not hang
        pytest.fail("40 executions of the bucket's program did not finish in 60 s: deadlocked")
    assert r.returncode == 0 and "finished" in r.stdout, r.stderr[-2000:]
    for i in range(3):
        r = subprocess.run([sys.executable, "-m", "jaxbench", "sweep", str(f), "--out", str(tmp_path / "out"),
                            "--fresh", "--no-progress", "--no-plot"],
                           capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
        assert r.returncode == 0, f"run {i}: exit {r.returncode}: {r.stderr[-2000:]}"


def _generator_copies(fn, *args) -> int:
    """How many computations of the optimized program evaluate erf_inv (a normal draw's last step)."""
    text = jax.jit(fn).lower(*args).compile().as_text()
    comps = text.split("\n\n")  # HLO text: one computation per blank-line-separated block
    return sum(any("erf_inv" in line for line in c.splitlines()) for c in comps)


def test_materialize_is_the_identity_and_stops_xla_from_copying_a_draw_into_every_consumer():
    with jax.enable_x64(True):
        x = jnp.array([1.5, -0.0, jnp.inf, -jnp.inf, jnp.nan, 1e-300, -2.0**60])
        out = np.asarray(jax.jit(compat.materialize)(x))
        np.testing.assert_array_equal(out, np.asarray(x))  # NaN == NaN here; -0.0 == 0.0
        nan_first = np.asarray(jax.jit(compat.materialize)(x[::-1]))  # x[0] NaN: the loop runs 0 times
        np.testing.assert_array_equal(nan_first, np.asarray(x[::-1]))
        a = jnp.arange(6.0).reshape(2, 3)
        np.testing.assert_array_equal(jax.vmap(compat.materialize)(a), a)  # batched (a per-variant loop)

        def pieces(key, keep):
            z = jax.random.normal(key, (60,))
            z = compat.materialize(z) if keep else z
            return [jnp.sin(z[10 * i:10 * (i + 1)]) @ jnp.cos(z[10 * i:10 * (i + 1)]) for i in range(6)]

        key = jax.random.PRNGKey(0)
        np.testing.assert_allclose(jax.jit(pieces, static_argnums=1)(key, True),  # fused differently
                                   jax.jit(pieces, static_argnums=1)(key, False), rtol=1e-13)
        copied = _generator_copies(lambda k: pieces(k, False), key)
        once = _generator_copies(lambda k: pieces(k, True), key)
        assert once == 1 < copied, (once, copied)  # measured: 6 copies -> 1
        tree = {"w": jnp.ones((2, 2)), "b": [jnp.zeros(3), jnp.full((1,), -jnp.inf)]}
        out = jax.jit(compat.materialize)(tree)  # a pytree: one loop for every leaf
        jax.tree.map(np.testing.assert_array_equal, out, tree)
    with pytest.raises(TypeError, match="float arrays"):
        compat.materialize(jnp.arange(3))
