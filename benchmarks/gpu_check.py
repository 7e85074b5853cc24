"""One accelerator check: correctness against the CPU, throughput, and the paper presets' cost.

    benchmarks/gpu_check.sh OUT_DIR            # ~5 min on one GPU: everything below
    benchmarks/gpu_check.sh OUT_DIR --quick    # a shorter subset (~2 min)
    benchmarks/gpu_check.sh OUT_DIR --cpu      # the same script on the CPU backend, tiny sizes (a dry run)

Needs no network and no install: jax (with CUDA on a GPU machine), numpy, scipy, matplotlib,
tqdm and pytest; jaxbench is put on PYTHONPATH by the shell wrapper. Steps, each recorded in
``OUT_DIR/gpu_check.json`` (a failing step is recorded and the others still run):

1. ``env``: jax version, backend, devices, nvidia-smi.
2. ``tests``: the tests that compare implementations (a vmapped chunk equals each variant alone,
   every layout gives the same table, NTK methods agree with the Jacobian contraction and with the
   infinite-width kernels, the matmul precision policy), run on this backend.
3. ``smoke``: every sweep's smoke preset on this backend and, in parallel processes, on the CPU
   (``JAX_PLATFORMS=cpu``); per table column the largest relative difference.
4. ``matmul``: dense matrix-product rate at each precision (the reference for "fraction of peak").
5. ``engine`` / ``ntk``: the sweep engine on the largest cases of benchmarks/sweep_throughput.py,
   and the structured empirical NTK at width = n = 4096; FLOP/s against (4).
6. ``paper_slice``: a slice of the benign_overfitting paper preset (widths >= 1024, every depth,
   one seed): variants/s, compile share, peak device memory, and from those the whole paper
   preset's cost, extrapolated by its training FLOPs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import tomllib
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

TESTS = [
    "tests/test_sweep.py::test_vmapped_chunk_equals_each_variant_alone",
    "tests/test_sweep.py::test_every_layout_gives_the_same_table",
    "tests/test_sweep.py::test_matmul_precision_policy_is_baked_into_every_bucket_program",
    "tests/test_scaleout.py::test_tiny_memory_budget_forces_many_chunks_same_table",
    "tests/test_ntk.py::test_all_methods_agree_with_the_whole_batch_jacobian_float64",
    "tests/test_ntk.py::test_standard_structured_equals_jacobian_of_an_independently_written_network",
    "tests/test_ntk.py::test_vmapped_variants_equal_each_variant_alone",
    "tests/test_ntk.py::test_wide_networks_converge_to_the_infinite_width_kernels",
    "tests/test_mlp.py",
    "tests/test_train.py::test_gd_matches_a_plain_python_optax_loop",
]
QUICK_SMOKE = ["ntk_convergence", "benign_overfitting", "lambda_validation"]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def step_env(args, out):
    import jax

    smi = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True) if _which("nvidia-smi") else None
    return {"jax": jax.__version__, "backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
            "nvidia_smi": smi.stdout.strip() if smi else None, "python": sys.version.split()[0]}


def _which(cmd):
    from shutil import which
    return which(cmd)


def step_tests(args, out):
    tests = TESTS[:5] if args.quick else TESTS
    xml = out / "tests.xml"
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}", *tests],
                       capture_output=True, text=True, cwd=ROOT, env=_env(args))
    (out / "tests.log").write_text(r.stdout + r.stderr)
    tail = [ln for ln in r.stdout.strip().splitlines() if ln.strip()][-1:] or [""]
    return {"returncode": r.returncode, "summary": tail[0], "seconds": time.perf_counter() - t0, "tests": tests}


def _env(args, **extra):
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{os.environ.get('PYTHONPATH', '')}", "JAXBENCH_CACHE_DIR": "off"}
    if args.cpu:
        env["JAX_PLATFORMS"] = "cpu"
    env.update(extra)
    return env


def step_smoke(args, out):
    """Smoke presets here and on the CPU (parallel processes), tables compared column by column."""
    import numpy as np

    from jaxbench import store

    names = sorted(p.stem for p in (ROOT / "sweeps").glob("*.toml"))
    if args.quick:
        names = [n for n in names if n in QUICK_SMOKE]
    cmd = lambda name, where: [sys.executable, "-m", "jaxbench", "sweep", f"sweeps/{name}.toml", "--scale", "smoke",  # noqa: E731
                               "--out", str(out / "smoke" / where / name), "--no-progress", "--no-plot", "--fresh"]
    cpu_env = _env(args, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_cpu_multi_thread_eigen=false")
    cpu = {n: subprocess.Popen(cmd(n, "cpu"), cwd=ROOT, env=cpu_env, stdout=subprocess.DEVNULL,
                               stderr=open(out / f"smoke_cpu_{n}.log", "w")) for n in names}
    res = {}
    for n in names:
        t0 = time.perf_counter()
        r = subprocess.run(cmd(n, "here"), cwd=ROOT, env=_env(args), capture_output=True, text=True)
        res[n] = {"returncode": r.returncode, "seconds": time.perf_counter() - t0, "stderr_tail": r.stderr[-500:]}
    for n in names:
        res[n]["cpu_returncode"] = cpu[n].wait()
        if res[n]["returncode"] or res[n]["cpu_returncode"]:
            continue
        a, b = store.load(out / "smoke" / "here" / n), store.load(out / "smoke" / "cpu" / n)
        diffs = {}
        for k, va in a.table.items():
            vb = b.table.get(k)
            if vb is None or not np.issubdtype(np.asarray(va).dtype, np.number):
                continue
            va, vb = np.asarray(va, float), np.asarray(vb, float)
            both = np.isfinite(va) & np.isfinite(vb)
            nan_mismatch = int(np.sum(np.isfinite(va) != np.isfinite(vb)))
            rel = np.abs(va - vb)[both] / np.maximum(np.abs(vb[both]), 1e-6) if both.any() else np.zeros(1)
            diffs[k] = {"max_rel": float(rel.max()), "nan_mismatch": nan_mismatch}
        worst = sorted(diffs.items(), key=lambda kv: -kv[1]["max_rel"])[:5]
        res[n].update(columns=len(diffs), identical_columns=sum(d["max_rel"] == 0 and not d["nan_mismatch"]
                                                                 for d in diffs.values()),
                      within_rel_1e4=sum(d["max_rel"] <= 1e-4 and not d["nan_mismatch"] for d in diffs.values()),
                      worst=dict(worst), matmul_precision=a.meta.get("matmul_precision"))
    return res


def _matmul_rate(size, dtype, precision, reps):
    import jax
    import jax.numpy as jnp

    a = jnp.ones((size, size), dtype)
    f = jax.jit(lambda x: jnp.matmul(x, x, precision=precision))
    f(a).block_until_ready()
    t = time.perf_counter()
    for _ in range(reps):
        y = f(a)
    y.block_until_ready()
    return 2 * size**3 * reps / (time.perf_counter() - t)


def step_matmul(args, out):
    import jax.numpy as jnp

    size, reps = (512, 5) if args.cpu else (8192, 50)
    return {"size": size,
            "f32_highest_flops": _matmul_rate(size, jnp.float32, "highest", reps),
            "f32_default_flops": _matmul_rate(size, jnp.float32, "default", reps),
            "bf16_flops": _matmul_rate(size, jnp.bfloat16, "default", reps)}


def step_engine(args, out, peak):
    import sweep_throughput as st

    cases = ([("w16-64 x 8", (16, 32), 4, 20)] if args.cpu else
             [("1000 variants, widths 16-128, 1000 steps", (16, 32, 64, 128), 250, 1000),
              ("64 variants, width 1024, 200 steps", (1024,), 64, 200),
              ("4096 variants, width 16, 200 steps", (16,), 4096, 200)])
    if args.quick and not args.cpu:
        cases = cases[:2]
    rows = []
    for label, widths, per_width, steps in cases:
        wall, loss = st.run_engine(widths, per_width, steps)
        fl = sum(st.flops(w, steps) for w, _, _ in st.variants(widths, per_width))
        ex = st.LAST_ENGINE["exec_s"]
        rows.append({"case": label, "wall_s": wall, "exec_s": ex, "compile_s": st.LAST_ENGINE["compile_s"],
                     "variants": len(st.variants(widths, per_width)), "train_flops": fl,
                     "exec_flops_per_s": fl / ex, "fraction_of_f32_highest_peak": fl / ex / peak,
                     "mean_train_loss": loss})
        log(f"engine {label}: {wall:.1f} s wall, {ex:.1f} s exec, {fl / ex / 1e12:.2f} TFLOP/s")
    return rows


def step_ntk(args, out, peak):
    import functools

    import jax

    from jaxbench import mlp, ntk

    w = n = 256 if args.cpu else 4096
    spec = mlp.MLPSpec(64, (w, w), 1)
    params = mlp.init(spec, jax.random.PRNGKey(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (n, 64))
    f = jax.jit(lambda p, x: ntk.empirical_ntk(functools.partial(mlp.apply, spec), p, x, method="structured"))
    t0 = time.perf_counter()
    f(params, x).block_until_ready()
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    k = f(params, x).block_until_ready()
    dt = time.perf_counter() - t0
    gram = 2.0 * n * n * sum(a + b for a, b in zip(spec.dims[:-1], spec.dims[1:]))  # the Gram products
    return {"width": w, "n": n, "depth": 3, "first_call_s": first, "seconds": dt, "gram_flops": gram,
            "fraction_of_f32_highest_peak": gram / dt / peak, "trace": float(k.trace())}


def _variant_flops(v):
    """Training FLOPs of one benign variant: 6 n P per GD step, P = its weights (an upper bound on
    steps: runs stop at interpolation)."""
    widths = [v["d"]] + [v["width"]] * (v["depth"] - 1) + [1]
    p = sum(a * b for a, b in zip(widths[:-1], widths[1:]))
    return 6.0 * v["n"] * p * v["steps"]


def _slice_file(src: Path, dest: Path, cpu: bool) -> Path:
    """A sweep file holding the paper preset of ``src`` at its widths >= 1024, one seed (on the
    CPU dry run: the smallest value of every axis, 20 steps), as its default preset."""
    from jaxbench import sweepfile

    raw = tomllib.loads(src.read_text())
    merged = sweepfile._merge_preset(raw, raw["presets"]["paper"], "presets.paper")
    grid, fixed, zipped = merged["grid"], merged["fixed"], merged["zip"]
    widths = grid.get("width", [fixed.get("width")])
    grid["width"] = [w for w in widths if w >= 1024] or [max(widths)]
    fixed.pop("width", None)
    if cpu:  # the smallest of every axis: this only checks that the step runs
        grid = {k: [min(v)] if k == "width" or all(isinstance(x, (int, float)) for x in v) else v[:1]
                for k, v in {**grid, "width": widths}.items()}
        zipped = {k: v[:1] for k, v in zipped.items()}
        fixed["steps"] = 20
    body = [f"experiment = {json.dumps(raw['experiment'])}", "seeds = 1"]
    for name, section in (("fixed", fixed), ("grid", grid), ("zip", zipped)):
        if section:
            body += [f"[{name}]"] + [f"{k} = {json.dumps(v)}" for k, v in section.items()]
    dest.write_text("\n".join(body) + "\n")
    return dest


def step_paper_slice(args, out):
    import jax

    from jaxbench import sweep

    src = ROOT / "sweeps" / "benign_overfitting.toml"
    full = sweep.load(src, "paper")
    slice_toml = _slice_file(src, out / "benign_paper_slice.toml", args.cpu)
    sl = sweep.load(slice_toml)
    t0 = time.perf_counter()
    res_dir = sweep.run(slice_toml, out=out / "paper_slice", progress=False, plot=False)
    wall = time.perf_counter() - t0
    meta = json.loads((res_dir / "meta.json").read_text())
    compile_s = sum(b["compile_s"] for b in meta["buckets"])
    exec_s = meta["chunk_seconds_total"]
    stats = jax.local_devices()[0].memory_stats() or {}
    slice_flops = sum(_variant_flops(v) for v in sl.variants)
    full_flops = sum(_variant_flops(v) for v in full.variants)
    rate = slice_flops / exec_s
    n_buckets_full = len(sweep.plan(full))
    per_bucket_compile = compile_s / max(len(meta["buckets"]), 1)
    return {"slice_file": str(slice_toml), "slice_variants": len(sl.variants), "slice_buckets": len(meta["buckets"]),
            "wall_s": wall, "compile_s": compile_s, "exec_s": exec_s, "compile_share": compile_s / wall,
            "variants_per_s": len(sl.variants) / wall, "peak_device_bytes": stats.get("peak_bytes_in_use"),
            "compiled_bytes_per_chunk_max": max(b["compiled_bytes_per_chunk"] for b in meta["buckets"]),
            "slice_train_flops_upper": slice_flops, "achieved_flops_per_s_upper": rate,
            "full_preset": {"variants": len(full.variants), "buckets": n_buckets_full,
                            "train_flops_upper": full_flops,
                            "est_exec_s": full_flops / rate, "est_compile_s": per_bucket_compile * n_buckets_full,
                            "est_total_s": full_flops / rate + per_bucket_compile * n_buckets_full,
                            "method": "full preset's training FLOPs (6 n P steps per variant, an upper bound) "
                                      "at the slice's achieved rate, plus its bucket count x the slice's "
                                      "compile seconds per bucket"}}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--quick", action="store_true", help="a shorter subset")
    ap.add_argument("--cpu", action="store_true", help="dry run on the CPU backend with tiny sizes")
    args = ap.parse_args(argv)
    if args.cpu:
        os.environ["JAX_PLATFORMS"] = "cpu"
    args.out.mkdir(parents=True, exist_ok=True)
    results, t_start = {"args": {"quick": args.quick, "cpu": args.cpu}}, time.perf_counter()

    def run(name, fn, *a):
        log(f"{name} ...")
        t0 = time.perf_counter()
        try:
            results[name] = fn(args, args.out, *a)
        except Exception as e:  # recorded; the other steps still run
            results[name] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}
        log(f"{name} done in {time.perf_counter() - t0:.1f} s")
        (args.out / "gpu_check.json").write_text(json.dumps(results, indent=1, default=str) + "\n")

    run("env", step_env)
    run("tests", step_tests)
    run("smoke", step_smoke)
    run("matmul", step_matmul)
    peak = (results.get("matmul") or {}).get("f32_highest_flops") or float("nan")
    run("engine", step_engine, peak)
    run("ntk", step_ntk, peak)
    run("paper_slice", step_paper_slice)
    results["total_s"] = time.perf_counter() - t_start
    (args.out / "gpu_check.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    failed = [k for k, v in results.items() if isinstance(v, dict) and "error" in v]
    log(f"finished in {results['total_s']:.0f} s; steps with errors: {failed or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
