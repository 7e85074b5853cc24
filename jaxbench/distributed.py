"""Multi-process sweeps on JAX's own runtime (`jax.distributed`), CPU/GPU/TPU alike.

Each process runs the chunks dealt to it (chunk i goes to process ``i % process_count``) on its
local devices, then every process sends its chunk files to process 0 through a JAX collective
(`multihost_utils.process_allgather`), so hosts need no shared filesystem; process 0 merges.
With one process every function here is a no-op.
"""

from __future__ import annotations

import io
import os

import jax
import numpy as np

from jaxbench import store

ENV = {"coordinator": "JAXBENCH_COORDINATOR", "num_processes": "JAXBENCH_NUM_PROCESSES",
       "process_id": "JAXBENCH_PROCESS_ID"}


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
    """Calls `jax.distributed.initialize`, from arguments, else ``JAXBENCH_*`` variables, else
    JAX's auto-detection (Cloud TPU, SLURM). On CPU, cross-process collectives use gloo."""
    coordinator = coordinator or os.environ.get(ENV["coordinator"])
    num_processes = num_processes if num_processes is not None else _env_int(ENV["num_processes"])
    process_id = process_id if process_id is not None else _env_int(ENV["process_id"])
    if coordinator and (num_processes is None or process_id is None):
        raise ValueError("with a coordinator address, give --num-processes and --process-id "
                         f"(or {ENV['num_processes']} and {ENV['process_id']})")
    try:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except Exception:  # older jax: CPU collectives unavailable; TPU/GPU unaffected
        pass
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id)


def _env_int(name):
    v = os.environ.get(name)
    return None if v is None else int(v)


def barrier(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)


def gather_chunks(out, names: list[str]) -> None:
    """Sends this process's finished chunk files to process 0, which writes any it lacks."""
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils

    buf = io.BytesIO()
    np.savez(buf, **{n: np.frombuffer(store.chunk_path(out, n).read_bytes(), np.uint8) for n in names})
    blob = np.frombuffer(buf.getvalue(), np.uint8)
    sizes = np.asarray(multihost_utils.process_allgather(np.array([blob.size], np.int64))).ravel()
    padded = np.zeros(int(sizes.max()), np.uint8)
    padded[:blob.size] = blob
    blobs = np.asarray(multihost_utils.process_allgather(padded))
    if jax.process_index() == 0:
        for size, row in zip(sizes, blobs):
            with np.load(io.BytesIO(row[:size].tobytes())) as z:
                for n in z.files:
                    path = store.chunk_path(out, n)
                    if not path.exists():
                        store.atomic_write(path, z[n].tobytes())
    barrier("gathered")
