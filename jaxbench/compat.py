"""Backports for the jax that jaxbench pins: same numbers, cheaper compilation.

Threefry on CPU. jaxlib <= 0.10 lowers JAX's default PRNG hash (threefry2x32) on CPU as a
rolled 5-iteration loop, while GPU and TPU get the unrolled rounds. Upstream switched CPU to the
unrolled lowering as well (jax-ml/jax#37872: faster to compile and to run). The rolled loop is
what makes batched random draws slow to compile here: under ``vmap`` (one key per variant)
``jax.random.normal`` of a 16 x 16 draw compiled in 1.06 s rolled against 0.13 s unrolled, and
one bucket of the ``example`` experiment as a 64-variant vmap in 6.1 s against 3.1 s. Both
lowerings compute the same hash, bit for bit (tests/test_data.py checks the draws against a
process without this module). Applied when ``jaxbench`` is imported; a jax without these
private names is left as it is.
"""

from __future__ import annotations


def unrolled_threefry_on_cpu() -> bool:
    """Lowers threefry2x32 on CPU with the unrolled rounds JAX uses on GPU and TPU.

    Returns whether the lowering was installed.
    """
    try:
        from jax._src.interpreters import mlir
        from jax._src.random import threefry2x32
    except ImportError:
        return False
    rule = getattr(threefry2x32, "_threefry2x32_lowering_rule", None)  # the unrolled one
    prim = getattr(threefry2x32, "threefry2x32_p", None)
    if rule is None or prim is None:
        return False
    mlir.register_lowering(prim, rule, platform="cpu", inline=False)
    return True


THREEFRY_UNROLLED = unrolled_threefry_on_cpu()
