"""The teacher embedded in a wider and/or deeper ReLU student, with the tightest carry constant.

Teacher (one hidden layer, as in Nagayasu & Watanabe, arXiv 2303.15739's setting as we rebuild it):
``f*(x) = a . relu(V^T x + c) + a0`` on the box ``[-r, r]^d``. Student: ``depth`` hidden layers of
``width >= H*`` units (standard parametrization, biases). The construction (ours, the one our
bound ``(H*(d+1)+1)/2`` is derived from; docs/experiments/free_energy.md):

* layer 1: the teacher's units in the first H* slots; every other unit *dead* (zero weights,
  bias -1: an open set of dead units, so their parameters are free);
* depth 1: the output layer is the teacher's (a, a0);
* depth >= 2: layer 2 unit 0 computes ``relu(f*(x) + C)`` with ``C = -min_box f* + margin``, so
  ``f* + C >= margin > 0`` on the box and ReLU acts as the identity there; every further hidden
  layer carries that unit (weight 1) and the output subtracts C. All other units dead.

C: the smallest constant that keeps the carried unit active on the box, plus ``margin``. ``min f*``
over the box is bounded from below without approximation: the minimum over a grid of spacing
``h`` minus ``Lip(f*) h sqrt(d) / 2`` (every box point lies within ``h sqrt(d) / 2`` of a grid
node; ``Lip(f*) <= sum_j |a_j| |v_j|_2``). A large C makes the posterior stiff in the carry
directions (the derivative of f in the carry weight is ``f* + C``): the old crude constant 23.6
gave a top Hessian eigenvalue ~600 and chains that never settled (issue 15).

Balanced layer scales: ReLU is positively homogeneous, so multiplying layer l's weights by
``t_l > 0``, its bias by ``s_l = t_1 ... t_l``, and the output weights by ``1 / s_L`` leaves the
function unchanged. We take ``t_l = g / |W_l|_F`` with ``g`` the geometric mean of the layers'
weight norms (output layer included): every layer's weights then have the same norm, the
balanced point of the rescaling orbit (the quantity gradient flow conserves, Du, Hu & Lee 2018),
so no layer is much stiffer than another. The construction is exact for any positive scales;
balancing only conditions the posterior.
"""

from __future__ import annotations

import math

import numpy as np


def teacher_min(v, c, a, a0, radius: float = 1.0, grid: int = 401):
    """A certified lower bound on ``min f*`` over ``[-radius, radius]^d`` (module docstring),
    and the grid minimum itself. v (d, H), c (H,), a (H,), a0 scalar; numpy float64."""
    v, c, a = (np.asarray(z, np.float64) for z in (v, c, a))
    d = v.shape[0]
    if d > 3:
        raise ValueError(f"teacher_min grids the input box: in_dim must be <= 3, got {d}")
    axes = [np.linspace(-radius, radius, grid)] * d
    x = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, d)
    f = np.maximum(x @ v + c, 0.0) @ a + float(a0)
    h = 2 * radius / (grid - 1)
    lip = float(np.sum(np.abs(a) * np.linalg.norm(v, axis=0)))
    return float(f.min()) - lip * h * math.sqrt(d) / 2, float(f.min())


def carry_constant(v, c, a, a0, radius: float = 1.0, margin: float = 0.5) -> float:
    """``C = -min_box f* + margin`` (with the certified lower bound of `teacher_min`)."""
    return -teacher_min(v, c, a, a0, radius)[0] + margin


def embed(v, c, a, a0, width: int, depth: int, *, radius: float = 1.0, margin: float = 0.5,
          balance: bool = True):
    """Student parameters (a list of ``{"w", "b"}`` dicts, `jaxbench.mlp` layout, float64 numpy)
    computing the teacher exactly on ``[-radius, radius]^d``, and the carry constant C (0 at
    depth 1). v (d, H), c (H,), a (H,), a0 scalar. ``width >= H``, ``depth >= 1``."""
    v, c, a = (np.asarray(z, np.float64) for z in (v, c, a))
    a0 = float(a0)
    d, h = v.shape
    if depth < 1:
        raise ValueError(f"depth must be >= 1 (hidden layers), got {depth}")
    if width < h:
        raise ValueError(f"width = {width} must be >= the teacher's width {h}")
    first = {"w": np.zeros((d, width)), "b": np.full(width, -1.0)}
    first["w"][:, :h], first["b"][:h] = v, c
    if depth == 1:
        out = {"w": np.zeros((width, 1)), "b": np.array([a0])}
        out["w"][:h, 0] = a
        layers, C = [first, out], 0.0
    else:
        C = carry_constant(v, c, a, a0, radius, margin)
        second = {"w": np.zeros((width, width)), "b": np.full(width, -1.0)}
        second["w"][:h, 0], second["b"][0] = a, a0 + C
        carries = []
        for _ in range(depth - 2):
            layer = {"w": np.zeros((width, width)), "b": np.full(width, -1.0)}
            layer["w"][0, 0], layer["b"][0] = 1.0, 0.0
            carries.append(layer)
        out = {"w": np.zeros((width, 1)), "b": np.array([-C])}
        out["w"][0, 0] = 1.0
        layers = [first, second, *carries, out]
    return (rebalance(layers) if balance else layers), C


def rebalance(layers):
    """Positive per-layer rescaling (module docstring) giving every layer the same weight norm;
    the function is unchanged. Dead units' biases stay at -1 (they stay dead: zero weights)."""
    norms = np.array([np.linalg.norm(l["w"]) for l in layers])
    g = math.exp(float(np.mean(np.log(norms))))
    t = g / norms
    s = np.cumprod(t)
    out = []
    for i, l in enumerate(layers):
        live = np.any(l["w"] != 0, axis=0)             # units with incoming weights
        b = np.where(live, s[i] * l["b"], l["b"]) if i < len(layers) - 1 else l["b"].copy()
        out.append({"w": t[i] * l["w"], "b": b})
    return out
