"""Results on disk: atomic chunk files, the merged tidy table, arrays and metadata.

A results directory holds

* ``table.csv``: one row per variant, every parameter and every scalar metric;
* ``arrays.npz``: non-scalar outputs (curves, spectra), leading axis = variant, same row order
  (arrays whose shapes differ between buckets are NaN-padded to a common shape);
* ``meta.json``: sweep config, preset, versions, devices, git commit, timings;
* ``.chunks/``: one ``.npz`` per finished chunk, the unit of resumption;
* figures (``*.png`` and ``*.pdf``).

Every file is written to a temporary name in the same directory and renamed into place, so a
process killed at any moment leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

CHUNKS = ".chunks"


class Results(NamedTuple):
    """table: column name -> (n_variants,) array; arrays: name -> (n_variants, ...); meta: dict."""

    table: dict
    arrays: dict
    meta: dict


def atomic_write(path: Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` so that readers see the old file or the whole new one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _npz_bytes(arrays: dict) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def chunk_path(out: Path, name: str) -> Path:
    return Path(out) / CHUNKS / f"{name}.npz"


def write_chunk(out: Path, name: str, variant_ids: np.ndarray, outputs: dict, info: dict) -> None:
    """Stores one finished chunk: its variant ids, every output (leading axis = variant), info."""
    path = chunk_path(out, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"out/{k}": np.asarray(v) for k, v in outputs.items()}
    arrays["variant_ids"] = np.asarray(variant_ids)
    arrays["info"] = np.frombuffer(json.dumps(info).encode(), dtype=np.uint8)
    atomic_write(path, _npz_bytes(arrays))


def read_chunk(out: Path, name: str):
    """Returns ``(variant_ids, outputs, info)`` of a finished chunk, or None if absent/corrupt."""
    path = chunk_path(out, name)
    if not path.exists():
        return None
    try:
        with np.load(path) as z:
            ids = z["variant_ids"]
            outputs = {k[4:]: z[k] for k in z.files if k.startswith("out/")}
            info = json.loads(z["info"].tobytes().decode())
    except Exception:  # a corrupt chunk is recomputed, never trusted
        return None
    return ids, outputs, info


def _fmt(v) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (float, np.floating)):
        return repr(float(v))
    return str(v)


def write_results(out: Path, rows: list[dict], arrays: dict, meta: dict) -> None:
    """Writes the merged ``table.csv`` (rows: list of flat dicts), ``arrays.npz``, ``meta.json``."""
    out = Path(out)
    columns = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([_fmt(r.get(c, "")) for c in columns])
    atomic_write(out / "table.csv", buf.getvalue().encode())
    atomic_write(out / "arrays.npz", _npz_bytes(arrays))
    atomic_write(out / "meta.json", (json.dumps(meta, indent=2, default=str) + "\n").encode())


def _parse_column(values: list[str]) -> np.ndarray:
    if all(v in ("true", "false") for v in values):
        return np.array([v == "true" for v in values])
    for t in (int, float):
        try:
            return np.array([t(v) for v in values])
        except ValueError:
            pass
    return np.array(values)


def load_meta(results_dir) -> dict:
    """``meta.json`` of a results directory (FileNotFoundError if it holds no results)."""
    d = Path(results_dir)
    if not (d / "meta.json").exists():
        raise FileNotFoundError(f"{d} holds no results (meta.json missing)")
    return json.loads((d / "meta.json").read_text())


def load(results_dir) -> Results:
    """Reads a results directory written by `write_results`."""
    d = Path(results_dir)
    meta = load_meta(d)
    with open(d / "table.csv", newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        cols = list(zip(*reader)) or [()] * len(header)
    table = {h: _parse_column(list(c)) for h, c in zip(header, cols)}
    arrays = {}
    if (d / "arrays.npz").exists():
        with np.load(d / "arrays.npz") as z:
            arrays = {k: z[k] for k in z.files}
    return Results(table, arrays, meta)


def stack_padded(parts: list[np.ndarray]) -> np.ndarray:
    """Concatenates arrays along axis 0, NaN-padding trailing axes to a common shape."""
    ndim = parts[0].ndim
    shape = tuple(max(p.shape[i] for p in parts) for i in range(1, ndim))
    if all(p.shape[1:] == shape for p in parts):
        return np.concatenate(parts)
    dtype = np.result_type(np.float32, *[p.dtype for p in parts])
    padded = []
    for p in parts:
        q = np.full((p.shape[0], *shape), np.nan, dtype)
        q[(slice(None), *(slice(0, s) for s in p.shape[1:]))] = p
        padded.append(q)
    return np.concatenate(padded)
