"""Worker of benchmarks/ntk.py: runs in a subprocess, either side by side in its own venv.

    python _ntk_worker.py nt       WORK_DIR   # neural-tangents 0.6.5 on jax 0.4.23 (.venv-nt)
    python _ntk_worker.py jaxbench WORK_DIR   # jaxbench on the project's jax

Reads WORK_DIR/plan.json and the inputs saved there, writes WORK_DIR/<side>.json. Written for
both jax versions (only jax.tree_util, no newer APIs). Time: best of `repeats` calls after one
warm-up call (which compiles). Peak memory: the highest resident set size sampled every 0.5 ms
during the timed calls, minus the resident size just before, measured after the previous
call's buffers were released (the script sets MALLOC_MMAP_THRESHOLD_ so freed buffers go back
to the OS and the difference is the call's own).
"""

import gc
import json
import os
import sys
import threading
import time
import types

import numpy as np

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


class PeakRSS:
    """Context manager: ``.peak`` = max RSS sampled inside minus RSS at entry (bytes)."""

    def __enter__(self):
        # buffers of the previous call are released asynchronously: let that finish first,
        # or their pages are reused by this call and its growth is underestimated
        gc.collect()
        time.sleep(0.2)
        self.base = rss()
        self.peak_abs = self.base
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak_abs = max(self.peak_abs, rss())
            time.sleep(0.0005)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak_abs = max(self.peak_abs, rss())
        self.peak = self.peak_abs - self.base


def measure(fn, args, repeats, block):
    """(warm-up result, best seconds, peak bytes): warm-up compiles; later calls are timed."""
    t0 = time.perf_counter()
    out = block(fn(*args))
    first = time.perf_counter() - t0
    if first > 2.0:  # slow configurations: one timed call is enough
        repeats = 1
    elif first < 0.5:  # fast ones: more calls, as the best of them is less disturbed by other jobs
        repeats = max(repeats, 7)
    best, peak = float("inf"), 0
    for _ in range(repeats):
        with PeakRSS() as m:
            t0 = time.perf_counter()
            block(fn(*args))
            best = min(best, time.perf_counter() - t0)
        peak = max(peak, m.peak)
    return out, best, peak


def load_inputs(work, width, n):
    z = np.load(os.path.join(work, f"params_w{width}.npz"))
    params = [(z[f"w{i}"], z[f"b{i}"]) for i in range(len(z.files) // 2)]
    x = np.load(os.path.join(work, "x.npy"))[:n]
    return params, x


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# ----------------------------------------------------------------------------- neural-tangents


def run_nt(work, plan):
    # neural_tangents/__init__ imports its `experimental` subpackage, which needs TensorFlow;
    # nothing we call uses it, so an empty module stands in for it.
    sys.modules["neural_tangents.experimental"] = types.ModuleType("neural_tangents.experimental")
    import jax
    import jax.numpy as jnp
    import neural_tangents as nt
    from neural_tangents import stax

    impls = {"nt_jacobian": nt.NtkImplementation.JACOBIAN_CONTRACTION,
             "nt_ntk_vector": nt.NtkImplementation.NTK_VECTOR_PRODUCTS,
             "nt_structured": nt.NtkImplementation.STRUCTURED_DERIVATIVES}
    block = jax.block_until_ready
    results = []
    for job in plan["kernel_jobs"]:
        if not job["method"].startswith("nt_"):
            continue
        w, n, depth = job["width"], job["n"], plan["depth"]
        layers = []
        for _ in range(depth - 1):  # stax Dense "ntk" parametrization = mlp.py's
            layers += [stax.Dense(w, W_std=plan["w_std"], b_std=plan["b_std"]), stax.Relu()]
        _, apply_fn, _ = stax.serial(*layers, stax.Dense(1, W_std=plan["w_std"], b_std=plan["b_std"]))
        params, x = load_inputs(work, w, n)
        params = [p for layer in params for p in (tuple(map(jnp.asarray, layer)), ())][:-1]
        x = jnp.asarray(x)
        # vmap_axes=0 is neural-tangents' documented fast path (batch-independent f); without it
        # STRUCTURED_DERIVATIVES differentiates the whole batch (minutes and ~10 GB here)
        fn = jax.jit(nt.empirical_ntk_fn(apply_fn, trace_axes=(-1,), vmap_axes=0,
                                         implementation=impls[job["method"]]))
        kernel, sec, peak = measure(fn, (x, None, params), job["repeats"], block)
        kernel = np.asarray(kernel)
        ref_path = os.path.join(work, f"nt_K_w{w}_n{n}.npy")
        if job["method"] == "nt_structured":
            np.save(ref_path, kernel)
            agree = 0.0
        else:  # structured runs first in the plan: the others must agree with it
            agree = rel_err(kernel, np.load(ref_path))
        results.append(dict(job, seconds=sec, peak_bytes=peak, rel_err_vs_nt_structured=agree))
        print(json.dumps(results[-1]), flush=True)
    return {"jax": jax.__version__, "neural_tangents": "0.6.5", "kernel": results}


# ----------------------------------------------------------------------------- jaxbench


def run_jaxbench(work, plan):
    sys.path.insert(0, plan["repo"])
    import functools

    import jax
    import jax.numpy as jnp

    from jaxbench import mlp, ntk

    block = jax.block_until_ready
    d, depth = plan["d"], plan["depth"]

    def setup(w, n):
        spec = mlp.MLPSpec(d, (w,) * (depth - 1), 1, w_std=plan["w_std"], b_std=plan["b_std"])
        params, x = load_inputs(work, w, n)
        params = [{"w": jnp.asarray(a), "b": jnp.asarray(b)} for a, b in params]
        return spec, params, jnp.asarray(x)

    def matmul_rate(n, w):
        a = jnp.asarray(np.random.default_rng(0).normal(size=(n, w)).astype(np.float32))
        mm = jax.jit(lambda u, v: u @ v.T)
        _, sec, _ = measure(mm, (a, a), 5, block)
        return 2.0 * n * n * w / sec

    out = {"jax": jax.__version__, "kernel": [], "batch": [], "large": []}
    for job in plan["kernel_jobs"]:
        if job["method"].startswith("nt_"):
            continue
        w, n = job["width"], job["n"]
        spec, params, x = setup(w, n)
        f = functools.partial(mlp.apply, spec)
        fn = jax.jit(lambda p, a, m=job["method"]: ntk.empirical_ntk(f, p, a, method=m))
        # agreement with neural-tangents' kernel is checked before anything is timed
        kernel = np.asarray(block(fn(params, x)))
        ref_path = os.path.join(work, f"nt_K_w{w}_n{n}.npy")
        agree = rel_err(kernel, np.load(ref_path)) if os.path.exists(ref_path) else None
        if agree is not None and not agree < plan["rtol"]:
            raise SystemExit(f"kernel mismatch vs neural-tangents at width {w}, n {n}, "
                             f"{job['method']}: relative error {agree:.2e}")
        _, sec, peak = measure(fn, (params, x), job["repeats"], block)
        row = dict(job, seconds=sec, peak_bytes=peak, rel_err_vs_nt_structured=agree)
        if job["method"] == "structured":
            # Gram stage alone, on precomputed layer features: sum over layers of the inner
            # dimensions of its two Gram products, 2 n^2 flops per unit of inner dimension
            acts, sens, beta = ntk.mlp_features(spec, params, x)
            pair = jax.jit(ntk._structured_pair(beta, 1.0, 1, True))
            feats = (acts, sens)
            _, gsec, _ = measure(pair, (feats, feats), job["repeats"], block)
            inner = sum(a.shape[1] for a in acts) + sum(g.shape[1] * g.shape[2] for g in sens if g is not None)
            row.update(gram_seconds=gsec, gram_flops=2.0 * n * n * inner,
                       matmul_flops_per_s=matmul_rate(n, w))
        out["kernel"].append(row)
        print(json.dumps(row), flush=True)

    for job in plan["batch_jobs"]:  # B variants in one vmapped call vs B calls of one variant
        w, n, B = job["width"], job["n"], job["variants"]
        spec, _, x = setup(w, n)
        f = functools.partial(mlp.apply, spec)
        params = jax.vmap(lambda k: mlp.init(spec, k))(jax.random.split(jax.random.PRNGKey(1), B))
        one = jax.jit(lambda p, a: ntk.empirical_ntk(f, p, a))
        many = jax.jit(jax.vmap(lambda p, a: ntk.empirical_ntk(f, p, a), (0, None)))
        singles = [jax.tree_util.tree_map(lambda a, i=i: a[i], params) for i in range(B)]
        loop = lambda: [one(p, x) for p in singles]  # noqa: E731
        kb, sec_b, peak_b = measure(many, (params, x), job["repeats"], block)
        ks, sec_l, peak_l = measure(loop, (), job["repeats"], block)
        agree = max(rel_err(kb[i], ks[i]) for i in range(B))
        row = dict(job, vmap_seconds=sec_b, loop_seconds=sec_l, vmap_peak_bytes=peak_b,
                   loop_peak_bytes=peak_l, rel_err=agree)
        out["batch"].append(row)
        print(json.dumps(row), flush=True)

    for job in plan["large_jobs"]:  # big n: square tiles of the upper triangle
        w, n = job["width"], job["n"]
        spec = mlp.MLPSpec(d, (w,) * (depth - 1), 1, w_std=plan["w_std"], b_std=plan["b_std"])
        params = mlp.init(spec, jax.random.PRNGKey(0))
        x = jax.random.normal(jax.random.PRNGKey(1), (n, d)) / np.sqrt(d)
        f = functools.partial(mlp.apply, spec)
        fn = jax.jit(lambda p, a: ntk.empirical_ntk(f, p, a, method="structured", tile=job["tile"]))
        compiled = fn.lower(params, x).compile()
        temp = compiled.memory_analysis().temp_size_in_bytes
        base = rss()
        with PeakRSS() as m:
            t0 = time.perf_counter()
            kernel = block(compiled(params, x))
            sec = time.perf_counter() - t0
        # spot check: a few rows against the untiled kernel of those rows
        rows = jnp.arange(0, n, n // 8)
        ref = block(ntk.empirical_ntk(f, params, x[rows], x, method="structured"))
        row = dict(job, seconds=sec, peak_bytes=m.peak, rss_before=base, compiled_temp_bytes=temp,
                   kernel_bytes=kernel.size * kernel.dtype.itemsize, rel_err_rows=rel_err(kernel[rows], ref),
                   gram_flops=2.0 * n * n * (d + 4 * w), matmul_flops_per_s=matmul_rate(2048, w))
        out["large"].append(row)
        print(json.dumps(row), flush=True)
        del kernel
    return out


if __name__ == "__main__":
    side, work = sys.argv[1], sys.argv[2]
    with open(os.path.join(work, "plan.json")) as fh:
        plan = json.load(fh)
    result = run_nt(work, plan) if side == "nt" else run_jaxbench(work, plan)
    with open(os.path.join(work, f"{side}.json"), "w") as fh:
        json.dump(result, fh, indent=1)
