"""Empirical NTK: jaxbench's methods side by side with neural-tangents 0.6.5, in one run.

    .venv/bin/python benchmarks/ntk.py            # full run (8 min on 2 shared CPU cores, 20 under heavy load)
    .venv/bin/python benchmarks/ntk.py --quick    # small sizes only, no n = 16384 (~2 min)

neural-tangents no longer imports with current jax, so it runs in its own virtual environment,
benchmarks/.venv-nt (made here on first use, from the package registry: jax==0.4.23,
jaxlib==0.4.23, numpy<2, frozendict, and neural-tangents==0.6.5 with --no-deps, since its
TensorFlow dependency only serves its `experimental` subpackage, stubbed by the worker). Both
sides run in subprocesses (benchmarks/_ntk_worker.py) on the same inputs saved to
benchmarks/_work/ntk/: ReLU MLPs of depth 3 (two hidden layers of width w, NTK
parametrization, w_std = sqrt 2, b_std = 0.1, d = 64 inputs, scalar output), float32, kernel
of n points with themselves. neural-tangents' structured kernel is the reference: every other
kernel must agree with it (relative Frobenius error < rtol) before it is timed. Results go to
benchmarks/ntk.json and to the "Empirical NTK" section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
VENV = HERE / ".venv-nt"
WORK = HERE / "_work" / "ntk"
NT_PACKAGES = ["jax==0.4.23", "jaxlib==0.4.23", "numpy<2", "frozendict"]
D, DEPTH, W_STD, B_STD = 64, 3, 2**0.5, 0.1
GIB = 2**30
DENSE_CAP = 3e10  # n^2 P above which the Jacobian-based methods are skipped (tens of seconds each)


def ensure_nt_venv() -> Path:
    py = VENV / "bin" / "python"
    probe = "import sys, types; sys.modules['neural_tangents.experimental'] = types.ModuleType('x'); import neural_tangents"
    if py.exists() and subprocess.run([py, "-c", probe], capture_output=True).returncode == 0:
        return py
    print(f"creating {VENV} (neural-tangents 0.6.5 on jax 0.4.23)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", VENV], check=True)
    pip = [py, "-m", "pip", "install", "--quiet"]
    subprocess.run(pip + NT_PACKAGES, check=True)
    subprocess.run(pip + ["--no-deps", "neural-tangents==0.6.5"], check=True)
    subprocess.run([py, "-c", probe], check=True)
    return py


def num_params(w):
    dims = [D] + [w] * (DEPTH - 1) + [1]
    return sum(a * b + b for a, b in zip(dims[:-1], dims[1:]))


def make_plan(quick: bool, large: bool) -> dict:
    widths = [128, 512] if quick else [128, 512, 1024, 2048]
    ns = [128, 512] if quick else [128, 512, 1024, 2048]
    jobs = []
    for w in widths:
        for n in ns:
            P = num_params(w)
            # the Jacobian-based methods cost ~ n^2 P flops (and neural-tangents' Jacobian
            # contraction holds n P floats): run them only where that takes seconds, not minutes
            dense_ok = n * n * P <= DENSE_CAP
            nt_jac_ok = dense_ok and n * P * 4 <= 1.5 * GIB
            repeats = 3
            jobs.append(dict(width=w, n=n, method="nt_structured", repeats=repeats))
            if nt_jac_ok:
                jobs.append(dict(width=w, n=n, method="nt_jacobian", repeats=repeats))
            if dense_ok:
                jobs.append(dict(width=w, n=n, method="nt_ntk_vector", repeats=repeats))
            jobs.append(dict(width=w, n=n, method="structured", repeats=repeats))
            if dense_ok:
                jobs += [dict(width=w, n=n, method=m, repeats=repeats) for m in ("jacobian", "jvp_vjp")]
    batch = [dict(width=128, n=128, variants=16, repeats=3), dict(width=512, n=512, variants=16, repeats=3)]
    big = [dict(width=1024, n=16384, tile=2048)] if large else []
    return dict(repo=str(REPO), d=D, depth=DEPTH, w_std=W_STD, b_std=B_STD, rtol=1e-4,
                kernel_jobs=jobs, batch_jobs=batch if not quick else batch[:1], large_jobs=big)


def write_inputs(plan):
    WORK.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    n_max = max(j["n"] for j in plan["kernel_jobs"] + plan["batch_jobs"])
    np.save(WORK / "x.npy", (rng.normal(size=(n_max, D)) / np.sqrt(D)).astype(np.float32))
    for w in sorted({j["width"] for j in plan["kernel_jobs"] + plan["batch_jobs"]}):
        dims = [D] + [w] * (DEPTH - 1) + [1]
        arrs = {}
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            arrs[f"w{i}"] = rng.normal(size=(a, b)).astype(np.float32)
            arrs[f"b{i}"] = rng.normal(size=(b,)).astype(np.float32)
        np.savez(WORK / f"params_w{w}.npz", **arrs)
    (WORK / "plan.json").write_text(json.dumps(plan, indent=1))


def run_worker(python, side):
    # freed buffers go back to the OS at once, so resident-size peaks measure each call
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0",
               PYTHONWARNINGS="ignore", TF_CPP_MIN_LOG_LEVEL="3")
    t0 = time.perf_counter()
    subprocess.run([str(python), str(HERE / "_ntk_worker.py"), side, str(WORK)], check=True, env=env)
    print(f"[{side}] done in {time.perf_counter() - t0:.0f} s", flush=True)
    return json.loads((WORK / f"{side}.json").read_text())


def mib(b):
    return f"{b / 2**20:.0f}" if b is not None else "—"


def report(nt, jb, plan, wall, loads=(None, None)) -> str:
    rows = {(r["width"], r["n"], r["method"]): r for r in nt["kernel"] + jb["kernel"]}
    methods = ["structured", "jacobian", "jvp_vjp", "nt_structured", "nt_jacobian", "nt_ntk_vector"]
    lines = [
        f"Run of `benchmarks/ntk.py` ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPU cores shared "
        f"with other jobs, {wall / 60:.1f} min, load average {loads[0]:.0f} at the start and "
        f"{loads[1]:.0f} at the end): jaxbench on jax {jb['jax']} vs neural-tangents "
        f"{nt['neural_tangents']} on jax {nt['jax']} (its own venv, `vmap_axes=0`, its fast path). "
        f"ReLU MLP of depth {DEPTH} (two hidden layers of width w, NTK parametrization), d = {D}, "
        "float32, kernel of n points with themselves (`x2=None`), trace over the scalar output. "
        "Time: best of 7 calls after a compiling warm-up (3 when the warm-up took ≥ 0.5 s, 1 when ≥ 2 s); "
        "memory: peak resident-set growth during a call, sampled every 0.5 ms (MiB). Every kernel agreed with neural-tangents' structured kernel (relative "
        f"Frobenius error < {plan['rtol']:g}) before it was timed. `—`: not run (Jacobian methods "
        f"only where n² P ≤ {DENSE_CAP:.0e}; neural-tangents' Jacobian contraction also needs n P floats in memory). "
        "On a shared machine the timings are noisy: the matmul reference and the Gram stage are timed "
        "at different moments, so their ratio can exceed 100% when the load changed in between.",
        "",
        "| w | n | " + " | ".join(f"{m} s (MiB)" for m in methods) + " | speed-up vs nt_structured |",
        "|---|---|" + "---|" * (len(methods) + 1),
    ]
    for w, n in sorted({(r["width"], r["n"]) for r in jb["kernel"]}):
        cells = []
        for m in methods:
            r = rows.get((w, n, m))
            cells.append(f"{r['seconds']:.3g} ({mib(r['peak_bytes'])})" if r else "—")
        ours, theirs = rows.get((w, n, "structured")), rows.get((w, n, "nt_structured"))
        sp = f"{theirs['seconds'] / ours['seconds']:.1f}x" if ours and theirs else "—"
        lines.append(f"| {w} | {n} | " + " | ".join(cells) + f" | {sp} |")
    lines += ["", "Gram products of the structured method (flops: 2 n² × the summed inner dimensions of "
              "each layer's two Gram matrices) against a dense `(n, w) @ (w, n)` matmul timed in the same "
              "process:", "",
              "| w | n | Gram stage GFLOP/s | whole kernel (Gram flops / total time) GFLOP/s | matmul GFLOP/s | Gram stage / matmul |",
              "|---|---|---|---|---|---|"]
    for r in sorted((r for r in jb["kernel"] if r["method"] == "structured"), key=lambda r: (r["width"], r["n"])):
        g = r["gram_flops"] / r["gram_seconds"] / 1e9
        tot = r["gram_flops"] / r["seconds"] / 1e9
        mm = r["matmul_flops_per_s"] / 1e9
        lines.append(f"| {r['width']} | {r['n']} | {g:.1f} | {tot:.1f} | {mm:.1f} | {g / mm:.0%} |")
    lines += ["", "Variants batched with `vmap` (one call) against a loop of single-variant calls:", "",
              "| w | n | variants | vmap s | loop s | loop / vmap | vmap MiB | loop MiB |", "|---|---|---|---|---|---|---|---|"]
    for r in jb["batch"]:
        lines.append(f"| {r['width']} | {r['n']} | {r['variants']} | {r['vmap_seconds']:.3g} | "
                     f"{r['loop_seconds']:.3g} | {r['loop_seconds'] / r['vmap_seconds']:.2f}x | "
                     f"{mib(r['vmap_peak_bytes'])} | {mib(r['loop_peak_bytes'])} |")
    for r in jb["large"]:
        nb = -(-r["n"] // r["tile"])
        done = nb * (nb + 1) // 2 * 2 * r["tile"] ** 2 * (D + 2 * (DEPTH - 1) * r["width"])
        lines += ["", f"Large n: width {r['width']}, n = {r['n']}, structured method in square tiles of "
                  f"{r['tile']} (upper triangle only, {nb * (nb + 1) // 2} of {nb * nb} blocks): "
                  f"{r['seconds']:.1f} s, peak resident growth {r['peak_bytes'] / GIB:.2f} GiB "
                  f"(kernel itself {r['kernel_bytes'] / GIB:.2f} GiB; XLA temporaries "
                  f"{r['compiled_temp_bytes'] / GIB:.2f} GiB), {done / r['seconds'] / 1e9:.1f} GFLOP/s on "
                  f"the Gram flops actually done (matmul: {r['matmul_flops_per_s'] / 1e9:.1f}); sampled rows "
                  f"agree with the untiled kernel to {r['rel_err_rows']:.1e}."]
    return "\n".join(targets(rows, jb) + [""] + lines)


def targets(rows, jb):
    """The issue's targets, each with the measured number and whether it is met."""
    out = ["Targets (from the issue), measured in this run:", ""]
    ours, theirs = rows.get((1024, 1024, "structured")), rows.get((1024, 1024, "nt_structured"))
    if ours and theirs:
        sp = theirs["seconds"] / ours["seconds"]
        eff = ours["gram_flops"] / ours["gram_seconds"] / ours["matmul_flops_per_s"]
        out += [f"- speed vs neural-tangents' structured derivatives at w = n = 1024 (target ≥ 1.5x): "
                f"{theirs['seconds']:.3f} s / {ours['seconds']:.3f} s = **{sp:.1f}x** ({'met' if sp >= 1.5 else 'NOT met'})",
                f"- Gram products at w = n = 1024 (target ≥ 60% of a dense matmul's FLOP/s): **{eff:.0%}** "
                f"({'met' if eff >= 0.6 else 'NOT met'})",
                f"- peak memory at w = n = 1024 (target ≤ neural-tangents'): {mib(ours['peak_bytes'])} MiB vs "
                f"{mib(theirs['peak_bytes'])} MiB ({'met' if ours['peak_bytes'] <= theirs['peak_bytes'] else 'NOT met'})"]
    both = [(rows[k], rows[(k[0], k[1], "nt_structured")]) for k in rows
            if k[2] == "structured" and (k[0], k[1], "nt_structured") in rows]
    if both:
        worse = [(a["width"], a["n"]) for a, b in both if a["peak_bytes"] > b["peak_bytes"]]
        slower = [(a["width"], a["n"]) for a, b in both if a["seconds"] > b["seconds"]]
        out.append(f"- over all {len(both)} (w, n) pairs: structured slower than neural-tangents' at "
                   f"{slower or 'none'}; more peak memory at {worse or 'none'}")
    for r in jb["batch"]:
        ratio = r["loop_seconds"] / r["vmap_seconds"]
        out.append(f"- {r['variants']} variants in one vmapped call vs {r['variants']} calls, w = {r['width']}, "
                   f"n = {r['n']} (target: faster): **{ratio:.2f}x** ({'met' if ratio > 1 else 'NOT met'})")
    for r in jb["large"]:
        g = r["peak_bytes"] / GIB
        out.append(f"- n = {r['n']} at w = {r['width']} in tiles within 8 GiB: peak resident growth **{g:.2f} GiB**, "
                   f"{r['seconds']:.0f} s ({'met' if g <= 8 else 'NOT met'})")
    return out


def write_section(text: str):
    path = HERE / "RESULTS.md"
    src = path.read_text()
    block = f"<!-- section:ntk -->\n{text}\n<!-- /section:ntk -->"
    if "<!-- /section:ntk -->" in src:
        src = re.sub(r"<!-- section:ntk -->.*?<!-- /section:ntk -->", lambda _: block, src, flags=re.S)
    else:
        src = src.replace("<!-- section:ntk -->", block, 1)
    path.write_text(src)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, no n = 16384")
    ap.add_argument("--no-write", action="store_true", help="do not touch RESULTS.md / ntk.json")
    args = ap.parse_args(argv)
    t0, load0 = time.perf_counter(), os.getloadavg()[0]
    nt_python = ensure_nt_venv()
    plan = make_plan(args.quick, large=not args.quick)
    write_inputs(plan)
    nt = run_worker(nt_python, "nt")
    jb = run_worker(sys.executable, "jaxbench")
    text = report(nt, jb, plan, time.perf_counter() - t0, (load0, os.getloadavg()[0]))
    print(text)
    if not args.no_write:
        (HERE / "ntk.json").write_text(json.dumps({"plan": plan, "neural_tangents": nt, "jaxbench": jb}, indent=1))
        write_section(text)


if __name__ == "__main__":
    main()
