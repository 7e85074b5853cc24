"""Experiments: one module per paper. The sweep engine's contract with them.

An experiment module defines:

* ``NAME``: str, the value of ``experiment = "..."`` in sweep files.
* ``PARAMS``: dict ``name -> Param``; every key a sweep file may set. ``static`` parameters fix
  array shapes or loop lengths (variants are bucketed by them; one compilation per bucket);
  ``traced`` ones are numbers swept inside one compiled call (one scalar per variant).
  ``seed`` is always present and traced: the engine adds it.
* ``run_one(static, traced, key) -> dict[str, Array]``: ONE variant, pure and jit-able.
  ``static`` is a frozen dataclass with the static parameters as attributes; ``traced`` a dict
  of scalar arrays; ``key`` a PRNG key made from the seed. Scalar outputs (shape ``()``) become
  columns of the results table; other outputs are stored in ``arrays.npz`` with a leading
  variant axis. The engine vmaps it over variants. A ``diverged`` output (bool) is added when
  the experiment does not return one: True where any floating scalar output is not finite.
* ``plot(results_dir) -> list[Path]``: draws figures reading only files (`jaxbench.store.load`).
* optional ``X64 = True``: the experiment runs under ``jax.enable_x64(True)``.
* optional ``check(variant)``: raises ValueError (one line) for an invalid combination of
  parameters (variant: a dict of all parameters, keys also readable as attributes);
  `jaxbench.sweep.load` calls it on every variant before anything runs.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from types import ModuleType
from typing import Any, Callable

# experiment NAME -> module under jaxbench.experiments, or "module.attr" for an object in a module
# that hosts several experiments (it has the same NAME / PARAMS / run_one / plot attributes)
REGISTRY = {
    "example": "example",
    "lambda_validation": "lambda_validation",
    "free_energy": "freeenergy",
    "benign_overfitting": "benign",
    "benign_regression": "benign_regression",
    "arch_bounds": "archbound",
    "local_recovery": "recovery",
    "ntk_convergence": "ntk_convergence",
    "info_bounds": "infobound",
}

_REQUIRED = object()


@dataclasses.dataclass(frozen=True)
class Param:
    """One parameter a sweep file may set.

    kind: "static" or "traced". type: int, float, bool or str. default: value when the sweep
    file does not set it (omit to make it required). check: optional predicate on a value;
    ``why`` says what it requires (used in the error message).
    """

    kind: str
    type: type
    default: Any = _REQUIRED
    check: Callable[[Any], bool] | None = None
    why: str = ""

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED

    def validate(self, name: str, value: Any) -> Any:
        """Returns the value coerced to ``type``; raises ValueError with one clear line."""
        t = self.type
        if t is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if t is bool or isinstance(value, bool):
            ok = isinstance(value, bool) and t is bool
        else:
            ok = isinstance(value, t)
        if not ok:
            raise ValueError(f"{name} = {value!r}: expected {t.__name__}")
        if t is float and not math.isfinite(value):
            raise ValueError(f"{name} = {value!r}: must be finite")
        if self.check is not None and not self.check(value):
            raise ValueError(f"{name} = {value!r}: {self.why or 'invalid value'}")
        return value


def static(type_, default=_REQUIRED, check=None, why=""):
    return Param("static", type_, default, check, why)


def traced(type_, default=_REQUIRED, check=None, why=""):
    return Param("traced", type_, default, check, why)


def positive(type_=int, default=_REQUIRED, kind="static"):
    return Param(kind, type_, default, lambda v: v > 0, "must be > 0")


def in_range(lo, hi, default=_REQUIRED, kind="traced"):
    return Param(kind, float, default, lambda v: lo <= v <= hi, f"must lie in [{lo}, {hi}]")


def one_of(*choices, default=_REQUIRED):
    return Param("static", str, default, lambda v: v in choices, f"must be one of {list(choices)}")


def get(name: str) -> ModuleType:
    """The experiment module registered under ``name`` (ValueError if unknown)."""
    if name not in REGISTRY:
        raise ValueError(f"unknown experiment {name!r}; known: {sorted(REGISTRY)}")
    module, _, attr = REGISTRY[name].partition(".")
    mod = importlib.import_module(f"jaxbench.experiments.{module}")
    return getattr(mod, attr) if attr else mod
