"""Operator norms, Lipschitz estimates and explicit zero-loss constructions for ReLU networks.

The construction and the bound are our reconstruction of T. Chen, C.-K. Chien, P. Munoz Ewald,
A. G. Moore, "Architecture independent generalization bounds for overparametrized deep ReLU
networks", arXiv:2504.05695 (the paper's own statements are not copied; see docs/experiments/arch_bounds.md).

Row-vector convention of `jaxbench.mlp`: inputs are rows, ``h = x W + b`` with ``W: (fan_in,
fan_out)``. Training inputs ``X (n, d)``, targets ``Y (n, k)``.

Construction (`zero_loss_params`). Let ``X`` have full row rank n (so ``n <= d``) and
``M = X^+ Y (d, k)``, with ``X^+ = X^T (X X^T)^{-1}`` the generalized inverse, so ``X M = Y``.
For hidden widths ``(m_1, ..., m_L)``, all ``>= k``, and a domain ball ``|x| <= R``:

* layer 1: ``W_1 = [M, 0] (d, m_1)``, ``b_1 = [s, 0]`` with ``s_j = R |M_{:, j}|``, so
  ``x M + s >= 0`` on the ball and the ReLU acts as the identity on the first k units;
* layers 2..L: ``W_l = [[I_k, 0], [0, 0]] (m_{l-1}, m_l)``, ``b_l = 0`` (pass-through);
* output: ``W_{L+1} = [I_k; 0] (m_L, k)``, ``b_{L+1} = -s`` (the shift is removed).

Hence ``f(x) = x M`` on the ball for every depth and every width ``>= k``: the same function
(the minimum-norm linear interpolant), zero training loss, and
``Lip(f) <= prod_l |W_l|_op = |M|_op <= |Y|_op / sigma_min(X)``. With no hidden layer the
network is ``x M`` itself.

Data-geometry bound (`geometry_bound`): for any f and any training pair ``(x_i, y_i)``,
``|f(x~) - y~| <= |f(x~) - f(x_i)| + |f(x_i) - y~| <= Lip(f) |x~ - x_i| + |f(x_i) - y~|``;
we take the minimum over i. For a zero-loss f, ``f(x_i) = y_i`` and this is the paper-style
bound ``Lip(f) |x~ - x_i| + |y~ - y_i|`` from train/test distances alone.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxbench import mlp
# `after(x, *deps)`: x computed only once deps are. jaxlib 0.10's CPU LAPACK calls deadlock when
# several run at once (`jaxbench.compat`); the sweep engine orders them in every bucket program,
# and a program jitted outside the engine that makes several independent ones orders them with
# `after`. Every function here issues at most one LAPACK call.
from jaxbench.compat import after  # noqa: F401  (re-exported)


# ----------------------------------------------------------------------------- operator norms
def op_norm(w: jax.Array) -> jax.Array:
    """Spectral norm (largest singular value) of a matrix ``(a, b)``; a scalar."""
    return jnp.linalg.norm(w, ord=2)


def op_norm_power(w: jax.Array, iters: int = 500, key: jax.Array | None = None) -> jax.Array:
    """Spectral norm by power iteration on ``W^T W`` (an independent check of `op_norm`)."""
    key = jax.random.PRNGKey(0) if key is None else key
    v = jax.random.normal(key, (w.shape[1],), w.dtype)

    def step(v, _):
        u = w.T @ (w @ v)
        return u / jnp.linalg.norm(u), None

    v, _ = jax.lax.scan(step, v / jnp.linalg.norm(v), None, length=iters)
    return jnp.linalg.norm(w @ v)


def layer_op_norms(spec: mlp.MLPSpec, params: mlp.Params) -> jax.Array:
    """``(L,)`` operator norms of the effective weight matrices (parametrization folded in).

    The matrices are zero-padded to one shape (padding keeps singular values) and go through
    ONE batched SVD: one LAPACK call (see `after`) and one compiled kernel however deep.
    """
    ws = mlp.weight_matrices(spec, params)
    rows, cols = max(w.shape[0] for w in ws), max(w.shape[1] for w in ws)
    padded = jnp.stack([jnp.pad(w, ((0, rows - w.shape[0]), (0, cols - w.shape[1]))) for w in ws])
    return jax.vmap(op_norm)(padded)


def bias_norms(spec: mlp.MLPSpec, params: mlp.Params) -> jax.Array:
    """``(L,)`` Euclidean norms of the effective biases (zeros when ``bias=False``)."""
    if not spec.bias:
        return jnp.zeros((spec.depth,))
    scale = spec.b_std if spec.parametrization == "ntk" else 1.0
    return jnp.stack([scale * jnp.linalg.norm(p["b"]) for p in params])


# ----------------------------------------------------------------------------- Lipschitz
def lipschitz_upper(spec: mlp.MLPSpec, params: mlp.Params, out_scale=1.0) -> jax.Array:
    """``|out_scale| prod_l |W_l|_op``: a global Lipschitz bound (activations are 1-Lipschitz)."""
    return jnp.abs(out_scale) * jnp.prod(layer_op_norms(spec, params))


def lipschitz_lower(f: Callable[[jax.Array], jax.Array], x: jax.Array) -> jax.Array:
    """``max_i |J_f(x_i)|_op`` over points ``x (n, d)``: a lower bound on Lip(f).

    ``f`` maps one input ``(d,)`` to a scalar or a vector ``(k,)``; its Jacobian's operator
    norm (the gradient norm for scalar f) at a point where f is differentiable never exceeds
    the Lipschitz constant, so the maximum over points is a certified lower estimate.
    """
    jac = jax.vmap(jax.jacrev(f))(x)  # (n, d) or (n, k, d)
    if jac.ndim == 2:
        return jnp.max(jnp.linalg.norm(jac, axis=-1))
    return jnp.max(jax.vmap(op_norm)(jac))


# ----------------------------------------------------------------------------- data geometry
def _masked(x, mask):
    return x if mask is None else jnp.where(mask[:, None], x, 0.0)


def sigma_min(x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Smallest singular value of the training matrix (its rows where ``mask``), a scalar.

    Masked-out rows are zeroed; they add exactly-zero singular values, so the n-th largest
    singular value (``n = mask.sum()``, may be traced) is that of the kept rows.
    """
    s = jnp.linalg.svd(_masked(x, mask), compute_uv=False)  # descending, (min(n_max, d),)
    n = x.shape[0] if mask is None else jnp.sum(mask)
    return jnp.take(s, n - 1)


def full_rank(x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Whether the kept rows of ``x`` are linearly independent (numpy's rank tolerance)."""
    s = jnp.linalg.svd(_masked(x, mask), compute_uv=False)
    n = x.shape[0] if mask is None else jnp.sum(mask)
    tol = s[0] * max(x.shape) * jnp.finfo(x.dtype).eps
    return (n <= x.shape[1]) & (jnp.take(s, jnp.minimum(n, s.shape[0]) - 1) > tol)


def interpolant(x: jax.Array, y: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """``M = X^+ Y`` of shape ``(d, k)``, the minimum-norm solution of ``X M = Y``.

    Through the SVD (``pinv``: backward stable, residual ~ eps cond(X), where the Gram solve
    ``X^T (X X^T)^{-1} Y`` would give eps cond(X)^2). Masked-out rows are zeroed, which leaves
    ``X^+ Y`` of the kept rows unchanged. Tests check it against the Gram solve and ``lstsq``.
    """
    return jnp.linalg.pinv(_masked(x, mask)) @ _masked(y, mask)


def check_rank(x) -> None:
    """Raises ValueError unless ``x (n, d)`` has full row rank n (so ``n <= d``).

    Shape checks always run; the value check runs when ``x`` is concrete (not under jit).
    """
    n, d = x.shape
    if n > d:
        raise ValueError(f"training inputs are rank deficient: n = {n} > d = {d}; the zero-loss "
                         "construction needs n <= d linearly independent inputs")
    if isinstance(x, jax.core.Tracer):
        return
    s = np.linalg.svd(np.asarray(x, dtype=np.float64), compute_uv=False)
    tol = s.max(initial=0.0) * max(n, d) * np.finfo(np.asarray(x).dtype).eps
    rank = int((s > tol).sum())
    if rank < n:
        raise ValueError(f"training inputs are rank deficient: rank {rank} < n = {n} "
                         f"(sigma_min = {s.min():.3g}, e.g. duplicated inputs); the zero-loss "
                         "construction needs linearly independent inputs")


def construction_spec(d: int, widths: tuple[int, ...], k: int) -> mlp.MLPSpec:
    """The `mlp.MLPSpec` the construction's parameters are written for."""
    return mlp.MLPSpec(d, tuple(widths), k, activation="relu", parametrization="standard", bias=True)


def zero_loss_params(spec: mlp.MLPSpec, x: jax.Array, y: jax.Array, radius=None,
                     mask: jax.Array | None = None, check: bool = True,
                     interp: jax.Array | None = None) -> mlp.Params:
    """Explicit zero-loss parameters (module docstring) in `jaxbench.mlp`'s format.

    Args:
      spec: ReLU, ``parametrization="standard"``, ``bias=True``, ``in_dim = d``,
        ``out_dim = k`` and every hidden width ``>= k`` (see `construction_spec`).
      x: ``(n, d)`` training inputs of full row rank; y: ``(n, k)`` targets.
      radius: R, the ball ``|x| <= R`` on which ``f(x) = x X^+ Y`` exactly (traced is fine);
        default: the largest training-input norm. Outside the ball the ReLUs may clip.
      mask: optional ``(n,)`` bool: only these rows are training points (lets a traced n
        share one compiled shape); the others are ignored.
      check: raise ValueError for rank-deficient x (value check only when x is concrete).
        Under jit no error can be raised: callers test `full_rank` themselves.
      interp: ``X^+ Y (d, k)`` when the caller has it already (saves an SVD); else computed.
    Returns:
      params with ``mlp.apply(spec, params, x) == x @ interpolant(x, y)`` on the ball.
    """
    n, d = x.shape
    k = y.shape[-1]
    if spec.activation != "relu" or spec.parametrization != "standard" or not spec.bias:
        raise ValueError("zero_loss_params needs a ReLU spec with parametrization='standard' and "
                         f"bias=True, got {spec}")
    if (spec.in_dim, spec.out_dim) != (d, k):
        raise ValueError(f"spec maps {spec.in_dim} -> {spec.out_dim}, data map {d} -> {k}")
    if any(m < k for m in spec.widths):
        raise ValueError(f"every hidden width must be >= the output dimension k = {k}, "
                         f"got widths {spec.widths}")
    if check:
        check_rank(x if mask is None or isinstance(mask, jax.core.Tracer)
                   else x[np.asarray(mask, bool)])
    m = interpolant(x, y, mask) if interp is None else interp
    if not spec.widths:
        return [{"w": m, "b": jnp.zeros((k,), m.dtype)}]
    if radius is None:
        radius = jnp.max(jnp.linalg.norm(_masked(x, mask), axis=-1))
    shift = radius * jnp.linalg.norm(m, axis=0)  # (k,): |<x, M_j>| <= R |M_j| on the ball

    def embed(a, rows, cols):  # a placed in the top-left corner of a zero (rows, cols) matrix
        return jnp.zeros((rows, cols), m.dtype).at[: a.shape[0], : a.shape[1]].set(a)

    def pad(v, size):
        return jnp.zeros((size,), m.dtype).at[: v.shape[0]].set(v)

    eye = jnp.eye(k, dtype=m.dtype)
    widths = spec.widths
    params = [{"w": embed(m, d, widths[0]), "b": pad(shift, widths[0])}]
    for a, b in zip(widths[:-1], widths[1:]):
        params.append({"w": embed(eye, a, b), "b": jnp.zeros((b,), m.dtype)})
    params.append({"w": embed(eye, widths[-1], k), "b": -shift})
    return params


def bias_term(op_norms: jax.Array, bias_norms: jax.Array) -> jax.Array:
    """``sum_l |b_l| prod_{m > l} |W_m|_op``, the biases' share of the a priori bound (a scalar).

    For a ReLU net (``|relu(z)| <= |z|``), ``|x_l| <= |W_l|_op |x_{l-1}| + |b_l|`` layer by layer,
    so ``|f(x)| <= prod_l |W_l|_op |x| + bias_term``. Both arguments ``(L + 1,)``, input layer first.
    """
    after_l = jnp.cumprod(op_norms[::-1])[::-1]  # after_l[l] = prod_{m >= l} |W_m|
    tail = jnp.concatenate([after_l[1:], jnp.ones((1,), after_l.dtype)])  # prod_{m > l}
    return jnp.sum(bias_norms * tail)


def geometry_bound(lip, x_train: jax.Array, f_train: jax.Array, x_test: jax.Array,
                   y_test: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Per-test-point bound ``min_i [lip |x~ - x_i| + |f(x_i) - y~|]`` of shape ``(m,)``.

    Valid for any f with Lipschitz constant <= ``lip`` (module docstring); pass ``f_train = y``
    for a zero-loss network. ``mask (n,)`` (optional, bool) marks which training rows count.
    """
    dx = jnp.linalg.norm(x_test[:, None, :] - x_train[None, :, :], axis=-1)  # (m, n)
    dy = jnp.linalg.norm(y_test[:, None, :] - f_train[None, :, :], axis=-1)
    terms = lip * dx + dy
    if mask is not None:
        terms = jnp.where(mask[None, :], terms, jnp.inf)
    return jnp.min(terms, axis=1)
