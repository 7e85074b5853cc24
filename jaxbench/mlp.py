"""Pure-functional multilayer perceptron: spec, init, apply.

Conventions (the same ones `jaxbench.ntk`'s infinite-width kernels assume). A network with
hidden widths ``(n_1, ..., n_{L-1})`` has ``L = len(widths) + 1`` dense layers. Writing
``x^0 = x`` (fan-in ``n_0 = in_dim``) and ``x^l = phi(h^l)``:

* ``parametrization="ntk"``: ``W^l_ij ~ N(0, 1)``, ``b^l_i ~ N(0, 1)`` and
  ``h^{l+1} = (w_std / sqrt(n_l)) x^l W^l + b_std b^l``.
* ``parametrization="standard"``: ``W^l_ij ~ N(0, w_std^2 / n_l)``, ``b^l_i ~ N(0, b_std^2)``
  and ``h^{l+1} = x^l W^l + b^l``.

Both give the same function distribution at initialisation; they differ in how gradient
descent moves the weights (the NTK parametrization is the one whose kernel converges as
width grows). The output is ``f(x) = out_scale * h^L`` where ``out_scale`` (the output
multiplier alpha of lazy-training papers) is a traced argument of `apply`, so it can be swept
without recompiling.

Parameters are a list with one dict per layer: ``{"w": (n_l, n_{l+1}), "b": (n_{l+1},)}``
(no ``"b"`` when ``bias=False``).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from jaxbench import compat

ACTIVATIONS = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "linear": lambda h: h,
}
PARAMETRIZATIONS = ("ntk", "standard")

Params = list[dict[str, jax.Array]]


@dataclasses.dataclass(frozen=True)
class MLPSpec:
    """Static shape and convention of an MLP (hashable: safe to close over under jit).

    Attributes:
      in_dim: input dimension d.
      widths: hidden-layer widths (empty tuple = a linear model ``x -> x W + b``).
      out_dim: output dimension k.
      activation: "relu", "tanh" or "linear" (applied after every hidden layer).
      parametrization: "ntk" or "standard" (see module docstring).
      bias: whether layers have biases.
      w_std, b_std: weight and bias standard deviations sigma_w, sigma_b.
    """

    in_dim: int
    widths: tuple[int, ...]
    out_dim: int = 1
    activation: str = "relu"
    parametrization: str = "ntk"
    bias: bool = True
    w_std: float = math.sqrt(2.0)
    b_std: float = 0.1

    def __post_init__(self):
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        dims = (self.in_dim, *self.widths, self.out_dim)
        if any(int(d) <= 0 for d in dims):
            raise ValueError(f"MLPSpec dimensions must be positive, got {dims}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; choose from {sorted(ACTIVATIONS)}")
        if self.parametrization not in PARAMETRIZATIONS:
            raise ValueError(f"unknown parametrization {self.parametrization!r}; choose from {PARAMETRIZATIONS}")
        if not (self.w_std > 0 and self.b_std >= 0):
            raise ValueError(f"need w_std > 0 and b_std >= 0, got {self.w_std}, {self.b_std}")

    @property
    def dims(self) -> tuple[int, ...]:
        """``(in_dim, *widths, out_dim)``."""
        return (self.in_dim, *self.widths, self.out_dim)

    @property
    def depth(self) -> int:
        """Number of dense layers L."""
        return len(self.widths) + 1

    @property
    def num_params(self) -> int:
        d = self.dims
        return sum(a * b + (b if self.bias else 0) for a, b in zip(d[:-1], d[1:]))


def init(spec: MLPSpec, key: jax.Array, dtype=None) -> Params:
    """Draws initial parameters. Returns a list of ``{"w": (n_l, n_{l+1}), "b": (n_{l+1},)}``."""
    dtype = dtype or jnp.zeros(()).dtype  # float32, or float64 under enable_x64
    params = []
    keys = jax.random.split(key, spec.depth)
    for k, fan_in, fan_out in zip(keys, spec.dims[:-1], spec.dims[1:]):
        kw, kb = jax.random.split(k)
        w = jax.random.normal(kw, (fan_in, fan_out), dtype)
        b = jax.random.normal(kb, (fan_out,), dtype)
        if spec.parametrization == "standard":
            w = w * (spec.w_std / math.sqrt(fan_in))
            b = b * spec.b_std
        layer = {"w": w}
        if spec.bias:
            layer["b"] = b
        params.append(layer)
    # one buffer per array: XLA would otherwise compile each draw again inside every consumer of
    # the parameters (57 copies of 8 draws in a benign_overfitting bucket, measured)
    return compat.materialize(params)


def _dense(spec: MLPSpec, layer: dict, x: jax.Array) -> jax.Array:
    if spec.parametrization == "ntk":
        h = x @ layer["w"] * (spec.w_std / math.sqrt(x.shape[-1]))
        return h + spec.b_std * layer["b"] if spec.bias else h
    h = x @ layer["w"]
    return h + layer["b"] if spec.bias else h


def hidden(spec: MLPSpec, params: Params, x: jax.Array) -> list[jax.Array]:
    """Post-activations of every hidden layer: a list of ``(n, n_l)`` for l = 1..L-1."""
    phi = ACTIVATIONS[spec.activation]
    out = []
    for layer in params[:-1]:
        x = phi(_dense(spec, layer, x))
        out.append(x)
    return out


def apply(spec: MLPSpec, params: Params, x: jax.Array, out_scale=1.0) -> jax.Array:
    """Network output ``out_scale * h^L(x)``.

    Args:
      x: ``(n, in_dim)`` inputs (a single ``(in_dim,)`` input is also accepted).
      out_scale: output multiplier alpha; may be a traced scalar.
    Returns:
      ``(n, out_dim)`` (or ``(out_dim,)`` for a single input).
    """
    if x.shape[-1] != spec.in_dim:
        raise ValueError(f"input has {x.shape[-1]} features, spec expects in_dim={spec.in_dim}")
    phi = ACTIVATIONS[spec.activation]
    for layer in params[:-1]:
        x = phi(_dense(spec, layer, x))
    return out_scale * _dense(spec, params[-1], x)


def weight_matrices(spec: MLPSpec, params: Params) -> list[jax.Array]:
    """Effective weight matrices ``(n_l, n_{l+1})`` of the function (scaling folded in)."""
    if spec.parametrization == "standard":
        return [p["w"] for p in params]
    return [p["w"] * (spec.w_std / math.sqrt(p["w"].shape[0])) for p in params]


def relative_movement(params: Params, params0: Params) -> jax.Array:
    """``max_l ||W_l - W_l(0)||_F / ||W_l(0)||_F`` over weight matrices (a laziness measure)."""
    ratios = [
        jnp.linalg.norm(p["w"] - q["w"]) / jnp.linalg.norm(q["w"]) for p, q in zip(params, params0)
    ]
    return jnp.max(jnp.stack(ratios))
