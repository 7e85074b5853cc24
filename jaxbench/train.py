"""One training run as one pure function (the unit a sweep vmaps).

`train` runs full-batch gradient descent or minibatch SGD (through optax) for a static number of
steps and records metrics on a static log-spaced grid of steps. Everything numeric that a sweep
varies (learning rate, output multiplier, the data itself, the key) is a traced argument, so a
batch of variants that share shapes is ONE compiled program.

The loop is a ``lax.scan`` over grid segments; inside a segment a ``fori_loop`` takes the
steps, so metrics on held-out data cost one evaluation per grid point rather than per step.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxbench import mlp

LOSSES = ("logistic", "square")
OPTIMIZERS = ("gd", "sgd", "momentum", "adam")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Static description of a training run.

    steps: number of optimizer steps. loss: "logistic" (labels in {-1, +1}, scalar output) or
    "square" (``0.5 * mean ||f - y||^2``). optimizer: "gd" (full batch), "sgd" (minibatches of
    batch_size), "momentum" (heavy ball 0.9, full batch or minibatch), "adam". n_log: number of
    points of the log-spaced metric grid. stop_at_interpolation: freeze the parameters at the
    first step whose training error is 0 (classification only), so ``final`` describes the
    interpolating network the theory studies; the loop then ends as soon as every variant of a
    batch has stopped. Full batch, the error is the one of the step's own forward pass; with
    minibatches it is the full training error, checked after every epoch of ``ceil(n /
    batch_size)`` steps (the metric grid is rounded to whole epochs).
    """

    steps: int
    loss: str = "logistic"
    optimizer: str = "gd"
    batch_size: int | None = None
    n_log: int = 20
    stop_at_interpolation: bool = False

    def __post_init__(self):
        if self.steps <= 0:
            raise ValueError(f"steps must be > 0, got {self.steps}")
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; choose from {LOSSES}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose from {OPTIMIZERS}")
        if self.batch_size is not None and self.batch_size <= 0:
            raise ValueError(f"batch_size must be > 0, got {self.batch_size}")

    @property
    def classification(self) -> bool:
        return self.loss == "logistic" or self.stop_at_interpolation


class Data(NamedTuple):
    """x: (n, d); y: (n,) labels in {-1, +1} or (n, k) targets; x_test, y_test likewise."""

    x: jax.Array
    y: jax.Array
    x_test: jax.Array
    y_test: jax.Array


class TrainResult(NamedTuple):
    """params: final parameters. final: dict of scalars. curves: dict of (n_log,) arrays on grid."""

    params: mlp.Params
    final: dict
    curves: dict
    grid: np.ndarray


def log_grid(steps: int, n: int) -> np.ndarray:
    """Increasing unique step counts in [0, steps], log-spaced, always containing 0 and steps."""
    if n <= 2 or steps <= 1:
        return np.array([0, steps]) if steps > 0 else np.array([0])
    g = np.unique(np.round(np.geomspace(1, steps, n - 1)).astype(int))
    return np.concatenate([[0], g])


def loss_and_error(loss: str, f: jax.Array, y: jax.Array):
    """Mean loss and (for labels in {-1,+1}) classification error of outputs f.

    f: (n, k) outputs; y: (n,) labels or (n, k) targets. Error is NaN-free 0/1 error of sign(f)
    for scalar-output classification and 0 otherwise.
    """
    if y.ndim == 1:
        f = f[:, 0]
        margin = y * f
        err = jnp.mean(margin <= 0)
    else:
        err = jnp.zeros(())
    if loss == "logistic":
        return jnp.mean(jax.nn.softplus(-margin)), err
    return 0.5 * jnp.mean(jnp.sum(jnp.reshape((f - y) ** 2, (f.shape[0], -1)), axis=-1)), err


def _optimizer(cfg: TrainConfig, lr) -> optax.GradientTransformation:
    if cfg.optimizer in ("gd", "sgd"):
        return optax.sgd(lr)
    if cfg.optimizer == "momentum":
        return optax.sgd(lr, momentum=0.9)
    return optax.adam(lr)


def train(cfg: TrainConfig, spec: mlp.MLPSpec, params0: mlp.Params, data: Data, lr, key,
          out_scale=1.0, center=None, init_noise=0.0) -> TrainResult:
    """Trains ``spec`` from ``params0`` on ``data``. Pure; jit and vmap it from outside.

    The trained function is ``f = out_scale * h_params`` or, with ``center``, the centred model of
    lazy training (Chizat, Oyallon, Bach, NeurIPS 2019, arXiv 1812.07956)
    ``f = out_scale * (h_params - h_params0) + init_noise * h_params0``: zero at initialization
    when ``init_noise = 0``, with the tangent kernel ``out_scale^2 Theta_h`` of the uncentred one.

    Args:
      lr, out_scale, init_noise: scalars (may be traced). key: PRNG key (minibatch sampling).
      center: None or ``(h0_train (n, k), h0_test (m, k))``, the initial network's outputs
        ``mlp.apply(spec, params0, x)`` on the training and test inputs.
    Returns:
      `TrainResult`. ``final`` holds train/test loss and error, ``weight_move`` (relative weight
      movement, see `mlp.relative_movement`), ``steps_to_fit`` (first step with zero training
      error, -1 if never; classification only) and ``diverged`` (non-finite loss). ``curves``
      holds the same losses/errors and weight movement on the grid ``grid`` (n_log points).
    """
    n = data.x.shape[0]
    minibatch = cfg.optimizer != "gd" and cfg.batch_size is not None and cfg.batch_size < n
    stop = cfg.stop_at_interpolation
    epoch = -(-n // cfg.batch_size) if minibatch else 1  # steps between interpolation checks
    opt = _optimizer(cfg, lr)
    grid = log_grid(cfg.steps, cfg.n_log)
    if stop and epoch > 1:
        grid = np.unique(np.minimum(-(-grid // epoch) * epoch, -(-cfg.steps // epoch) * epoch))
    h0_train, h0_test = (None, None) if center is None else center

    def objective(params, x, y, h0):
        h = mlp.apply(spec, params, x)
        f = out_scale * h if h0 is None else out_scale * (h - h0) + init_noise * h0
        return loss_and_error(cfg.loss, f, y)

    def metrics(params):
        tr_loss, tr_err = objective(params, data.x, data.y, h0_train)
        te_loss, te_err = objective(params, data.x_test, data.y_test, h0_test)
        return {
            "train_loss": tr_loss, "train_err": tr_err, "test_loss": te_loss, "test_err": te_err,
            "weight_move": mlp.relative_movement(params, params0),
        }

    def step(t, state):
        """One optimizer step; full batch with stop: frozen from the first step with zero error."""
        params, opt_state, done, fit_step = state
        if minibatch:
            idx = jax.random.choice(jax.random.fold_in(key, t), n, (cfg.batch_size,), replace=False)
            batch = (data.x[idx], data.y[idx], None if h0_train is None else h0_train[idx])
        else:
            batch = (data.x, data.y, h0_train)
        (_, err), grads = jax.value_and_grad(objective, has_aux=True)(params, *batch)
        updates, new_opt_state = opt.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        if stop and not minibatch:
            # err was measured at `params` on the full training set: freeze from that step on.
            fit_now = (err == 0) & ~done
            fit_step = jnp.where(fit_now, t, fit_step)
            done = done | fit_now
            keep = lambda new, old: jnp.where(done, old, new)  # noqa: E731
            new_params = jax.tree.map(keep, new_params, params)
            new_opt_state = jax.tree.map(keep, new_opt_state, opt_state)
        return new_params, new_opt_state, done, fit_step

    def one_epoch(t, state):
        """``epoch`` minibatch steps, then the full training error: stop once it is 0."""
        params, opt_state, done, fit_step = jax.lax.fori_loop(t, t + epoch, step, state)
        fit_now = (objective(params, data.x, data.y, h0_train)[1] == 0) & ~done
        return params, opt_state, done | fit_now, jnp.where(fit_now, t + epoch, fit_step)

    def segment(state, bounds):
        start, end = bounds
        if stop:  # ends early once this variant (under vmap: every variant) has interpolated
            advance = one_epoch if epoch > 1 else step
            _, state = jax.lax.while_loop(lambda c: (c[0] < end) & ~c[1][2],
                                          lambda c: (c[0] + epoch, advance(c[0], c[1])), (start, state))
        else:
            state = jax.lax.fori_loop(start, end, step, state)
        return state, metrics(state[0])

    state0 = (params0, opt.init(params0), jnp.zeros((), bool), jnp.full((), -1, jnp.int32))
    m0 = metrics(params0)
    bounds = (jnp.asarray(grid[:-1], jnp.int32), jnp.asarray(grid[1:], jnp.int32))
    (params, _, done, fit_step), ms = jax.lax.scan(segment, state0, bounds)
    curves = {k: jnp.concatenate([m0[k][None], ms[k]]) for k in m0}
    final = {k: v[-1] for k, v in curves.items()}
    if cfg.classification:
        if not stop:
            # resolution of the grid: first grid point with zero training error
            hit = curves["train_err"] == 0
            fit_step = jnp.where(hit.any(), jnp.asarray(grid)[jnp.argmax(hit)], -1)
        final["steps_to_fit"] = fit_step
    final["diverged"] = ~jnp.isfinite(final["train_loss"]) | ~jnp.isfinite(final["test_loss"])
    return TrainResult(params, final, curves, grid)
