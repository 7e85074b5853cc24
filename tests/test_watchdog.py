"""jaxbench.watchdog: a chunk at 0% CPU is reported in one line and ended (exit 3), a busy one
never is; finished chunks survive and a re-run resumes."""

import os
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import ROOT, TINY, write_sweep
from jaxbench import cli, store, watchdog


def test_stall_seconds_from_the_environment():
    env = watchdog.STALL_ENV
    assert watchdog.stall_seconds({}) == watchdog.DEFAULT_STALL_S
    assert watchdog.stall_seconds({env: "12.5"}) == 12.5
    assert watchdog.stall_seconds({env: "off"}) is None and watchdog.stall_seconds({env: "0"}) is None
    for bad in ("abc", "-3", "inf", "nan"):
        with pytest.raises(ValueError, match=env):
            watchdog.stall_seconds({env: bad})


def _python(code, timeout=60, **kw):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, **kw)


def test_an_idle_block_is_reported_and_ended():
    t0 = time.monotonic()
    r = _python("""
        import time
        from jaxbench import watchdog
        dog = watchdog.Watchdog(1.0, poll_s=0.1)
        with dog.watch("bucket 2/5 (width=8), chunk 1/1"):
            time.sleep(30)  # no CPU, as a deadlocked XLA program
        print("not reached")
    """)
    assert r.returncode == watchdog.EXIT_CODE and "not reached" not in r.stdout
    line, = r.stderr.strip().splitlines()
    assert line.startswith("jaxbench: error: bucket 2/5 (width=8), chunk 1/1 has used no CPU") and "re-run" in line
    assert time.monotonic() - t0 < 20


def test_a_busy_block_and_idle_time_between_blocks_are_not():
    r = _python("""
        import time
        from jaxbench import watchdog
        dog = watchdog.Watchdog(0.5, poll_s=0.05)
        with dog.watch("busy"):
            t = time.process_time()
            while time.process_time() - t < 2.0:  # 4x the limit, computing
                pass
        time.sleep(1.5)  # idle outside any chunk: not watched
        with dog.watch("short"):
            time.sleep(0.2)  # idle, but shorter than the limit
        print("done")
    """)
    assert r.returncode == 0 and r.stdout.strip() == "done", r.stderr


def test_a_stalled_sweep_exits_3_and_resumes(tmp_path):
    """A chunk that stops using the CPU (here: its file write sleeps) ends the sweep with one line
    naming the bucket; the chunks before it are kept and a re-run finishes the sweep."""
    f = write_sweep(tmp_path / "s.toml", TINY)
    out = tmp_path / "out"
    r = _python(f"""
        import sys, time
        from jaxbench import cli, store
        write = store.write_chunk
        def stalled(out, name, *a, **k):
            if name.startswith("b001"):
                time.sleep(60)
            return write(out, name, *a, **k)
        store.write_chunk = stalled
        sys.exit(cli.main(["sweep", {str(f)!r}, "--out", {str(out)!r}, "--no-progress", "--no-plot"]))
    """, env={**os.environ, watchdog.STALL_ENV: "2"})
    assert r.returncode == watchdog.EXIT_CODE, r.stderr[-2000:]
    err = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(err) == 1 and "bucket 2/2 (width=8" in err[0] and "chunk 1/1" in err[0], err
    chunks = sorted(p.name[:4] for p in (out / store.CHUNKS).glob("*.npz"))
    assert chunks == ["b000"] and not (out / "table.csv").exists()  # nothing half-written
    assert cli.main(["sweep", str(f), "--out", str(out), "--no-progress", "--no-plot"]) == 0
    assert len(store.load(out).table["variant"]) == 8


def test_bad_stall_setting_is_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
    f = write_sweep(tmp_path / "s.toml", TINY)
    monkeypatch.setenv(watchdog.STALL_ENV, "soon")
    assert cli.main(["sweep", str(f), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "JAXBENCH_STALL_S='soon'" in err[0]
    assert not (tmp_path / "out").exists()
