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
* optional ``MATMUL_PRECISION``: float32 matrix-product precision of its programs, default
  "highest" (full float32 on every backend; GPUs would otherwise use TF32, TPUs bfloat16
  passes); set "default" / "tensorfloat32" / "bfloat16" only where the claims tolerate ~1e-3
  relative error (`jaxbench.sweep.DEFAULT_MATMUL_PRECISION`).
* optional ``CPU_INNER_BATCH``: int, the chunk layout on one CPU device in place of the engine's
  FLOP rule (`jaxbench.sweep.cpu_inner_batch`): 0 = one vmap over the chunk, k = ``lax.map`` over
  vmapped batches of k. Variants whose loops run very unequal lengths (adaptive ODE solvers,
  iterate-until-converged) are faster in small batches: a vmapped loop runs until its slowest
  variant is done. ``--inner-batch`` still overrides it.
* optional ``CPU_FUSION_EMITTERS = False``: compile its programs on CPU with XLA's elemental
  emitters instead of the default fusion emitters: about a third less compile time for small
  programs, slower code for large ones (`jaxbench.sweep.cpu_fusion_emitters`); set it where a
  side-by-side run of its sweeps measured the gain.
* optional ``check(variant)``: raises ValueError (one line) for an invalid combination of
  parameters (variant: a dict of all parameters, keys also readable as attributes);
  `jaxbench.sweep.load` calls it on every variant before anything runs.
* optional ``claims(results_dir) -> list[jaxbench.report.Check]``: the paper's claims checked
  against the finished sweep's files only (``jaxbench report`` writes them to REPORT.md).

A sweep file names a built-in experiment by its NAME, a module of one's own by its import path
(``experiment = "mylab.my_experiment"``) or by file (``experiment = "my_experiment.py"``,
relative to the sweep file); see `get`.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

# experiment NAME -> its module under jaxbench.experiments (one subpackage per paper)
REGISTRY = {
    "example": "example",
    "lambda_validation": "freeenergy.lambda_validation",
    "free_energy": "freeenergy.free_energy",
    "benign_overfitting": "benign.classification",
    "benign_n_growth": "benign.n_growth",
    "benign_regression": "benign.regression",
    "benign_mnist": "benign.mnist",
    "arch_bounds": "archbound.synthetic",
    "arch_bounds_mnist": "archbound.mnist",
    "local_recovery": "recovery.local_recovery",
    "ntk_convergence": "ntk.convergence",
    "info_bounds": "infobound.layers",
    "info_linear": "infobound.linear",
    "info_gibbs": "infobound.gibbs",
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


_CONTRACT = ("NAME", "PARAMS", "run_one", "plot")


def get(name: str, base=None) -> ModuleType:
    """The experiment module that ``experiment = "<name>"`` names (ValueError, one line, if none).

    ``name`` is a built-in name (`REGISTRY`), an importable module (``"mylab.experiments.foo"``,
    found on ``sys.path`` / ``PYTHONPATH``), or a Python file (``"foo.py"``, relative to ``base``,
    the sweep file's folder, unless absolute). A user's module follows the same contract.
    """
    if name in REGISTRY:
        return importlib.import_module(f"jaxbench.experiments.{REGISTRY[name]}")
    if name.endswith(".py"):
        mod = _from_file(Path(base or ".") / name)
    else:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name is None or not name.startswith(e.name):
                raise  # the module exists but one of its own imports is missing: show that
            raise ValueError(f"unknown experiment {name!r}: not a built-in one ({', '.join(sorted(REGISTRY))}), "
                             f"not an importable module, and not a .py file") from None
    missing = [a for a in _CONTRACT if not hasattr(mod, a)]
    if missing:
        raise ValueError(f"experiment module {name!r} lacks {', '.join(missing)} "
                         f"(an experiment defines NAME, PARAMS, run_one and plot; see jaxbench/experiments/example.py)")
    return mod


def of_results(meta: dict) -> ModuleType:
    """The experiment module of a finished sweep (its ``meta.json``), for plotting and reports."""
    name, file = meta["experiment"], meta.get("experiment_file")
    if name.endswith(".py") and file and Path(file).is_file():
        return get(file)
    return get(name, Path(meta.get("sweep_file", ".")).parent)


def _from_file(path: Path) -> ModuleType:
    """Imports a user's experiment file once per process (module name derived from its path)."""
    path = path.resolve()
    if not path.is_file():
        raise ValueError(f"experiment file not found: {path}")
    key = f"jaxbench_user_experiment_{abs(hash(str(path))):x}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[key] = mod
        try:
            spec.loader.exec_module(mod)
        except BaseException:
            del sys.modules[key]
            raise
    return sys.modules[key]
