"""Infinite-width ReLU kernels and kernel predictors (ridge / ridgeless regression, lambda_min).

`relu_nngp` / `relu_ntk` are the infinite-width kernels of `mlp.MLPSpec` ReLU networks (arc-cosine
kernel of degree 1, Cho & Saul, NeurIPS 2009; recursion of Jacot et al., NeurIPS 2018, arXiv
1806.07572, and Lee et al., ICLR 2018, arXiv 1711.00165), with `mlp`'s conventions:
``depth = L`` dense layers (one hidden layer is depth 2), ``Sigma^1 = w_std^2 <x, x'> / d + b_std^2``,
``Sigma^{l+1} = w_std^2 E[relu(u) relu(v)] + b_std^2`` with ``(u, v) ~ N(0, Sigma^l)``, and
``Theta^{l+1} = Sigma^{l+1} + w_std^2 E[relu'(u) relu'(v)] Theta^l``. All are also available
from `jaxbench.ntk`.
"""

from __future__ import annotations

import math

import jax.numpy as jnp

from jaxbench import mlp


def _relu_conventions(depth, spec, w_std, b_std, bias, parametrization, widths):
    if spec is not None:
        if spec.activation != "relu":
            raise ValueError(f"relu kernels need activation='relu', spec has {spec.activation!r}")
        return spec.depth, spec.w_std, spec.b_std, spec.bias, spec.parametrization, spec.widths
    if depth is None or int(depth) < 1:
        raise ValueError(f"depth (number of dense layers, >= 1) required, got {depth}")
    if parametrization not in mlp.PARAMETRIZATIONS:
        raise ValueError(f"unknown parametrization {parametrization!r}; choose from {mlp.PARAMETRIZATIONS}")
    if parametrization == "standard" and (widths is None or len(widths) != depth - 1):
        raise ValueError("parametrization='standard': its NTK grows with width; pass the depth-1 hidden "
                         f"widths, got widths={widths} for depth={depth}")
    return int(depth), w_std, b_std, bias, parametrization, widths


def _relu_kernels(x1, x2, depth=None, *, spec=None, w_std=math.sqrt(2.0), b_std=0.1, bias=True,
                  parametrization="ntk", widths=None, out_scale=1.0):
    """``(nngp, ntk)``, each ``(n1, n2)``: the arc-cosine recursion with mlp.py's conventions."""
    L, w_std, b_std, bias, param, widths = _relu_conventions(depth, spec, w_std, b_std, bias,
                                                            parametrization, widths)
    x1 = jnp.asarray(x1)
    x2 = x1 if x2 is None else jnp.asarray(x2)
    if x1.ndim != 2 or x2.ndim != 2 or x1.shape[1] != x2.shape[1]:
        raise ValueError(f"x1, x2 must be (n, d) with the same d, got {x1.shape} and {x2.shape}")
    d = x1.shape[1]
    sb2 = b_std**2 if bias else 0.0
    sw2 = w_std**2
    ip, q1, q2 = x1 @ x2.T, jnp.sum(x1 * x1, 1), jnp.sum(x2 * x2, 1)
    # Sigma^1 and its diagonals; Theta^1 is the layer-1 parameter gradient inner product
    s12, s11, s22 = (sw2 * v / d + sb2 for v in (ip, q1, q2))
    if param == "ntk":
        theta = s12
    else:  # standard: df/dW^0 = x (no 1/sqrt(d)), df/db^0 = 1
        theta = ip + (1.0 if bias else 0.0)
    for l in range(1, L):
        norm = jnp.sqrt(s11[:, None] * s22[None, :])
        rho = jnp.clip(jnp.where(norm > 0, s12 / jnp.where(norm > 0, norm, 1.0), 0.0), -1.0, 1.0)
        angle = jnp.arccos(rho)
        e_phi = norm * (jnp.sin(angle) + (jnp.pi - angle) * rho) / (2 * jnp.pi)  # E relu(u) relu(v)
        e_dphi = (jnp.pi - angle) / (2 * jnp.pi)  # E relu'(u) relu'(v)
        if param == "ntk":
            s12 = sw2 * e_phi + sb2
            theta = s12 + sw2 * e_dphi * theta
        else:  # df/dW^l = x^l: sum_i relu(h_i) relu(h'_i) = n_l E[relu relu] at large n_l
            theta = widths[l - 1] * e_phi + (1.0 if bias else 0.0) + sw2 * e_dphi * theta
            s12 = sw2 * e_phi + sb2
        s11, s22 = sw2 * s11 / 2 + sb2, sw2 * s22 / 2 + sb2
    return out_scale**2 * s12, out_scale**2 * theta


def relu_nngp(x1, x2=None, depth=None, **conventions):
    """Infinite-width NNGP kernel ``E[f(x1) f(x2)^T]`` per output of a ReLU MLP: ``(n1, n2)``.

    ``depth`` = number of dense layers L (as `MLPSpec.depth`); keywords ``w_std, b_std, bias,
    out_scale`` (defaults as `MLPSpec`), or ``spec=MLPSpec(...)`` to take them from a spec.
    The NNGP is the same for both parametrizations.
    """
    return _relu_kernels(x1, x2, depth, **conventions)[0]


def relu_ntk(x1, x2=None, depth=None, **conventions):
    """Infinite-width NTK per output of a ReLU MLP (trace over k outputs = k times this): ``(n1, n2)``.

    Keywords as `relu_nngp` plus ``parametrization`` ("ntk" or "standard"). The NTK
    parametrization's kernel is width independent. The standard parametrization's kernel grows
    with width (``df/dW^l = x^l`` is not divided by sqrt(n_l)); it needs ``widths`` (the hidden
    widths) and is the large-width equivalent ``n_l E[relu relu] + 1 + w_std^2 E[relu' relu'] Theta``
    of neural-tangents' ``parameterization="standard"`` (Sohl-Dickstein et al., arXiv 2001.07301).
    """
    return _relu_kernels(x1, x2, depth, **conventions)[1]


# ----------------------------------------------------------------------------- helpers


def min_eigenvalue(kernel):
    """Smallest eigenvalue of a (symmetrised) Gram matrix ``(n, n)`` (lambda_min of NTK analyses)."""
    kernel = jnp.asarray(kernel)
    return jnp.linalg.eigvalsh((kernel + kernel.T) / 2)[0]


def kernel_regression(k_train, y_train, k_test_train, ridge=0.0, rcond=None):
    """Kernel (ridge) regression predictions ``K_* (K + ridge I)^+ y``.

    Args:
      k_train: ``(n, n)`` train Gram matrix; y_train: ``(n,)`` or ``(n, c)``;
      k_test_train: ``(m, n)``; ridge: >= 0, may be traced (0 = ridgeless minimum-norm
      interpolant: eigenvalues below ``rcond * max eigenvalue`` are dropped).
    Returns:
      ``(m,)`` or ``(m, c)`` predictions.
    """
    k_train = jnp.asarray(k_train)
    n = k_train.shape[0]
    if k_train.shape != (n, n) or y_train.shape[0] != n or k_test_train.shape[-1] != n:
        raise ValueError(f"shapes mismatch: K {k_train.shape}, y {y_train.shape}, K* {k_test_train.shape}")
    rcond = 10 * n * jnp.finfo(k_train.dtype).eps if rcond is None else rcond
    s, u = jnp.linalg.eigh((k_train + k_train.T) / 2)
    s = s + ridge
    keep = s > rcond * jnp.max(jnp.abs(s))
    inv = jnp.where(keep, 1.0 / jnp.where(keep, s, 1.0), 0.0)
    coef = u @ (inv[:, None] * (u.T @ y_train.reshape(n, -1)))
    return (k_test_train @ coef).reshape(k_test_train.shape[0], *y_train.shape[1:])


def kernel_classify(k_train, y_train, k_test_train, ridge=0.0):
    """Labels from kernel regression: sign for ``(n,)`` +-1 labels, argmax for ``(n, c)`` one-hot."""
    pred = kernel_regression(k_train, y_train, k_test_train, ridge)
    return jnp.sign(pred) if pred.ndim == 1 else jnp.argmax(pred, axis=-1)
