"""Sweeps: variants -> shape buckets -> chunks -> one compiled call per chunk -> results.

The sweep file and its validation live in `jaxbench.sweepfile` (`load`). Variants are grouped
into buckets of equal *static* parameters (anything that fixes a shape); each bucket is compiled
once, and run chunk by chunk (chunks padded to one size so they share the compilation), the
variant axis sharded over the local devices; inside a chunk the variants run as one vmap or, on
one CPU device, as lax.map over sub-batches (`_Program`). A bucket's chunk size comes from XLA's
memory analysis of the compiled program and a per-device byte budget. Every finished chunk is
written atomically, and a re-run skips the chunks already on disk; with several processes
(`jaxbench.distributed`) chunks are dealt round-robin and process 0 merges.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxbench import compat, experiments, store, watchdog
from jaxbench.sweepfile import SCALES, Sweep, SweepError, load  # noqa: F401  (re-exported)

DEFAULT_MAX_CHUNK = 1024

# Matmul precision policy. XLA on recent NVIDIA GPUs computes float32 matrix products with
# TF32 (10-bit mantissa) unless told otherwise, and TPUs with bfloat16 passes: results would
# then differ from the CPU's by ~1e-3 relative, and float32 equalities (a vmapped chunk equals
# each variant alone, NTK methods agree) break. Every bucket program is therefore traced with
# full float32 products ("highest") unless its experiment sets ``MATMUL_PRECISION`` to a faster
# one ("high", "tensorfloat32", "default", "bfloat16") because its claims tolerate that. On CPU all
# of them compute the same full-precision products. float64 (``X64 = True``) is never reduced.
DEFAULT_MATMUL_PRECISION = "highest"
MATMUL_PRECISIONS = ("highest", "float32", "high", "tensorfloat32", "default", "bfloat16")

# Chunk layout on one CPU device (benchmarks/RESULTS.md, "Sweep engine throughput"). Small
# variants run fastest as one vmap over the chunk: each variant's ops are too small to keep the
# cores busy, and the loops inside a program (training steps, the data sampler's bisection) pay
# their per-iteration cost once for all variants. Large variants lose under one wide vmap (the
# activations of hundreds of variants leave the caches) and run as lax.map over vmapped batches.
# Measured rule, keyed on the matmul FLOPs of one variant's program (`matmul_flops`):
CPU_VMAP_BELOW_FLOPS = 2e7  # below: one vmap over the chunk (width <= 64 in the benchmark)
CPU_INNER_BATCH = 8         # above: lax.map over vmapped sub-batches of 8 variants

# XLA:CPU code generation. Its default fusion emitters (MLIR) give the fastest code for the
# larger programs (info_bounds' ReLU buckets ran 1.6-1.9x slower without them), while the older
# elemental emitters compile small programs about a third faster at equal speed
# (benchmarks/RESULTS.md, "Compilation share of the default sweeps"). An experiment whose
# sweeps are compile-bound sets ``CPU_FUSION_EMITTERS = False``; JAXBENCH_CPU_FUSION_EMITTERS
# (0 / 1) overrides every experiment's choice, for side-by-side measurements.


def cpu_fusion_emitters(module, env=os.environ) -> bool:
    """Whether this experiment's programs compile with XLA:CPU's fusion emitters (default True)."""
    raw = env.get("JAXBENCH_CPU_FUSION_EMITTERS", "").strip()
    if raw not in ("", "0", "1"):
        raise SweepError(f"JAXBENCH_CPU_FUSION_EMITTERS={raw!r}: expected 0 or 1")
    return bool(int(raw)) if raw else bool(getattr(module, "CPU_FUSION_EMITTERS", True))


# ----------------------------------------------------------------------------- planning

def _static_keys(module) -> list[str]:
    return [k for k, p in module.PARAMS.items() if p.kind == "static"]


def _traced_keys(module) -> list[str]:
    return [k for k, p in module.PARAMS.items() if p.kind == "traced"] + ["seed"]


def _make_static(module, static: dict):
    cls = dataclasses.make_dataclass("Static", list(static), frozen=True)
    return cls(**static)


@dataclasses.dataclass(frozen=True)
class Bucket:
    """Variants sharing static parameters: one compilation."""

    static: dict
    variant_ids: tuple


def plan(sweep: Sweep) -> list[Bucket]:
    """Groups variants into buckets of equal static parameters (first-appearance order)."""
    keys = _static_keys(sweep.module)
    groups: dict[tuple, list[int]] = {}
    for i, v in enumerate(sweep.variants):
        groups.setdefault(tuple(v[k] for k in keys), []).append(i)
    return [Bucket(dict(zip(keys, k)), tuple(ids)) for k, ids in groups.items()]


def balanced_size(n: int, cap: int, n_devices: int) -> int:
    """Chunk size <= cap (when possible), a multiple of n_devices, splitting n into equal chunks."""
    n_chunks = math.ceil(n / max(cap, 1))
    return math.ceil(math.ceil(n / n_chunks) / n_devices) * n_devices


def default_budget() -> int:
    """Bytes one chunk may use per device: half a GPU/TPU's memory, a quarter of host RAM on CPU."""
    stats = jax.local_devices()[0].memory_stats() or {}
    if "bytes_limit" in stats:
        return int(0.5 * stats["bytes_limit"])
    return int(0.25 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def compiled_bytes(compiled) -> int:
    """Peak bytes of a compiled program per device, from XLA's own memory analysis."""
    m = compiled.memory_analysis()
    if m is None:
        return 0
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes)


def cpu_inner_batch(variant_flops: float) -> int:
    """The measured CPU layout rule: 0 (one vmap) or the ``lax.map`` sub-batch, from one variant's FLOPs."""
    return 0 if variant_flops < CPU_VMAP_BELOW_FLOPS else CPU_INNER_BATCH


def matmul_flops(jaxpr) -> float:
    """FLOPs of the dot products in a (closed) jaxpr, 2 per multiply-add, every loop body and
    branch counted once: the size of one step, not of a whole run (about 0.9x XLA's cost
    analysis of the same program, which also counts elementwise ops, without lowering it)."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    total = 0.0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            (contract, _), _ = eqn.params["dimension_numbers"]
            k = math.prod(eqn.invars[0].aval.shape[i] for i in contract)
            total += 2.0 * k * math.prod(eqn.outvars[0].aval.shape)
        total += sum(matmul_flops(sub) for sub in jcore.jaxprs_in_params(eqn.params))
    return total


class _Program:
    """One bucket's jitted program over a chunk of variants, compiled per chunk size on demand.

    The experiment's ``run_one`` is traced once per bucket, to a jaxpr of one variant; every
    chunk program (and the layout rule's FLOP count) is built from that jaxpr, so Python model
    code never runs twice. Layout (``inner_batch``): 0 is one ``vmap`` over the whole chunk;
    k > 0 is ``lax.map`` over sub-batches of k vmapped variants (one device only; chunk sizes
    are then multiples of k); "auto" picks per bucket: ``cpu_inner_batch`` on one CPU device,
    vmap on accelerators and when the variant axis is sharded over several devices; an
    experiment's ``CPU_INNER_BATCH`` replaces the FLOP rule on CPU. Every layout gives the same
    results.
    """

    def __init__(self, sweep: Sweep, bucket: Bucket, sharding, inner_batch: int | str = "auto"):
        self.sweep, self.bucket, self.sharding = sweep, bucket, sharding
        self.module = sweep.module
        self.traces = 0
        self._compiled: dict[int, object] = {}
        self.compile_s, self.compiles = 0.0, 0
        static = _make_static(self.module, bucket.static)

        def one(traced):
            self.traces += 1  # Python side effect: runs once per trace
            out = dict(self.module.run_one(static, traced, jax.random.PRNGKey(traced["seed"])))
            if "diverged" not in out:
                flags = [~jnp.isfinite(v) for v in out.values()
                         if jnp.ndim(v) == 0 and jnp.issubdtype(jnp.result_type(v), jnp.floating)]
                out["diverged"] = jnp.any(jnp.stack(flags)) if flags else jnp.zeros((), bool)
            return out

        t0 = time.perf_counter()
        shapes = {k: jax.ShapeDtypeStruct((), self._dtype(k)) for k in _traced_keys(self.module)}
        closed, out_shapes = jax.make_jaxpr(one, return_shape=True)(shapes)
        if compat.lapack_calls_overlap():  # no two LAPACK calls at once: they can deadlock (compat)
            closed = compat.serialize_lapack(closed)
        fun, out_tree = jcore.jaxpr_as_fun(closed), jax.tree.structure(out_shapes)
        self._one = lambda traced: jax.tree.unflatten(out_tree, fun(*jax.tree.leaves(traced)))
        self.variant_flops = matmul_flops(closed)
        if jax.local_device_count() > 1:
            inner_batch = 0
        elif inner_batch == "auto":
            preferred = getattr(self.module, "CPU_INNER_BATCH", None)  # the experiment knows its loops
            rule = cpu_inner_batch(self.variant_flops) if preferred is None else int(preferred)
            inner_batch = rule if jax.default_backend() == "cpu" else 0
        self.inner_batch = int(inner_batch)
        self.fusion_emitters = jax.default_backend() != "cpu" or cpu_fusion_emitters(self.module)
        self.trace_s = time.perf_counter() - t0

    def round_size(self, size: int) -> int:
        """Chunk sizes are multiples of the sub-batch (no remainder: one compilation per bucket)."""
        k = self.inner_batch
        return size if k <= 1 or size <= k else math.ceil(size / k) * k

    def batch(self, size: int) -> int:
        """The sub-batch a chunk of ``size`` actually runs with: 1 for a lone variant, 0 (one
        vmap) when the sub-batch would hold the whole chunk."""
        k = self.inner_batch
        return 1 if size == 1 else 0 if k >= size else k

    def _fn(self, size: int):
        k, one = self.batch(size), self._one
        if size == 1:  # the plain program: vmap or map over one variant only adds compile time
            alone = lambda xs: one(jax.tree.map(lambda v: v[0], xs))
            return jax.jit(lambda xs: jax.tree.map(lambda v: jnp.expand_dims(v, 0), alone(xs)))
        if k == 0:
            return jax.jit(jax.vmap(one))
        if k == 1:  # lax.map(batch_size=1) would vmap its body over a batch of one
            return jax.jit(lambda xs: jax.lax.map(one, xs))
        return jax.jit(lambda xs: jax.lax.map(one, xs, batch_size=k))

    def _dtype(self, key):
        p = self.module.PARAMS.get(key)
        if key == "seed" or (p and p.type is int):
            return jnp.int32
        if p and p.type is bool:
            return jnp.bool_
        return jnp.zeros(()).dtype  # float32, or float64 under enable_x64

    def compiled(self, size: int):
        if size not in self._compiled:
            shapes = {k: jax.ShapeDtypeStruct((size,), self._dtype(k), sharding=self.sharding)
                      for k in _traced_keys(self.module)}
            t0 = time.perf_counter()
            options = None if self.fusion_emitters else {"xla_cpu_use_fusion_emitters": False}
            self._compiled[size] = self._fn(size).lower(shapes).compile(compiler_options=options)
            self.compile_s += time.perf_counter() - t0
            self.compiles += 1
        return self._compiled[size]

    def inputs(self, ids, size):
        ids = list(ids) + [ids[-1]] * (size - len(ids))  # pad to the bucket's chunk size
        return {k: jax.device_put(jnp.asarray(np.array([self.sweep.variants[i][k] for i in ids]), self._dtype(k)),
                                  self.sharding) for k in _traced_keys(self.module)}

    def choose_size(self, budget: int, max_chunk: int, n_devices: int) -> tuple[int, int]:
        """Chunk size from the compiled program's memory analysis: returns (size, bytes/chunk)."""
        n = len(self.bucket.variant_ids)
        size = self.round_size(balanced_size(n, max_chunk, n_devices))
        mem = compiled_bytes(self.compiled(size))
        if mem > budget and size > n_devices:
            per_variant = mem / size  # memory is affine in the variant axis; the slope bounds it
            cap = max(n_devices, int(budget // per_variant) // n_devices * n_devices)
            size = balanced_size(n, cap, n_devices)
            if self.round_size(size) <= cap:
                size = self.round_size(size)
            mem = compiled_bytes(self.compiled(size))
        return size, mem


def chunk_name(sweep: Sweep, b: int, c: int, ids) -> str:
    """Content-addressed chunk file name: changing any parameter of a chunk invalidates it."""
    blob = json.dumps([sweep.experiment, [sweep.variants[i] for i in ids]], sort_keys=True, default=str)
    return f"b{b:03d}-c{c:04d}-{hashlib.sha1(blob.encode()).hexdigest()[:12]}"


@dataclasses.dataclass(frozen=True)
class Layout:
    """How one bucket is cut: ``chunks`` of variant ids of (padded) size ``chunk_size``."""

    chunk_size: int
    bytes_per_chunk: int
    chunks: tuple
    names: tuple


def _layout_key(sweep, bucket, budget, max_chunk, n_devices, inner_batch) -> str:
    blob = json.dumps([sweep.experiment, bucket.static, len(bucket.variant_ids), budget, max_chunk,
                       n_devices, inner_batch, jax.default_backend(), jax.__version__], sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def _layout(sweep: Sweep, b: int, bucket: Bucket, size: int, mem: int) -> Layout:
    ids = bucket.variant_ids
    chunks = tuple(tuple(ids[i:i + size]) for i in range(0, len(ids), size))
    return Layout(size, mem, chunks, tuple(chunk_name(sweep, b, c, ch) for c, ch in enumerate(chunks)))


def compile_threads(env=os.environ) -> int:
    """Background threads that trace and compile buckets ahead of the one running
    (``JAXBENCH_COMPILE_THREADS``, default 2; 0 prepares each bucket only when it is needed)."""
    raw = env.get("JAXBENCH_COMPILE_THREADS", "2").strip()
    if not raw.isdigit():
        raise SweepError(f"JAXBENCH_COMPILE_THREADS={raw!r}: expected an integer >= 0")
    return int(raw)


class _Pipeline:
    """Every bucket's program traced, sized and compiled in background threads, in bucket order.

    XLA compiles and executes outside the GIL, so while the main thread runs one bucket's chunks
    the next buckets compile, and on a multi-core host several compile at once. ``get(b)`` waits
    for bucket b (the time it waits is the compilation a user sees, ``wait_s``). Chunk sizes come
    from XLA's memory analysis (`_Program.choose_size`) and are remembered in ``cache`` (the
    results folder's layout.json), so a resumed run compiles nothing for finished buckets.
    """

    def __init__(self, sweep: Sweep, budget: int, max_chunk: int, inner_batch, out: Path | None, threads: int):
        from concurrent.futures import ThreadPoolExecutor

        mesh = Mesh(np.array(jax.local_devices()), ("v",))
        self.sweep, self.sharding, self.budget, self.max_chunk = sweep, NamedSharding(mesh, PartitionSpec("v")), budget, max_chunk
        self.inner_batch, self.out = inner_batch, out
        self.buckets = plan(sweep)
        self.cache_file = None if out is None else out / store.CHUNKS / "layout.json"
        self.cache = {}
        if self.cache_file is not None and self.cache_file.exists():
            self.cache = {k: tuple(v) for k, v in json.loads(self.cache_file.read_text()).items()}
        self.wait_s = [0.0] * len(self.buckets)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="jaxbench-compile") if threads else None
        self._jobs = [self._pool.submit(self._prepare, b) for b in range(len(self.buckets))] if self._pool else None

    def _prepare(self, b: int):
        bucket = self.buckets[b]
        with _context(self.sweep):  # jax's x64 / precision settings are per thread
            prog = _Program(self.sweep, bucket, self.sharding, self.inner_batch)
            n_dev = jax.local_device_count()
            key = _layout_key(self.sweep, bucket, self.budget, self.max_chunk, n_dev, prog.inner_batch)
            if key in self.cache:
                size, mem = self.cache[key]
                lay = _layout(self.sweep, b, bucket, size, mem)
                if self.out is None or not all(store.chunk_path(self.out, n).exists() for n in lay.names):
                    prog.compiled(size)  # compiled here, ahead of its chunks
            else:
                size, mem = prog.choose_size(self.budget, self.max_chunk, n_dev)
                lay = _layout(self.sweep, b, bucket, size, mem)
        return prog, key, lay

    def get(self, b: int):
        """(program, layout) of bucket b, once ready."""
        t0 = time.perf_counter()
        prog, key, lay = self._jobs[b].result() if self._jobs else self._prepare(b)
        self.wait_s[b] += time.perf_counter() - t0
        if self.cache.get(key) != (lay.chunk_size, lay.bytes_per_chunk):
            self.cache[key] = (lay.chunk_size, lay.bytes_per_chunk)
            if self.cache_file is not None:
                store.atomic_write(self.cache_file, json.dumps(self.cache).encode())
        return prog, lay

    def close(self):
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def layout_name(k: int) -> str:
    return "vmap" if k == 0 else "lax.map over single variants" if k == 1 else f"lax.map over vmapped batches of {k}"


def describe(sweep: Sweep, buckets, lays, budget: int, programs=None) -> str:
    """Human-readable plan (what ``--dry-run`` prints)."""
    lines = [
        f"sweep {sweep.name} (experiment {sweep.experiment}, scale {sweep.scale}): "
        f"{len(sweep.variants)} variants, {len(buckets)} buckets, {sum(len(l.chunks) for l in lays)} chunks "
        f"on {jax.process_count()} process(es) x {jax.local_device_count()} {jax.default_backend()} device(s); "
        f"memory budget {budget / 2**30:.2f} GiB per chunk per device"]
    for i, (b, l) in enumerate(zip(buckets, lays)):
        st = " ".join(f"{k}={v}" for k, v in b.static.items())
        how = f", {layout_name(programs[i].batch(l.chunk_size))}" if programs else ""
        lines.append(f"  bucket {i}: {st} | {len(b.variant_ids)} variants in {len(l.chunks)} chunk(s) of "
                     f"{l.chunk_size}{how}, compiled memory {l.bytes_per_chunk / 2**20:.1f} MiB/chunk")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- running

def default_out(sweep: Sweep) -> Path:
    return Path("results") / (sweep.name if sweep.scale == "default" else f"{sweep.name}-{sweep.scale}")


def _versions() -> dict:
    import flax
    import optax
    from importlib.metadata import version
    return {"python": platform.python_version(), "jax": jax.__version__, "jaxlib": version("jaxlib"),
            "numpy": np.__version__, "optax": optax.__version__, "flax": flax.__version__}


def _git(*args, cwd=None) -> str | None:
    """``git args`` run in ``cwd`` (default: this package's folder); None if git fails."""
    try:
        r = subprocess.run(["git", *args], capture_output=True, text=True, timeout=5,
                           cwd=cwd or Path(__file__).resolve().parent)
        return r.stdout.strip() if r.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _git_dirty(folder=None) -> bool:
    """Whether tracked files under ``folder`` (default: this package) differ from HEAD. The
    pathspec is relative to the folder git runs in: "." (it once said "jaxbench" from inside
    jaxbench/, which matched nothing, so every run recorded a clean tree)."""
    return bool(_git("status", "--porcelain", "--untracked-files=no", "--", ".", cwd=folder))


def matmul_precision(module) -> str:
    """The matmul precision a bucket program is traced with: the experiment's ``MATMUL_PRECISION``,
    else `DEFAULT_MATMUL_PRECISION`."""
    value = getattr(module, "MATMUL_PRECISION", DEFAULT_MATMUL_PRECISION)
    if value not in MATMUL_PRECISIONS:
        raise SweepError(f"experiment {getattr(module, 'NAME', module.__name__)}: MATMUL_PRECISION = {value!r}, "
                         f"choose from {', '.join(MATMUL_PRECISIONS)}")
    return value


def _context(sweep: Sweep):
    """x64 when the experiment asks for it, and its matmul precision (baked into the traced program)."""
    stack = contextlib.ExitStack()
    if getattr(sweep.module, "X64", False):
        stack.enter_context(jax.enable_x64(True))
    stack.enter_context(jax.default_matmul_precision(matmul_precision(sweep.module)))
    return stack


def dry_run(path, scale: str = "default", budget_bytes: int | None = None,
            max_chunk: int = DEFAULT_MAX_CHUNK, inner_batch: int | str = "auto") -> str:
    """The plan, with chunk sizes from compiling each bucket once; writes nothing."""
    sweep = load(path, scale)
    budget = budget_bytes or default_budget()
    cpu_fusion_emitters(sweep.module)
    with _context(sweep), _Pipeline(sweep, budget, max_chunk, inner_batch, None, compile_threads()) as pipe:
        programs, lays = zip(*[pipe.get(b) for b in range(len(pipe.buckets))])
    return describe(sweep, pipe.buckets, lays, budget, programs)


def run(path, scale: str = "default", out=None, fresh: bool = False, progress: bool = True,
        budget_bytes: int | None = None, plot: bool = True, max_chunk: int = DEFAULT_MAX_CHUNK,
        inner_batch: int | str = "auto") -> Path:
    """Runs (or resumes) a sweep and returns its results directory.

    Finished chunks in ``out/.chunks`` are reused unless ``fresh``. With several processes
    (``jax.distributed`` initialised), chunk i runs on process ``i % process_count``; process 0
    gathers every chunk and writes ``table.csv``, ``arrays.npz``, ``meta.json`` and the figures.
    ``inner_batch``: the chunk layout on a single device: "auto" (per bucket, see ``_Program``),
    0 for one vmap over the whole chunk, k > 0 for ``lax.map`` over sub-batches of k vmapped
    variants. Layouts change speed and memory only, never results.
    """
    from tqdm import tqdm

    from jaxbench import distributed

    sweep = load(path, scale)
    matmul_precision(sweep.module)  # a bad value: one line before anything is written
    try:
        stall_s = watchdog.stall_seconds() if jax.default_backend() == "cpu" else None
    except ValueError as e:
        raise SweepError(str(e)) from None
    dog = watchdog.Watchdog(stall_s) if stall_s else None
    threads = compile_threads()
    cpu_fusion_emitters(sweep.module)  # a bad JAXBENCH_CPU_FUSION_EMITTERS fails here, not in a thread
    out = Path(out) if out is not None else default_out(sweep)
    if fresh and jax.process_index() == 0 and (out / store.CHUNKS).exists():
        shutil.rmtree(out / store.CHUNKS)
    distributed.barrier("fresh")
    try:
        (out / store.CHUNKS).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SweepError(f"cannot write results to {out}: {e.strerror or e}") from None
    started = time.time()
    budget = budget_bytes or default_budget()
    n_proc, me = jax.process_count(), jax.process_index()
    programs, lays, mine, first = [], [], [], 0  # first: global index of the bucket's first chunk
    with _context(sweep), _Pipeline(sweep, budget, max_chunk, inner_batch, out, threads) as pipe:
        buckets = pipe.buckets
        desc = sweep.name if n_proc == 1 else f"{sweep.name} [process {me}/{n_proc}]"
        bar = tqdm(total=len(sweep.variants) if n_proc == 1 else None, unit="variant", desc=desc,
                   disable=not progress, file=sys.stderr, dynamic_ncols=True)
        for b in range(len(buckets)):
            bar.set_postfix_str(f"bucket {b + 1}/{len(buckets)}")
            prog, lay = pipe.get(b)
            programs.append(prog)
            lays.append(lay)
            for c in range(len(lay.chunks)):
                if (first + c) % n_proc != me:  # chunks dealt round-robin over processes
                    continue
                mine.append((b, c))
                n = len(lay.chunks[c])
                if store.read_chunk(out, lay.names[c]) is not None:  # finished in an earlier run
                    bar.update(n)
                    continue
                static = " ".join(f"{k}={v}" for k, v in buckets[b].static.items())
                label = f"bucket {b + 1}/{len(buckets)} ({static}), chunk {c + 1}/{len(lay.chunks)}"
                with dog.watch(label) if dog else contextlib.nullcontext():
                    compiled = prog.compiled(lay.chunk_size)
                    t0 = time.perf_counter()
                    outputs = jax.device_get(compiled(prog.inputs(lay.chunks[c], lay.chunk_size)))
                    outputs = {k: np.asarray(v)[:n] for k, v in outputs.items()}
                    store.write_chunk(out, lay.names[c], np.array(lay.chunks[c]), outputs,
                                      {"seconds": time.perf_counter() - t0, "process": me,
                                       "devices": [str(d) for d in jax.local_devices()]})
                bar.update(n)
            first += len(lay.chunks)
        bar.close()
    distributed.gather_chunks(out, [lays[b].names[c] for b, c in mine])
    if jax.process_index() == 0:
        bucket_meta = [{"static": bk.static, "n_variants": len(bk.variant_ids), "chunk_size": l.chunk_size,
                        "n_chunks": len(l.chunks), "compiled_bytes_per_chunk": l.bytes_per_chunk,
                        "traces": p.traces, "compiles": p.compiles, "trace_s": p.trace_s, "compile_s": p.compile_s,
                        "wait_s": w, "inner_batch": p.batch(l.chunk_size), "variant_flops": p.variant_flops,
                        "fusion_emitters": p.fusion_emitters}
                       for bk, l, p, w in zip(buckets, lays, programs, pipe.wait_s)]
        _merge(sweep, lays, out, bucket_meta, budget, started, threads)
        if plot:
            sweep.module.plot(out)
    distributed.barrier("merged")
    return out


def _merge(sweep: Sweep, lays, out: Path, bucket_meta, budget, started, threads) -> None:
    rows: list[dict | None] = [None] * len(sweep.variants)
    per_variant_arrays: list[dict] = [{} for _ in sweep.variants]
    provenance = []
    for lay in lays:
        for name in lay.names:
            ids, outputs, info = store.read_chunk(out, name)
            provenance.append({"chunk": name, **info})
            for j, i in enumerate(ids):
                row = {"variant": int(i), **sweep.variants[i]}
                for k, v in outputs.items():
                    if v.ndim == 1:
                        row[k] = v[j].item()
                    else:
                        per_variant_arrays[i][k] = v[j]
                rows[i] = row
    arrays = {}
    for k in sorted({k for a in per_variant_arrays for k in a}):
        ref = np.full(next(a[k].shape for a in per_variant_arrays if k in a), np.nan)
        arrays[k] = store.stack_padded([np.asarray(a.get(k, ref))[None] for a in per_variant_arrays])
    module = sweep.module
    meta = {
        "sweep": sweep.name, "experiment": sweep.experiment, "scale": sweep.scale,
        "sweep_file": str(sweep.path),
        "experiment_file": None if sweep.experiment in experiments.REGISTRY else module.__file__,
        "description": sweep.description, "config": sweep.config,
        "n_variants": len(sweep.variants), "n_buckets": len(lays),
        "static_keys": _static_keys(module), "traced_keys": _traced_keys(module),
        "n_diverged": int(sum(bool(r.get("diverged", False)) for r in rows)),
        "memory_budget_bytes": budget, "matmul_precision": matmul_precision(module), "buckets": bucket_meta,
        "chunk_seconds_total": sum(p["seconds"] for p in provenance), "chunks": provenance,
        "compile_threads": threads, "compile_wait_s_total": sum(b["wait_s"] for b in bucket_meta),
        "wall_s_this_run": time.time() - started,
        "versions": _versions(), "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()], "process_count": jax.process_count(),
        "git_commit": _git("rev-parse", "HEAD") or None,
        "git_dirty": _git_dirty(),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    store.write_results(out, rows, arrays, meta)
