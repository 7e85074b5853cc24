"""Backports for the jax that jaxbench pins: same numbers, cheaper compilation.

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
