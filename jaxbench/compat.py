"""Work-arounds for the jax that jaxbench pins: same numbers, programs that finish and compile fast.

Materialized draws (`materialize`, at the end): XLA's CPU fusion compiles a random draw again
inside every consumer; one loop makes it a buffer.

LAPACK ordering (`serialize_lapack`, below): jaxlib 0.10's CPU LAPACK kernels deadlock when
several batched calls run at once; the sweep engine orders every LAPACK call of a bucket's
program one after another.

Threefry on CPU. jaxlib <= 0.10 lowers JAX's default PRNG hash (threefry2x32) on CPU as a
rolled 5-iteration loop, while GPU and TPU get the unrolled rounds (upstream later switched CPU
to unrolled too, jax-ml/jax#37872). Measured here, the rolled loop is what makes *batched*
random draws slow to compile, while whole one-variant programs compile faster rolled. One
bucket of the ``example`` experiment (width 64, 100-164 steps), compile seconds, one process each:

    lowering of threefry      one variant   64 variants under vmap
    rolled (jax's CPU rule)       3.7             5.6
    unrolled everywhere           5.8             3.8
    this module                   3.8             2.9

So CPU draws with one key (scalar key operands) keep JAX's rolled lowering and draws with a
batch of keys (under ``vmap``: one key per variant) get the unrolled rounds. Both lowerings
compute the same hash, bit for bit (tests/test_data.py compares draws with a process without
this module; the three rows above trained to the same losses). Installed when ``jaxbench`` is
imported; a jax without these private names is left as it is.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.extend import core as jcore


def batched_keys_unrolled_threefry_on_cpu() -> bool:
    """On CPU, lowers threefry2x32 with batched keys unrolled, with scalar keys as JAX does.

    Returns whether the lowering was installed.
    """
    try:
        from jax._src.interpreters import mlir
        from jax._src.random import threefry2x32
    except ImportError:
        return False
    prim = getattr(threefry2x32, "threefry2x32_p", None)
    unrolled = getattr(threefry2x32, "_threefry2x32_lowering_rule", None)
    rolled = getattr(threefry2x32, "_threefry2x32_cpu_lowering_rule", None)
    if prim is None or unrolled is None or rolled is None:
        return False

    def rule(ctx, key1, key2, x1, x2):
        batched = any(aval.shape for aval in ctx.avals_in[:2])
        return (unrolled if batched else rolled)(ctx, key1, key2, x1, x2)

    mlir.register_lowering(prim, rule, platform="cpu")
    return True


THREEFRY_BATCHED_UNROLLED = batched_keys_unrolled_threefry_on_cpu()


# ----------------------------------------------------------------------------- LAPACK ordering
# jaxlib 0.10.0-0.11.0 split the batch of every CPU LAPACK call (eigh, svd, cholesky, lu, ...)
# over XLA's intra-op thread pool and block the calling pool thread until the pieces finish
# (`ParallelBatchMap` in jaxlib/cpu/lapack_kernels.cc, jax-ml/jax commit bfd9e1fbd3). XLA's CPU
# runtime runs independent operations of one program concurrently on that same pool, so when
# as many batched LAPACK calls as the pool has threads (2 on a 2-core machine) start at once,
# every pool thread waits for work that no thread is left to run: the program never finishes,
# at 0% CPU (seen in the ntk_convergence sweep: two eigvalsh of one variant, vmapped). Upstream
# compiled the parallel path out of open-source builds after 0.11.0 (commit 859992407d); until
# jaxbench can require such a jaxlib, the engine orders every LAPACK call of a bucket's program
# after the previous one (`serialize_lapack`), so no two run at once.
LAPACK_PRIMITIVES = frozenset({
    "cholesky", "eig", "eigh", "hessenberg", "householder_product", "ormqr", "lu", "geqrf",
    "geqp3", "qr", "schur", "svd", "triangular_solve", "tridiagonal", "tridiagonal_solve"})
_LOOPS = frozenset({"scan", "while"})


def after(x, *deps):
    """``x`` (a pytree), computed only once ``deps`` are: a real data dependency.

    Adds ``0 * t`` to every floating leaf of ``x``, with ``t`` a finite scalar read from the
    first element of every dep leaf: XLA keeps the addition (no fast-math), values are
    unchanged. (``lax.optimization_barrier`` is not enough: XLA's CPU runtime orders work by
    buffers, and a barrier only forwards them.)
    """
    zero = _zero(jax.tree.leaves(deps))
    if zero is None:
        return x
    tie = lambda a: a + zero.astype(a.dtype) if jnp.issubdtype(a.dtype, jnp.inexact) else a  # noqa: E731
    return jax.tree.map(tie, x)


def _zero(leaves):
    """``0 * t`` for a finite float32 scalar ``t`` made from the leaves' first elements (None if none)."""
    firsts = [jnp.ravel(leaf)[0] for leaf in leaves if jnp.size(leaf) > 0]
    if not firsts:
        return None
    t = sum(jnp.nan_to_num(jnp.real(f).astype(jnp.float32)) for f in firsts)
    return 0.0 * t


def _tied(vals, token, every=False):
    """``vals`` with the first (``every``: each) non-weak numeric operand made to depend on ``token``.

    One operand orders a LAPACK call; a loop (or any other op holding LAPACK calls) is tied on
    every operand, since XLA may hoist a loop-invariant LAPACK call out of the loop, and then
    only the operands that call reads order it."""
    zero = None if token is None else _zero(token)
    vals = list(vals)
    if zero is None:
        return vals
    for i, v in enumerate(vals):
        aval = jax.typeof(v)
        if not aval.weak_type and jnp.issubdtype(aval.dtype, jnp.number):
            vals[i] = v + zero.astype(aval.dtype)
            if not every:
                break
    return vals


def _has_lapack(jaxpr) -> bool:
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    return any(e.primitive.name in LAPACK_PRIMITIVES or any(map(_has_lapack, jcore.jaxprs_in_params(e.params)))
               for e in jaxpr.eqns)


def _bind(eqn, invals, params=None):
    with eqn.ctx.manager:  # as jax.core.eval_jaxpr binds
        out = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(eqn.params if params is None else params))
    return list(out) if eqn.primitive.multiple_results else [out]


def _serialized_param(value):
    return serialize_lapack(value) if isinstance(value, jcore.ClosedJaxpr) else value


def _eval(jaxpr, consts, args, token):
    """Evaluates ``jaxpr`` on tracers, each LAPACK call tied to the one before; returns (outs, token)."""
    env = {}
    read = lambda v: v.val if isinstance(v, jcore.Literal) else env[v]  # noqa: E731
    env.update(zip(jaxpr.constvars, consts))
    env.update(zip(jaxpr.invars, args))
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        name, subs = eqn.primitive.name, list(jcore.jaxprs_in_params(eqn.params))
        calls = [v for v in eqn.params.values() if isinstance(v, (jcore.Jaxpr, jcore.ClosedJaxpr))]
        if name in LAPACK_PRIMITIVES:
            outs = token = _bind(eqn, _tied(invals, token))
        elif not any(map(_has_lapack, subs)):
            outs = _bind(eqn, invals)
        elif name == "cond":  # every branch in turn, then a select: what vmap makes of a cond
            index, ops, branch_outs = invals[0], invals[1:], []  # with a per-variant predicate anyway
            for branch in eqn.params["branches"]:
                o, token = _eval(branch.jaxpr, branch.consts, ops, token)
                branch_outs.append(o)
            outs = [lax.select_n(index, *cases) for cases in zip(*branch_outs)]
        elif name in _LOOPS:  # a loop, ordered as a whole; its bodies ordered inside
            params = {k: _serialized_param(v) for k, v in eqn.params.items()}
            outs = token = _bind(eqn, _tied(invals, token, every=True), params)
        elif len(calls) == 1 and len(getattr(calls[0], "jaxpr", calls[0]).invars) == len(invals):
            call = calls[0]  # pjit, custom_jvp/vjp_call, checkpoint, ...: inlined (no autodiff follows)
            outs, token = _eval(getattr(call, "jaxpr", call), getattr(call, "consts", ()), invals, token)
        else:  # anything else holding LAPACK calls: ordered as a whole
            outs = token = _bind(eqn, _tied(invals, token, every=True))
        env.update((v, o) for v, o in zip(eqn.outvars, outs) if not isinstance(v, jcore.DropVar))
    return [read(v) for v in jaxpr.outvars], token


def serialize_lapack(closed):
    """The same computation as the closed jaxpr ``closed``, with every LAPACK call ordered after
    the previous one by a data dependency (`after`), also inside called functions and loop or
    branch bodies; ``closed`` itself when it holds no LAPACK call. Values are unchanged."""
    if not _has_lapack(closed.jaxpr):
        return closed
    avals = [v.aval for v in closed.jaxpr.invars]
    fn = lambda *args: _eval(closed.jaxpr, closed.consts, args, None)[0]  # noqa: E731
    return jax.make_jaxpr(fn)(*[jax.ShapeDtypeStruct(a.shape, a.dtype, weak_type=a.weak_type) for a in avals])


@functools.cache
def lapack_calls_overlap() -> bool:
    """Whether this jaxlib on this backend can deadlock on concurrent LAPACK calls (see above)."""
    from importlib.metadata import version

    major, minor = (int(p) for p in version("jaxlib").split(".")[:2])
    return jax.default_backend() == "cpu" and (major, minor) >= (0, 10)


# ----------------------------------------------------------------------------- materialize
# XLA's CPU fusion copies an elementwise producer into every fusion that reads it. A normal draw
# is a long elementwise chain (threefry bits -> uniform -> erf_inv polynomial), so one draw cut
# into k pieces (`jaxbench.data.normals`) was compiled k times over: 9,356 of the 15,939
# optimized HLO lines of the local_recovery_random bucket were 36 copies of one draw.
# `lax.optimization_barrier` does not stop this (XLA's CPU pipeline removes barriers before
# fusion); a loop's result is a buffer that no fusion outside the loop can reach into.


def materialize(tree):
    """``tree`` (an array or a pytree of arrays), computed once into buffers: an identity that XLA
    cannot fuse through.

    A ``while`` loop of one trip that XLA cannot count (it also stops when the first leaf's first
    element is NaN, read from the loop's own buffer: reading it from the input would fuse its
    producer once more) and whose body adds ``0.0 * counter`` to every leaf (not folded:
    ``0 * inf`` is NaN), so the loop is neither inlined nor forwarded. Values are unchanged
    (``x + 0.0`` is ``x`` for every finite, infinite and NaN input; ``-0.0`` becomes ``+0.0``).
    Non-empty float arrays only, and not on a path that ``jax.grad`` differentiates (a while loop
    has no reverse-mode rule; forward mode and ``vmap`` work).
    """
    leaves = jax.tree.leaves(tree)
    for x in leaves:
        if not jnp.issubdtype(x.dtype, jnp.floating) or x.size == 0:
            raise TypeError(f"materialize: expected non-empty float arrays, got {x.dtype}{list(x.shape)}")
    if not leaves:
        return tree

    def more(carry):
        i, v = carry
        first = jnp.ravel(jax.tree.leaves(v)[0])[0]
        return (i < 1) & (first == first)

    def body(carry):
        i, v = carry
        return i + 1, jax.tree.map(lambda a: a + 0.0 * i.astype(a.dtype), v)

    return lax.while_loop(more, body, (jnp.zeros((), jnp.int32), tree))[1]
