"""Sweeps: a TOML grid -> variants -> shape buckets -> chunks -> one jitted vmap call per chunk.

Sweep file (see README "Writing a sweep file")::

    experiment = "benign_overfitting"
    seeds = 4                       # int n (seeds 0..n-1) or a list
    [fixed]   ...                   # values shared by every variant
    [grid]    ...                   # axes expanded as a Cartesian product
    [zip]     ...                   # optional: equal-length lists varied together
    [presets.smoke] / [presets.default] / [presets.paper]   # override seeds/fixed/grid/zip

Variants are grouped into buckets of equal *static* parameters (anything that fixes a shape);
each bucket is compiled once, and run chunk by chunk (chunks padded to one size so they share
the compilation), the variant axis sharded over the local devices. Every finished chunk is
written atomically, and a re-run skips the chunks already on disk.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import math
import platform
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from types import ModuleType

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxbench import experiments, store

SCALES = ("smoke", "default", "paper")
_TOP_KEYS = {"experiment", "description", "seeds", "fixed", "grid", "zip", "presets"}
_SECTION_KEYS = ("fixed", "grid", "zip")
DEFAULT_MAX_CHUNK = 1024
DEFAULT_BUDGET = 2 * 2**30  # bytes per chunk when the experiment gives a per-variant estimate


class SweepError(ValueError):
    """Bad sweep input: the message is the one line the CLI prints."""


@dataclasses.dataclass(frozen=True)
class Sweep:
    """A validated sweep: ``variants[i]`` is the full parameter dict of variant i."""

    path: Path
    name: str
    experiment: str
    scale: str
    description: str
    config: dict
    variants: tuple

    @property
    def module(self) -> ModuleType:
        return experiments.get(self.experiment)


@dataclasses.dataclass(frozen=True)
class Bucket:
    """Variants sharing static parameters: one compilation, ``chunks`` of variant ids."""

    static: dict
    variant_ids: tuple
    chunk_size: int
    chunks: tuple
    variant_bytes: int | None


# ----------------------------------------------------------------------------- loading

def _read_toml(path: Path) -> dict:
    if not path.is_file():
        raise SweepError(f"sweep file not found: {path}")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise SweepError(f"{path}: malformed TOML: {e}") from None


def _merge_preset(raw: dict, preset: dict, where: str) -> dict:
    unknown = set(preset) - {"seeds", *_SECTION_KEYS}
    if unknown:
        raise SweepError(f"unknown key {sorted(unknown)[0]!r} in [{where}] (allowed: seeds, fixed, grid, zip)")
    merged = {k: dict(raw.get(k, {})) for k in _SECTION_KEYS}
    merged["seeds"] = raw.get("seeds", 1)
    for section in _SECTION_KEYS:
        for key, value in preset.get(section, {}).items():
            for other in _SECTION_KEYS:
                merged[other].pop(key, None)  # a preset may move a key between sections
            merged[section][key] = value
    if "seeds" in preset:
        merged["seeds"] = preset["seeds"]
    return merged


def _seeds(value) -> list[int]:
    if isinstance(value, bool):
        raise SweepError(f"seeds = {value!r}: expected a positive int or a list of ints")
    if isinstance(value, int):
        if value <= 0:
            raise SweepError(f"seeds = {value}: must be > 0")
        return list(range(value))
    if isinstance(value, list) and value and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value):
        return list(value)
    raise SweepError(f"seeds = {value!r}: expected a positive int or a non-empty list of ints >= 0")


def load(path, scale: str = "default") -> Sweep:
    """Reads and validates a sweep file at a scale. Raises `SweepError` with one clear line."""
    path = Path(path)
    raw = _read_toml(path)
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise SweepError(f"{path.name}: unknown key {sorted(unknown)[0]!r} (allowed: {', '.join(sorted(_TOP_KEYS))})")
    if "experiment" not in raw:
        raise SweepError(f"{path.name}: missing 'experiment = \"...\"'")
    try:
        module = experiments.get(raw["experiment"])
    except ValueError as e:
        raise SweepError(f"{path.name}: {e}") from None
    presets = raw.get("presets", {})
    if scale not in SCALES and scale not in presets:
        raise SweepError(f"{path.name}: unknown scale {scale!r} (available: {', '.join(sorted({*SCALES, *presets}))})")
    if scale != "default" and scale not in presets:
        raise SweepError(f"{path.name}: no [presets.{scale}] section")
    merged = _merge_preset(raw, presets.get(scale, {}), f"presets.{scale}")
    seeds = _seeds(merged["seeds"])

    params = module.PARAMS
    values: dict[str, list] = {}
    for section in _SECTION_KEYS:
        for key, value in merged[section].items():
            if key == "seed":
                raise SweepError(f"{path.name}: set seeds with the top-level 'seeds' key, not in [{section}]")
            if key not in params:
                raise SweepError(
                    f"{path.name}: unknown key {key!r} in [{section}] "
                    f"(experiment {raw['experiment']} accepts: {', '.join(sorted(params))})")
            if section == "fixed":
                if isinstance(value, list):
                    raise SweepError(f"{path.name}: [fixed] {key} is a list; put swept values in [grid]")
                value = [value]
            elif not isinstance(value, list) or not value:
                raise SweepError(f"{path.name}: [{section}] {key} must be a non-empty list")
            try:
                values[key] = [params[key].validate(key, v) for v in value]
            except ValueError as e:
                raise SweepError(f"{path.name}: {e}") from None
    zip_lens = {len(merged["zip"][k]) for k in merged["zip"]}
    if len(zip_lens) > 1:
        raise SweepError(f"{path.name}: [zip] lists have different lengths {sorted(zip_lens)}")
    missing = [k for k, p in params.items() if p.required and k not in values]
    if missing:
        raise SweepError(f"{path.name}: missing required parameter {missing[0]!r}")

    defaults = {k: p.default for k, p in params.items() if not p.required}
    fixed = {k: values[k][0] for k in merged["fixed"]}
    grid_keys = list(merged["grid"])
    zip_keys = list(merged["zip"])
    zip_rows = list(zip(*(values[k] for k in zip_keys))) if zip_keys else [()]
    variants = []
    for g in itertools.product(*(values[k] for k in grid_keys)):
        for z in zip_rows:
            for s in seeds:
                variants.append({**defaults, **fixed, **dict(zip(grid_keys, g)), **dict(zip(zip_keys, z)), "seed": s})
    config = {"seeds": seeds, **{s: merged[s] for s in _SECTION_KEYS}}
    return Sweep(path, path.stem, raw["experiment"], scale, raw.get("description", ""), config, tuple(variants))


# ----------------------------------------------------------------------------- planning

def _static_keys(module) -> list[str]:
    return [k for k, p in module.PARAMS.items() if p.kind == "static"]


def _traced_keys(module) -> list[str]:
    return [k for k, p in module.PARAMS.items() if p.kind == "traced"] + ["seed"]


def plan(sweep: Sweep, n_devices: int | None = None, budget_bytes: int | None = None,
         max_chunk: int = DEFAULT_MAX_CHUNK) -> list[Bucket]:
    """Groups variants into static-shape buckets and splits each into equal-size chunks.

    Chunk sizes are multiples of the device count (the variant axis is sharded) and, when the
    experiment estimates its per-variant memory (``variant_bytes``), fit the byte budget.
    """
    module = sweep.module
    n_devices = n_devices or jax.local_device_count()
    budget = budget_bytes or DEFAULT_BUDGET
    keys = _static_keys(module)
    groups: dict[tuple, list[int]] = {}
    for i, v in enumerate(sweep.variants):
        groups.setdefault(tuple(v[k] for k in keys), []).append(i)
    buckets = []
    for skey, ids in groups.items():
        static = dict(zip(keys, skey))
        vb = module.variant_bytes(_make_static(module, static)) if hasattr(module, "variant_bytes") else None
        cap = max_chunk if vb is None else max(1, min(max_chunk, budget // max(vb, 1)))
        n_chunks = math.ceil(len(ids) / cap)
        size = math.ceil(len(ids) / n_chunks)
        size = math.ceil(size / n_devices) * n_devices
        chunks = tuple(tuple(ids[i:i + size]) for i in range(0, len(ids), size))
        buckets.append(Bucket(static, tuple(ids), size, chunks, vb))
    return buckets


def _make_static(module, static: dict):
    cls = dataclasses.make_dataclass("Static", list(static), frozen=True)
    return cls(**static)


def chunk_name(sweep: Sweep, b: int, c: int, ids) -> str:
    """Content-addressed chunk file name: changing any parameter of a chunk invalidates it."""
    blob = json.dumps([sweep.experiment, [sweep.variants[i] for i in ids]], sort_keys=True, default=str)
    return f"b{b:03d}-c{c:04d}-{hashlib.sha1(blob.encode()).hexdigest()[:12]}"


def describe(sweep: Sweep, buckets: list[Bucket]) -> str:
    """Human-readable plan (what ``--dry-run`` prints)."""
    lines = [
        f"sweep {sweep.name} (experiment {sweep.experiment}, scale {sweep.scale}): "
        f"{len(sweep.variants)} variants, {len(buckets)} buckets, "
        f"{sum(len(b.chunks) for b in buckets)} chunks on {jax.local_device_count()} {jax.default_backend()} device(s)"]
    for i, b in enumerate(buckets):
        mem = "" if b.variant_bytes is None else f", ~{b.variant_bytes * b.chunk_size / 2**20:.1f} MiB/chunk"
        st = " ".join(f"{k}={v}" for k, v in b.static.items())
        lines.append(f"  bucket {i}: {st} | {len(b.variant_ids)} variants in {len(b.chunks)} chunk(s) of {b.chunk_size}{mem}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- running

def default_out(sweep: Sweep) -> Path:
    return Path("results") / (sweep.name if sweep.scale == "default" else f"{sweep.name}-{sweep.scale}")


def _batched_fn(module, static, counter: list):
    def one(traced):
        counter[0] += 1  # runs once per trace: counts compilations
        out = dict(module.run_one(static, traced, jax.random.PRNGKey(traced["seed"])))
        if "diverged" not in out:
            flags = [~jnp.isfinite(v) for v in out.values()
                     if jnp.ndim(v) == 0 and jnp.issubdtype(jnp.result_type(v), jnp.floating)]
            out["diverged"] = jnp.any(jnp.stack(flags)) if flags else jnp.zeros((), bool)
        return out
    return jax.jit(jax.vmap(one))


def _chunk_inputs(sweep: Sweep, module, ids, size, sharding):
    ids = list(ids) + [ids[-1]] * (size - len(ids))  # pad to the bucket's chunk size
    inputs = {}
    for k in _traced_keys(module):
        col = np.array([sweep.variants[i][k] for i in ids])
        dtype = jnp.int32 if k == "seed" or col.dtype.kind in "iu" else (jnp.bool_ if col.dtype == bool else None)
        arr = jnp.asarray(col, dtype=dtype) if dtype is not None else jnp.asarray(col, dtype=jnp.zeros(()).dtype)
        inputs[k] = jax.device_put(arr, sharding)
    return inputs


def _versions() -> dict:
    import flax
    import optax
    from importlib.metadata import version
    return {"python": platform.python_version(), "jax": jax.__version__, "jaxlib": version("jaxlib"),
            "numpy": np.__version__, "optax": optax.__version__, "flax": flax.__version__}


def _git_commit() -> str | None:
    try:
        r = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                           cwd=Path(__file__).resolve().parent)
        return r.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def run(path, scale: str = "default", out=None, fresh: bool = False, progress: bool = True,
        budget_bytes: int | None = None, plot: bool = True) -> Path:
    """Runs (or resumes) a sweep and returns its results directory.

    Finished chunks found in ``out/.chunks`` are reused unless ``fresh``. Writes ``table.csv``,
    ``arrays.npz``, ``meta.json`` and the experiment's figures.
    """
    from tqdm import tqdm

    sweep = load(path, scale)
    module = sweep.module
    buckets = plan(sweep, budget_bytes=budget_bytes)
    out = Path(out) if out is not None else default_out(sweep)
    if fresh and (out / store.CHUNKS).exists():
        shutil.rmtree(out / store.CHUNKS)
    (out / store.CHUNKS).mkdir(parents=True, exist_ok=True)

    started = time.time()
    mesh = Mesh(np.array(jax.local_devices()), ("v",))
    sharding = NamedSharding(mesh, PartitionSpec("v"))
    names = [[chunk_name(sweep, b, c, ids) for c, ids in enumerate(bk.chunks)] for b, bk in enumerate(buckets)]
    done = {n for row in names for n in row if store.read_chunk(out, n) is not None}
    n_done = sum(len(ids) for b, bk in enumerate(buckets) for c, ids in enumerate(bk.chunks) if names[b][c] in done)
    bar = tqdm(total=len(sweep.variants), initial=n_done, unit="variant", desc=sweep.name,
               disable=not progress, file=sys.stderr, dynamic_ncols=True)
    bucket_meta = []
    x64 = jax.enable_x64(True) if getattr(module, "X64", False) else contextlib.nullcontext()
    with x64:
        for b, bk in enumerate(buckets):
            info = {"static": bk.static, "n_variants": len(bk.variant_ids), "chunk_size": bk.chunk_size,
                    "n_chunks": len(bk.chunks), "traces": 0, "compile_s": 0.0, "run_s": 0.0}
            todo = [(c, ids) for c, ids in enumerate(bk.chunks) if names[b][c] not in done]
            if todo:
                counter = [0]
                fn = _batched_fn(module, _make_static(module, bk.static), counter)
                bar.set_postfix_str(f"compiling bucket {b + 1}/{len(buckets)}")
                t0 = time.perf_counter()
                compiled = fn.lower(_chunk_inputs(sweep, module, todo[0][1], bk.chunk_size, sharding)).compile()
                info["compile_s"] = time.perf_counter() - t0
                info["traces"] = counter[0]
                bar.set_postfix_str(f"bucket {b + 1}/{len(buckets)}")
                for c, ids in todo:
                    t0 = time.perf_counter()
                    outputs = jax.device_get(compiled(_chunk_inputs(sweep, module, ids, bk.chunk_size, sharding)))
                    outputs = {k: np.asarray(v)[:len(ids)] for k, v in outputs.items()}
                    dt = time.perf_counter() - t0
                    info["run_s"] += dt
                    store.write_chunk(out, names[b][c], np.array(ids), outputs,
                                      {"seconds": dt, "process": jax.process_index(),
                                       "devices": [str(d) for d in jax.local_devices()]})
                    bar.update(len(ids))
            bucket_meta.append(info)
    bar.close()
    _merge(sweep, buckets, names, out, bucket_meta, started)
    if plot:
        module.plot(out)
    return out


def _merge(sweep: Sweep, buckets, names, out: Path, bucket_meta, started) -> None:
    rows: list[dict | None] = [None] * len(sweep.variants)
    per_variant_arrays: list[dict] = [{} for _ in sweep.variants]
    chunk_seconds = 0.0
    for b, bk in enumerate(buckets):
        for c in range(len(bk.chunks)):
            ids, outputs, info = store.read_chunk(out, names[b][c])
            chunk_seconds += info["seconds"]
            for j, i in enumerate(ids):
                row = {"variant": int(i), **sweep.variants[i]}
                for k, v in outputs.items():
                    if v.ndim == 1:
                        row[k] = v[j].item()
                    else:
                        per_variant_arrays[i][k] = v[j]
                rows[i] = row
    keys = sorted({k for a in per_variant_arrays for k in a})
    arrays = {}
    for k in keys:
        shapes = [a[k].shape for a in per_variant_arrays if k in a]
        ref = np.full(shapes[0], np.nan)
        arrays[k] = store.stack_padded([np.asarray(a.get(k, ref))[None] for a in per_variant_arrays])
    module = sweep.module
    meta = {
        "sweep": sweep.name, "experiment": sweep.experiment, "scale": sweep.scale,
        "sweep_file": str(sweep.path), "description": sweep.description, "config": sweep.config,
        "n_variants": len(sweep.variants), "n_buckets": len(buckets),
        "static_keys": _static_keys(module), "traced_keys": _traced_keys(module),
        "n_diverged": int(sum(bool(r.get("diverged", False)) for r in rows)),
        "buckets": bucket_meta, "chunk_seconds_total": chunk_seconds,
        "wall_s_this_run": time.time() - started,
        "versions": _versions(), "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()], "process_count": jax.process_count(),
        "git_commit": _git_commit(), "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    store.write_results(out, rows, arrays, meta)
