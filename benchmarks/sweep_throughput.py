"""Sweep throughput: the engine versus the loops people write, side by side in one run.

Workload per variant (identical in every method): a depth-3 ReLU MLP (NTK parametrization,
hidden width m) on its own separated-sphere data set (n = 128, d = 16, label noise 0.1),
full-batch gradient descent on the logistic loss for S steps with a per-variant learning rate,
then final training loss and test error. Methods:

  (a) engine   : `jaxbench.sweep.run` on the `example` experiment (one jitted vmap per bucket;
                 end to end incl. writing files);
                 engine_map1 / engine_map16: the same with --inner-batch 1 / 16 (lax.map over
                 sub-batches inside the one compiled call)
  (b) naive    : jit one training step, Python loops over variants and steps
  (c) scan     : one jitted lax.scan training run per variant (compiled once per width)
  (d) torch    : PyTorch model ensembling (torch.func.stack_module_state + functional_call +
                 vmap), torch==2.13.0 CPU in a separate venv made by this script

Times are end to end, compilation included. Achieved FLOP/s counts 6 * n * (weights) FLOPs per
training step and compares with a dense float32 matmul measured in the same run.

    python benchmarks/sweep_throughput.py            # full table (~15 min on 2 CPU cores)
    python benchmarks/sweep_throughput.py --quick    # a few points
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jaxbench import data, experiments, mlp, sweep  # noqa: E402
from jaxbench import train as trainlib  # noqa: E402

N, D, N_TEST, ETA = 128, 16, 128, 0.1
TORCH_VENV = ROOT / "benchmarks" / ".venv-torch"

SWEEP = """
experiment = "example"
seeds = {seeds}
[fixed]
depth = 3
n = {n}
n_test = {n_test}
d = {d}
steps = {steps}
n_log = 2
eta = {eta}
[grid]
width = {widths}
lr = [0.5, 1.0]
"""


def flops(width: int, steps: int) -> float:
    weights = D * width + width * width + width
    return 6.0 * N * weights * steps


def matmul_flops_per_s(size=1024, reps=20) -> float:
    a = jnp.ones((size, size), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    t = time.perf_counter()
    for _ in range(reps):
        out = f(a)
    out.block_until_ready()
    return 2 * size**3 * reps / (time.perf_counter() - t)


def variants(widths, per_width):
    """(width, seed, lr) triples: per_width variants per width, as the engine expands them."""
    seeds = max(1, per_width // 2)
    return [(w, s, lr) for w in widths for lr in (0.5, 1.0) for s in range(seeds)]


def run_engine(widths, per_width, steps, inner_batch=None):
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "bench.toml"
        f.write_text(SWEEP.format(seeds=max(1, per_width // 2), n=N, n_test=N_TEST, d=D, steps=steps,
                                  eta=ETA, widths=list(widths)))
        t = time.perf_counter()
        out = sweep.run(f, out=Path(tmp) / "out", progress=False, plot=False, inner_batch=inner_batch)
        dt = time.perf_counter() - t
        table = np.genfromtxt(out / "table.csv", delimiter=",", names=True)
    return dt, float(np.mean(table["train_loss"]))


def _static(width, steps):
    mod = experiments.get("example")
    vals = {"width": width, "depth": 3, "n": N, "n_test": N_TEST, "d": D, "steps": steps, "n_log": 2}
    return mod, sweep._make_static(mod, vals)


def run_scan(widths, per_width, steps):
    """(c): one jitted whole-run function per width, called once per variant."""
    t = time.perf_counter()
    losses = []
    for w in widths:
        mod, static = _static(w, steps)
        fn = jax.jit(functools.partial(mod.run_one, static))
        for (_, seed, lr) in variants([w], per_width):
            p = {"eta": jnp.float32(ETA), "gamma": jnp.float32(0.1), "lr": jnp.float32(lr),
                 "alpha": jnp.float32(1.0), "seed": jnp.int32(seed)}
            losses.append(float(fn(p, jax.random.PRNGKey(seed))["train_loss"]))
    return time.perf_counter() - t, float(np.mean(losses))


def _task(seed):
    k_train, k_test, k_init, _ = jax.random.split(jax.random.PRNGKey(seed), 4)
    tr = data.separated_sphere(k_train, N, D, ETA, 0.1)
    te = data.separated_sphere(k_test, N_TEST, D, ETA, 0.1)
    return tr, te, k_init


def run_naive(widths, per_width, steps):
    """(b): jit one GD step; Python loops over variants and steps (no early stop, as people write it)."""
    t = time.perf_counter()
    losses = []
    for w in widths:
        spec = mlp.MLPSpec(D, (w, w), 1)
        loss = lambda p, x, y: jnp.mean(jax.nn.softplus(-y * mlp.apply(spec, p, x)[:, 0]))

        @jax.jit
        def step(p, x, y, lr):
            g = jax.grad(loss)(p, x, y)
            return jax.tree.map(lambda a, b: a - lr * b, p, g)

        for (_, seed, lr) in variants([w], per_width):
            tr, te, k_init = _task(seed)
            p = mlp.init(spec, k_init)
            for _ in range(steps):
                p = step(p, tr.x, tr.y, lr)
            losses.append(float(loss(p, tr.x, tr.y)))
    return time.perf_counter() - t, float(np.mean(losses))


TORCH_SCRIPT = r"""
import json, sys, time, math
import numpy as np, torch
from torch.func import stack_module_state, functional_call
torch.manual_seed(0)
cfg = json.loads(sys.argv[1]); z = np.load(cfg["data"])
t = time.perf_counter()
out = {}
for w in cfg["widths"]:
    X = torch.tensor(z[f"x{w}"]); Y = torch.tensor(z[f"y{w}"]); LR = torch.tensor(z[f"lr{w}"])
    V = X.shape[0]
    class MLP(torch.nn.Module):  # NTK parametrization, sigma_w = sqrt(2), sigma_b = 0.1
        def __init__(s):
            super().__init__()
            s.l = torch.nn.ModuleList([torch.nn.Linear(a, b) for a, b in [(X.shape[2], w), (w, w), (w, 1)]])
            for l in s.l:
                torch.nn.init.normal_(l.weight); torch.nn.init.normal_(l.bias)
        def forward(s, x):
            for i, l in enumerate(s.l):
                x = torch.nn.functional.linear(x, l.weight * (math.sqrt(2.0) / math.sqrt(l.in_features)), 0.1 * l.bias)
                if i < 2: x = torch.relu(x)
            return x[..., 0]
    models = [MLP() for _ in range(V)]
    params, buffers = stack_module_state(models)
    base = MLP().to("meta")
    def loss(p, b, x, y):
        return torch.nn.functional.softplus(-y * functional_call(base, (p, b), (x,))).mean()
    grad = torch.func.vmap(torch.func.grad(loss))
    for _ in range(cfg["steps"]):
        g = grad(params, buffers, X, Y)
        params = {k: params[k] - LR.view(-1, *[1] * (params[k].dim() - 1)) * g[k] for k in params}
    out[w] = float(torch.func.vmap(loss)(params, buffers, X, Y).mean())
print(json.dumps({"seconds": time.perf_counter() - t, "loss": float(np.mean(list(out.values())))}))
"""


def ensure_torch() -> Path | None:
    py = TORCH_VENV / "bin" / "python"
    if not py.exists():
        print("creating", TORCH_VENV, "(torch==2.13.0 CPU)", flush=True)
        r = subprocess.run([sys.executable, "-m", "venv", str(TORCH_VENV)])
        r = r.returncode or subprocess.run([str(py), "-m", "pip", "install", "-q", "torch==2.13.0", "numpy"]).returncode
        if r:
            print("could not install torch; skipping (d)")
            return None
    return py


def run_torch(py, widths, per_width, steps):
    with tempfile.TemporaryDirectory() as tmp:
        arrays = {}
        for w in widths:
            vs = variants([w], per_width)
            tasks = [_task(seed)[0] for (_, seed, _) in vs]
            arrays[f"x{w}"] = np.stack([np.asarray(t.x) for t in tasks])
            arrays[f"y{w}"] = np.stack([np.asarray(t.y) for t in tasks])
            arrays[f"lr{w}"] = np.array([lr for (_, _, lr) in vs], np.float32)
        np.savez(Path(tmp) / "d.npz", **arrays)
        cfg = json.dumps({"data": str(Path(tmp) / "d.npz"), "widths": list(widths), "steps": steps})
        t = time.perf_counter()
        r = subprocess.run([str(py), "-c", TORCH_SCRIPT, cfg], capture_output=True, text=True)
        wall = time.perf_counter() - t
    if r.returncode:
        print(r.stderr[-2000:])
        return float("nan"), float("nan")
    res = json.loads(r.stdout.strip().splitlines()[-1])
    return wall, res["loss"]  # wall includes interpreter + torch import, as a user would see


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "sweep_throughput.json"))
    args = ap.parse_args()
    py = None if args.no_torch else ensure_torch()
    peak = matmul_flops_per_s()
    print(f"dense 1024^2 float32 matmul: {peak / 1e9:.1f} GFLOP/s  (devices: {jax.devices()})", flush=True)
    rows = []

    def record(name, widths, per_width, steps, methods):
        total_flops = sum(flops(w, steps) * len(variants([w], per_width)) for w in widths)
        row = {"case": name, "widths": list(widths), "variants": len(variants(widths, per_width)), "steps": steps}
        for m, fn in methods.items():
            dt, loss = fn(widths, per_width, steps)
            row[m] = dt
            row[f"{m}_loss"] = loss
        row["engine_gflops"] = total_flops / row["engine"] / 1e9
        row["engine_frac_matmul"] = total_flops / row["engine"] / peak
        rows.append(row)
        print(json.dumps(row), flush=True)

    methods = {"engine": run_engine, "engine_map1": functools.partial(run_engine, inner_batch=1),
               "engine_map16": functools.partial(run_engine, inner_batch=16), "scan": run_scan}
    steps = 100 if args.quick else 200
    # Target case: 1000 variants over widths {16, 32, 64, 128}.
    full = dict(methods, naive=run_naive)
    if py:
        full["torch"] = functools.partial(run_torch, py)
    record("target", (16, 32, 64, 128), 250, steps, full)
    grid = [(16, 1), (16, 64), (16, 4096), (64, 1), (64, 256), (256, 1), (256, 16), (256, 64),
            (1024, 1), (1024, 4)]
    if args.quick:
        grid = [(16, 64), (256, 16)]
    for w, v in grid:
        ms = dict(methods)
        if py and v >= 16:
            ms["torch"] = functools.partial(run_torch, py)
        record(f"w{w}-v{v}", (w,), v, 100, ms)
    Path(args.json).write_text(json.dumps({"matmul_gflops": peak / 1e9, "rows": rows}, indent=1))
    print("wrote", args.json)


if __name__ == "__main__":
    main()
