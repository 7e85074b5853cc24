"""Exact empirical neural tangent kernels and the infinite-width ReLU kernels.

The empirical NTK of a function ``f(params, x) -> (n, k)`` is
``Theta(x, x')_{jj'} = sum_p df_j(x)/dp * df_j'(x')/dp`` (Jacot, Gabriel, Hongler, NeurIPS 2018,
arXiv 1806.07572); `empirical_ntk` returns its trace over outputs ``sum_j Theta_jj`` (``(n1, n2)``)
or the full ``(n1, n2, k, k)`` block. Methods (all exact; they agree to float64 rounding):

* ``"jacobian"``: per-example Jacobians contracted block by block (Novak et al., ICML 2022,
  arXiv 2206.08720, "Jacobian contraction"). Cost ``O(n k F + n^2 k P)`` (F: cost of one forward
  pass, P: number of parameters); memory ``O(tile k P)``.
* ``"jvp_vjp"``: NTK-vector products: a vjp of ``f(x2)`` gives a parameter vector, a jvp of
  ``f(x1)`` along it gives a kernel column (Novak et al., "NTK-vector products"). Holds at most
  ``tile * k`` parameter-sized vectors, never a Jacobian of all n points.
* ``"structured"``: the MLP fast path. For a dense layer ``h^{l+1} = c_l x^l W^l + beta b^l``,
  ``df/dW^l = c_l x^l (x) g^l`` with ``g^l = df/dh^{l+1}``, so the layer's contribution is
  ``(c_l^2 <x^l, x'^l> + beta^2) * <g^l, g'^l>``: one Gram matrix of layer inputs and one of the
  back-propagated sensitivities, ``O(n^2 * sum of widths * k)`` instead of ``O(n^2 P)``
  (Novak et al.'s "structured derivatives", specialised to dense layers). ``c_l, beta`` follow
  `jaxbench.mlp`: ``w_std / sqrt(n_l), b_std`` for the NTK parametrization, ``1, 1`` for the
  standard one (so it is the plain Jacobian NTK of the network `mlp.apply` computes). Needs
  ``f = functools.partial(jaxbench.mlp.apply, spec)`` (optionally with ``out_scale=``).
* ``"auto"``: "structured" for such an ``f``; otherwise "jacobian" unless a Jacobian tile of even
  a few examples exceeds the memory budget, then "jvp_vjp".

Large n: the kernel is computed in blocks of ``tile`` rows (and columns, for "jacobian" and
"jvp_vjp") under `lax.map`, so memory is ``O(n1 n2)`` for the result plus ``O(tile)`` work, never
``O(n^2 P)``. Every method is a pure function of arrays: ``vmap`` over params (and inputs) gives
one kernel per variant in one compiled call.

The infinite-width ReLU kernels and kernel predictors live in `jaxbench.kernels` and are
re-exported here: `relu_nngp`, `relu_ntk`, `min_eigenvalue`, `kernel_regression`,
`kernel_classify`.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxbench import mlp
from jaxbench.kernels import kernel_classify, kernel_regression, min_eigenvalue, relu_nngp, relu_ntk

__all__ = ["empirical_ntk", "mlp_features", "nnx_fn", "ntk_drift", "relu_nngp", "relu_ntk",
           "min_eigenvalue", "kernel_regression", "kernel_classify", "METHODS"]

METHODS = ("auto", "jacobian", "jvp_vjp", "structured")
DEFAULT_BLOCK_BYTES = 1 << 28  # work memory per block when tile=None (256 MiB)


# ----------------------------------------------------------------------------- checks / dispatch


def _mlp_of(f):
    """``(spec, out_scale)`` if ``f`` is ``functools.partial(mlp.apply, spec[, out_scale=...])``."""
    if (isinstance(f, functools.partial) and f.func is mlp.apply and len(f.args) == 1
            and isinstance(f.args[0], mlp.MLPSpec) and set(f.keywords) <= {"out_scale"}):
        return f.args[0], f.keywords.get("out_scale", 1.0)
    return None


def _out_shape(f, params, x):
    out = jax.eval_shape(f, params, x)
    if out.ndim not in (1, 2) or out.shape[0] != x.shape[0]:
        raise ValueError(f"f(params, x) must return (n,) or (n, k) with n = x.shape[0] = {x.shape[0]};"
                         f" got shape {out.shape}")
    return out


def _fk(f, params, x):
    """``f`` with outputs always ``(n, k)``."""
    out = f(params, x)
    return out[:, None] if out.ndim == 1 else out


def _num_params(params) -> int:
    return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))


def _choose(method, f, params, x1, k, block_bytes):
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
    is_mlp = _mlp_of(f) is not None
    if method == "structured" and not is_mlp:
        raise ValueError("method='structured' needs f = functools.partial(jaxbench.mlp.apply, spec)"
                         " (an MLP); use 'jacobian' or 'jvp_vjp' for other functions")
    if method != "auto":
        return method
    if is_mlp:
        return "structured"
    itemsize = jnp.dtype(x1.dtype).itemsize
    fits = 2 * min(8, x1.shape[0]) * k * _num_params(params) * itemsize <= block_bytes
    return "jacobian" if fits else "jvp_vjp"


# ----------------------------------------------------------------------------- tiling


def _pad_blocks(x, t):
    """``(n, ...) -> (ceil(n/t), t, ...)``, padding by repeating the last row (stays finite)."""
    n = x.shape[0]
    nb = -(-n // t)
    x = jnp.pad(x, [(0, nb * t - n)] + [(0, 0)] * (x.ndim - 1), mode="edge")
    return x.reshape(nb, t, *x.shape[1:])


def _tiled(prep_a, prep_b, pair, a, b, ta, tb):
    """Kernel ``(na, nb, ...)`` from blocks ``pair(prep_a(a_blk), prep_b(b_blk)) -> (ta, tb, ...)``.

    ``a``, ``b`` are pytrees with leading point axes; ``prep_a`` runs once per row block,
    ``prep_b`` once per (row, column) block, so only one block of each is alive at a time.
    """
    na = jax.tree.leaves(a)[0].shape[0]
    nb = jax.tree.leaves(b)[0].shape[0]
    ta, tb = min(ta, na), min(tb, nb)
    A = jax.tree.map(lambda x: _pad_blocks(x, ta), a)
    B = jax.tree.map(lambda x: _pad_blocks(x, tb), b)
    lead = lambda t: jax.tree.leaves(t)[0].shape[0]  # noqa: E731
    first = lambda t: jax.tree.map(lambda x: x[0], t)  # noqa: E731

    def row(a_blk):
        pa = prep_a(a_blk)
        col = lambda b_blk: pair(pa, prep_b(b_blk))  # noqa: E731
        return col(first(B))[None] if lead(B) == 1 else lax.map(col, B)

    out = row(first(A))[None] if lead(A) == 1 else lax.map(row, A)  # (nA, nB, ta, tb, ...)
    out = jnp.swapaxes(out, 1, 2)
    out = out.reshape(out.shape[0] * ta, out.shape[2] * tb, *out.shape[4:])
    return out[:na, :nb]


def _rows_for(per_row_bytes, block_bytes):
    return max(1, int(block_bytes // max(per_row_bytes, 1)))


# ----------------------------------------------------------------------------- methods


def _contract(ja, jb, trace):
    """Sum over parameter leaves of ``J_a J_b^T``; leaves ``(t, k, *leaf_shape)``."""
    out = 0.0
    for u, v in zip(jax.tree.leaves(ja), jax.tree.leaves(jb)):
        if trace:  # contract (k, p) jointly: one matmul
            out = out + u.reshape(u.shape[0], -1) @ v.reshape(v.shape[0], -1).T
        else:
            u, v = u.reshape(*u.shape[:2], -1), v.reshape(*v.shape[:2], -1)
            out = out + jnp.einsum("akp,blp->abkl", u, v)
    return out


def _ntk_jacobian(f, params, x1, x2, trace, tile, k, block_bytes):
    def jac(x):  # per-example Jacobians: leaves (t, k, *leaf_shape)
        one = lambda xi: jax.jacrev(lambda p: _fk(f, p, xi[None])[0])(params)  # noqa: E731
        return jax.vmap(one)(x)

    itemsize = jnp.dtype(x1.dtype).itemsize
    t = tile or _rows_for(2 * k * _num_params(params) * itemsize, block_bytes)
    return _tiled(jac, jac, lambda a, b: _contract(a, b, trace), x1, x2, t, t)


def _ntk_jvp_vjp(f, params, x1, x2, trace, tile, k, block_bytes):
    def pair(xa, xb):
        fa = lambda p: _fk(f, p, xa)  # noqa: E731

        def column(xbi):  # kernel entries (k_b, ta, k_a) of one x2 point
            _, vjp_b = jax.vjp(lambda p: _fk(f, p, xbi[None])[0], params)
            along = lambda e: jax.jvp(fa, (params,), vjp_b(e))[1]  # noqa: E731
            return jax.vmap(along)(jnp.eye(k, dtype=x1.dtype))

        cols = jax.vmap(column)(xb)  # (tb, k_b, ta, k_a)
        if trace:
            return jnp.einsum("bjaj->ab", cols)
        return jnp.transpose(cols, (2, 0, 3, 1))

    itemsize = jnp.dtype(x1.dtype).itemsize
    t = tile or _rows_for(2 * k * _num_params(params) * itemsize, block_bytes)
    ident = lambda x: x  # noqa: E731
    return _tiled(ident, ident, pair, x1, x2, t, t)


def mlp_features(spec: mlp.MLPSpec, params, x, out_scale=1.0):
    """Per dense layer l: scaled inputs ``a_l = c_l x^l`` ``(n, n_l)`` and sensitivities
    ``g_l = df/dh^{l+1}`` ``(n, k, n_{l+1})`` (None for the output layer, where ``g = out_scale e_j``).

    ``beta`` (the bias gradient scale) is returned alongside: ``b_std`` (NTK), 1 (standard) or 0.
    """
    if x.shape[-1] != spec.in_dim:
        raise ValueError(f"input has {x.shape[-1]} features, spec expects in_dim={spec.in_dim}")
    phi = mlp.ACTIVATIONS[spec.activation]
    ntk_param = spec.parametrization == "ntk"
    beta = (spec.b_std if ntk_param else 1.0) if spec.bias else 0.0
    L = spec.depth

    def forward(eps):  # eps_l is added to the pre-activation h^{l+1}; d out / d eps_l = g_l
        acts, h = [], x
        for l, layer in enumerate(params):
            c = spec.w_std / math.sqrt(h.shape[-1]) if ntk_param else 1.0
            acts.append(c * h)
            z = (c * h) @ layer["w"]
            if spec.bias:
                z = z + beta * layer["b"]
            h = phi(z + eps[l]) if l < L - 1 else z
        return out_scale * h, acts

    eps = [jnp.zeros((x.shape[0], w), x.dtype) for w in spec.dims[1:-1]]
    out, vjp, acts = jax.vjp(forward, eps, has_aux=True)
    k = out.shape[-1]
    basis = jnp.broadcast_to(jnp.eye(k, dtype=out.dtype)[:, None, :], (k, *out.shape))
    (g,) = jax.vmap(vjp)(basis)  # list of (k, n, n_{l+1}), hidden layers only
    sens = [jnp.swapaxes(gl, 0, 1) for gl in g] + [None]
    return acts, sens, beta


def _structured_pair(beta, alpha, k, trace):
    """Kernel block from per-layer features: sum_l (a_l a_l'^T + beta^2) * (g_l g_l'^T)."""

    def pair(a, b):
        (acts_a, sens_a), (acts_b, sens_b) = a, b
        out = 0.0
        for xa, xb, ga, gb in zip(acts_a, acts_b, sens_a, sens_b):
            gram_x = xa @ xb.T + beta**2 if beta else xa @ xb.T
            if ga is None:  # output layer: <g, g'> = alpha^2 delta_jj'
                gg = alpha**2 * (k if trace else jnp.eye(k, dtype=xa.dtype))
                out = out + (gram_x * gg if trace else gram_x[:, :, None, None] * gg)
            elif trace:
                gram_g = ga.reshape(ga.shape[0], -1) @ gb.reshape(gb.shape[0], -1).T
                out = out + gram_x * gram_g
            else:
                out = out + gram_x[:, :, None, None] * jnp.einsum("ajw,blw->abjl", ga, gb)
        return out

    return pair


def _tiled_symmetric(pair, a, t):
    """``pair(a, a)`` computing only the ``nb (nb + 1) / 2`` blocks on and above the diagonal.

    Each ``(t, t)`` block and its transpose are written in place into the kernel carried by a
    `fori_loop`, so the work memory is one block and the Gram flops are about halved.
    """
    n = jax.tree.leaves(a)[0].shape[0]
    A = jax.tree.map(lambda x: _pad_blocks(x, t), a)
    nb = jax.tree.leaves(A)[0].shape[0]
    iu, ju = (jnp.asarray(v, jnp.int32) for v in np.triu_indices(nb))
    probe = jax.eval_shape(pair, *(jax.tree.map(lambda x: x[0], A),) * 2)

    def body(p, K):
        i, j = iu[p], ju[p]
        blk = pair(jax.tree.map(lambda x: x[i], A), jax.tree.map(lambda x: x[j], A))
        blk_t = jnp.swapaxes(blk, 0, 1) if blk.ndim == 2 else jnp.transpose(blk, (1, 0, 3, 2))
        zero = (jnp.int32(0),) * (blk.ndim - 2)
        K = lax.dynamic_update_slice(K, blk, (i * t, j * t, *zero))
        return lax.dynamic_update_slice(K, blk_t, (j * t, i * t, *zero))

    K = jnp.zeros((nb * t, nb * t, *probe.shape[2:]), probe.dtype)
    K = lax.fori_loop(0, len(iu), body, K)
    return K if nb * t == n else K[:n, :n]


def _ntk_structured(f, params, x1, x2, trace, tile, k, block_bytes):
    spec, alpha = _mlp_of(f)
    *fa, beta = mlp_features(spec, params, x1, alpha)
    pair = _structured_pair(beta, alpha, k, trace)
    itemsize = jnp.dtype(x1.dtype).itemsize * (1 if trace else k * k)
    if x2 is None:  # symmetric: square blocks, upper triangle only
        t = tile or min(2048, math.isqrt(_rows_for(4 * itemsize, block_bytes)))
        return pair(fa, fa) if t >= x1.shape[0] else _tiled_symmetric(pair, fa, t)
    fb = mlp_features(spec, params, x2, alpha)[:2]
    t = tile or _rows_for(4 * x2.shape[0] * itemsize, block_bytes)
    ident = lambda z: z  # noqa: E731
    # only rows are tiled: the features are O(n * sum(widths) * k), linear in n
    return _tiled(ident, ident, pair, fa, fb, t, x2.shape[0])


def empirical_ntk(f, params, x1, x2=None, *, method="auto", trace=True, tile=None,
                  block_bytes=DEFAULT_BLOCK_BYTES):
    """Exact empirical NTK of ``f`` at ``params`` between ``x1`` and ``x2``.

    Args:
      f: ``f(params, x) -> (n,)`` or ``(n, k)``; any pytree params (a flax.linen ``module.apply``
        with its variables, an nnx model through `nnx_fn`, ``partial(mlp.apply, spec)``...).
        Rows must be independent (no batch statistics).
      x1: ``(n1, ...)`` inputs; x2: ``(n2, ...)`` inputs with the same trailing shape (default x1).
      method: "auto", "jacobian", "jvp_vjp" or "structured" (see module docstring).
      trace: True sums over outputs, False keeps the ``(k, k)`` block.
      tile: points per block (None: chosen so a block's work fits ``block_bytes``).
    Returns:
      ``(n1, n2)`` if ``trace`` else ``(n1, n2, k, k)``.
    """
    x1 = jnp.asarray(x1)
    if x1.ndim < 2:
        raise ValueError(f"x1 must be (n, features...), got shape {x1.shape}")
    if x2 is not None:
        x2 = jnp.asarray(x2)
        if x2.shape[1:] != x1.shape[1:]:
            raise ValueError(f"x1 and x2 feature shapes differ: {x1.shape[1:]} vs {x2.shape[1:]}")
    if tile is not None and int(tile) < 1:
        raise ValueError(f"tile must be a positive int, got {tile}")
    spec_scale = _mlp_of(f)
    if spec_scale is not None and x1.shape[-1] != spec_scale[0].in_dim:
        raise ValueError(f"input has {x1.shape[-1]} features, spec expects in_dim={spec_scale[0].in_dim}")
    out = _out_shape(f, params, x1)
    k = 1 if out.ndim == 1 else out.shape[1]
    method = _choose(method, f, params, x1, k, block_bytes)
    impl = {"jacobian": _ntk_jacobian, "jvp_vjp": _ntk_jvp_vjp, "structured": _ntk_structured}
    if method != "structured" and x2 is None:
        x2 = x1
    return impl[method](f, params, x1, x2, trace, tile, k, block_bytes)


def nnx_fn(model):
    """``(f, params)`` for a flax nnx module: ``f(params, x)`` merges the params back and calls it."""
    from flax import nnx

    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    return (lambda p, x: nnx.merge(graphdef, p, rest)(x)), params


def ntk_drift(f, params_a, params_b, x, **ntk_kwargs):
    """``||Theta_b - Theta_a||_F / ||Theta_a||_F`` on inputs ``x`` (laziness of training)."""
    ka = empirical_ntk(f, params_a, x, **ntk_kwargs)
    kb = empirical_ntk(f, params_b, x, **ntk_kwargs)
    return jnp.linalg.norm(kb - ka) / jnp.linalg.norm(ka)
