"""Scale-out: simulated multi-device, two jax.distributed processes, memory budget, kill -9, TPU."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, TINY, write_sweep
from jaxbench import store, sweep, tpu

ENV = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}


def _cli(*args, env=None, **kw):
    return subprocess.run([sys.executable, "-m", "jaxbench", *map(str, args), "--no-progress", "--no-plot"],
                          env=env or ENV, capture_output=True, text=True, **kw)


def _assert_same_table(a, b, rtol=1e-5):
    ta, tb = store.load(a).table, store.load(b).table
    assert list(ta) == list(tb)
    for k in ta:
        if ta[k].dtype.kind == "f":
            np.testing.assert_allclose(ta[k], tb[k], rtol=rtol, atol=1e-6, err_msg=k)
        else:
            np.testing.assert_array_equal(ta[k], tb[k], err_msg=k)


@pytest.fixture
def tiny(tmp_path):
    return write_sweep(tmp_path / "tiny.toml", TINY)


def test_four_simulated_devices_give_the_single_device_table(tiny, tmp_path):
    one = _cli("sweep", tiny, "--out", tmp_path / "one")
    env = {**ENV, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    four = _cli("sweep", tiny, "--out", tmp_path / "four", env=env)
    assert one.returncode == 0 and four.returncode == 0, four.stderr
    meta = store.load(tmp_path / "four").meta
    assert len(meta["devices"]) == 4 and all(b["chunk_size"] % 4 == 0 for b in meta["buckets"])
    _assert_same_table(tmp_path / "one", tmp_path / "four")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_distributed_processes_give_the_single_process_table(tiny, tmp_path):
    one = _cli("sweep", tiny, "--out", tmp_path / "one", "--max-chunk", 2)
    port = _free_port()
    procs = [subprocess.Popen(
        [sys.executable, "-m", "jaxbench", "sweep", str(tiny), "--out", str(tmp_path / f"two"),
         "--max-chunk", "2", "--no-progress", "--no-plot", "--distributed", "--coordinator", f"127.0.0.1:{port}",
         "--num-processes", "2", "--process-id", str(i)],
        env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    try:
        outs = [p.communicate(timeout=240) for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        pytest.fail("distributed sweep timed out")
    assert one.returncode == 0 and all(p.returncode == 0 for p in procs), outs[0][1][-2000:] + outs[1][1][-2000:]
    meta = store.load(tmp_path / "two").meta
    assert meta["process_count"] == 2
    assert {c["process"] for c in meta["chunks"]} == {0, 1}  # both processes did work
    _assert_same_table(tmp_path / "one", tmp_path / "two")


def test_tiny_memory_budget_forces_many_chunks_same_table(tiny, tmp_path):
    big = sweep.run(tiny, out=tmp_path / "big", progress=False, plot=False)
    small = sweep.run(tiny, out=tmp_path / "small", progress=False, plot=False, budget_bytes=1)
    chunks = [b["n_chunks"] for b in store.load(small).meta["buckets"]]
    assert [b["n_chunks"] for b in store.load(big).meta["buckets"]] == [1, 1] and chunks == [4, 4]
    assert all(b["compiled_bytes_per_chunk"] > 0 for b in store.load(small).meta["buckets"])
    _assert_same_table(big, small)


def test_kill_9_mid_run_then_resume(tmp_path):
    f = write_sweep(tmp_path / "slow.toml", TINY.replace("steps = 20", "steps = 2000"))
    ref = _cli("sweep", f, "--out", tmp_path / "ref", "--max-chunk", 1)
    assert ref.returncode == 0
    out = tmp_path / "run"
    p = subprocess.Popen([sys.executable, "-m", "jaxbench", "sweep", str(f), "--out", str(out), "--max-chunk", "1",
                          "--no-progress", "--no-plot"], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    chunk_dir = out / store.CHUNKS
    deadline = time.time() + 900
    while time.time() < deadline and p.poll() is None and len(list(chunk_dir.glob("b*.npz"))) < 2:
        time.sleep(0.01)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    before = {c.name: c.stat().st_mtime_ns for c in chunk_dir.glob("b*.npz")}
    assert 2 <= len(before) < 8, "the sweep must be killed mid-run"
    assert not (out / "table.csv").exists()
    r = _cli("sweep", f, "--out", out, "--max-chunk", 1)
    assert r.returncode == 0, r.stderr
    after = {c.name: c.stat().st_mtime_ns for c in chunk_dir.glob("b*.npz")}
    assert len(after) == 8 and all(after[k] == v for k, v in before.items())  # not recomputed
    _assert_same_table(tmp_path / "ref", out)


def test_kill_9_while_later_buckets_compile_in_the_background_then_resume(tmp_path):
    """Buckets compile in background threads while earlier chunks run: a kill -9 right after the
    first chunk lands (three buckets still compiling or queued) leaves only whole chunk files,
    and the resumed sweep equals an uninterrupted one."""
    f = write_sweep(tmp_path / "four.toml", TINY.replace("width = [4, 8]", "width = [4, 8, 16, 32]"))
    ref = _cli("sweep", f, "--out", tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr
    out = tmp_path / "run"
    p = subprocess.Popen([sys.executable, "-m", "jaxbench", "sweep", str(f), "--out", str(out), "--no-progress",
                          "--no-plot"], env={**ENV, "JAXBENCH_COMPILE_THREADS": "2"},
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    chunk_dir = out / store.CHUNKS
    deadline = time.time() + 600
    while time.time() < deadline and p.poll() is None and not list(chunk_dir.glob("b*.npz")):
        time.sleep(0.005)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    done = sorted(c.name for c in chunk_dir.glob("b*.npz"))
    assert 1 <= len(done) < 4, "the sweep must be killed while later buckets are still to come"
    assert all(store.read_chunk(out, n[:-4]) is not None for n in done) and not (out / "table.csv").exists()
    r = _cli("sweep", f, "--out", out)
    assert r.returncode == 0, r.stderr
    assert len(list(chunk_dir.glob("b*.npz"))) == 4
    _assert_same_table(tmp_path / "ref", out)


def test_tpu_sweep_dry_run_prints_the_command_sequence(root):
    r = subprocess.run(["make", "-s", "tpu-sweep", "TPU=my-tpu", "ZONE=us-central2-b",
                        "SWEEP=sweeps/benign_overfitting.toml", "DRY_RUN=1"],
                       cwd=root, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    lines = [l for l in r.stdout.strip().splitlines() if not l.startswith(("WARNING", " "))]
    assert lines[0] == "git archive --format=tar.gz -o /tmp/jaxbench-src.tar.gz HEAD"
    assert lines[1].startswith("gcloud compute tpus tpu-vm scp /tmp/jaxbench-src.tar.gz 'my-tpu:~/jaxbench-src.tar.gz'")
    assert "--worker=all" in lines[1] and "--zone=us-central2-b" in lines[1]
    assert lines[2].startswith("gcloud compute tpus tpu-vm ssh my-tpu") and "jax[tpu]" in lines[2] and "--worker=all" in lines[2]
    assert "jaxbench sweep sweeps/benign_overfitting.toml --scale paper --distributed" in lines[3] and "--worker=all" in lines[3]
    assert lines[4] == "mkdir -p results"
    assert "'my-tpu:~/jaxbench/results/benign_overfitting-paper' results/" in lines[5] and "--worker=0" in lines[5]
    assert len(lines) == 6


def test_tpu_commands_cover_every_sweep_and_bad_usage(root):
    cmds = tpu.commands("t", "z", ["sweeps/a.toml", "sweeps/b.toml"], "default", project="p")
    assert len(cmds) == 3 + 2 * 3 and all("--project=p" in c for c in cmds if c[0] == "gcloud")
    assert any("results/a" in " ".join(c) for c in cmds)
    r = subprocess.run(["make", "-s", "tpu-sweep"], cwd=root, capture_output=True, text=True)
    assert r.returncode != 0 and "usage: make tpu-sweep" in r.stderr
