import itertools
import os
import re
import sys
from pathlib import Path

import pytest

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
# One XLA compilation cache per test session, shared by pytest-xdist workers and the CLI
# subprocesses the tests start (environment variables): many tests compile the same tiny
# programs, and on CPU compiling dominates the suite's time. A fresh folder each session, so
# no test depends on a previous run.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import atexit
    import shutil
    import tempfile

    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="jaxbench-xla-cache-")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
# Tests claim float32 / float64 equalities: full-precision matrix products on every backend
# (GPUs default float32 products to TF32; the sweep engine's policy is the same, sweep.py).
os.environ.setdefault("JAX_DEFAULT_MATMUL_PRECISION", "highest")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def unordered_lapack_calls(hlo: str):
    """LAPACK custom calls of an optimized HLO module and the pairs of them, within one
    computation, with no data path between them (those XLA's CPU runtime may run at once)."""
    calls, unordered = [], []
    for comp in re.findall(r"^(?:ENTRY )?%\S+ .*?\{\n(.*?)\n\}", hlo, flags=re.S | re.M):
        deps, mine = {}, []
        for line in comp.splitlines():
            m = re.match(r"\s*(?:ROOT )?%([\w.\-]+) = (.*)", line)
            if m:
                body = m.group(2).split(", metadata=")[0]
                deps[m.group(1)] = set(re.findall(r"%([\w.\-]+)", body))
                if 'custom_call_target="lapack' in body:
                    mine.append(m.group(1))

        def ancestors(a):
            seen, todo = set(), [a]
            while todo:
                for b in deps.get(todo.pop(), ()):
                    if b not in seen:
                        seen.add(b)
                        todo.append(b)
            return seen

        anc = {c: ancestors(c) for c in mine}
        calls += mine
        unordered += [(a, b) for a, b in itertools.combinations(mine, 2) if a not in anc[b] and b not in anc[a]]
    return calls, unordered


@pytest.fixture
def root() -> Path:
    return ROOT


def write_sweep(path: Path, body: str) -> Path:
    path.write_text(body)
    return path


TINY = """
experiment = "example"
seeds = 2
[fixed]
n = 16
n_test = 64
d = 4
steps = 20
n_log = 4
[grid]
width = [4, 8]
eta = [0.0, 0.2]
"""


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """``smoke_run(name)``: the output folder of ``sweeps/<name>.toml`` run at the smoke preset
    through the CLI, computed once per test session (shared across pytest-xdist workers through a
    lock file) so that the experiment tests and the every-sweep smoke test reuse one run."""
    import fcntl

    import jax

    from jaxbench import cli

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # shared by all workers of this session

    def get(name: str) -> Path:
        out = base / f"smoke-{name}"
        with open(base / f"smoke-{name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (out / ".done").exists():
                args = ["sweep", str(ROOT / "sweeps" / f"{name}.toml"), "--scale", "smoke", "--out", str(out),
                        "--no-progress", "--fresh"]
                with jax.enable_x64(False):  # as from the shell, whatever the calling test enabled
                    assert cli.main(args) == 0, f"smoke preset of {name} failed"
                (out / ".done").touch()
        return out

    return get
