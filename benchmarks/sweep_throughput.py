"""Sweep throughput: the engine versus the loops people write, side by side in one run.

Workload per variant (identical in every method): a depth-3 ReLU MLP (NTK parametrization,
hidden width m) on its own separated-sphere data set (one draw of 128 training and 128 test
points, d = 16, label noise 0.1 on the training labels), full-batch gradient descent on the
logistic loss for S steps with a per-variant learning rate, then final training loss and test
error. Methods:

  (a) engine       : `jaxbench.sweep.run` on the `example` experiment, default layout ("auto":
                     chosen per bucket); end to end incl. planning, compiling, writing files
      engine_vmap  : the same with --inner-batch 0 (one vmap over each chunk)
      engine_map1  : --inner-batch 1 (lax.map over single variants inside one compiled call)
      engine_map8  : --inner-batch 8 (lax.map over vmapped batches of 8)
  (b) naive        : jit one training step (and the data generator), Python loops over variants
                     and steps
  (c) scan         : one jitted whole-run function (`run_one`: lax.scan) per variant, compiled
                     once per width
  (d) torch        : PyTorch model ensembling (torch.func.stack_module_state + functional_call +
                     vmap), torch==2.13.0 CPU in a separate venv made by this script; its data
                     is generated beforehand by JAX and not timed (favours torch)

Times are end to end, compilation included; every method first runs once, untimed, on a tiny
case of other shapes, so the process's one-time costs fall on none of them. Achieved FLOP/s
counts 6 n (weights) FLOPs per training step (metrics and data generation not counted) and
compares with a dense 1024^2 float32 matmul measured in the same run; "exec" uses the engine's
time inside its compiled calls (meta.json chunk seconds), end-to-end uses the whole wall time.

    python benchmarks/sweep_throughput.py            # full table, writes RESULTS.md (~25 min, 2 cores)
    python benchmarks/sweep_throughput.py --quick    # a few points, writes nothing
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
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
lr = {lrs}
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


def _lrs(per_width):
    return (0.5, 1.0) if per_width >= 2 else (1.0,)


def variants(widths, per_width):
    """(width, seed, lr) triples: per_width variants per width, as the engine expands them."""
    seeds = max(1, per_width // 2)
    return [(w, s, lr) for w in widths for lr in _lrs(per_width) for s in range(seeds)]


LAST_ENGINE = {}  # execution seconds and chosen layouts of the last engine run


def run_engine(widths, per_width, steps, inner_batch="auto"):
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "bench.toml"
        f.write_text(SWEEP.format(seeds=max(1, per_width // 2), n=N, n_test=N_TEST, d=D, steps=steps,
                                  eta=ETA, widths=list(widths), lrs=list(_lrs(per_width))))
        t = time.perf_counter()
        out = sweep.run(f, out=Path(tmp) / "out", progress=False, plot=False, inner_batch=inner_batch)
        dt = time.perf_counter() - t
        table = np.genfromtxt(out / "table.csv", delimiter=",", names=True)
        meta = json.loads((out / "meta.json").read_text())
    LAST_ENGINE.update(exec_s=meta["chunk_seconds_total"], layouts=[b["inner_batch"] for b in meta["buckets"]],
                       compile_s=sum(b["compile_s"] for b in meta["buckets"]))
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


_sphere = jax.jit(data.separated_sphere, static_argnums=(1, 2))


def _task(seed):
    """The engine's data for `seed` (same key splits as the example experiment), generated jitted:
    (train x, train y, test x, clean test y, init key)."""
    k_data, k_init, _ = jax.random.split(jax.random.PRNGKey(seed), 3)
    xy = _sphere(k_data, N + N_TEST, D, ETA, 0.1)
    return xy.x[:N], xy.y[:N], xy.x[N:], xy.y_clean[N:], k_init


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
            x, y, _, _, k_init = _task(seed)
            p = mlp.init(spec, k_init)
            for _ in range(steps):
                p = step(p, x, y, lr)
            losses.append(float(loss(p, x, y)))
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
    params = {k: v.detach() for k, v in params.items()}  # plain tensors: no autograd graph across steps
    base = MLP().to("meta")
    def loss(p, b, x, y):
        return torch.nn.functional.softplus(-y * functional_call(base, (p, b), (x,))).mean()
    grad = torch.func.vmap(torch.func.grad(loss))
    for _ in range(cfg["steps"]):
        g = grad(params, buffers, X, Y)
        params = {k: params[k] - LR.view(-1, *[1] * (params[k].dim() - 1)) * g[k] for k in params}
    with torch.no_grad():
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
            tasks = [_task(seed) for (_, seed, _) in vs]
            arrays[f"x{w}"] = np.stack([np.asarray(t[0]) for t in tasks])
            arrays[f"y{w}"] = np.stack([np.asarray(t[1]) for t in tasks])
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


ENGINES = {"engine": "auto", "engine_vmap": 0, "engine_map1": 1, "engine_map8": 8}
LABELS = {"engine": "engine (auto)", "engine_vmap": "vmap", "engine_map1": "map 1", "engine_map8": "map 8",
          "naive": "(b) naive", "scan": "(c) scan", "torch": "(d) torch"}


def measure(name, widths, per_width, steps, methods, peak):
    total_flops = sum(flops(w, steps) * len(variants([w], per_width)) for w in widths)
    row = {"case": name, "widths": list(widths), "variants": len(variants(widths, per_width)), "steps": steps}
    for m, fn in methods.items():
        dt, loss = fn(widths, per_width, steps)
        row[m], row[f"{m}_loss"] = dt, loss
        if m in ENGINES:
            row[f"{m}_exec"] = LAST_ENGINE["exec_s"]
            row[f"{m}_layouts"] = LAST_ENGINE["layouts"]
            row[f"{m}_compile"] = LAST_ENGINE["compile_s"]
    row["flops"] = total_flops
    row["engine_frac_matmul"] = total_flops / row["engine"] / peak
    row["engine_exec_frac_matmul"] = total_flops / row["engine_exec"] / peak
    print(json.dumps(row), flush=True)
    return row


def _layout(ks):
    return "/".join(sorted({"vmap" if k == 0 else f"map{k}" for k in ks}))


def report(res, minutes, load):
    rows, peak = res["rows"], res["matmul_gflops"]
    out = ["Targets (from the issue), measured in this run:", ""]
    for t in (x for x in rows if x["case"].startswith("target")):
        r = t["naive"] / t["engine"]
        out.append(f"- 1000 variants over widths {{16, 32, 64, 128}}, {t['steps']} GD steps, end to end vs (b) the "
                   f"jit-one-step loop (target >= 5x): {t['naive']:.1f} s / {t['engine']:.1f} s = **{r:.1f}x** "
                   f"({'met' if r >= 5 else 'NOT met'})")
    slower = [x for x in rows if x["engine"] > x["scan"]]
    worst = max(rows, key=lambda x: x["engine"] / x["scan"])
    out.append(f"- never slower than (c) one jitted lax.scan per variant, at any grid point: engine / scan at most "
               f"**{worst['engine'] / worst['scan']:.2f}** ({worst['case']}); slower at "
               f"{len(slower)} of {len(rows)} points ({'met' if not slower else 'NOT met: ' + ', '.join(x['case'] for x in slower)})")
    big = [x for x in rows if min(x["widths"]) >= 256]
    lo_e2e = min(x["engine_frac_matmul"] for x in big)
    lo_exec = min(x["engine_exec_frac_matmul"] for x in big)
    out.append(f"- widths >= 256, engine FLOP/s as a fraction of the dense matmul's ({peak:.0f} GFLOP/s) (target >= 50%): "
               f"inside the compiled calls at least **{100 * lo_exec:.0f}%** ({'met' if lo_exec >= 0.5 else 'NOT met'}); "
               f"end to end, compilation included, at least {100 * lo_e2e:.0f}%")
    for t in (x for x in rows if "torch" in x):
        out.append(f"- vs (d) PyTorch torch.func ensembling, {t['case']}: {t['torch']:.1f} s / {t['engine']:.1f} s = "
                   f"**{t['torch'] / t['engine']:.2f}x**")
    out += ["", f"Run of `benchmarks/sweep_throughput.py` ({res['date']}, {minutes:.0f} min, load average "
            f"{load[0]:.1f} at the start and {load[1]:.1f} at the end; jax {jax.__version__} on "
            f"{res['device']}). Seconds end to end (compilation included); the engine's layout per bucket "
            "in brackets; FLOP/s columns are the engine's default (auto) layout. Mean final training "
            "losses agree between the JAX methods to float32 precision (torch uses its own initial weights).", ""]
    cols = [m for m in ("engine", "engine_vmap", "engine_map1", "engine_map8", "scan", "naive", "torch")
            if any(m in x for x in rows)]
    out.append("| case | widths | variants | steps | " + " | ".join(LABELS[c] for c in cols)
               + " | scan / engine | engine compile s | GFLOP/s e2e (exec) | % matmul e2e (exec) |")
    out.append("|" + "---|" * (len(cols) + 8))
    for x in rows:
        cells = []
        for c in cols:
            if c not in x:
                cells.append("—")
            elif c == "engine":
                cells.append(f"**{x[c]:.2f}** [{_layout(x['engine_layouts'])}]")
            else:
                cells.append(f"{x[c]:.2f}")
        g, ge = x["flops"] / x["engine"] / 1e9, x["flops"] / x["engine_exec"] / 1e9
        out.append(f"| {x['case']} | {','.join(map(str, x['widths']))} | {x['variants']} | {x['steps']} | "
                   + " | ".join(cells) + f" | {x['scan'] / x['engine']:.2f} | {x['engine_compile']:.1f} | {g:.1f} ({ge:.1f}) | "
                   f"{100 * x['engine_frac_matmul']:.0f} ({100 * x['engine_exec_frac_matmul']:.0f}) |")
    out += ["", "Time inside the compiled calls only (s; compilation and file writing excluded), per engine layout:", "",
            "| case | vmap | map 1 | map 8 | auto (chosen) |", "|---|---|---|---|---|"]
    for x in (x for x in rows if "engine_vmap_exec" in x):
        out.append(f"| {x['case']} | {x['engine_vmap_exec']:.2f} | {x['engine_map1_exec']:.2f} | "
                   f"{x['engine_map8_exec']:.2f} | {x['engine_exec']:.2f} ({_layout(x['engine_layouts'])}) |")
    return "\n".join(out)


def write_section(text: str):
    path = ROOT / "benchmarks" / "RESULTS.md"
    src = path.read_text()
    block = f"<!-- section:sweep -->\n{text}\n<!-- /section:sweep -->"
    if "<!-- /section:sweep -->" not in src:  # first run: replace up to the next section's heading
        src = re.sub(r"<!-- section:sweep -->.*?(?=\n## )", lambda _: block + "\n", src, count=1, flags=re.S)
    else:
        src = re.sub(r"<!-- section:sweep -->.*?<!-- /section:sweep -->", lambda _: block, src, flags=re.S)
    path.write_text(src)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="a few points; writes nothing")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "sweep_throughput.json"))
    args = ap.parse_args()
    t0, load0 = time.perf_counter(), os.getloadavg()[0]
    py = None if args.no_torch else ensure_torch()
    peak = matmul_flops_per_s()
    print(f"dense 1024^2 float32 matmul: {peak / 1e9:.1f} GFLOP/s  (devices: {jax.devices()})", flush=True)
    engines = {m: functools.partial(run_engine, inner_batch=k) for m, k in ENGINES.items()}
    methods = dict(engines, scan=run_scan)
    rows = []
    # Untimed warm-up of every method on a tiny case of other shapes: one-time costs of the process
    # (imports, JAX's internal helpers) then land on no method's row.
    for fn in [*methods.values(), run_naive]:
        fn((8,), 1, 2)
    # Target case: 1000 variants over widths {16, 32, 64, 128}.
    steps = 100 if args.quick else 200
    full = dict(methods, naive=run_naive)
    if py:
        full["torch"] = functools.partial(run_torch, py)
    rows.append(measure(f"target-{steps}", (16, 32, 64, 128), 250, steps, full, peak))
    if not args.quick:  # the length of real sweeps (the benign default trains 800 steps)
        long = {m: full[m] for m in ("engine", "scan", "naive")}  # default layout, no (d): bounds the run time
        rows.append(measure("target-1000", (16, 32, 64, 128), 250, 1000, long, peak))
    grid = [(16, 1), (16, 64), (16, 4096), (64, 1), (64, 256), (256, 1), (256, 16), (256, 64),
            (1024, 1), (1024, 4)]
    if args.quick:
        grid = [(16, 64), (256, 16)]
    for w, v in grid:
        ms = dict(methods)
        if py and v >= 16:
            ms["torch"] = functools.partial(run_torch, py)
        rows.append(measure(f"w{w}-v{v}", (w,), v, 100, ms, peak))
    res = {"matmul_gflops": peak / 1e9, "rows": rows, "date": time.strftime("%Y-%m-%d"),
           "device": f"{jax.devices()[0].device_kind} x {os.cpu_count()} cores"}
    text = report(res, (time.perf_counter() - t0) / 60, (load0, os.getloadavg()[0]))
    print(text)
    if not args.quick:
        Path(args.json).write_text(json.dumps(res, indent=1))
        write_section(text)


if __name__ == "__main__":
    main()
